"""The test infrastructure itself: the local Tansu broker and the embedded Redis.

These pin down the broker behaviour the engine relies on (keyed partitioning,
per-partition order, consumer-group offset commits) so a Tansu upgrade that
breaks one of them fails here rather than deep inside an engine test.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from kafka import KafkaProducer

from streamer.adapters.broker import ensure_topics
from streamer.local.broker import LocalBroker
from streamer.local.redis_server import EmbeddedRedis, ensure_redis, redis_answers

MESSAGES = 10_000
PARTITIONS = 4
KEYS = 257
DEADLINE_S = 20.0
# Tansu holds a JoinGroup for about half the session timeout (see docs/tansu.md),
# so a short session keeps each group join near one second.
GROUP_TIMEOUTS = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "rebalance_timeout_ms": 2000,
    "max_poll_interval_ms": 30_000,
}

Record = tuple[int, int, bytes, bytes]  # partition, offset, key, value


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def keyed_topic(broker: LocalBroker) -> tuple[str, list[tuple[bytes, bytes]]]:
    """A 4-partition topic holding 10k keyed messages, and what was produced."""
    topic = f"infra-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(broker.bootstrap, {topic: PARTITIONS}) == [topic]
    produced = [(f"cell-{i % KEYS}".encode(), str(i).encode()) for i in range(MESSAGES)]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks=1)
    try:
        for key, value in produced:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    return topic, produced


async def _drain(
    consumer: AIOKafkaConsumer, want: int, *, max_records: int | None = None
) -> list[Record]:
    """getmany until ``want`` records arrived; fails after DEADLINE_S."""
    records: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < want:
        assert time.monotonic() < deadline, f"only {len(records)} of {want} records arrived"
        batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        for tp, messages in batches.items():
            records.extend((tp.partition, m.offset, m.key, m.value) for m in messages)
    return records


def test_ensure_topics_is_idempotent(broker: LocalBroker) -> None:
    topic = f"idem-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(broker.bootstrap, {topic: 2}) == [topic]
    assert ensure_topics(broker.bootstrap, {topic: 2}) == []
    assert ensure_topics(broker.bootstrap, {topic: 3, f"{topic}-b": 1}) == [f"{topic}-b"]


async def test_every_keyed_message_comes_back_in_key_order(
    broker: LocalBroker, keyed_topic: tuple[str, list[tuple[bytes, bytes]]]
) -> None:
    topic, produced = keyed_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = await _drain(consumer, MESSAGES)
    finally:
        await consumer.stop()

    assert len(records) == MESSAGES
    assert sorted(value for _, _, _, value in records) == sorted(v for _, v in produced)
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    values_of_key: dict[bytes, list[int]] = defaultdict(list)
    for partition, _, key, value in records:
        partitions_of_key[key].add(partition)
        values_of_key[key].append(int(value))
    assert all(len(parts) == 1 for parts in partitions_of_key.values()), "a key was split"
    assert {p for parts in partitions_of_key.values() for p in parts} == set(range(PARTITIONS))
    for key, values in values_of_key.items():
        assert values == sorted(values), f"{key!r} arrived out of order"


async def test_group_member_resumes_after_committed_offsets(
    broker: LocalBroker, keyed_topic: tuple[str, list[tuple[bytes, bytes]]]
) -> None:
    topic, _ = keyed_topic
    group = f"g-{uuid.uuid4().hex[:8]}"

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **GROUP_TIMEOUTS,
        )

    first = member()
    await first.start()
    try:
        seen_first = await _drain(first, MESSAGES // 2, max_records=500)
        next_offset: dict[int, int] = {}
        for partition, offset, _, _ in seen_first:
            next_offset[partition] = max(next_offset.get(partition, 0), offset + 1)
        await first.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(o, "") for p, o in next_offset.items()}
        )
    finally:
        await first.stop()
    assert len(seen_first) < MESSAGES, "the first member must leave work behind"

    second = member()
    await second.start()
    try:
        for partition, offset in next_offset.items():
            assert await second.committed(TopicPartition(topic, partition)) == offset
        seen_second = await _drain(second, MESSAGES - len(seen_first))
        await asyncio.sleep(0.3)
        late = await second.getmany(timeout_ms=300)
        assert not any(late.values()), "the second member got more than was left"
    finally:
        await second.stop()

    first_ids = {(p, o) for p, o, _, _ in seen_first}
    second_ids = {(p, o) for p, o, _, _ in seen_second}
    assert not first_ids & second_ids, "records were delivered to both members"
    assert len(first_ids | second_ids) == MESSAGES
    first_offset_of: dict[int, int] = {}
    for partition, offset, _, _ in seen_second:
        first_offset_of[partition] = min(first_offset_of.get(partition, offset), offset)
    for partition, offset in first_offset_of.items():
        assert offset == next_offset.get(partition, 0)


def test_local_broker_stops_its_process(tmp_path: Path) -> None:
    broker = LocalBroker(log_dir=tmp_path)
    with broker:
        pid = broker.pid
        assert pid is not None and _process_alive(pid)
        assert broker.bootstrap.startswith("127.0.0.1:")
    assert broker.pid is None
    assert not _process_alive(pid)
    broker.stop()  # a second stop is harmless
    assert broker.log_path.exists()


def test_embedded_redis_starts_answers_and_leaves_no_process() -> None:
    with EmbeddedRedis() as server:
        url = server.url
        pid = server.pid
        assert url.startswith("redis://127.0.0.1:")
        assert pid is not None and _process_alive(pid)
        assert redis_answers(url)
    assert not redis_answers(url)
    assert not _process_alive(pid)


def test_ensure_redis_prefers_a_redis_that_answers(redis_url: str) -> None:
    url, embedded = ensure_redis(redis_url)
    assert (url, embedded) == (redis_url, None)


def test_ensure_redis_falls_back_to_embedded() -> None:
    dead_url = "redis://127.0.0.1:1/0"
    assert not redis_answers(dead_url)
    url, embedded = ensure_redis(dead_url)
    assert embedded is not None
    try:
        assert url != dead_url and redis_answers(url)
    finally:
        embedded.stop()
    assert not redis_answers(url)
