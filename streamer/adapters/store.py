"""The Redis store: rankings, cell details, the event ledger.

Every write is one Lua script call (one atomic round trip per batch); the
scripts live in ``lua/`` and are documented key by key in the README.
All keys start with ``{namespace}:`` (the braces make the namespace a Redis
Cluster hash tag, so one engine's keys and scripts stay on one node).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, groupby
from typing import Any

import numpy as np
import numpy.typing as npt
from redis.asyncio.cluster import RedisCluster

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.store_connection import StoreError
from streamer.adapters.store_connection import _resp as _resp
from streamer.adapters.store_connection import is_cluster as is_cluster
from streamer.adapters.store_connection import pack_command as pack_command
from streamer.adapters.store_connection import publish_each as publish_each
from streamer.adapters.store_reads import PROFILE_BYTES as PROFILE_BYTES
from streamer.adapters.store_reads import PROFILE_FORMAT as PROFILE_FORMAT
from streamer.adapters.store_reads import CellDetails, Ranked, StoreReads
from streamer.core import decay
from streamer.core.aggregate import Batch, batch_of
from streamer.core.batching import Rows
from streamer.core.fastpath import encode_cells
from streamer.core.scoring import OFFSET_ONLY, SEP, UPSERT, StoreOp

_FAST_MIN = 8  # fewer new events go term by term: summing them costs more than it saves
_TOMBSTONE_BYTES = 9  # a ledger value "YYYYMMDD" US with no contribution: a cancel's
_MAX_PLANS = 8  # plans for one batch before giving up (each retry needs a concurrent change)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch did. ``cancelled``: cancels the ledger held by id;
    ``cancelled_by_fields``: cancels the ledger did not hold, taken out by
    the fields they carry; ``cancel_repeated``: cancels of an id already
    cancelled (a tombstone in the ledger); ``unknown_cancel``: cancels the
    store could not place (nothing changed); ``retracted``: versions an
    upsert replaced by id."""

    seq: int
    applied: int
    duplicate: int
    cancelled: int
    unknown_cancel: int
    stale: int
    retracted: int
    cells: int
    cancelled_by_fields: int = 0
    cancel_repeated: int = 0


@dataclass(slots=True)
class ApplyPlan:
    """A batch's script call, prepared by :meth:`Store.plan`."""

    ops: Sequence[StoreOp]
    day: str  # ledger day
    max_t: float | None  # newest event time (None: no event adds or takes out anything)
    min_t: float | None  # oldest event added
    fast: set[int]  # indexes of the ops summed per cell before the script
    newest_added: float | None = None  # newest event time added (the watermark's)
    args: list[Any] | None = None  # None: to be built at the store's landmarks
    rows: Rows | None = None  # upserts in columns (then ``fast`` is empty)
    row_fast: npt.NDArray[np.bool_] | None = None  # which rows go the fast way
    positions: Sequence[int] | None = None  # each op's place among the messages
    # set once the script call is wholly handed to the kernel (or the write
    # ended): a caller may then block the event loop preparing the next batch
    # while Redis runs this one
    sent: asyncio.Event = field(default_factory=asyncio.Event)


