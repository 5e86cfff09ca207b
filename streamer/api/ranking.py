"""What ``/v1/hotspots`` lists: the ranking's candidates (by a family's
score when asked), those picked by the box and the minimum count, their
shares, trends and peak hours, kept per query and sequence number and
rescaled as scores decay."""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import orjson
from fastapi.responses import Response

from streamer.adapters.store import CellDetails, Ranked, Store
from streamer.api.cache import FamilyRankings, Listing
from streamer.api.context import Api
from streamer.api.geojson import feature_collection, in_box, polygon
from streamer.api.params import HotspotsQuery, parse_bbox
from streamer.core import decay

Box = tuple[float, float, float, float]  # west, south, east, north (degrees)
Picked = list[tuple[Ranked, CellDetails]]


class RankingMoved(Exception):
    """The store changed while a ranking was read page by page."""


async def pages(
    store: Store, horizon: str, resolution: int, at_s: float, limit: int
) -> AsyncGenerator[list[Ranked], None]:
    """A ranking best first, in pages that grow fourfold (from ``4 * limit``,
    at least 100), all of one snapshot: :class:`RankingMoved` when the store
    changed in between."""
    start, count, first = 0, max(4 * limit, 100), None
    while True:
        seq, page = await store.top_page(horizon, resolution, start, count, at_s)
        if first is None:
            first = seq
        elif seq != first:
            raise RankingMoved
        if page:
            yield page
        if len(page) < count:  # the end, or the tail below prune_below
            return
        start += count
        count *= 4


async def _chunks(rows: list[Ranked], step: int) -> AsyncGenerator[list[Ranked], None]:
    for start in range(0, len(rows), step):
        yield rows[start : start + step]


def peak_hours(profile: Sequence[float], n: int = 3) -> list[int]:
    """The ``n`` hours of the week with the most weight (Monday 00h = 0).

    >>> peak_hours([0.0] * 10 + [5.0, 1.0] + [0.0] * 156, 2)
    [10, 11]
    """
    best = heapq.nlargest(n, range(len(profile)), key=profile.__getitem__)
    return [h for h in best if profile[h] > 0]


