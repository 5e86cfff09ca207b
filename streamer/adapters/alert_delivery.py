"""Delivery of alert notices from the ``P:alerts`` stream to Kafka and webhooks.

The contract is ``docs/alerts.md``. Each target reads the stream through its
own consumer group (``kafka``, ``webhook:NAME``) in its own asyncio task, so a
slow or dead target holds back only itself. Delivery is at least once: an
entry is acknowledged (XACK) only once its target accepted it, or, for a
webhook, once it was given up after ``max_attempts``. Entries left pending by
a consumer that went away are taken over (XAUTOCLAIM) after
:data:`RECLAIM_IDLE_S`; while a task waits to retry, it keeps its entries
fresh (XCLAIM JUSTID) so that no other process takes them over meanwhile.

Order: one delivery process per group keeps the stream's order (Kafka: per
alert id; webhooks: overall); the worker runs delivery only while it holds
a lease of its own (``streamer/services/worker.py``). Should two ever overlap (a
lease lost mid-delivery), they share a group's entries and notices may
arrive out of order: receivers de-duplicate and order by ``stream_id``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import ResponseError

from streamer.adapters import keys
from streamer.adapters.alert_stream import GroupReader, _backoff, _raise_if_cancelling
from streamer.adapters.broker import ensure_topics
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import Store
from streamer.settings import Settings

__all__ = [
    "RECLAIM_IDLE_S",
    "AlertDelivery",
    "InvalidNotice",
    "Notice",
    "Webhook",
    "consumer_name",
    "ensure_groups",
    "sign",
    "verify",
]

log = logging.getLogger("hotspots.alerts")

KAFKA_GROUP = "kafka"
RECLAIM_IDLE_S = 30.0  # an entry pending this long on another consumer is taken over
MAX_BACKOFF_S = 300.0  # webhook retry delays double up to this (docs/alerts.md)
SIGNATURE_TOLERANCE_S = 300
KAFKA_TIMEOUT_S = 10.0  # a produce or topic check the broker does not answer in time is retried
# Alerts are a handful per detection tick: one partition gives Kafka consumers
# the stream's own total order. An existing topic keeps its partition count.
ALERT_TOPIC_PARTITIONS = 1
_KAFKA_RETRY_S = (0.5, 5.0)  # first delay, cap
_STOP_TIMEOUT_S = 5.0
_CRASH_PAUSE_S = 1.0


# signatures -------------------------------------------------------------
def _digest(secret: bytes, body: bytes, t: int) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The ``X-Hotspots-Signature`` value for ``body`` sent at Unix second ``t``:
    ``t=T,v1=HEX`` with HEX = HMAC-SHA256(secret, f"{t}." + body).

    >>> sign(b"secret", b'{"a":1}', 1700000000)
    't=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686'
    """
    return f"t={t},v1={_digest(secret, body, t)}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """True when ``header`` (``t=T,v1=HEX``) signs ``body`` with ``secret`` and
    ``t`` lies within ``tolerance_s`` of ``now`` (Unix seconds), which turns
    away replays of old deliveries. Compares in constant time; a malformed
    header is simply not valid."""
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            try:
                t = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now - t) > tolerance_s:
        return False
    expected = _digest(secret, body, t).encode()
    # every candidate is compared, so the time taken does not tell which matched
    matches = [hmac.compare_digest(expected, c.encode()) for c in candidates]
    return any(matches)


# notices ----------------------------------------------------------------
class InvalidNotice(ValueError):
    """A stream entry that is not a notice as ``docs/alerts.md`` defines it."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One stream entry, ready to send: ``body`` is the JSON that Kafka gets
    as value and webhooks as POST body."""

    stream_id: str
    kind: str
    alert_id: str
    body: bytes

    @classmethod
    def from_entry(cls, stream_id: str, fields: Mapping[bytes, bytes]) -> Notice:
        """The notice of a stream entry (fields ``kind``, ``id``, ``alert``)."""
        try:
            kind = fields[b"kind"].decode()
            alert_id = fields[b"id"].decode()
            alert = orjson.loads(fields[b"alert"])
        except KeyError as exc:
            raise InvalidNotice(f"field {exc.args[0]!r} missing") from None
        except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
            raise InvalidNotice(f"undecodable field: {exc}") from None
        body = orjson.dumps({"kind": kind, "stream_id": stream_id, "alert": alert})
        return cls(stream_id, kind, alert_id, body)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook target, its secret already read from the environment."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    kinds: frozenset[str]
    timeout_s: float
    max_attempts: int
    backoff_s: float

    @property
    def target(self) -> str:
        """The metrics label and log name of this target."""
        return f"webhook:{self.name}"


def consumer_name() -> str:
    """A consumer name unique to this process: ``hostname-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


