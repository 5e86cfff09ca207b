"""Helpers for the live-pipeline tests: real events as Kafka operations,
publishing, waiting for the store, and the oracle comparison."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer
from redis.exceptions import ConnectionError as RedisConnectionError

from streamer import app
from streamer.adapters.consumer import BatchConsumer, ConsumerOptions
from streamer.adapters.event_sink import EventSink
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import Store
from streamer.settings import Settings, load_settings
from tests import oracle
from tests.malformed import bad_records

FAST = ConsumerOptions(
    max_records=2000,
    poll_timeout_ms=50,
    session_timeout_ms=6000,
    heartbeat_interval_ms=500,
    rebalance_timeout_ms=1000,
    max_poll_interval_ms=30_000,
)


def redis_key(store: Store, *parts: object) -> str:
    """A key of the store's namespace spelled out as docs/redis.md names it
    (``redis_key(store, "rank", "week", 9)``), independently of
    :mod:`streamer.adapters.keys`, so a renamed key fails the tests."""
    return ":".join([store.prefix, *map(str, parts)])


def settings_for(namespace: str, bootstrap: str, redis_url: str, **extra: Any) -> Settings:
    """Settings with topics, group and keys of their own."""
    overrides: dict[str, Any] = {
        "store": {"namespace": namespace, "redis_url": redis_url, "batch_max_events": 2000},
        "kafka": {
            "bootstrap": bootstrap,
            "group": f"{namespace}-g",
            "incidents_topic": f"{namespace}.incidents",
            "calls_topic": f"{namespace}.calls",
            "dead_letter_topic": f"{namespace}.dead-letter",
        },
        "grid": {"timezone": "America/New_York"},
        "worker": {
            "session_timeout": "6s",
            "heartbeat_interval": "0.5s",
            "rebalance_timeout": "1s",
            "max_poll_interval": "30s",
            "lease_ttl": "3s",
        },
        "publish": {"interval": "0.2s", "maintain_interval": "1s"},
        # the data is from 2025: decay and prune at the stream's own time
        "time": {"clock": "event"},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(environ={}, overrides=overrides)


def as_json(row: oracle.Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": "incident",
        "occurred_at": datetime.fromtimestamp(row.t_s, UTC).isoformat(),
        "lat": row.lat,
        "lon": row.lon,
        "category": row.category,
    }


def mixed_stream(rows: list[oracle.Row], seed: int) -> list[tuple[str, oracle.Row]]:
    """Upserts in shuffled (late, out-of-order) arrival, then duplicates,
    corrections (moved and reclassified) and cancels of some of them."""
    rng = random.Random(seed)
    events = list(rows)
    rng.shuffle(events)
    categories = sorted({r.category for r in rows})
    ops: list[tuple[str, oracle.Row]] = [("upsert", r) for r in events]
    ops += [("upsert", r) for r in rng.sample(events, len(events) // 10)]
    ops += [
        ("upsert", r.moved(rng.uniform(-0.003, 0.003), rng.choice(categories)))
        for r in rng.sample(events, len(events) // 20)
    ]
    ops += [("cancel", r) for r in rng.sample(events, len(events) // 20)]
    return ops


@dataclass
class Published:
    """What :func:`publish` sent: the last offset per ``topic:partition``
    (from the produce acknowledgements: Tansu's ``end_offsets`` can be
    short when the last record batch holds several records) and the
    expected dead-letter reason of each malformed key."""

    last_offsets: dict[str, int]
    dead: dict[str, str]


def publish(
    bootstrap: str,
    topic: str,
    ops: Iterable[tuple[str, oracle.Row]],
    bad: int = 0,
    per_s: float | None = None,
) -> Published:
    """Publish the ops keyed by id, and ``bad`` malformed records; at most
    ``per_s`` a second when given."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    expected: dict[str, str] = {}
    futures = []
    try:
        malformed = list(bad_records(bad))
        started = time.monotonic()
        for i, (op, row) in enumerate(ops):
            if per_s is not None and i % 100 == 0:
                ahead = i / per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            body = {"id": row.id, "op": "cancel"} if op == "cancel" else as_json(row)
            futures.append(producer.send(topic, key=row.id.encode(), value=orjson.dumps(body)))
            if malformed and i % 50 == 7:
                key, value, reason = malformed.pop()
                futures.append(producer.send(topic, key=key, value=value))
                expected[key.decode()] = reason
        for key, value, reason in malformed:
            futures.append(producer.send(topic, key=key, value=value))
            expected[key.decode()] = reason
        producer.flush()
    finally:
        producer.close()
    last: dict[str, int] = {}
    for f in futures:
        meta = f.get(timeout=30)
        source = f"{meta.topic}:{meta.partition}"
        last[source] = max(last.get(source, -1), meta.offset)
    return Published(last, expected)


