"""The store's reads: rankings and cells decayed to the query time, and
where cells stand (:class:`StoreReads`, a base of
:class:`~streamer.adapters.store.Store`)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.store_connection import (
    StoreConnection,
    StoreError,
    pack_command,
)
from streamer.core import decay

PROFILE_FORMAT = "<168f"  # hour-of-week profile: float32, Monday 00h first
PROFILE_BYTES = 672  # a profile key may be shorter: missing hours are zero


@dataclass(frozen=True, slots=True)
class Ranked:
    """A cell in a ranking, its score decayed to the query time."""

    cell: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class CellDetails:
    """Everything the store keeps about one cell, decayed to ``at``."""

    cell: str
    count: int
    last_event_s: float | None
    scores: dict[str, float]
    family_counts: dict[str, int]
    family_scores: dict[str, dict[str, float]]
    category_counts: dict[str, int]
    category_scores: dict[str, dict[str, float]]
    hour_of_week: list[float] = field(default_factory=list)


class StoreReads(StoreConnection):
    """Reads of one engine's state: rankings, cells, positions, blends."""

    async def seq(self) -> int:
        """The sequence number: moves with every change. (Its command is
        packed once: redis-py's way through a command costs more CPU than the
        rest of a kept ``/v1/hotspots`` answer.)"""
        if isinstance(self.client, RedisCluster):
            raw = await self.client.hget(keys.meta(self.prefix), "seq")
        else:
            if self._seq_command is None:
                self._seq_command = pack_command([b"HGET", keys.meta(self.prefix), b"seq"])
            raw = await self._send_packed(self._seq_command)
        return int(raw or 0)

    async def top(self, horizon: str, resolution: int, k: int, at_s: float) -> list[Ranked]:
        """The ``k`` best cells, scores decayed to ``at_s``. Cells whose score
        has decayed below ``prune_below`` are not listed (they are noise, and
        leave the ranking at the next prune)."""
        return (await self.top_page(horizon, resolution, 0, k, at_s))[1]

    async def top_page(
        self, horizon: str, resolution: int, start: int, count: int, at_s: float
    ) -> tuple[int, list[Ranked]]:
        """Ranks ``start + 1`` to ``start + count`` of :meth:`top` (fewer at
        the ranking's end, or where scores fall below ``prune_below``), and
        the sequence number they are a snapshot of (a reader paging through a
        ranking can tell whether it moved in between)."""
        self._check(horizon, resolution)
        # one transaction: the landmark and the scores it scales are a snapshot
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.meta(self.prefix), [f"k:{horizon}", "seq"])
            pipe.zrevrange(
                keys.rank(self.prefix, horizon, resolution),
                start,
                start + max(count, 1) - 1,
                withscores=True,
            )
            (landmark_raw, seq_raw), rows = await pipe.execute()
        seq = int(seq_raw or 0)
        if landmark_raw is None:
            return seq, []
        landmark = int(landmark_raw)
        half_life = self.horizons[horizon]
        floor = decay.stored_threshold(self.prune_below, at_s, half_life, landmark)
        factor = decay.decay_factor(at_s, half_life, landmark)
        # best first, so the cells below the floor are a tail
        return seq, [
            Ranked(text(cell), start + i + 1, score * factor)
            for i, (cell, score) in enumerate(rows[:count])
            if score >= floor
        ]

    async def cell(self, cell: str, at_s: float) -> CellDetails | None:
        """One cell in full, or ``None`` if the store has nothing there."""
        return (await self.cells([cell], at_s)).get(cell)

    async def cells(self, cells: Sequence[str], at_s: float) -> dict[str, CellDetails]:
        """Several cells in full (one transaction); cells the store does not
        hold are left out."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta(self.prefix))
            pipe.hgetall(keys.labels(self.prefix))
            for c in cells:
                pipe.get(keys.cell(self.prefix, c))
                pipe.get(keys.hour_of_week(self.prefix, c))
            meta_raw, labels_raw, *rows = await pipe.execute()
        if not any(rows[0::2]):
            return {}
        meta = {text(k): text(v) for k, v in meta_raw.items()}
        layout = meta.get("layout", "")
        if layout != ",".join(self.names):
            raise StoreError(
                f"the store holds horizons [{layout}], the config has [{','.join(self.names)}]"
            )
        factors = [
            decay.decay_factor(at_s, self.horizons[n], int(meta[f"k:{n}"])) for n in self.names
        ]
        labels = {int(v): text(k) for k, v in labels_raw.items()}
        out: dict[str, CellDetails] = {}
        for c, raw, packed in zip(cells, rows[0::2], rows[1::2], strict=True):
            if raw:
                out[c] = self._details(c, raw, packed, factors, labels)
        return out

    def _details(
        self,
        cell: str,
        raw: bytes,
        packed: bytes | None,
        factors: list[float],
        labels: dict[int, str],
    ) -> CellDetails:
        x = struct.unpack(f"<{len(raw) // 8}d", raw)
        nh = len(self.names)
        scores = {n: (x[2 + i] + x[2 + nh + i]) * factors[i] for i, n in enumerate(self.names)}
        counts: dict[str, dict[str, int]] = {"f": {}, "c": {}}
        sums: dict[str, dict[str, dict[str, float]]] = {"f": {}, "c": {}}
        for j in range(2 + 2 * nh, len(x), 2 + nh):
            kind, _, label = labels.get(int(x[j]), f"?:slot {int(x[j])}").partition(":")
            if kind in counts:
                counts[kind][label] = int(x[j + 1])
                sums[kind][label] = {n: x[j + 2 + i] * factors[i] for i, n in enumerate(self.names)}
        profile = [0.0] * 168
        if packed is not None:
            f = factors[self.names.index(self.profile_horizon)]
            profile = [
                v * f for v in struct.unpack(PROFILE_FORMAT, packed.ljust(PROFILE_BYTES, b"\0"))
            ]
        return CellDetails(
            cell,
            int(x[0]),
            x[1] if x[0] > 0 and x[1] > 0 else None,
            scores,
            counts["f"],
            sums["f"],
            counts["c"],
            sums["c"],
            profile,
        )

    async def positions(
        self, cells: Sequence[tuple[int, str]]
    ) -> tuple[int, dict[str, int | None], list[dict[str, tuple[int, float, int] | None]]]:
        """Where (resolution, cell) pairs stand, in one round trip: the
        sequence number, each horizon's landmark, and per pair and horizon
        ``(0-based rank from the top, stored score, ranking size)`` or None."""
        args: list[Any] = [len(self.names), *self.names]
        for res, cell in cells:
            args += [res, cell]
        raw = await self._run(self._positions, args)
        seq = int(raw[0])
        nh = len(self.names)
        landmarks = {
            n: int(v) if text(v) != "" else None
            for n, v in zip(self.names, raw[1 : 1 + nh], strict=True)
        }
        rows: list[dict[str, tuple[int, float, int] | None]] = []
        i = 1 + nh
        for _ in cells:
            per: dict[str, tuple[int, float, int] | None] = {}
            for n in self.names:
                rank, score, size = int(raw[i]), text(raw[i + 1]), int(raw[i + 2])
                per[n] = (rank, float(score), size) if rank >= 0 and score else None
                i += 3
            rows.append(per)
        return seq, landmarks, rows

    async def blend_top(
        self, long: str, short: str, long_share: float, resolution: int, k: int
    ) -> tuple[int, list[Ranked]]:
        """The ``k`` best cells of ``long_share * long / total(long) + (1 -
        long_share) * short / total(short)``, each horizon's ranking divided
        by its total over all cells (so a score is a share of the decayed
        harm, the same at any time until the store changes); with the
        store's sequence number. One read-only script: O(cells) in Redis."""
        self._check(long, resolution)
        self._check(short, resolution)
        raw = await self._run(self._blend, [long, short, resolution, repr(long_share), k])
        rows = raw[1:]
        ranked = [
            Ranked(text(rows[i]), i // 2 + 1, float(rows[i + 1])) for i in range(0, len(rows), 2)
        ]
        return int(raw[0]), ranked

    async def ranking(self, horizon: str, resolution: int, at_s: float) -> list[Ranked]:
        """The whole ranking, best first, scores decayed to ``at_s`` (cells
        below ``prune_below`` left out, as in :meth:`top`)."""
        return await self.top(horizon, resolution, 10**9, at_s)

    async def window(
        self, resolution: int, hours: Sequence[int], k: int, at_s: float
    ) -> list[Ranked]:
        """Top cells for a set of hours of the week (0 = Monday 00:00), by
        their hour-of-week profile (decayed with the profile horizon)."""
        self._check(self.profile_horizon, resolution)
        landmark_raw = await self.client.hget(keys.meta(self.prefix), f"k:{self.profile_horizon}")
        if landmark_raw is None:
            return []
        factor = decay.decay_factor(at_s, self.horizons[self.profile_horizon], int(landmark_raw))
        ranking = keys.rank(self.prefix, self.profile_horizon, resolution)
        cells = await self.client.zrange(ranking, 0, -1)
        wanted = sorted(set(hours))
        totals: list[tuple[float, str]] = []
        for start in range(0, len(cells), 2000):
            chunk = cells[start : start + 2000]
            async with self.client.pipeline(transaction=False) as pipe:
                for c in chunk:
                    pipe.get(keys.hour_of_week(self.prefix, text(c)))
                rows = await pipe.execute()
            for c, packed in zip(chunk, rows, strict=True):
                if packed is None:
                    continue
                values = struct.unpack(PROFILE_FORMAT, packed.ljust(PROFILE_BYTES, b"\0"))
                total = math.fsum(values[h] for h in wanted)
                if total > 0:
                    totals.append((total, text(c)))
        totals.sort(key=lambda x: (-x[0], x[1]))
        return [Ranked(c, i + 1, s * factor) for i, (s, c) in enumerate(totals[:k])]

    def _check(self, horizon: str, resolution: int) -> None:
        if horizon not in self.horizons:
            raise KeyError(f"unknown horizon {horizon!r}; configured: {self.names}")
        if resolution not in self.resolutions:
            raise KeyError(
                f"resolution {resolution} is not configured; configured: {self.resolutions}"
            )


__all__ = ["PROFILE_BYTES", "PROFILE_FORMAT", "CellDetails", "Ranked", "StoreReads"]
