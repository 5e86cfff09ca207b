"""What the routes share, built once by :func:`streamer.api.build`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from streamer.adapters.store import EngineClock, Store
from streamer.api.auth import Gate, Guards
from streamer.api.cache import Listings, RankingTotals
from streamer.api.errors import cut, invalid
from streamer.api.hub import Hub
from streamer.api.metrics import ApiMetrics
from streamer.core.area import Area
from streamer.settings import Settings


@dataclass
class Api:
    """What the routes share: the settings and the store, the metrics and
    the push hub, the tokens, the area (its outline as the display draws
    it, and the study area ``/v1/risk`` reports on), the configured
    families, the engine's clock and the read caches."""

    settings: Settings
    store: Store
    metrics: ApiMetrics
    hub: Hub
    gate: Gate
    guards: Guards
    boundary: bytes  # the outline, GeoJSON
    area: Area | None
    families: list[str]
    clock: EngineClock
    totals: RankingTotals
    listings: Listings = field(default_factory=Listings)
    _clock_read: float = -1.0
    _clock_reading: asyncio.Future[float] | None = None

    async def now(self) -> float:
        """``now`` for decay: the wall clock, or (``time.clock = "event"``,
        replays of old data) the newest event time the store applied, read
        at most twice a second."""
        if self.clock.mode == "wall":
            return time.time()
        if time.monotonic() - self._clock_read >= 0.5:
            self._clock_read = time.monotonic()
            self._clock_reading = asyncio.ensure_future(self.clock.refresh())
        if self._clock_reading is not None and not self._clock_reading.done():
            # callers meanwhile wait for the same read: until the first one
            # ends, the clock holds the wall time, not an event time
            return await asyncio.shield(self._clock_reading)
        return self.clock()

    async def sequence(self) -> int:
        return await self.store.seq()

    def check_grid(self, horizon: str, resolution: int, family: str | None = None) -> None:
        """A 422 unless the horizon, resolution and family are configured."""
        store, families = self.store, self.families
        if horizon not in store.horizons:
            message = f"unknown horizon {cut(horizon)}; configured: {store.names}"
            raise invalid("query", "horizon", message, horizon)
        if resolution not in store.resolutions:
            message = f"resolution {resolution} is not configured; configured: {store.resolutions}"
            raise invalid("query", "resolution", message, resolution)
        if family is not None and family not in families:
            message = f"unknown family {cut(family)}; configured: {families}"
            raise invalid("query", "family", message, family)
