"""Cancels on Kafka for events a backfill loaded: by id while the ledger
holds them, by the fields the record carries beyond it, and unknown ones
counted in the worker's metrics (real broker, real Redis, batch oracle)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from kafka import KafkaProducer

from streamer import app
from streamer.adapters.files import load_profile
from streamer.local.broker import LocalBroker
from streamer.services.backfill import backfill
from tests import oracle
from tests.integration.test_cancels_backfill import WINDOW_S, bare, counted, subset, with_fields
from tests.pipeline_support import (
    assert_matches_oracle,
    consumer_for,
    running,
    settings_for,
    wait_applied,
)

__all__ = ["subset"]  # the module fixture, shared


def sample_value(text: bytes, name: str, label: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(f'{name}{{result="{label}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{label}}} not exported")


async def test_kafka_cancels_apply_by_id_and_by_fields(
    client: aioredis.Redis, namespace: str, broker: LocalBroker, redis_url: str, subset: Path
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    store = app.store(settings, client)
    parts = app.core(settings)
    await backfill(
        subset,
        load_profile("philadelphia"),
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=WINDOW_S,
        batch_max_events=2000,
        now_s=time.time(),
    )
    alive = oracle.live(("upsert", r) for r in oracle.read_rows(subset))
    newest = max(r.t_s for r in alive.values())
    events = counted(alive)
    rng = random.Random(5)
    ledgered = rng.sample([r for r in events if r.t_s >= newest - WINDOW_S + 3600], 30)
    settled = [r for r in events if r.t_s < newest - WINDOW_S - 86400]
    rng.shuffle(settled)
    by_fields, unknown = settled[:200], settled[200:212]
    records = [bare(r.id) for r in ledgered]
    records += [with_fields(r) for r in by_fields]
    records += [bare(r.id) for r in unknown]
    records += [with_fields(r) for r in by_fields[:10]]  # sent twice
    topic = settings.kafka.incidents_topic
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=r["id"].encode(), value=orjson.dumps(r)) for r in records]
    producer.flush()
    producer.close()
    last: dict[str, int] = {}
    for f in futures:
        meta = f.get(timeout=30)
        source = f"{meta.topic}:{meta.partition}"
        last[source] = max(last.get(source, -1), meta.offset)

    worker = consumer_for(settings, client)
    async with running(worker):
        await wait_applied(store, last)
    for r in [*ledgered, *by_fields]:
        del alive[r.id]
    assert await assert_matches_oracle(store, alive, newest + 600) > 0
    text = worker.metrics.render()
    assert sample_value(text, "hotspots_cancels_total", "by_id") == len(ledgered)
    assert sample_value(text, "hotspots_cancels_total", "by_fields") == len(by_fields)
    assert sample_value(text, "hotspots_cancels_total", "repeated") == 10
    assert sample_value(text, "hotspots_cancels_total", "unknown") == len(unknown)
