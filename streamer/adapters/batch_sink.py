"""What a :class:`~streamer.adapters.consumer.BatchConsumer` drives: the
:class:`BatchSink` contract (decode a poll, plan a store write, write it),
a poll's :data:`Records`, and the errors that mean the store is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamer.core.batching import DeadLetter, Message

STORE_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def message_of(record: Any) -> Message:
    """An aiokafka record as the core's :class:`Message`."""
    return Message(
        record.topic,
        record.partition,
        record.offset,
        record.value,
        record.timestamp,
        record.key,
        tuple((k, bytes(v)) for k, v in (record.headers or ())),
    )


Records = dict[TopicPartition, list[Any]]
"""One poll's records (aiokafka's), by partition."""


class Step(Protocol):
    """One batch as its sink planned the store write."""

    @property
    def dead(self) -> Sequence[DeadLetter]:
        """Records for the dead-letter topic, each with its reason."""
        ...

    @property
    def sent(self) -> asyncio.Event:
        """Set once the write's request is out: an overlapping consumer then
        goes on preparing the next batch while the store runs this one."""
        ...


PartT = TypeVar("PartT")
StepT = TypeVar("StepT", bound=Step)


class BatchSink(Protocol[PartT, StepT]):
    """The batch step that a :class:`BatchConsumer` drives: decode a poll's
    records, plan one store write of a batch, write it. The consumer sends
    the dead letters, retries the write through a store outage, commits.

    ``holds_offsets``: the store write records each partition's last offset
    in ``{NS}:offsets`` atomically with the data, so the consumer seeks past
    it, skips records at or below it and sends no dead letter twice.
    ``overlaps``: the next batch may be polled and prepared while this one's
    write runs; otherwise each batch is written and committed before the
    next poll, and :meth:`polled` hears of every poll."""

    holds_offsets: bool
    overlaps: bool

    def prepare(self, records: Records) -> PartT:
        """Decode one poll's records (no I/O: it may run while the store
        writes the previous batch)."""
        ...

    def plan(self, parts: list[PartT]) -> StepT:
        """The store write of one batch, from its parts in poll order."""
        ...

    async def write(self, step: StepT) -> None:
        """One attempt at the store write, counted when it went through;
        raises one of :data:`STORE_DOWN` while the store is down."""
        ...

    async def polled(self, *, caught_up: bool) -> None:
        """After each poll that did not fail, its batch written (a sink that
        does not overlap): ``caught_up`` when Kafka answers and the poll was
        not full (no backlog)."""
        ...


__all__ = ["STORE_DOWN", "BatchSink", "Records", "Step", "message_of"]
