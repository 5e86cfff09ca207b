"""The alert detector's tick (leader only): Redis in, alert notices out.

Each tick takes the cells the store's writes marked in ``{P}:touched``,
reads them (and, once, every cell of the alert resolution; after that only
cells it has not seen: counts decay exactly, so a cell nobody wrote to need
not be read again), runs :class:`streamer.core.emerging.Detector`, and
writes its notices, state and daily bins in one transaction: the stream
``{P}:alerts``, the hash ``{P}:alerts:open`` and a message on
``{P}:alerts:live`` (docs/alerts.md). Delivery to Kafka and webhooks reads
the stream (``adapters/alert_delivery.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.alert_delivery import ensure_groups
from streamer.adapters.decode import text
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import CellDetails, Store, publish_each
from streamer.core.emerging import AlertChange, CellCounts, DayBins, Detector, DetectorConfig
from streamer.core.weights import WeightTable
from streamer.settings import Settings

log = logging.getLogger("hotspots.alerts")

Clock = Callable[[], float]
_READ_CHUNK = 1000


def detector_config(settings: Settings) -> DetectorConfig:
    """The detector's settings."""
    a = settings.alerts
    return DetectorConfig(
        short_s=settings.horizons[a.short],
        long_s=settings.horizons[a.baseline],
        false_alerts_per_day=a.false_alerts_per_day,
        min_events=a.min_events,
        prior_s=a.prior,
        area_weight=a.area_weight,
        keep_ratio=a.keep_ratio,
        escalate_ratio=a.escalate_ratio,
        clear_quiet_s=a.clear_quiet,
        pattern_days=a.pattern_days,
        pattern_p=a.pattern_p,
        timezone=settings.grid.timezone,
        short_name=a.short,
        baseline_name=a.baseline,
        resolution=a.resolution,
    )


def counts_of(details: CellDetails, weights: WeightTable, short: str, long: str) -> CellCounts:
    """A cell's event counts from its per-category harm sums: each category's
    sum divided by its weight (an event counts 1; a proactive one its origin
    factor). Categories that never count are left out."""
    s = lo = 0.0
    total = 0
    categories: dict[str, float] = {}
    for name, sums in details.category_scores.items():
        weight = weights.weigh(name, "reported").weight
        if weight <= 0:
            continue
        short_count = sums[short] / weight
        s += short_count
        lo += sums[long] / weight
        total += details.category_counts.get(name, 0)
        if short_count > 0:
            categories[name] = short_count
    return CellCounts(0.0, s, lo, details.last_event_s, total, categories)


async def write_notices(
    store: Store,
    notices: Sequence[AlertChange],
    stream_max: int,
    also: Callable[[Any], None] | None = None,
) -> None:
    """Notices to the alerts stream, the open-alert hash (a closing notice
    takes its alert out) and ``also``'s writes, in one transaction; then the
    live messages, which name their stream entries."""
    client = store.client
    open_key = keys.open_alerts(store.prefix)
    closed = [n.alert["id"] for n in notices if n.kind in ("cleared", "merged")]
    async with client.pipeline(transaction=True) as pipe:
        if also is not None:
            also(pipe)
        if closed:
            pipe.hdel(open_key, *closed)
        first = len(pipe)  # the XADDs' replies follow
        for notice in notices:
            body = orjson.dumps(notice.alert)
            pipe.xadd(
                keys.alert_notices(store.prefix),
                {"kind": notice.kind, "id": notice.alert["id"], "alert": body},
                maxlen=stream_max,
                approximate=True,
            )
        for notice in notices:
            if notice.kind not in ("cleared", "merged"):
                pipe.hset(open_key, notice.alert["id"], orjson.dumps(notice.alert))
        results = await pipe.execute()
    # a display that misses a live message gets the alert from its next snapshot
    if notices:
        ids = [text(x) for x in results[first : first + len(notices)]]
        messages = [
            orjson.dumps(
                {"type": "alert", "kind": n.kind, "stream_id": stream_id, "alert": n.alert}
            )
            for n, stream_id in zip(notices, ids, strict=True)
        ]
        await publish_each(client, keys.alert_channel(store.prefix), messages)


