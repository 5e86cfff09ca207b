"""The live worker: faust for lifecycle, leadership, timers and web views;
batch consumers (``adapters/consumer.py``) for the event topics and the
patrol pings.

faust's per-event stream path is the bottleneck of a 100 k events/s worker
(it moved ~14 k msgs/s here), so no faust agent reads the event topics. faust
runs the worker (signals, graceful stop), elects one leader per group for
the timers, and serves ``/metrics``, ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from mode import Service

from streamer import app
from streamer.adapters import keys
from streamer.adapters.alerter import Alerter
from streamer.adapters.consumer import BatchConsumer, ConsumerOptions
from streamer.adapters.event_sink import EventSink
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.patrol_worker import DosageTicker, PingSink
from streamer.adapters.patrols import Dosage
from streamer.adapters.publisher import Maintainer, Publisher
from streamer.adapters.store import EngineClock, Store
from streamer.settings import Settings

log = logging.getLogger("hotspots.worker")
timer_log = logging.getLogger("hotspots.timers")


_LEASE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass
class Lease:
    """A Redis lease (atomic take-or-renew) that keeps leader-only timers
    exclusive even while faust's leadership changes hands in a rebalance."""

    store: Store
    holder: str
    key: str  # keys.leader_lease or keys.delivery_lease
    ttl_ms: int = 15_000

    async def acquire(self) -> bool:
        script = self.store.client.register_script(_LEASE)
        got = await script(keys=[self.key], args=[self.holder, self.ttl_ms])
        return bool(got)


