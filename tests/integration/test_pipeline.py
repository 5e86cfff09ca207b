"""The live pipeline on a real broker (Tansu) and a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer import app
from streamer.local.broker import LocalBroker
from tests import oracle
from tests.pipeline_support import (
    assert_matches_oracle,
    caught_up,
    consumer_for,
    dead_letters,
    mixed_stream,
    publish,
    running,
    settings_for,
    wait_applied,
)


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=8000)


async def test_stream_ends_equal_to_oracle_and_bad_records_are_dead_lettered(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    app.ensure_topics(settings)
    ops = mixed_stream(rows[:5000], seed=3)
    sent = publish(broker.bootstrap, settings.kafka.incidents_topic, ops, bad=30)
    expected_dead = sent.dead
    worker = consumer_for(settings, client)
    async with running(worker):
        await wait_applied(worker.store, sent.last_offsets)
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
    app.ensure_topics(settings)
    ops = mixed_stream(rows[:2000], seed=9)
    ends = publish(broker.bootstrap, settings.kafka.incidents_topic, ops).last_offsets
    first = consumer_for(settings, client)

    async def no_commit(batch: object) -> None:
        return None

    first._commit = no_commit  # type: ignore[method-assign]
    async with running(first):
        await wait_applied(first.store, ends)
    seq = await first.store.seq()
    second = consumer_for(settings, client)
    async with running(second):
        await caught_up(second, ends)  # joined, assigned, positioned past the applied offsets
        await asyncio.sleep(0.5)
    assert await second.store.seq() == seq
    alive = oracle.live(ops)
    await assert_matches_oracle(second.store, alive, max(r.t_s for r in alive.values()))


async def test_a_stopped_worker_has_committed_what_the_store_applied(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    """Commits run beside the next batch's store write, not in its path: on
    stop, every batch the store holds is committed all the same."""
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    app.ensure_topics(settings)
    topic = settings.kafka.incidents_topic
    ends = publish(broker.bootstrap, topic, [("upsert", r) for r in rows[:3000]]).last_offsets
    worker = consumer_for(settings, client)
    commit = worker._commit

    async def slow_commit(offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0.5)  # a slow broker: stop comes before the commit ends
        await commit(offsets)

    worker._commit = slow_commit  # type: ignore[method-assign]
    async with running(worker):
        await wait_applied(worker.store, ends)
    assert worker.batches > 1
    applied = {
        k.decode(): int(v) for k, v in (await client.hgetall(f"{{{namespace}}}:offsets")).items()
    }
    assert applied == ends
    reader = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=settings.kafka.group, enable_auto_commit=False
    )
    await reader.start()
    try:
        for source, last in ends.items():
            partition = int(source.rsplit(":", 1)[1])
            assert await reader.committed(TopicPartition(topic, partition)) == last + 1
    finally:
        await reader.stop()


async def test_seek_on_assignment_skips_what_the_store_applied(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    app.ensure_topics(settings)
    ends = publish(
        broker.bootstrap, settings.kafka.incidents_topic, [("upsert", r) for r in rows[:400]]
    ).last_offsets
    # pretend the store already applied everything
    await client.hset(f"{{{namespace}}}:offsets", mapping=ends)
    worker = consumer_for(settings, client)
    async with running(worker):
        await caught_up(worker, ends)
        await asyncio.sleep(0.5)
    assert await worker.store.seq() == 0
    assert worker.metrics.events.labels("upsert")._value.get() == 0