async def wait_applied(store: Store, wanted: dict[str, int], timeout_s: float = 120.0) -> None:
    """Wait until the store applied every partition up to ``wanted``."""
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            raw = await store.client.hgetall(redis_key(store, "offsets"))
        except RedisConnectionError:
            # a pooled connection from before a Redis restart fails once
            # (redis-py 8.1); waiting is what this helper does anyway
            await asyncio.sleep(0.2)
            continue
        have = {k.decode(): int(v) for k, v in raw.items()}
        if all(have.get(s, -1) >= o for s, o in wanted.items()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"store applied {have}, wanted {wanted}")


async def dead_letters(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[dict[str, str], bytes]]:
    """Read the dead-letter topic from the start: (headers, value) each."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[tuple[dict[str, str], bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    out.append(({k: v.decode() for k, v in r.headers}, r.value or b""))
            if len(out) >= expected and not batch:
                break
    finally:
        await consumer.stop()
    return out


async def assert_matches_oracle(store: Store, alive: dict[str, oracle.Row], at_s: float) -> int:
    """Every ranked cell of every horizon and resolution equals the oracle."""
    weights, default = oracle.weights()
    checked = 0
    for name, half_life in store.horizons.items():
        for res in store.resolutions:
            want = oracle.scores(alive.values(), res, half_life, at_s, weights, default)
            want = {c: s for c, s in want.items() if s >= store.prune_below}
            got = {r.cell: r.score for r in await store.top(name, res, 10**6, at_s)}
            assert set(got) == set(want), (name, res, len(set(got) ^ set(want)))
            for cell, expected in want.items():
                assert got[cell] == pytest.approx(expected, rel=1e-9), (name, res, cell)
            checked += len(want)
    return checked


def consumer_for(settings: Settings, client: aioredis.Redis) -> BatchConsumer:
    parts = app.core(settings)
    k = settings.kafka
    store, metrics = app.store(settings, client), WorkerMetrics()
    return BatchConsumer(
        bootstrap=k.bootstrap,
        topics=[k.incidents_topic, k.calls_topic],
        group=k.group,
        dead_letter_topic=k.dead_letter_topic,
        store=store,
        sink=EventSink(store, parts.rules, parts.scorer, metrics),
        metrics=metrics,
        options=FAST,
    )


async def caught_up(worker: BatchConsumer, ends: dict[str, int], timeout_s: float = 60) -> None:
    """Wait until the worker holds every partition and is positioned past
    ``ends`` (so a test that expects nothing to happen is not vacuous)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumer = worker.consumer
        assigned = consumer.assignment() if consumer is not None else set()
        if consumer is not None and {f"{tp.topic}:{tp.partition}" for tp in assigned} >= set(ends):
            positions = {}
            for tp in assigned:
                try:
                    positions[f"{tp.topic}:{tp.partition}"] = await consumer.position(tp)
                except Exception:
                    break
            if all(positions.get(k, -1) > v for k, v in ends.items()):
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the worker never caught up")


@contextlib.asynccontextmanager
async def running(worker: BatchConsumer) -> AsyncIterator[BatchConsumer]:
    """The worker started and consuming; stopped (batch finished) and closed
    on the way out."""
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        await task
        await worker.close()