# delivery ---------------------------------------------------------------
class AlertDelivery:
    """Forwards alert notices to Kafka and to each webhook, each in its own task."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream_key: str,
        topic: str,
        bootstrap: str,
        webhooks: Sequence[Webhook],
        metrics: WorkerMetrics,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
        kafka_options: Mapping[str, Any] | None = None,  # aiokafka TLS/SASL arguments
        admin_options: Mapping[str, Any] | None = None,  # kafka-python's, for the topic
    ) -> None:
        self.client = client
        self.stream_key = stream_key
        self.topic = topic
        self.bootstrap = bootstrap
        self.kafka_options = dict(kafka_options or {})
        self.admin_options = dict(admin_options or {})
        self.webhooks = list(webhooks)
        self.metrics = metrics
        self.consumer = consumer or consumer_name()
        self.clock = clock
        self.reclaim_idle_s = RECLAIM_IDLE_S
        self.kafka_timeout_s = KAFKA_TIMEOUT_S
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: Any = None  # AIOKafkaProducer once connected
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        for target in ["kafka", *(w.target for w in self.webhooks)]:
            for outcome in ("delivered", "retried", "given_up"):
                metrics.alert_deliveries.labels(target, outcome)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._tasks)

    async def start(self) -> None:
        """Create the consumer groups, then start one task for Kafka and one
        per webhook. Notices written after this returns are delivered."""
        if self._tasks:
            raise RuntimeError("alert delivery is already running")
        kafka = self._reader(KAFKA_GROUP)
        hooks = [(w, self._reader(w.target)) for w in self.webhooks]
        for reader in [kafka, *(r for _, r in hooks)]:
            await reader.create_group()
        self._tasks.append(self._spawn("kafka", functools.partial(self._kafka_loop, kafka)))
        for hook, reader in hooks:
            self._sessions[hook.name] = aiohttp.ClientSession(
                headers={"User-Agent": "hotspots-alerts"}
            )
            self._tasks.append(
                self._spawn(hook.target, functools.partial(self._webhook_loop, hook, reader))
            )
        log.info(
            "alert_delivery_started key=%s consumer=%s topic=%s webhooks=%s",
            self.stream_key,
            self.consumer,
            self.topic,
            ",".join(w.name for w in self.webhooks) or "-",
        )

    async def stop(self) -> None:
        """Cancel the tasks and close the producer and HTTP sessions. Entries
        in flight stay pending and are delivered again later (at least once).
        Bounded in time: never hangs on a dead broker or webhook."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
            if pending:
                log.warning("alert_delivery_stop_slow tasks=%d", len(pending))
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close_producer(producer)
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()
        if tasks:
            log.info("alert_delivery_stopped consumer=%s", self.consumer)

    def _reader(self, group: str) -> GroupReader:
        return GroupReader(self.client, self.stream_key, group, self.consumer, self.reclaim_idle_s)

    def _spawn(self, target: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def supervised() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _raise_if_cancelling()
                    # a bug must not end delivery for good: log it, start over
                    # (the entries in hand stay pending and come first again)
                    log.exception("alert_delivery_crashed target=%s", target)
                    await asyncio.sleep(_CRASH_PAUSE_S)

        return asyncio.create_task(supervised(), name=f"alert-delivery-{target}")

    def _count(self, target: str, outcome: str) -> None:
        self.metrics.alert_deliveries.labels(target, outcome).inc()

    def _invalid(self, target: str, stream_id: str, exc: InvalidNotice) -> None:
        log.error(
            "alert_notice_invalid target=%s stream_id=%s reason=%s: skipped",
            target,
            stream_id,
            exc,
        )
        self._count(target, "given_up")

    # kafka ----------------------------------------------------------------
    async def _kafka_loop(self, reader: GroupReader) -> None:
        reader.rewind()
        while True:
            # connected before reading: while the broker is down, new entries
            # stay unclaimed for any other process that can deliver them
            await self._connect_kafka(reader, held=())
            for stream_id, fields in await reader.batch():
                try:
                    notice = Notice.from_entry(stream_id, fields)
                except InvalidNotice as exc:
                    self._invalid("kafka", stream_id, exc)
                else:
                    await self._produce(notice, reader)
                await reader.ack([stream_id])

    async def _connect_kafka(self, reader: GroupReader, held: Sequence[str]) -> Any:
        """The producer, after making sure the topic exists; retried with
        backoff while the broker is unreachable (``held`` entries kept fresh)."""
        failures = 0
        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="hotspots-alerts",
                acks="all",
                request_timeout_ms=int(self.kafka_timeout_s * 1000),
                retry_backoff_ms=200,
                **self.kafka_options,
            )
            try:
                await asyncio.to_thread(
                    ensure_topics,
                    self.bootstrap,
                    {self.topic: ALERT_TOPIC_PARTITIONS},
                    timeout_s=self.kafka_timeout_s,
                    client_options=self.admin_options,
                )
                await producer.start()
            except asyncio.CancelledError:
                await self._close_producer(producer)
                raise
            except Exception as exc:  # kafka-python, aiokafka and socket errors alike
                await self._close_producer(producer)
                delay = _backoff(failures, *_KAFKA_RETRY_S)
                failures += 1
                self.metrics.kafka_errors.inc()
                log.warning(
                    "alert_kafka_unavailable bootstrap=%s failures=%d retry_in_s=%.1f error=%r",
                    self.bootstrap,
                    failures,
                    delay,
                    exc,
                )
                await reader.pause(delay, held)
                continue
            self._producer = producer
            if failures:
                log.info("alert_kafka_recovered after_failures=%d", failures)
        return self._producer

    async def _produce(self, notice: Notice, reader: GroupReader) -> None:
        """Send until the broker acknowledges; nothing is ever dropped."""
        failures = 0
        held = [notice.stream_id]
        while True:
            producer = await self._connect_kafka(reader, held)
            try:
                await asyncio.wait_for(
                    producer.send_and_wait(
                        self.topic,
                        notice.body,
                        key=notice.alert_id.encode(),
                        headers=[("kind", notice.kind.encode())],
                    ),
                    # the producer expires the batch itself after kafka_timeout_s
                    timeout=self.kafka_timeout_s + 5.0,
                )
            except (KafkaError, TimeoutError) as exc:
                delay = _backoff(failures, *_KAFKA_RETRY_S)
                failures += 1
                self._count("kafka", "retried")
                self.metrics.kafka_errors.inc()
                log.warning(
                    "alert_kafka_send_failed topic=%s stream_id=%s alert=%s failures=%d "
                    "retry_in_s=%.1f error=%r",
                    self.topic,
                    notice.stream_id,
                    notice.alert_id,
                    failures,
                    delay,
                    exc,
                )
                # start afresh: a broker that came back may have lost the topic
                # (and a producer's metadata would still name its partitions)
                self._producer = None
                await self._close_producer(producer)
                await reader.pause(delay, held)
                continue
            self._count("kafka", "delivered")
            log.info(
                "alert_delivered target=kafka topic=%s stream_id=%s alert=%s kind=%s",
                self.topic,
                notice.stream_id,
                notice.alert_id,
                notice.kind,
            )
            return

    async def _close_producer(self, producer: Any) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout=_STOP_TIMEOUT_S)
        except Exception as exc:  # closing is best effort
            log.warning("alert_kafka_close_failed error=%r", exc)

    # webhooks -------------------------------------------------------------
    async def _webhook_loop(self, hook: Webhook, reader: GroupReader) -> None:
        reader.rewind()
        while True:
            for stream_id, fields in await reader.batch():
                try:
                    notice = Notice.from_entry(stream_id, fields)
                except InvalidNotice as exc:
                    self._invalid(hook.target, stream_id, exc)
                else:
                    if notice.kind in hook.kinds:
                        await self._post_until_done(hook, notice, reader)
                await reader.ack([stream_id])

    async def _post_until_done(self, hook: Webhook, notice: Notice, reader: GroupReader) -> None:
        delay = hook.backoff_s
        for attempt in range(1, hook.max_attempts + 1):
            failure = await self._post(hook, notice)
            if failure is None:
                self._count(hook.target, "delivered")
                log.info(
                    "alert_delivered target=%s stream_id=%s alert=%s kind=%s attempt=%d",
                    hook.target,
                    notice.stream_id,
                    notice.alert_id,
                    notice.kind,
                    attempt,
                )
                return
            if attempt == hook.max_attempts:
                break
            self._count(hook.target, "retried")
            log.warning(
                "alert_webhook_failed target=%s stream_id=%s alert=%s attempt=%d "
                "retry_in_s=%.2f reason=%s",
                hook.target,
                notice.stream_id,
                notice.alert_id,
                attempt,
                delay,
                failure,
            )
            await reader.pause(delay, [notice.stream_id])
            delay = min(delay * 2, MAX_BACKOFF_S)
        self._count(hook.target, "given_up")
        log.error(
            "alert_webhook_given_up target=%s stream_id=%s alert=%s kind=%s attempts=%d reason=%s",
            hook.target,
            notice.stream_id,
            notice.alert_id,
            notice.kind,
            hook.max_attempts,
            failure,
        )

    async def _post(self, hook: Webhook, notice: Notice) -> str | None:
        """One POST; ``None`` when answered 2xx, else why it failed."""
        session = self._sessions[hook.name]
        headers = {
            "Content-Type": "application/json",
            "X-Hotspots-Event": notice.kind,
            "X-Hotspots-Delivery": notice.stream_id,
            # signed per attempt, so a late retry is not refused as a replay
            "X-Hotspots-Signature": sign(hook.secret, notice.body, int(self.clock())),
        }
        try:
            async with session.post(
                hook.url,
                data=notice.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=hook.timeout_s),
                # a redirect would send the signed notice elsewhere: count it as a failure
                allow_redirects=False,
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"status={response.status}"
        except TimeoutError:
            return f"timeout_s={hook.timeout_s:g}"
        except (aiohttp.ClientError, OSError) as exc:
            return f"error={exc!r}"


async def ensure_groups(store: Store, settings: Settings) -> None:
    """Create the delivery groups (Kafka, each webhook) if missing, from the
    stream's end. Whoever writes notices calls this before its first write,
    so no notice predates the groups (a group starts at ``$``)."""
    groups = [KAFKA_GROUP, *(f"webhook:{name}" for name in settings.alerts.webhooks)]
    for group in groups:
        try:
            await store.client.xgroup_create(
                keys.alert_notices(store.prefix), group, id="$", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
