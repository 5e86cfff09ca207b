"""What the read routes keep between requests until the store changes (its
sequence number moves on): ``/v1/hotspots`` answers, rankings' totals and
families' rankings."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.store import Store
from streamer.core import decay

KEPT = 256  # entries a cache holds before it is emptied


@dataclass(slots=True)
class Listing:
    """A ``/v1/hotspots`` answer for one query and sequence number, made at
    ``at_s``: its items (scores decayed to ``at_s``), the ranking's total,
    each item's hexagon encoded once (a third of the encoding's work), and,
    once a JSON request came at ``at_s`` itself (the event clock moves by
    steps), the JSON answer for that instant."""

    at_s: float
    items: list[dict[str, Any]]
    total: float
    polygons: list[orjson.Fragment]
    body: bytes | None = None


class Listings:
    """``/v1/hotspots`` answers per query and sequence number."""

    def __init__(self) -> None:
        self._kept: dict[tuple[Any, ...], Listing] = {}

    def get(self, key: tuple[Any, ...]) -> Listing | None:
        return self._kept.get(key)

    def put(self, key: tuple[Any, ...], listing: Listing) -> None:
        if len(self._kept) > KEPT:
            self._kept.clear()
        self._kept[key] = listing


class RankingTotals:
    """Sums of rankings' stored scores, per sequence number."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._totals: dict[tuple[str, int, int], float] = {}

    async def total(self, horizon: str, resolution: int, seq: int, at_s: float) -> float:
        """Sum of the ranking's stored scores (cached per sequence number),
        decayed to ``at_s``."""
        key = (horizon, resolution, seq)
        stored = self._totals.get(key)
        landmark = (await self.store.landmarks()).get(horizon, 0)
        if stored is None:
            rows: Any = await self.store.client.zrange(
                keys.rank(self.store.prefix, horizon, resolution), 0, -1, withscores=True
            )
            stored = math.fsum(float(v) for _, v in rows)
            if len(self._totals) > KEPT:
                self._totals.clear()
            self._totals[key] = stored
        return stored * decay.decay_factor(at_s, self.store.horizons[horizon], landmark)


FamilyKey = tuple[str, int, str, int]  # horizon, resolution, family, sequence number


class FamilyRankings:
    """A family's ranking (stored scores, best first), kept for the newest
    sequence number only."""

    def __init__(self) -> None:
        self._kept: dict[FamilyKey, list[tuple[float, str]]] = {}

    async def get(
        self, key: FamilyKey, read: Callable[[], Awaitable[list[tuple[float, str]]]]
    ) -> list[tuple[float, str]]:
        """The ranking of ``key``, from ``read`` when not kept."""
        if key not in self._kept:
            self._kept.clear()  # (the sequence moved on)
            self._kept[key] = await read()
        return self._kept[key]