def new_worker_id() -> str:
    """A new worker's id: host, process and a random suffix (unique even
    where a container gives every process the same pid)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def state_dir(settings: Settings, worker: str) -> str:
    """faust's data directory for the worker ``worker``: ``worker.state_dir``
    when set, otherwise one of its own under the temp dir, named by the
    consumer group and the worker id, so that workers on one host never
    share one."""
    if settings.worker.state_dir:
        return settings.worker.state_dir
    name = _UNSAFE.sub("_", f"hotspots-faust-{settings.kafka.group}-{worker}")
    return str(Path(tempfile.gettempdir()) / name)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class _Stopper(Service):
    """Runs a coroutine when the worker stops."""

    def __init__(self, stop: Callable[[], Any], **kwargs: Any) -> None:
        self._stop = stop
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        await self._stop()


class BatchService(Service):
    """Runs the batch consumer inside the faust worker; on stop it finishes
    the batch in hand and commits before the worker exits."""

    def __init__(self, consumer: BatchConsumer, **kwargs: Any) -> None:
        self.consumer = consumer
        self._loop_task: asyncio.Task[None] | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.consumer.start()
        self._loop_task = asyncio.ensure_future(self.consumer.run())

    async def on_stop(self) -> None:
        await self.consumer.stop()
        if self._loop_task is not None:
            await self._loop_task
        await self.consumer.close()


def build(
    settings: Settings,
    *,
    web_port: int | None = None,
    options: ConsumerOptions | None = None,
    worker_id: str | None = None,
) -> tuple[faust.App, BatchConsumer, WorkerMetrics]:
    """The faust app of one worker, its batch consumer and its metrics."""
    metrics = WorkerMetrics()
    store = app.store(settings)
    parts = app.core(settings)
    holder = worker_id or new_worker_id()
    consumer = _event_consumer(settings, store, parts, metrics, options)
    fapp = _control_app(settings, holder, web_port)
    cast(Any, fapp).service(BatchService(consumer))
    clock = EngineClock(store, settings.time.clock)
    lease = Lease(
        store,
        holder,
        keys.leader_lease(store.prefix),
        ttl_ms=int(max(settings.worker.lease_ttl, 1.0) * 1000),
    )
    timers = LeaderTimers(fapp, lease, clock, metrics)
    publisher = Publisher(store, settings.publish.top_n, clock, blends=app.blends(settings))
    timers.add_publish(settings.publish.interval, publisher)
    timers.add("maintain", settings.publish.maintain_interval, Maintainer(store, clock).tick)
    if settings.dosage.enabled:
        dosage = Dosage(store, settings)
        pings = BatchConsumer(
            bootstrap=settings.kafka.bootstrap,
            topics=[settings.dosage.topic],
            group=f"{settings.kafka.group}-patrols",
            dead_letter_topic=settings.kafka.dead_letter_topic,
            store=store,
            sink=PingSink(dosage, parts.rules, metrics),
            metrics=metrics,
            # the event consumer's health checks are the worker's readiness
            options=dataclasses.replace(consumer.options, health_interval_s=None),
            client_options=consumer.client_options,
        )
        cast(Any, fapp).service(BatchService(pings))
        ticker = DosageTicker(dosage, settings, clock)
        timers.add("dosage", settings.dosage.interval, ticker.tick)
    if settings.alerts.enabled:
        alerter = Alerter(store, settings, app.weight_table(settings), clock, metrics)
        timers.add("alerts", settings.alerts.interval, alerter.tick)
        _alert_delivery(fapp, settings, store, metrics, lease)
    _web_views(fapp, consumer, metrics, holder)
    return fapp, consumer, metrics


def _event_consumer(
    settings: Settings,
    store: Store,
    parts: app.Core,
    metrics: WorkerMetrics,
    options: ConsumerOptions | None,
) -> BatchConsumer:
    """The batch consumer of the incident and call topics."""
    k, w = settings.kafka, settings.worker
    if parts.fast is None:
        log.warning(
            "worker_kernel kernel=python: the compiled kernel is not built (it needs a C "
            "compiler at install: pip install -e .); batches are prepared several times slower"
        )
    return BatchConsumer(
        bootstrap=k.bootstrap,
        topics=[k.incidents_topic, k.calls_topic],
        group=k.group,
        dead_letter_topic=k.dead_letter_topic,
        store=store,
        sink=EventSink(store, parts.rules, parts.scorer, metrics, fast=parts.fast),
        metrics=metrics,
        client_options=app.kafka_options(settings, "aiokafka"),
        options=options
        or ConsumerOptions(
            max_records=settings.store.batch_max_events,
            session_timeout_ms=int(w.session_timeout * 1000),
            heartbeat_interval_ms=int(w.heartbeat_interval * 1000),
            rebalance_timeout_ms=int(w.rebalance_timeout * 1000),
            max_poll_interval_ms=int(w.max_poll_interval * 1000),
        ),
    )


def _control_app(settings: Settings, holder: str, web_port: int | None) -> faust.App:
    """The faust app: lifecycle, leader election and the web endpoints."""
    k, w = settings.kafka, settings.worker
    return faust.App(
        f"{k.group}-control",
        broker=f"kafka://{k.bootstrap}",
        store="memory://",
        web_enabled=True,
        web_bind="127.0.0.1" if w.web_host == "127.0.0.1" else w.web_host,
        web_port=web_port if web_port is not None else w.web_port,
        topic_replication_factor=k.replication_factor,
        topic_partitions=1,
        broker_session_timeout=w.session_timeout,
        broker_heartbeat_interval=w.heartbeat_interval,
        broker_rebalance_timeout=w.rebalance_timeout,
        # faust hangs after a short max poll interval (robinhood/faust#517):
        # its consumer only elects the leader, so keep faust's default.
        broker_max_poll_interval=1000.0,
        consumer_auto_offset_reset="latest",
        datadir=state_dir(settings, holder),
        broker_credentials=app.faust_credentials(settings),
    )


class LeaderTimers:
    """The leader-only timers: each run needs the lease, so two workers
    never run one at the same time even while faust's leadership moves.
    Every run is logged at debug level on ``hotspots.timers``."""

    def __init__(self, fapp: faust.App, lease: Lease, clock: EngineClock, metrics: WorkerMetrics):
        self.fapp = fapp
        self.lease = lease
        self.clock = clock
        self.metrics = metrics

    async def run(self, name: str, work: Callable[[], Any]) -> tuple[bool, Any]:
        """Run a timer's work if this worker holds the lease: (ran, result)."""
        if not await self.lease.acquire():
            if name == "publish":
                self.metrics.hide_top_cells()  # another worker leads: its lists count
            return False, None
        await self.clock.refresh()
        started = time.time()
        try:
            result = await work()
        except Exception:  # a timer must not kill the worker; log with context
            log.exception("timer_failed timer=%s", name)
            return False, None
        self.metrics.timer_runs.labels(name).inc()
        timer_log.debug(
            "timer_ran timer=%s holder=%s start=%.6f end=%.6f",
            name,
            self.lease.holder,
            started,
            time.time(),
        )
        return True, result

    def add(self, name: str, interval_s: float, work: Callable[[], Any]) -> None:
        async def tick() -> None:
            await self.run(name, work)

        self.fapp.timer(interval=interval_s, on_leader=True)(tick)

    def add_publish(self, interval_s: float, publisher: Publisher) -> None:
        """The publish timer, which also keeps the worker's top-cell metrics."""
        store, metrics = publisher.store, self.metrics
        top_resolution = store.resolutions[len(store.resolutions) // 2]

        async def publish() -> None:
            ran, message = await self.run("publish", publisher.tick)
            if not ran:
                return
            metrics.published_at.set(time.time())
            metrics.seq.set(publisher.tops_seq)
            if message is not None:
                metrics.publications.inc()
            # the lists as of this tick, decayed to it
            metrics.show_top_cells(
                top_resolution,
                {name: publisher.tops.get(f"{name}:{top_resolution}", []) for name in store.names},
            )

        self.fapp.timer(interval=interval_s, on_leader=True)(publish)


def _alert_delivery(
    fapp: faust.App, settings: Settings, store: Store, metrics: WorkerMetrics, lease: Lease
) -> None:
    """Delivery keeps the alert stream's order only with one deliverer at a
    time: the holder of a lease of its own (any worker may hold it)."""
    delivery = app.alert_delivery(settings, store, metrics)
    delivery_lease = Lease(
        store, lease.holder, keys.delivery_lease(store.prefix), ttl_ms=lease.ttl_ms
    )

    async def deliver() -> None:
        try:
            held = await delivery_lease.acquire()
            if held and not delivery.running:
                await delivery.start()
            elif not held and delivery.running:
                await delivery.stop()
        except Exception as exc:  # Redis down: keep what runs, try again next time
            log.warning("alert_delivery_lease_failed error=%s", exc)

    fapp.timer(interval=max(lease.ttl_ms / 3000, 0.5))(deliver)
    cast(Any, fapp).service(_Stopper(delivery.stop))


def _web_views(
    fapp: faust.App, consumer: BatchConsumer, metrics: WorkerMetrics, holder: str
) -> None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on faust's web server."""

    @fapp.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    @fapp.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        assigned = consumer.consumer.assignment() if consumer.consumer is not None else set()
        return web.json(
            {
                "status": "alive",
                "worker": holder,
                "batches": consumer.batches,
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            }
        )

    @fapp.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = await consumer.check_health(timeout_s=1.0)
        body = {
            "ready": ok,
            "redis": consumer.store_ok and consumer.redis_ok,
            "kafka": consumer.kafka_ok,
        }
        return web.json(body, status=200 if ok else 503)
