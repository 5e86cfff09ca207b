"""The live pipeline on a real broker (Tansu) and a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.broker import LocalBroker, ensure_topics
from streamer.adapters.consumer import BatchConsumer
from streamer.adapters.metrics import Metrics
from streamer.settings import Settings
from tests import oracle
from tests.pipeline_support import (
    FAST,
    assert_matches_oracle,
    dead_letters,
    mixed_stream,
    publish,
    settings_for,
    wait_applied,
)


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=8000)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def consumer_for(settings: Settings, client: aioredis.Redis) -> BatchConsumer:
    parts = app.core(settings)
    k = settings.kafka
    return BatchConsumer(
        bootstrap=k.bootstrap,
        topics=[k.incidents_topic, k.calls_topic],
        group=k.group,
        dead_letter_topic=k.dead_letter_topic,
        store=app.store(settings, client),
        rules=parts.rules,
        scorer=parts.scorer,
        metrics=Metrics(),
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


def make_topics(settings: Settings) -> None:
    k = settings.kafka
    ensure_topics(k.bootstrap, {k.incidents_topic: 4, k.calls_topic: 2, k.dead_letter_topic: 1})


async def test_stream_ends_equal_to_oracle_and_bad_records_are_dead_lettered(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    make_topics(settings)
    ops = mixed_stream(rows[:5000], seed=3)
    sent = publish(broker.bootstrap, settings.kafka.incidents_topic, ops, bad=30)
    expected_dead = sent.dead
    worker = consumer_for(settings, client)
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        await wait_applied(worker.store, sent.last_offsets)
    finally:
        await worker.stop()
        await task
        await worker.close()
    alive = oracle.live(ops)
    at_s = max(r.t_s for r in alive.values()) + 3600
    assert await assert_matches_oracle(worker.store, alive, at_s) > 1000
    letters = await dead_letters(
        broker.bootstrap, settings.kafka.dead_letter_topic, len(expected_dead)
    )
    assert len(letters) == len(expected_dead) == 30
    for headers, _value in letters:
        assert headers["hotspots.source.topic"] == settings.kafka.incidents_topic
        assert int(headers["hotspots.source.offset"]) >= 0
        assert headers["hotspots.reason"] in set(expected_dead.values())
    reasons = sorted(h["hotspots.reason"] for h, _ in letters)
    assert reasons == sorted(expected_dead.values())
    m = worker.metrics
    assert m.dead_letters.labels("bad_json")._value.get() == sum(
        1 for r in expected_dead.values() if r == "bad_json"
    )


async def test_redelivery_after_lost_commit_changes_nothing(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    """A worker that applied batches but never committed (a crash between the
    store write and the commit): its successor gets everything again, and the
    store's offsets make the second delivery a no-op."""
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    make_topics(settings)
    ops = mixed_stream(rows[:2000], seed=9)
    ends = publish(broker.bootstrap, settings.kafka.incidents_topic, ops).last_offsets
    first = consumer_for(settings, client)

    async def no_commit(batch: object) -> None:
        return None

    first._commit = no_commit  # type: ignore[method-assign]
    await first.start()
    task = asyncio.create_task(first.run())
    await wait_applied(first.store, ends)
    await first.stop()
    await task
    await first.close()
    seq = await first.store.seq()
    second = consumer_for(settings, client)
    await second.start()
    task = asyncio.create_task(second.run())
    await caught_up(second, ends)  # joined, assigned, positioned past the applied offsets
    await asyncio.sleep(0.5)
    await second.stop()
    await task
    await second.close()
    assert await second.store.seq() == seq
    alive = oracle.live(ops)
    await assert_matches_oracle(second.store, alive, max(r.t_s for r in alive.values()))


async def test_seek_on_assignment_skips_what_the_store_applied(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    make_topics(settings)
    ends = publish(
        broker.bootstrap, settings.kafka.incidents_topic, [("upsert", r) for r in rows[:400]]
    ).last_offsets
    # pretend the store already applied everything
    await client.hset(f"{{{namespace}}}:offsets", mapping=ends)
    worker = consumer_for(settings, client)
    await worker.start()
    task = asyncio.create_task(worker.run())
    await caught_up(worker, ends)
    await asyncio.sleep(0.5)
    await worker.stop()
    await task
    await worker.close()
    assert await worker.store.seq() == 0
    assert worker.metrics.events.labels("upsert")._value.get() == 0
