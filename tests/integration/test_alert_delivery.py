"""Alert notices from the Redis stream to Kafka and to webhooks (docs/alerts.md),
against a real Tansu broker, a real Redis and real HTTP receivers."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from streamer import app
from streamer.adapters.alert_delivery import AlertDelivery, verify
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import Store
from streamer.local.broker import LocalBroker, free_port
from streamer.settings import ConfigError, Settings, load_settings
from tests.pipeline_support import redis_key

SECRET = "hook-secret-for-tests"
ENV = {"HOOK_SECRET": SECRET}


# set-up -------------------------------------------------------------------
def settings_for(
    namespace: str,
    bootstrap: str,
    redis_url: str,
    webhooks: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "kafka": {"bootstrap": bootstrap},
            "alerts": {"topic": f"{namespace}.alerts", "webhooks": webhooks or {}},
        },
    )


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "secret_env": "HOOK_SECRET", "backoff": 0.05, **extra}


@dataclass
class Engine:
    settings: Settings
    store: Store
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    def delivery(self) -> AlertDelivery:
        return app.alert_delivery(self.settings, self.store, self.metrics, environ=ENV)

    @property
    def key(self) -> str:
        return redis_key(self.store, "alerts")

    async def notice(self, kind: str, alert_id: str, **alert: Any) -> str:
        """XADD one notice exactly as the detector writes it; its stream id."""
        body = {"id": alert_id, "status": "open", "kind": kind, "title": f"{kind} {alert_id}"}
        body.update(alert)
        fields = {"kind": kind, "id": alert_id, "alert": orjson.dumps(body)}
        stream_id = await self.store.client.xadd(self.key, fields)  # type: ignore[arg-type]
        return stream_id.decode() if isinstance(stream_id, bytes) else stream_id

    async def pending(self, group: str) -> int:
        summary = await self.store.client.xpending(self.key, group)
        return int(summary["pending"])

    async def acked(self, group: str) -> bool:
        """Every entry of the stream read by ``group`` and acknowledged."""
        groups = await self.store.client.xinfo_groups(self.key)
        info = next(g for g in groups if g["name"] == group.encode())
        return bool(info["lag"] == 0 and info["pending"] == 0)

    def count(self, target: str, outcome: str) -> float:
        return self.sample("hotspots_alert_deliveries_total", target=target, outcome=outcome)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def engine_for(
    client: aioredis.Redis,
    namespace: str,
    bootstrap: str,
    redis_url: str,
    webhooks: dict[str, dict[str, Any]] | None = None,
) -> Engine:
    settings = settings_for(namespace, bootstrap, redis_url, webhooks)
    return Engine(settings, app.store(settings, client))


@asynccontextmanager
async def running(delivery: AlertDelivery) -> AsyncIterator[AlertDelivery]:
    await delivery.start()
    try:
        yield delivery
    finally:
        await delivery.stop()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Wait until ``check()`` holds; the seconds it took."""
    started = time.monotonic()
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)


