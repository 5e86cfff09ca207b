"""A partition whose log ends below the offset the store applied (the
broker's storage was lost, or the topic made again): the worker deletes the
stale offset, logs and counts it, and applies the new log's records instead
of skipping them silently (real broker, real Redis, batch oracle)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.local.broker import LocalBroker
from tests import oracle
from tests.pipeline_support import (
    assert_matches_oracle,
    consumer_for,
    publish,
    redis_key,
    running,
    settings_for,
)


async def applied_exactly(client: aioredis.Redis, key: str, wanted: dict[str, int]) -> None:
    """Wait until the stored offsets are the new log's (the old ones are
    above them: waiting for "at least" would return at once)."""
    have: dict[str, int] = {}
    for _ in range(300):
        have = {k.decode(): int(v) for k, v in (await client.hgetall(key)).items()}
        if have == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"stored offsets {have}, wanted {wanted}")


async def test_a_log_that_ends_below_the_stored_offset_is_read_not_skipped(
    client: aioredis.Redis,
    namespace: str,
    broker: LocalBroker,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    app.ensure_topics(settings)
    store = app.store(settings, client)
    topic = settings.kafka.incidents_topic
    # the store applied logs of 500 records on each partition, then the
    # broker came back empty and 40 new records were produced
    partitions = range(settings.worker.partitions)
    await client.hset(
        redis_key(store, "offsets"), mapping={f"{topic}:{p}": 499 for p in partitions}
    )
    rows = oracle.read_rows(oracle.SAMPLE, limit=40)
    published = publish(broker.bootstrap, topic, [("upsert", r) for r in rows])
    assert max(published.last_offsets.values()) < 499

    worker = consumer_for(settings, client)
    with caplog.at_level(logging.ERROR, logger="hotspots"):
        async with running(worker):
            await applied_exactly(client, redis_key(store, "offsets"), published.last_offsets)
    alive = oracle.live(("upsert", r) for r in rows)
    assert await assert_matches_oracle(store, alive, max(r.t_s for r in alive.values())) > 0
    assert worker.metrics.offset_resets.labels(topic)._value.get() == len(partitions)
    assert any("offsets_ahead_of_log" in m and "stored=499" in m for m in caplog.messages)