class Alerter:
    """One detector per worker; only the leader's ticks."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        weights: WeightTable,
        now: Clock,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.weights = weights
        self.now = now
        self.metrics = metrics
        self.detector: Detector | None = None
        self._token: str | None = None  # the state version this detector wrote last

    async def tick(self) -> list[AlertChange]:
        """One detection round; returns the notices written."""
        store, client = self.store, self.store.client
        at_s = self.now()
        state_raw = await client.get(keys.alert_detector_state(self.store.prefix))
        state = orjson.loads(state_raw) if state_raw else {}
        if self.detector is None or state.get("token") != self._token:
            # first tick here, or another worker ran ticks since ours: start over
            await self._load(state, at_s)
        detector = self.detector
        assert detector is not None
        async with client.pipeline(transaction=True) as pipe:
            # as a bare command: redis-py's cluster transaction hands SMEMBERS'
            # reply callback a `keys` argument it does not take (redis-py 8.1)
            pipe.execute_command("SMEMBERS", keys.touched(store.prefix))
            pipe.delete(keys.touched(store.prefix))
            pipe.hget(keys.meta(store.prefix), "first_t")
            touched_raw, _, first_t = await pipe.execute()
        if first_t is not None:
            detector.history_from_s = float(first_t)
        touched = sorted(text(c) for c in touched_raw)
        detector.update(await self._read(touched, at_s), at_s)
        needed = detector.needed(touched)
        if needed:
            found = await self._read(sorted(needed), at_s)
            detector.update({c: v for c, v in found.items() if v is not None}, at_s)
        area_at = detector.area_at_s
        if area_at is None or abs(at_s - area_at) >= self.settings.alerts.area_refresh:
            detector.refresh_area(at_s)
        notices = detector.step(at_s)
        await self._write(notices, touched, at_s)
        if self.metrics is not None:
            self.metrics.alert_tests.inc(detector.tested)
            self.metrics.alerts_open.set(len(detector.alerts))
            for notice in notices:
                self.metrics.alert_notices.labels(notice.kind).inc()
        for notice in notices:
            a = notice.alert
            log.info(
                "alert_%s id=%s cells=%d observed=%.2f expected=%.3g p=%.3g pattern=%s",
                notice.kind,
                a["id"],
                len(a["cells"]),
                a["observed"],
                a["expected"],
                a["p_value"],
                a["pattern"],
            )
        return notices

    async def _load(self, state: dict[str, Any], at_s: float) -> None:
        """A fresh detector: its alerts and bins from Redis, every cell of
        the alert resolution from the store."""
        await ensure_groups(self.store, self.settings)
        detector = Detector(detector_config(self.settings))
        detector.restore(state)
        days = self.settings.alerts.pattern_days
        raw = await self.store.client.hgetall(keys.alert_daily_counts(self.store.prefix))
        detector.bins = {text(c): DayBins.decode(text(v), days) for c, v in raw.items()}
        res = self.settings.alerts.resolution
        members = await self.store.client.zrange(
            keys.rank(self.store.prefix, self.settings.alerts.baseline, res), 0, -1
        )
        cells = sorted(text(c) for c in members)
        found = await self._read(cells, at_s)
        detector.update({c: v for c, v in found.items() if v is not None}, at_s, initial=True)
        detector.fresh.clear()  # what arrived unseen is binned, but opens nothing by itself
        detector.refresh_area(at_s)
        self.detector = detector
        log.info("alert_detector_loaded cells=%d open=%d", len(cells), len(detector.alerts))

    async def _read(self, cells: Iterable[str], at_s: float) -> dict[str, CellCounts | None]:
        a = self.settings.alerts
        out: dict[str, CellCounts | None] = {}
        chunk: list[str] = []
        for cell in cells:
            chunk.append(cell)
            if len(chunk) >= _READ_CHUNK:
                out.update(await self._read_chunk(chunk, at_s, a.short, a.baseline))
                chunk = []
        if chunk:
            out.update(await self._read_chunk(chunk, at_s, a.short, a.baseline))
        return out

    async def _read_chunk(
        self, cells: list[str], at_s: float, short: str, long: str
    ) -> dict[str, CellCounts | None]:
        details = await self.store.cells(cells, at_s)
        out: dict[str, CellCounts | None] = {}
        for cell in cells:
            d = details.get(cell)
            if d is None:
                out[cell] = None
                continue
            counts = counts_of(d, self.weights, short, long)
            counts.at_s = at_s
            out[cell] = counts
        return out

    async def _write(self, notices: list[AlertChange], touched: list[str], at_s: float) -> None:
        detector = self.detector
        assert detector is not None
        token = f"{time.time():.6f}-{id(self):x}"
        state = detector.state()
        state["token"] = token
        state["at"] = at_s
        state["threshold"] = detector.threshold()
        state["events_per_day"] = detector.events_per_day
        open_now = {a.id: detector.as_dict(a) for a in detector.alerts.values()}
        bins = {c: detector.bins[c].encode() for c in touched if c in detector.bins}

        def also(pipe: Any) -> None:
            pipe.set(keys.alert_detector_state(self.store.prefix), orjson.dumps(state))
            if bins:
                pipe.hset(keys.alert_daily_counts(self.store.prefix), mapping=bins)
            if open_now:
                pipe.hset(
                    keys.open_alerts(self.store.prefix),
                    mapping={k: orjson.dumps(v) for k, v in open_now.items()},
                )

        await write_notices(self.store, notices, self.settings.alerts.stream_max, also)
        self._token = token