# a real Kafka reader, without a group (Tansu joins are slow) ------------------
class TopicReader:
    """Every partition of a topic from the beginning, with no consumer group
    (aiokafka assigns them itself and picks up a topic created later)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            metadata_max_age_ms=500,
        )

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self) -> list[ConsumerRecord[bytes, bytes]]:
        batch = await self.consumer.getmany(timeout_ms=50)
        for records in batch.values():
            self.records.extend(records)
        return self.records

    async def wait_for(self, n: int, timeout_s: float = 10.0) -> list[ConsumerRecord[bytes, bytes]]:
        """At least ``n`` records, then a short quiet wait to catch extras."""
        deadline = time.monotonic() + timeout_s
        while len(await self.poll()) < n:
            assert time.monotonic() < deadline, f"{len(self.records)} of {n} records arrived"
        quiet = time.monotonic() + 0.5
        while time.monotonic() < quiet:
            await self.poll()
        return self.records


def value(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    assert record.value is not None
    decoded: dict[str, Any] = orjson.loads(record.value)
    return decoded


# a real webhook receiver ------------------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic

    @property
    def notice(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded

    @property
    def valid(self) -> bool:
        header = self.headers["X-Hotspots-Signature"]
        return verify(SECRET.encode(), self.body, header, now=time.time())


class Receiver:
    """An aiohttp server on 127.0.0.1; ``answer(received, attempt)`` gives the
    status (``attempt`` counts POSTs of the same delivery id from 1)."""

    def __init__(
        self,
        answer: Callable[[Received, int], int] = lambda r, n: 200,
        hold_s: float = 0.0,
    ) -> None:
        self.answer = answer
        self.hold_s = hold_s
        self.release = asyncio.Event()
        self.received: list[Received] = []
        server = web.Application()
        server.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(server, shutdown_timeout=1.0)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        got = Received(dict(request.headers), await request.read(), time.monotonic())
        self.received.append(got)
        if self.hold_s:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold_s)
        delivery = got.headers["X-Hotspots-Delivery"]
        attempt = sum(r.headers["X-Hotspots-Delivery"] == delivery for r in self.received)
        return web.Response(status=self.answer(got, attempt))

    def deliveries(self) -> list[str]:
        return [r.headers["X-Hotspots-Delivery"] for r in self.received]

    async def __aenter__(self) -> Receiver:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.runner.cleanup()


# tests ------------------------------------------------------------------------
async def test_a_missing_secret_fails_at_build_time(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    engine = engine_for(
        client,
        namespace,
        "127.0.0.1:9",
        redis_url,
        {"cad": {"url": "https://cad.example/hook", "secret_env": "CAD_HOOK_SECRET"}},
    )
    with pytest.raises(ConfigError, match=r"CAD_HOOK_SECRET.*'cad'"):
        app.alert_delivery(engine.settings, engine.store, engine.metrics, environ={})
    with pytest.raises(ConfigError, match="CAD_HOOK_SECRET"):
        app.alert_delivery(
            engine.settings, engine.store, engine.metrics, environ={"CAD_HOOK_SECRET": ""}
        )


async def test_kafka_gets_each_notice_once_in_order_per_alert(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    engine = engine_for(client, namespace, broker.bootstrap, redis_url)
    before = await engine.notice("opened", "A-early")  # before the group exists: not delivered
    written: list[tuple[str, str, str]] = []  # stream id, alert id, kind
    async with running(engine.delivery()):
        for kind, alert_id in [
            ("opened", "A-1"),
            ("opened", "A-2"),
            ("escalated", "A-1"),
            ("escalated", "A-2"),
            ("merged", "A-2"),
            ("cleared", "A-1"),
        ]:
            written.append((await engine.notice(kind, alert_id, severity="high"), alert_id, kind))
        async with TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader:
            records = await reader.wait_for(len(written))
        await until(lambda: engine.acked("kafka"), 5.0, "every notice acknowledged")
    assert before not in {value(r)["stream_id"] for r in records}
    assert len(records) == len(written)  # once each
    by_id = {sid: (alert_id, kind) for sid, alert_id, kind in written}
    for record in records:
        notice = value(record)
        alert_id, kind = by_id[notice["stream_id"]]
        assert record.key == alert_id.encode()
        assert list(record.headers) == [("kind", kind.encode())]
        assert notice == {
            "kind": kind,
            "stream_id": notice["stream_id"],
            "alert": {
                "id": alert_id,
                "status": "open",
                "kind": kind,
                "title": f"{kind} {alert_id}",
                "severity": "high",
            },
        }
    for alert_id in ("A-1", "A-2"):
        sent = [sid for sid, a, _ in written if a == alert_id]
        got = [value(r)["stream_id"] for r in records if r.key == alert_id.encode()]
        assert got == sent
    assert engine.count("kafka", "delivered") == len(written)
    assert engine.count("kafka", "retried") == 0


async def test_webhook_gets_signed_notices_of_its_kinds_in_stream_order(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    async with Receiver() as receiver:
        engine = engine_for(
            client, namespace, broker.bootstrap, redis_url, {"ops": hook(receiver.url)}
        )
        async with running(engine.delivery()):
            written = [
                (await engine.notice(kind, alert_id), alert_id, kind)
                for kind, alert_id in [
                    ("opened", "A-1"),
                    ("opened", "A-2"),
                    ("merged", "A-2"),  # not among the default kinds: acknowledged, not sent
                    ("escalated", "A-1"),
                    ("cleared", "A-1"),
                ]
            ]
            await until(lambda: len(receiver.received) >= 4, 5.0, "four POSTs")
            await until(lambda: engine.acked("webhook:ops"), 5.0, "all acknowledged")
            await asyncio.sleep(0.2)  # time for a wrong extra POST to show
    wanted = [(sid, a, k) for sid, a, k in written if k != "merged"]
    assert receiver.deliveries() == [sid for sid, _, _ in wanted]  # once each, in stream order
    for got, (sid, alert_id, kind) in zip(receiver.received, wanted, strict=True):
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["X-Hotspots-Event"] == kind
        assert got.valid
        assert got.notice["kind"] == kind and got.notice["stream_id"] == sid
        assert got.notice["alert"]["id"] == alert_id
    # the same bytes Kafka gets as value
    async with TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader:
        records = await reader.wait_for(len(written))
    kafka_values = {value(r)["stream_id"]: r.value for r in records}
    assert all(kafka_values[r.headers["X-Hotspots-Delivery"]] == r.body for r in receiver.received)
    assert engine.count("webhook:ops", "delivered") == 4
    assert engine.count("webhook:ops", "retried") == 0


async def test_webhook_answering_500_twice_gets_the_notice_on_the_third_attempt(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    async with Receiver(lambda r, attempt: 500 if attempt <= 2 else 200) as receiver:
        engine = engine_for(
            client, namespace, broker.bootstrap, redis_url, {"ops": hook(receiver.url)}
        )
        async with running(engine.delivery()):
            sid = await engine.notice("opened", "A-1")
            await until(lambda: engine.count("webhook:ops", "delivered") == 1, 5.0, "delivered")
            await until(lambda: engine.acked("webhook:ops"), 5.0, "acknowledged")
    assert receiver.deliveries() == [sid, sid, sid]
    assert all(r.valid for r in receiver.received)
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # backoff 0.05 s, doubling
    assert engine.count("webhook:ops", "retried") == 2
    assert engine.count("webhook:ops", "given_up") == 0


async def test_webhook_that_always_fails_is_given_up_and_the_next_notice_goes(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    def answer(received: Received, attempt: int) -> int:
        return 503 if received.notice["alert"]["id"] == "A-bad" else 204

    async with Receiver(answer) as receiver:
        engine = engine_for(
            client,
            namespace,
            broker.bootstrap,
            redis_url,
            {"ops": hook(receiver.url, max_attempts=3)},
        )
        async with running(engine.delivery()):
            bad = await engine.notice("opened", "A-bad")
            good = await engine.notice("opened", "A-good")
            await until(lambda: engine.count("webhook:ops", "delivered") == 1, 5.0, "next one")
            await until(lambda: engine.acked("webhook:ops"), 5.0, "both acknowledged")
    assert receiver.deliveries() == [bad, bad, bad, good]
    assert engine.count("webhook:ops", "retried") == 2
    assert engine.count("webhook:ops", "given_up") == 1


async def test_a_slow_webhook_holds_back_neither_kafka_nor_other_webhooks(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    async with Receiver(hold_s=5.0) as slow, Receiver() as fast:
        engine = engine_for(
            client,
            namespace,
            broker.bootstrap,
            redis_url,
            {"slow": hook(slow.url, timeout=10), "fast": hook(fast.url)},
        )
        delivery = engine.delivery()
        async with (
            running(delivery),
            TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader,
        ):
            first = await engine.notice("opened", "A-1")
            await until(lambda: len(slow.received) == 1, 5.0, "the slow POST begins")
            second = await engine.notice("escalated", "A-1")
            started = time.monotonic()
            records = await reader.wait_for(2, timeout_s=3.0)
            await until(lambda: fast.deliveries() == [first, second], 3.0, "the fast webhook")
            assert time.monotonic() - started < 2.0  # not the 5 s the slow one takes
            assert [value(r)["stream_id"] for r in records] == [first, second]
            assert slow.deliveries() == [first]  # still on its first notice
            assert await engine.pending("webhook:slow") == 1  # the first, in hand
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 2.0  # stop does not wait for the slow POST


async def test_a_notice_written_while_stopped_is_delivered_after_restart(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    async with Receiver() as receiver:
        engine = engine_for(
            client, namespace, broker.bootstrap, redis_url, {"ops": hook(receiver.url)}
        )
        async with running(engine.delivery()):
            first = await engine.notice("opened", "A-1")
            await until(lambda: receiver.deliveries() == [first], 5.0, "the first notice")
            await until(lambda: engine.count("kafka", "delivered") == 1, 5.0, "first on Kafka")
        second = await engine.notice("cleared", "A-1")  # nobody is delivering now
        await asyncio.sleep(0.3)
        assert receiver.deliveries() == [first]
        async with running(engine.delivery()):  # a new process: a new consumer name
            await until(lambda: receiver.deliveries() == [first, second], 5.0, "after restart")
            await until(lambda: engine.count("kafka", "delivered") == 2, 5.0, "second on Kafka")
            await until(lambda: engine.acked("kafka"), 5.0, "Kafka acknowledged")
            await until(lambda: engine.acked("webhook:ops"), 5.0, "webhook acknowledged")
        async with TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader:
            records = await reader.wait_for(2)
    assert [value(r)["stream_id"] for r in records] == [first, second]


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    engine = engine_for(client, namespace, broker.bootstrap, redis_url)
    await client.xgroup_create(engine.key, "kafka", id="$", mkstream=True)
    orphan = await engine.notice("opened", "A-1")
    # a consumer that read it and died before delivering it
    await client.xreadgroup("kafka", "dead-host-1-0", {engine.key: ">"}, count=10)
    assert await engine.pending("kafka") == 1
    delivery = engine.delivery()
    delivery.reclaim_idle_s = 0.3  # 30 s in production
    async with running(delivery):  # keeps the existing group and its pending entry
        later = await engine.notice("escalated", "A-1")
        await until(lambda: engine.count("kafka", "delivered") == 2, 5.0, "both delivered")
        await until(lambda: engine.acked("kafka"), 5.0, "orphan acknowledged")
    async with TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader:
        records = await reader.wait_for(2)
    assert sorted(value(r)["stream_id"] for r in records) == sorted([orphan, later])


async def test_malformed_entries_are_skipped_and_counted(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    engine = engine_for(client, namespace, broker.bootstrap, redis_url)
    async with running(engine.delivery()):
        await client.xadd(engine.key, {"kind": "opened", "id": "A-1"})  # no alert field
        await client.xadd(engine.key, {"kind": "opened", "id": "A-2", "alert": "{not json"})
        good = await engine.notice("opened", "A-3")
        await until(lambda: engine.count("kafka", "delivered") == 1, 5.0, "the good one")
        await until(lambda: engine.acked("kafka"), 5.0, "all acknowledged")
    async with TopicReader(broker.bootstrap, engine.settings.alerts.topic) as reader:
        records = await reader.wait_for(1)
    assert [value(r)["stream_id"] for r in records] == [good]
    assert engine.count("kafka", "given_up") == 2


async def test_kafka_outage_is_waited_out_and_nothing_is_acked_early(
    client: aioredis.Redis, namespace: str, redis_url: str, tmp_path: Any
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    engine = engine_for(client, namespace, bootstrap, redis_url)
    delivery = engine.delivery()
    delivery.kafka_timeout_s = 1.0
    own = LocalBroker(port=port, log_dir=tmp_path)
    try:
        async with running(delivery):
            # no broker yet
            first = await engine.notice("opened", "A-1")
            await until(lambda: engine.sample("hotspots_kafka_errors_total") >= 1, 5.0, "a failure")
            assert engine.count("kafka", "delivered") == 0
            await asyncio.to_thread(own.start)
            await until(lambda: engine.count("kafka", "delivered") == 1, 10.0, "after start")
            await until(lambda: engine.acked("kafka"), 5.0, "acknowledged")
            async with TopicReader(bootstrap, engine.settings.alerts.topic) as reader:
                assert [value(r)["stream_id"] for r in await reader.wait_for(1)] == [first]
            # the broker goes away with a notice in hand
            await asyncio.to_thread(own.stop, 1.0)
            second = await engine.notice("escalated", "A-1")
            await until(lambda: engine.count("kafka", "retried") >= 1, 8.0, "a retry")
            assert await engine.pending("kafka") == 1  # held, not acknowledged
            own = LocalBroker(port=port, log_dir=tmp_path)  # empty again (memory storage)
            await asyncio.to_thread(own.start)
            await until(lambda: engine.count("kafka", "delivered") == 2, 10.0, "after restart")
            await until(lambda: engine.acked("kafka"), 5.0, "acknowledged")
            async with TopicReader(bootstrap, engine.settings.alerts.topic) as reader:
                assert [value(r)["stream_id"] for r in await reader.wait_for(1)] == [second]
    finally:
        own.stop()