class Store(StoreReads):
    """Async access to one engine's state in Redis: the writes here, the
    reads in :class:`~streamer.adapters.store_reads.StoreReads`, keys and
    script calls in :class:`~streamer.adapters.store_connection.StoreConnection`."""

    # writes -----------------------------------------------------------
    async def apply(self, ops: Sequence[StoreOp], *, now_s: float) -> ApplyResult:
        """Apply a batch atomically (one script call, more only when the
        store changed under the plan): :meth:`plan` then :meth:`apply_plan`."""
        return await self.apply_plan(self.plan(ops, now_s=now_s))

    def plan(
        self,
        ops: Sequence[StoreOp],
        *,
        now_s: float,
        rows: Rows | None = None,
        positions: Sequence[int] | None = None,
    ) -> ApplyPlan:
        """The script call for a batch, prepared without Redis (a consumer
        plans the next batch while Redis runs the previous one).

        New events (upserts whose id occurs once in the batch) go the fast
        way when there are enough of them: summed per cell here, added to
        each cell once. The rest (cancels, repeated ids) are added term by
        term by the script. The script checks the plan (ids not yet in the
        ledger, offsets not yet applied, the landmarks the sums used) before
        writing anything, and answers ``retry`` if it no longer holds; those
        events then go the slow way.

        ``rows`` (upserts in columns, from the compiled kernel) come with
        ``positions``, each op's place among the batch's messages; then
        only rows go the fast way, and the others interleave with the ops
        by position when they go term by term.
        """
        times = [o.contribution.t_s for o in ops if o.contribution is not None]
        # times of what is added: a cancel's own time moves neither the
        # watermark nor the start of the history (its term must still fit
        # the landmarks, so ``times`` has it)
        added = [o.contribution.t_s for o in ops if o.op == UPSERT and o.contribution is not None]
        uses = Counter(o.id for o in ops if o.op != OFFSET_ONLY)
        row_fast: npt.NDArray[np.bool_] | None = None
        if rows is not None and len(rows):
            if positions is None or len(positions) != len(ops):
                raise ValueError("rows need the position of every op")
            distinct = set(rows.ids)
            if len(distinct) == len(rows.ids) and distinct.isdisjoint(uses):  # no id twice
                row_fast = np.ones(len(rows), dtype=np.bool_)
            else:
                uses.update(rows.ids)
                row_fast = np.fromiter((uses[i] == 1 for i in rows.ids), np.bool_, len(rows))
            times += [float(rows.batch.t_s.min()), float(rows.batch.t_s.max())]
            added += times[-2:]
            fast: set[int] = set()
        else:
            rows = None
            fast = {
                i
                for i, o in enumerate(ops)
                if o.op == UPSERT and o.contribution is not None and uses[o.id] == 1
            }
        plan = ApplyPlan(
            ops,
            _day(now_s),
            max(times) if times else None,
            min(added) if added else None,
            fast if len(fast) >= _FAST_MIN else set(),
            rows=rows,
            row_fast=row_fast,
            positions=positions,
            newest_added=max(added) if added else None,
        )
        if row_fast is not None and int(row_fast.sum()) < _FAST_MIN:
            row_fast[:] = False
        landmarks = self._known_landmarks
        if landmarks is not None and not (
            plan.max_t is not None
            and any(
                decay.needs_rebase(plan.max_t, self.horizons[n], landmarks[n]) for n in self.names
            )
        ):
            plan.args = self._apply_args(plan, landmarks)
        return plan

    async def apply_plan(self, plan: ApplyPlan) -> ApplyResult:
        """Run a :meth:`plan` (re-planning when the store changed under it)."""
        if not plan.ops and plan.rows is None:
            seq = await self.seq()
            return ApplyResult(seq, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        for _ in range(_MAX_PLANS):
            if plan.args is None:
                # (the script reads the stored landmarks itself; these seed a new store)
                landmarks = await (
                    self.ensure_landmarks(plan.max_t)
                    if plan.max_t is not None
                    else self.landmarks(time.time())
                )
                plan.args = self._apply_args(plan, landmarks)
            try:
                r = await self._run(self._apply, plan.args, plan.sent)
            finally:
                plan.sent.set()
            if text(r[0]) != "retry":
                return ApplyResult(*(int(x) for x in r))
            plan.args = None
            why, rest = text(r[1]), [text(x) for x in r[2:]]
            ops = plan.ops
            rows, row_fast = plan.rows, plan.row_fast
            if why == "known":
                known = set(rest)
                plan.fast = {i for i in plan.fast if ops[i].id not in known}
                if rows is not None and row_fast is not None:
                    row_fast &= np.fromiter((i not in known for i in rows.ids), np.bool_, len(rows))
            elif why == "stale":
                applied = {src: int(off) for src, off in zip(rest[::2], rest[1::2], strict=True)}
                plan.fast = {i for i in plan.fast if ops[i].offset > applied.get(ops[i].source, -1)}
                if rows is not None and row_fast is not None:
                    row_fast &= rows.offsets > np.fromiter(
                        (applied.get(src, -1) for src in rows.sources), np.int64, len(rows)
                    )
            else:  # landmarks moved (a re-base by another worker)
                self._known_landmarks = None
        raise StoreError(f"the store kept changing under one batch ({_MAX_PLANS} plans)")

    def _apply_args(self, plan: ApplyPlan, landmarks: dict[str, int]) -> list[Any]:
        if plan.rows is not None:
            return self._apply_args_rows(plan, plan.rows, landmarks)
        ops, fast, day = plan.ops, plan.fast, plan.day
        slow_args: list[Any] = []
        fast_ops: list[StoreOp] = []
        for i, o in enumerate(ops):
            if i in fast:
                fast_ops.append(o)
                continue
            slow_args += _slow_args(o)
        batch = None
        spans: dict[str, list[int]] = {}
        if fast_ops:
            batch = batch_of([o.contribution for o in fast_ops if o.contribution is not None])
            for o in fast_ops:
                if o.source:
                    span = spans.setdefault(o.source, [o.offset, o.offset])
                    span[0] = min(span[0], o.offset)
                    span[1] = max(span[1], o.offset)
        prefix = day + SEP
        return self._args(
            plan,
            landmarks,
            slow_args,
            [o.id for o in fast_ops],
            [prefix + o.contribution.packed() for o in fast_ops if o.contribution is not None],
            batch,
            spans,
        )

    def _apply_args_rows(self, plan: ApplyPlan, rows: Rows, landmarks: dict[str, int]) -> list[Any]:
        """The same, for a plan whose upserts come as rows: those not fast
        join the ops term by term, in message order."""
        fast = plan.row_fast if plan.row_fast is not None else np.zeros(len(rows), np.bool_)
        positions = plan.positions or []
        slow = [(p, o) for p, o in zip(positions, plan.ops, strict=True)]
        if not fast.all():
            slow += [(int(rows.position[k]), rows.op(k)) for k in np.flatnonzero(~fast).tolist()]
        slow.sort(key=lambda po: po[0])
        slow_args: list[Any] = []
        for _, o in slow:
            slow_args += _slow_args(o)
        picked = rows if fast.all() else rows.take(fast)
        spans: dict[str, list[int]] = {}
        start = 0
        for src, run in groupby(picked.sources):  # runs of one partition
            end = start + len(list(run))
            if src:
                lo, hi = int(picked.offsets[start:end].min()), int(picked.offsets[start:end].max())
                span = spans.setdefault(src, [lo, hi])
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
            start = end
        prefix = plan.day + SEP
        return self._args(
            plan,
            landmarks,
            slow_args,
            picked.ids,
            [prefix + p for p in picked.packed],
            picked.batch if len(picked) else None,
            spans,
        )

    def _args(
        self,
        plan: ApplyPlan,
        landmarks: dict[str, int],
        slow_args: list[Any],
        fast_ids: list[str],
        fast_values: list[str],
        batch: Batch | None,
        spans: dict[str, list[int]],
    ) -> list[Any]:
        labels: list[str] = []
        cells: list[tuple[str, bytes]] = []
        if batch is not None:
            labels, cells = encode_cells(
                batch,
                resolutions=self.resolutions,
                horizons=self.horizons,
                landmarks=landmarks,
                profile_horizon=self.profile_horizon,
            )
        header = self._header(
            landmarks,
            day=plan.day,
            max_t=plan.max_t or 0.0,
            **({"min_t": plan.min_t} if plan.min_t is not None else {}),
            **({"wm_t": plan.newest_added or 0.0} if plan.newest_added != plan.max_t else {}),
            nslow=len(slow_args) // 5,
            nfast=len(fast_ids),
            fsrc=[[src, lo, hi] for src, (lo, hi) in spans.items()],
            labels=labels,
        )
        return [header, *slow_args, *fast_ids, *fast_values, *chain.from_iterable(cells)]

    async def merge(
        self,
        labels: list[str],
        cells: list[tuple[str, bytes]],
        landmarks: dict[str, int],
        max_t: float,
        min_t: float | None = None,
    ) -> int:
        """Merge pre-aggregated cells (:func:`streamer.core.aggregate.encode_cells`)
        computed at ``landmarks`` (events from ``min_t`` to ``max_t``); returns seq."""
        extra = {"min_t": min_t} if min_t is not None else {}
        header = self._header(landmarks, max_t=max_t, labels=labels, **extra)
        r = await self._run(self._merge, [header, *(x for cell in cells for x in cell)])
        return int(r[0])

    async def ensure_landmarks(self, newest_t_s: float) -> dict[str, int]:
        """Landmarks fit for events up to ``newest_t_s`` (re-basing if needed)."""
        landmarks = await self.landmarks(newest_t_s)
        if any(decay.needs_rebase(newest_t_s, self.horizons[n], landmarks[n]) for n in self.names):
            await self.rebase(newest_t_s)
            landmarks = await self.landmarks(newest_t_s)
        return landmarks

    async def rebase(self, newest_t_s: float) -> int:
        """Move each horizon's landmark to ``newest_t_s`` (exact; rare)."""
        landmarks = await self.landmarks(newest_t_s)
        new_k = [decay.landmark_for(newest_t_s, self.horizons[n]) for n in self.names]
        header = self._header(landmarks, op="rebase", res=self.resolutions, new_k=new_k)
        r = await self._run(self._maintain, [header])
        return int(r[0])

    async def prune(self, now_s: float) -> tuple[int, int]:
        """Drop cells whose score at ``now_s`` is below ``prune_below`` from
        each ranking; delete cells that left every ranking."""
        landmarks = await self.landmarks(now_s)
        thr = [  # JSON has no infinity: the largest double stands for it
            min(
                decay.stored_threshold(self.prune_below, now_s, self.horizons[n], landmarks[n]),
                sys.float_info.max,
            )
            for n in self.names
        ]
        header = self._header(landmarks, op="prune", res=self.resolutions, thr=thr)
        r = await self._run(self._maintain, [header])
        return int(r[0]), int(r[1])

    async def trim_ledger(self, now_s: float, *, chunk: int = 5000) -> int:
        """Forget ledger entries older than the retention; returns how many."""
        days = await self.client.smembers(keys.ledger_days(self.prefix))
        cutoff = _day(now_s - self.ledger_retention_s)
        landmarks = await self.landmarks(now_s)
        forgotten = 0
        for raw in sorted(days):
            day = raw.decode() if isinstance(raw, bytes) else str(raw)
            if day >= cutoff:
                continue
            while True:
                header = self._header(
                    landmarks, op="trim", res=self.resolutions, day=day, count=chunk
                )
                r = await self._run(self._maintain, [header])
                forgotten += int(r[0])
                if int(r[1]) == 0:
                    break
                await asyncio.sleep(0)
        return forgotten

    async def ledger_holds(
        self, ids: Sequence[str], *, chunk: int = 20_000
    ) -> npt.NDArray[np.bool_]:
        """Whether the ledger holds each id's contribution (a tombstone, left
        by a cancel, holds none)."""
        out = np.zeros(len(ids), dtype=np.bool_)
        key = keys.ledger(self.prefix)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            if isinstance(self.client, RedisCluster):
                values = await self.client.hmget(key, list(part))
            else:
                values = await self._send_packed(pack_command([b"HMGET", key, *part]))
            # "YYYYMMDD" US, then the contribution: a tombstone is 9 bytes
            out[start : start + len(part)] = [
                v is not None and len(v) > _TOMBSTONE_BYTES for v in values
            ]
        return out


def _slow_args(o: StoreOp) -> list[Any]:
    """An op's five arguments for the script's term-by-term part."""
    packed = o.contribution.packed() if o.contribution is not None else ""
    return [o.op, o.id, packed, o.source, o.offset if o.source else ""]


def _day(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y%m%d")


__all__ = [
    "ApplyPlan",
    "ApplyResult",
    "CellDetails",
    "EngineClock",
    "Ranked",
    "Store",
    "StoreError",
    "StoreOp",
]


class EngineClock:
    """``now`` for decay and pruning: the wall clock (``mode = "wall"``), or
    the newest event time the store applied (``"event"``, for replays of old
    data). Calling it is cheap; :meth:`refresh` reads the store."""

    def __init__(self, store: Store, mode: str) -> None:
        self.store = store
        self.mode = mode
        self._t = time.time()

    def __call__(self) -> float:
        return time.time() if self.mode == "wall" else self._t

    async def refresh(self) -> float:
        """Re-read the watermark (event mode) and return ``now``."""
        if self.mode == "event":
            raw = await self.store.client.hget(keys.meta(self.store.prefix), "watermark")
            if raw is not None:
                self._t = float(raw)
        return self()
