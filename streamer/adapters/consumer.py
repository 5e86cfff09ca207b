"""The batch path's Kafka side: a consumer group read in batches, each batch
handed to a :class:`BatchSink` for its store write.

faust's per-event stream machinery moves ~14 k msgs/s on this machine; a
plain aiokafka ``getmany`` loop moves ~385 k. So the worker consumes its
topics here, in batches, while faust runs the worker's lifecycle,
leader-only timers and web views (see ``streamer/services/worker.py``).

The consumer owns Kafka and the waiting: polls, dead letters, the wait
through a store outage, commits, readiness. A sink owns what a batch is and
how the store takes it: the event topics' (``adapters/event_sink.py``) and
the patrol pings' (``adapters/patrol_worker.py``).

Kafka offsets are committed only after the store write; a stop during a
store outage leaves the batch uncommitted (redelivered to whoever takes
over). Dead letters are produced before the store write (a crash in between
may send one twice, never lose one). Exactly-once effect, for a sink that
holds offsets: each store write records, in the same atomic script, the last
offset applied for every partition; a redelivered record at or below it is
skipped by the store, on assignment the consumer seeks past it, and dead
letters go out only for records past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamer.adapters import keys
from streamer.adapters.batch_sink import STORE_DOWN, BatchSink, Records, Step, message_of
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import Store
from streamer.core.batching import DeadLetter

_TOP_UP_WAIT_MS = 5  # polls that add to a batch while Redis is busy

log = logging.getLogger("hotspots.consumer")


@dataclass
class ConsumerOptions:
    """aiokafka settings. Tansu completes a group join only after the
    rebalance timeout, so tests keep these short."""

    max_records: int = 5000
    poll_timeout_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    rebalance_timeout_ms: int = 5_000
    max_poll_interval_ms: int = 60_000
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 4_194_304
    # How long the broker may hold a fetch for more data: short, for latency
    # (Tansu holds a fetch for the whole wait when data trickles in).
    fetch_max_wait_ms: int = 20
    # how often Kafka (a metadata request) and Redis (PING) are asked whether
    # they answer, for readiness: an idle worker, or one whose client retries
    # a lost broker quietly, learns of an outage no other way (None: never,
    # for a consumer whose readiness no probe asks)
    health_interval_s: float | None = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


class _SeekPastApplied(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: BatchConsumer) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # another worker reports these partitions' lag from now on
        lag = self.worker.metrics.consumer_lag
        for tp in revoked:
            self.worker.applied_floor.pop(tp, None)
            with contextlib.suppress(KeyError):
                lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.seek_past_applied(list(assigned))


class BatchConsumer:
    """Consumes ``topics`` in batches for ``sink``, the consumer group
    ``group``'s member: polls, dead letters, the wait through a store outage,
    commits after the store write, readiness."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: list[str],
        group: str,
        dead_letter_topic: str,
        store: Store,
        sink: BatchSink[Any, Any],
        metrics: WorkerMetrics,
        options: ConsumerOptions | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.dead_letter_topic = dead_letter_topic
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.options = options or ConsumerOptions()
        self.client_options = client_options or {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.stopping = asyncio.Event()
        self.store_ok = True  # the last store write went through (or none failed)
        self.redis_ok = True  # Redis answered the last health check or store write
        self._store_failures = 0
        self.kafka_ok = False
        self.batches = 0
        # per assigned partition, the last offset the store had applied when
        # it was assigned: records at or below it are skipped before any work
        # (the seek past them can lose a race with the client's own offset
        # reset, seen under load on Tansu)
        self.applied_floor: dict[TopicPartition, int] = {}
        # offsets of batches in the store, not yet committed; one commit at a
        # time runs beside the next batch's store write (a commit in the
        # write's path held each batch up by the broker's commit time)
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        o = self.options
        settings: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "group_id": self.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": o.session_timeout_ms,
            "heartbeat_interval_ms": o.heartbeat_interval_ms,
            "rebalance_timeout_ms": o.rebalance_timeout_ms,
            "max_poll_interval_ms": o.max_poll_interval_ms,
            "fetch_max_bytes": o.fetch_max_bytes,
            "max_partition_fetch_bytes": o.max_partition_fetch_bytes,
            "fetch_max_wait_ms": o.fetch_max_wait_ms,
            **self.client_options,
            **o.extra,  # last: explicit extras win
        }
        self.consumer = AIOKafkaConsumer(**settings)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, **self.client_options
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_SeekPastApplied(self))
        self.kafka_ok = True

    async def stop(self) -> None:
        """Finish the batch in hand (the run loop checks between batches)."""
        self.stopping.set()

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        self.kafka_ok = False

    async def seek_past_applied(self, assigned: list[TopicPartition]) -> None:
        """Start each partition after the last offset the store applied."""
        if not assigned or self.consumer is None or not self.sink.holds_offsets:
            return
        applied = await self._stored_offsets({f"{tp.topic}:{tp.partition}" for tp in assigned})
        for tp in assigned:
            last = applied.get(f"{tp.topic}:{tp.partition}")
            if last is None:
                continue
            self.applied_floor[tp] = last
            committed = await self.consumer.committed(tp)
            if committed is None or committed <= last:
                self.consumer.seek(tp, last + 1)
                log.info(
                    "seek topic=%s partition=%d offset=%d reason=store_ahead_of_commit",
                    tp.topic,
                    tp.partition,
                    last + 1,
                )

    async def _forget_lost_logs(self) -> None:
        """Drop the stored offset of each partition not yet past it whose
        high watermark (the log's end, as a fetch returned it) is at or below
        the offset the store applied: that log is not the one the store
        applied (the broker's storage was lost, or the topic was made again),
        and the store would refuse every record in it up to the old offset,
        silently (a fetch past the end of a Tansu log returns nothing, with
        no error, and the position stays there). Such a partition is read
        from its start; events are keyed by id, so one the store applied
        before replaces itself. Logged and counted
        (``hotspots_offset_resets_total``). A new log that grew past the old
        offset before the worker read it cannot be told from the old one."""
        assert self.consumer is not None
        lost = {}
        for tp, floor in self.applied_floor.items():
            end = self.consumer.highwater(tp)
            if end is not None and end <= floor:
                lost[f"{tp.topic}:{tp.partition}"] = (tp, floor, end)
        if not lost:
            return
        while True:
            try:
                await self.store.client.hdel(keys.offsets(self.store.prefix), *sorted(lost))
                self._store_up()
                break
            except STORE_DOWN as exc:
                await self._store_down(exc)
        for _, (tp, floor, end) in sorted(lost.items()):
            del self.applied_floor[tp]
            await self.consumer.seek_to_beginning(tp)
            log.error(
                "offsets_ahead_of_log topic=%s partition=%d stored=%d log_end=%d "
                "action=stored_offset_deleted (the log is not the one the store applied: "
                "broker storage lost or topic made again)",
                tp.topic,
                tp.partition,
                floor,
                end,
            )
            self.metrics.offset_resets.labels(tp.topic).inc()

    async def _stored_offsets(self, sources: set[str]) -> dict[str, int]:
        ordered = sorted(sources)
        while True:
            try:
                raw = await self.store.client.hmget(keys.offsets(self.store.prefix), ordered)
                self._store_up()
                return {s: int(v) for s, v in zip(ordered, raw, strict=True) if v is not None}
            except STORE_DOWN as exc:
                await self._store_down(exc)

    async def run(self) -> None:
        """Consume until :meth:`stop`."""
        assert self.consumer is not None
        # What exists now (modules, the app, the clients) lives as long as the
        # worker: out of the collector's generations, a full collection no
        # longer walks it (it paused the loop ~70 ms, a latency tail).
        gc.collect()
        gc.freeze()
        watch = None
        if self.options.health_interval_s is not None:
            watch = asyncio.ensure_future(self._watch_health(self.options.health_interval_s))
        try:
            if self.sink.overlaps:
                await self._consume_overlapping(self.options.max_records)
            else:
                await self._consume_in_turn(self.options.max_records)
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _consume_overlapping(self, limit: int) -> None:
        in_flight: asyncio.Future[None] | None = None
        while not self.stopping.is_set():
            batch = await self._poll(self.options.poll_timeout_ms, limit)
            if batch is None:
                continue
            if batch:
                # Prepare and plan this batch while Redis still runs the
                # previous one's script, and keep adding what arrives until
                # Redis is free (or the batch is full): under load, batches
                # grow to what Redis can take, and each cell is written once
                # per batch. Writes (and commits) stay strictly in order.
                started = time.monotonic()
                parts = [self.sink.prepare(batch)]
                size = sum(len(r) for r in batch.values())
                while in_flight is not None and not in_flight.done() and size < limit:
                    more = await self._poll(_TOP_UP_WAIT_MS, limit - size)
                    if more:
                        parts.append(self.sink.prepare(more))
                        for tp, records in more.items():
                            batch.setdefault(tp, []).extend(records)
                        size += sum(len(r) for r in more.values())
                step = self.sink.plan(parts)
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(self._write(batch, step, started))
                # let the write go out whole before the next batch's preparation
                # holds the loop, so Redis runs it meanwhile
                sending = asyncio.ensure_future(step.sent.wait())
                await asyncio.wait({in_flight, sending}, return_when=asyncio.FIRST_COMPLETED)
                sending.cancel()
            elif in_flight is not None:
                await in_flight
                in_flight = None
        if in_flight is not None:
            await in_flight
        await self.flush_commits()

    async def _consume_in_turn(self, limit: int) -> None:
        while not self.stopping.is_set():
            batch = await self._poll(self.options.poll_timeout_ms, limit)
            if batch:
                started = time.monotonic()
                await self._write(batch, self.sink.plan([self.sink.prepare(batch)]), started)
            if batch is not None and not self.stopping.is_set():
                # a full batch leaves a backlog; an empty poll says Kafka is
                # caught up only while the broker answers (kafka_ok)
                full = sum(len(records) for records in batch.values()) >= limit
                await self.sink.polled(caught_up=self.kafka_ok and not full)

    async def _poll(self, timeout_ms: int, max_records: int) -> Records | None:
        """One ``getmany``; ``None`` after a Kafka error (logged, waited out)."""
        assert self.consumer is not None
        try:
            batch: Records = await self.consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
            if batch:
                self.kafka_ok = True  # (an empty poll says nothing: the client retries quietly)
            if not self.applied_floor:
                return batch
            await self._forget_lost_logs()
            return self._past_applied(batch)
        except KafkaError as exc:
            self.kafka_ok = False
            self.metrics.kafka_errors.inc()
            log.warning("kafka_poll_failed error=%s", exc)
            await asyncio.sleep(0.5)
            return None

    def _past_applied(self, batch: Records) -> Records:
        """The batch without records the store applied before assignment
        (counted as stale); a partition's floor goes once it is passed."""
        out: Records = {}
        for tp, records in batch.items():
            floor = self.applied_floor.get(tp)
            if floor is None or not records:
                out[tp] = records
                continue
            if records[0].offset > floor:
                del self.applied_floor[tp]
                out[tp] = records
                continue
            fresh = [r for r in records if r.offset > floor]
            self.metrics.verdicts.labels("stale").inc(len(records) - len(fresh))
            if fresh:
                del self.applied_floor[tp]
                out[tp] = fresh
        return out

    async def _write(self, batch: Records, step: Step, started: float) -> None:
        """Dead letters, then the sink's store write (waited through an
        outage), then the commit."""
        if step.dead:
            dead = list(step.dead)
            await self._dead_letter(
                await self._past_stored(dead) if self.sink.holds_offsets else dead
            )
        written = False
        while not written:
            t0 = time.monotonic()
            try:
                await self.sink.write(step)
                written = True
                self._store_up()
            except STORE_DOWN as exc:
                await self._store_down(exc)
                if self.stopping.is_set():
                    return  # not committed: redelivered to whoever takes over
            self.metrics.store_seconds.observe(time.monotonic() - t0)
        self._commit_later(batch)
        if not self.sink.overlaps:
            await self.flush_commits()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.batches += 1
        self._record_lag(batch)

    async def _past_stored(self, dead: list[DeadLetter]) -> list[DeadLetter]:
        """The dead letters of records past their partition's stored offset
        (the others were sent before, by the write that stored it)."""
        applied = await self._stored_offsets(
            {f"{d.message.topic}:{d.message.partition}" for d in dead}
        )
        return [
            d
            for d in dead
            if d.message.offset > applied.get(f"{d.message.topic}:{d.message.partition}", -1)
        ]

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        assert self.producer is not None
        for d in dead:
            m = d.message
            headers = [
                *m.headers,
                ("hotspots.reason", d.reason.encode()),
                ("hotspots.detail", d.detail.encode()[:1000]),
                ("hotspots.source.topic", m.topic.encode()),
                ("hotspots.source.partition", str(m.partition).encode()),
                ("hotspots.source.offset", str(m.offset).encode()),
            ]
            while True:
                try:
                    await self.producer.send_and_wait(
                        self.dead_letter_topic, m.value, key=m.key, headers=headers
                    )
                    break
                except KafkaError as exc:
                    self.metrics.kafka_errors.inc()
                    log.warning(
                        "dead_letter_failed topic=%s partition=%d offset=%d error=%s",
                        m.topic,
                        m.partition,
                        m.offset,
                        exc,
                    )
                    await asyncio.sleep(0.5)
            self.metrics.dead_letters.labels(d.reason).inc()
            log.info(
                "dead_letter reason=%s topic=%s partition=%d offset=%d",
                d.reason,
                m.topic,
                m.partition,
                m.offset,
            )

    def _commit_later(self, batch: Records) -> None:
        """Queue the commit of a batch the store holds; commits run one at a
        time, each of everything queued since the last."""
        for tp, records in batch.items():
            if records:
                self._uncommitted[tp] = records[-1].offset + 1
        if self._committing is None or self._committing.done():
            if self._committing is not None:
                self._committing.result()  # an unexpected error stops the loop, as inline
            self._committing = asyncio.ensure_future(self._commit_queued())

    async def _commit_queued(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self._commit(offsets)

    async def flush_commits(self) -> None:
        """Wait until every batch in the store is committed (or the commit
        failed and was logged)."""
        if self._committing is not None:
            await self._committing
            self._committing = None

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # The store already holds these offsets: redelivery is harmless.
            self.metrics.kafka_errors.inc()
            log.warning("commit_failed error=%s (store offsets keep redelivery harmless)", exc)

    def _record_lag(self, batch: Records) -> None:
        assert self.consumer is not None
        for tp, records in batch.items():
            high = self.consumer.highwater(tp)
            if high is not None and records:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(high - records[-1].offset - 1, 0)
                )

    def _store_up(self) -> None:
        if not self.store_ok:
            log.info("store_recovered after_failures=%d", self._store_failures)
        self.store_ok = True
        # a write that went through is a fresher answer than the last PING:
        # readiness returns with the first applied batch, not the next check
        self.redis_ok = True
        self._store_failures = 0
        self.metrics.ready.set(1 if self.ready() else 0)

    async def _store_down(self, exc: BaseException) -> None:
        if self.store_ok:
            log.warning("store_unavailable error=%s: waiting, nothing is dropped", exc)
        self.store_ok = False
        self.metrics.ready.set(0)
        self.metrics.store_errors.inc()
        # exponential backoff, 0.1 s doubling to 5 s
        delay = min(0.1 * 2**self._store_failures, 5.0)
        self._store_failures += 1
        await asyncio.sleep(delay)

    def ready(self) -> bool:
        return self.store_ok and self.redis_ok and self.kafka_ok

    async def check_health(self, timeout_s: float = 2.0) -> bool:
        """Ask Kafka (metadata) and Redis (PING) whether they answer, within
        ``timeout_s`` each; sets the readiness gauge and returns readiness."""

        async def answers(request: Any) -> bool:
            try:
                await asyncio.wait_for(request, timeout_s)
                return True
            except Exception:
                return False

        kafka = self.consumer is not None and await answers(self.consumer.topics())
        redis_ok = await answers(self.store.client.ping())
        if kafka != self.kafka_ok or redis_ok != self.redis_ok:
            log.log(
                logging.INFO if kafka and redis_ok else logging.WARNING,
                "health kafka=%s redis=%s",
                "up" if kafka else "down",
                "up" if redis_ok else "down",
            )
        self.kafka_ok, self.redis_ok = kafka, redis_ok
        self.metrics.ready.set(1 if self.ready() else 0)
        return self.ready()

    async def _watch_health(self, interval_s: float) -> None:
        while not self.stopping.is_set():
            await self.check_health()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval_s)


__all__ = [
    "STORE_DOWN",
    "BatchConsumer",
    "BatchSink",
    "ConsumerOptions",
    "Records",
    "Step",
    "message_of",
]