class Hotspots:
    """``/v1/hotspots``'s answers, over the routes' shared :class:`Api`."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.store = api.store
        self.family_rankings = FamilyRankings()

    async def answer(self, q: HotspotsQuery) -> Response:
        """The answer to ``q``: JSON, or GeoJSON (``format=geojson``)."""
        api, store = self.api, self.store
        horizon, resolution, limit, family = q.horizon, q.resolution, q.limit, q.family
        api.check_grid(horizon, resolution, family)
        box = parse_bbox(q.bbox)
        at_s = await api.now()
        seq = await api.sequence()
        # Until the store changes (seq), the list, its shares, trends, counts
        # and peak hours stay as they are, and every score decays by one
        # factor: the answer is kept per query and seq, and rescaled.
        key = (horizon, resolution, limit, family, box, seq)
        kept = api.listings.get(key)
        if kept is None:
            at_ref, template, total_ref = await self.items(
                horizon, resolution, limit, family, box, at_s, seq
            )
            polygons = [orjson.Fragment(orjson.dumps(item["polygon"])) for item in template]
            kept = Listing(at_ref, template, total_ref, polygons)
            api.listings.put(key, kept)
        as_json = q.format == "json"
        if as_json and at_s == kept.at_s and kept.body is not None:
            # the same query, sequence number and instant: the same answer
            return Response(kept.body, media_type="application/json")
        factor = 2.0 ** (-(at_s - kept.at_s) / store.horizons[horizon])
        total = kept.total * factor
        items = [
            {
                **item,
                "score": item["score"] * factor,
                "families": {f: v * factor for f, v in item["families"].items()},
                "polygon": encoded if as_json else item["polygon"],
            }
            for item, encoded in zip(kept.items, kept.polygons, strict=True)
        ]
        body = {
            "sequence": seq,
            "at": at_s,
            "horizon": horizon,
            "resolution": resolution,
            "family": family,
            "total": total,
            "hotspots": items,
        }
        if not as_json:
            return feature_collection(items, {k: v for k, v in body.items() if k != "hotspots"})
        content = orjson.dumps(body)
        if at_s == kept.at_s:  # (factor 1.0 exactly: x * 1.0 == x)
            kept.body = content
        return Response(content, media_type="application/json")

    async def items(
        self,
        horizon: str,
        resolution: int,
        limit: int,
        family: str | None,
        box: Box | None,
        at_s: float,
        seq: int,
    ) -> tuple[float, list[dict[str, Any]], float]:
        """``/v1/hotspots``'s items and the ranking's total, decayed to ``at_s``."""
        api = self.api
        filtered = box is not None or api.settings.api.min_count > 0
        picked: Picked | None = None
        if family is None and filtered:
            # down the ranking page by page until enough are picked, rather
            # than all of it (0.9 s at 175 k cells); again if it moved meanwhile
            for _ in range(3):
                with contextlib.suppress(RankingMoved):
                    paged = pages(self.store, horizon, resolution, at_s, limit)
                    picked = await self._pick(paged, box, limit, at_s)
                    break
        family_total = 0.0
        if picked is None:
            rows = await self.ranked(horizon, resolution, family, at_s, seq, limit, filtered)
            if family is not None:  # (a family's ranking is read whole)
                family_total = math.fsum(r.score for r in rows)
            picked = await self._pick(_chunks(rows, max(limit * 2, 50)), box, limit, at_s)
        # share and total are of the ranking listed: a family's own when asked
        total = (
            family_total
            if family is not None
            else await api.totals.total(horizon, resolution, seq, at_s)
        )
        trend = await self._trends(horizon, resolution, seq, at_s, picked)
        items: list[dict[str, Any]] = []
        for rank, (r, d) in enumerate(picked, start=1):
            score = r.score
            items.append(
                {
                    "cell": r.cell,
                    "rank": rank,
                    "score": score,
                    "share": score / total if total > 0 else 0.0,
                    "trend": trend.get(r.cell),
                    "count": d.count,
                    "families": {f: v.get(horizon, 0.0) for f, v in d.family_scores.items()},
                    "peak_hours": peak_hours(d.hour_of_week),
                    "polygon": polygon(r.cell),
                }
            )
        return at_s, items, total

    async def _pick(
        self, chunks: AsyncGenerator[list[Ranked], None], box: Box | None, limit: int, at_s: float
    ) -> Picked:
        """The first ``limit`` candidates in the box with at least
        ``api.min_count`` events, with their details."""
        min_count = self.api.settings.api.min_count
        picked: Picked = []
        async with contextlib.aclosing(chunks):
            async for rows in chunks:
                chunk = rows if box is None else [r for r in rows if in_box(r.cell, box)]
                details = await self.store.cells([r.cell for r in chunk], at_s)
                for r in chunk:
                    d = details.get(r.cell)
                    if d is not None and d.count >= min_count:
                        picked.append((r, d))
                        if len(picked) >= limit:
                            return picked
        return picked

    async def _trends(
        self, horizon: str, resolution: int, seq: int, at_s: float, picked: Picked
    ) -> dict[str, float | None]:
        """Each picked cell's share of the next shorter horizon over its
        share of ``horizon`` (None when it has none of the longer)."""
        shorter = self.shorter_horizon(horizon)
        trend: dict[str, float | None] = {}
        if shorter is not None and picked:
            # (the cell's all-crime trend, in a family view too)
            totals = self.api.totals
            long_total = await totals.total(horizon, resolution, seq, at_s)
            short_total = await totals.total(shorter, resolution, seq, at_s)
            for r, d in picked:
                share = d.scores.get(horizon, 0.0) / long_total if long_total > 0 else 0.0
                short_share = d.scores.get(shorter, 0.0) / short_total if short_total > 0 else 0.0
                trend[r.cell] = short_share / share if share > 0 else None
        return trend

    def shorter_horizon(self, horizon: str) -> str | None:
        store = self.store
        shorter = [n for n in store.names if store.horizons[n] < store.horizons[horizon]]
        return max(shorter, key=lambda n: store.horizons[n]) if shorter else None

    async def ranked(
        self,
        horizon: str,
        resolution: int,
        family: str | None,
        at_s: float,
        seq: int,
        limit: int,
        filtered: bool,
    ) -> list[Ranked]:
        """Candidates best first: the top ``limit`` when nothing filters
        them, else the whole ranking; by a family's score when asked (the
        whole ranking read once per sequence number)."""
        store = self.store
        if family is None:
            return await store.top(horizon, resolution, 10**9 if filtered else limit, at_s)

        async def read() -> list[tuple[float, str]]:
            return await self.by_family(horizon, resolution, family, at_s)

        ranking = await self.family_rankings.get((horizon, resolution, family, seq), read)
        landmark = (await store.landmarks()).get(horizon, 0)
        factor = decay.decay_factor(at_s, store.horizons[horizon], landmark)
        floor = store.prune_below
        return [
            Ranked(c, i + 1, v * factor) for i, (v, c) in enumerate(ranking) if v * factor >= floor
        ]

    async def by_family(
        self, horizon: str, resolution: int, family: str, at_s: float
    ) -> list[tuple[float, str]]:
        """Cells by their stored (undecayed) score for one family."""
        store = self.store
        rows = await store.ranking(horizon, resolution, at_s)
        landmark = (await store.landmarks()).get(horizon, 0)
        undo = 1.0 / decay.decay_factor(at_s, store.horizons[horizon], landmark)
        scored: list[tuple[float, str]] = []
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            details = await store.cells([r.cell for r in chunk], at_s)
            for r in chunk:
                d = details.get(r.cell)
                v = d.family_scores.get(family, {}).get(horizon, 0.0) if d else 0.0
                if v > 0:
                    scored.append((v * undo, r.cell))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return scored
