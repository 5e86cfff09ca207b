"""The push hub: the publisher's ranking changes and the detector's alert
notices (Redis pub/sub), each encoded once, fanned out to the bounded queue
of every push client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.publisher import channel
from streamer.adapters.store import Store
from streamer.api.metrics import ApiMetrics

log = logging.getLogger("hotspots.api")

Send = Callable[[dict[str, Any]], Awaitable[None]]  # an ASGI send


def ws_event(body: bytes) -> dict[str, Any]:
    """A JSON message as the ASGI event a WebSocket sends it with."""
    return {"type": "websocket.send", "text": body.decode()}


def sse_event(body: bytes) -> dict[str, Any]:
    """A JSON message as the ASGI event an event stream sends it with."""
    return {"type": "http.response.body", "body": b"data: " + body + b"\n\n", "more_body": True}


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One message for every push client, encoded once: the same ASGI
    events go to each of them (uvicorn and the middleware in front of the
    push routes only read body events; one that rewrote them, such as a
    GZip middleware, would need copies). ``resync`` and ``heartbeat`` are
    only marks: each client sends its own."""

    type: str
    sequence: int  # an update's; -1 for other kinds
    ws: dict[str, Any]
    sse: dict[str, Any]

    @classmethod
    def of(cls, message: dict[str, Any]) -> PushMessage:
        body = orjson.dumps(message)
        sequence = int(message["sequence"]) if message["type"] == "update" else -1
        return cls(message["type"], sequence, ws_event(body), sse_event(body))

    @classmethod
    def mark(cls, kind: str) -> PushMessage:
        return cls(kind, -1, {}, {})


RESYNC = PushMessage.mark("resync")
HEARTBEAT = PushMessage.mark("heartbeat")


@dataclass(eq=False)
class Client:
    """One push connection: a bounded queue the hub fills, and when its
    next heartbeat is due (monotonic seconds) with the timer that checks."""

    queue: asyncio.Queue[PushMessage]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    due_s: float = 0.0
    timer: asyncio.TimerHandle | None = None


class Hub:
    """Fans the publisher's ranking changes and the detector's alert
    notices (Redis pub/sub) out to push clients. A client whose queue is
    full is dropped, never waited for."""

    def __init__(self, store: Store, client_queue: int, metrics: ApiMetrics) -> None:
        self.store = store
        self.client_queue = client_queue
        self.metrics = metrics
        self.clients: set[Client] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def join(self) -> Client:
        client = Client(asyncio.Queue(maxsize=self.client_queue))
        self.clients.add(client)
        return client

    def leave(self, client: Client) -> None:
        self.clients.discard(client)

    def offer(self, client: Client, notice: PushMessage) -> None:
        """Queues the notice for the client, or drops the client when its
        queue is full."""
        try:
            client.queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.clients.discard(client)
            client.dropped.set()
            self.metrics.dropped.inc()
            log.info("push_client_dropped reason=queue_full size=%d", self.client_queue)

    def broadcast(self, notice: PushMessage) -> None:
        for client in list(self.clients):
            self.offer(client, notice)

    async def _listen(self) -> None:
        ranking = channel(self.store)
        alerts = keys.alert_channel(self.store.prefix)
        while True:
            pubsub = self.store.client.pubsub()
            try:
                await pubsub.subscribe(ranking, alerts)
                # (re)subscribed: whatever was published meanwhile is lost to
                # us, so clients must re-sync from a fresh snapshot, which
                # also carries the open alerts.
                self.broadcast(RESYNC)
                async for raw in pubsub.listen():
                    if raw.get("type") != "message":
                        continue
                    if text(raw.get("channel")) == alerts:
                        self._alert(raw["data"])
                        continue
                    body = orjson.loads(raw["data"])
                    update = {
                        "type": "update",
                        "sequence": int(body["seq"]),
                        "previous": body.get("previous"),
                        "at": body["at"],
                        "lists": body["lists"],
                    }
                    self.broadcast(PushMessage.of(update))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: wait and subscribe again
                log.warning("push_subscription_lost error=%s", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _alert(self, data: bytes) -> None:
        """Forwards one alert notice as it is. A malformed one is logged and
        skipped: it must not cost the subscription (and every client a resync)."""
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "alert":
            log.warning("alert_notice_ignored reason=not_an_alert_message size=%d", len(data))
            return
        self.broadcast(PushMessage.of(message))
