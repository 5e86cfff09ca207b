"""Live push for displays: ``/v1/stream`` (Server-Sent Events) and
``/v1/ws`` (WebSocket) send a snapshot (rankings and open alerts), then
every ranking change and alert notice the hub fans out, with heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.api.alerts import read_alerts
from streamer.api.context import Api
from streamer.api.hub import HEARTBEAT, Client, Hub, Send, sse_event, ws_event
from streamer.core import decay

log = logging.getLogger("hotspots.api")


async def first_of(*jobs: Awaitable[Any]) -> None:
    """Run the jobs until the first ends; cancel the rest (an error that
    ended one is logged: the push client it served is gone)."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect):
                log.warning("push_client_ended error=%r", result)


class PushResponse(Response):
    """Server-Sent Events for one hub client, ended when the client goes
    away or falls behind (then the connection is cut, not drained)."""

    def __init__(self, hub: Hub, relay: Callable[[Client, Send, bool], Awaitable[None]]) -> None:
        super().__init__(media_type="text/event-stream")
        self.hub = hub
        self.relay = relay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        client = self.hub.join()

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        await first_of(self.relay(client, send, False), gone(), client.dropped.wait())
        self.hub.leave(client)
        if not client.dropped.is_set():
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        # a dropped client gets no end of response: the server cuts the connection


class Push:
    """Each push client's messages, in order: a snapshot, then the hub's
    notices, with heartbeats after a quiet spell of the rankings."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.store = api.store
        self.hub = api.hub
        self.metrics = api.metrics
        self._pulse_read_at = -math.inf
        self._pulse_reading: asyncio.Future[Any] | None = None  # the raw tick_at

    async def relay(self, client: Client, send: Send, websocket: bool) -> None:
        """Sends one client its messages, in order. It joined the hub
        before the snapshot is read, so nothing published in between is
        missed; updates the snapshot already holds are skipped. Alert
        notices are not sequenced: each is passed on (one the snapshot
        already reflects is harmless, as clients apply notices by alert id,
        in order). Per message this is one wake-up and one ``send`` of the
        event the hub encoded for everyone: 500 clients share one loop."""
        api, hub, metrics = self.api, self.hub, self.metrics
        encode = ws_event if websocket else sse_event
        heartbeat_s = api.settings.api.heartbeat
        loop = asyncio.get_running_loop()

        def check_due() -> None:
            # heartbeats are due after a quiet spell of the rankings: alert
            # notices say nothing of the pipeline's pulse and do not put them
            # off. One timer a client, re-armed per heartbeat, not per message.
            client.timer = None
            wait_s = client.due_s - time.monotonic()
            if wait_s > 0:
                client.timer = loop.call_later(wait_s, check_due)
            else:
                hub.offer(client, HEARTBEAT)  # (its queue full: the client fell behind)

        async def resync() -> int:
            snap = await self.snapshot()
            await send(encode(orjson.dumps(snap)))
            client.due_s = time.monotonic() + heartbeat_s
            return int(snap["sequence"])

        metrics.push_clients.labels("all").inc()
        try:
            seen = await resync()
            client.timer = loop.call_later(heartbeat_s, check_due)
            while not client.dropped.is_set():
                notice = await client.queue.get()
                if notice.sequence > seen:  # an update the client has not seen
                    seen = notice.sequence
                    metrics.sent.inc()
                    await send(notice.ws if websocket else notice.sse)
                    client.due_s = time.monotonic() + heartbeat_s
                elif notice.type == "alert":
                    metrics.sent.inc()
                    await send(notice.ws if websocket else notice.sse)
                elif notice.type == "resync":
                    seen = await resync()
                elif notice.type == "heartbeat":
                    if time.monotonic() >= client.due_s:  # (not put off since it was queued)
                        beat = {
                            "type": "heartbeat",
                            "sequence": seen,
                            "at": await api.now(),
                            "pipeline_age_s": await self.pipeline_age(),
                        }
                        await send(encode(orjson.dumps(beat)))
                        client.due_s = time.monotonic() + heartbeat_s
                    check_due()
        finally:
            if client.timer is not None:
                client.timer.cancel()
            hub.leave(client)
            metrics.push_clients.labels("all").dec()

    async def pipeline_age(self) -> float | None:
        """Seconds since the publisher last ticked (None: it never did); the
        pulse is read at most once a second, one read for all clients (the
        heartbeats of hundreds fall due together)."""
        store = self.store
        now = time.time()
        if self._pulse_reading is None or now - self._pulse_read_at >= 1.0:
            self._pulse_read_at = now
            self._pulse_reading = asyncio.ensure_future(
                store.client.hget(keys.published(store.prefix), "tick_at")
            )
        raw = await asyncio.shield(self._pulse_reading)
        return max(now - float(raw), 0.0) if raw is not None else None

    async def snapshot(self) -> dict[str, Any]:
        """The published rankings, decayed to now, and the open alerts."""
        store = self.store
        raw = await store.client.hgetall(keys.published(store.prefix))
        state = {text(k): v for k, v in raw.items()}
        tick_at = state.pop("tick_at", None)
        at_s = await self.api.now()
        lists: dict[str, Any] = {}
        for key, value in state.items():
            if key == "seq":
                continue
            k, rows = orjson.loads(value)
            name = key.split(":")[0]
            if name in store.horizons:
                factor = decay.decay_factor(at_s, store.horizons[name], k)
            elif name in self.api.settings.blends:
                factor = 1.0  # a blend's scores are shares: they do not decay
            else:
                continue
            lists[key] = [[c, r, v * factor] for c, r, v in rows]
        opened, _ = await read_alerts(store, 0)
        return {
            "type": "snapshot",
            "sequence": int(state.get("seq", b"0") or 0),
            "at": at_s,
            "pipeline_age_s": max(time.time() - float(tick_at), 0.0) if tick_at else None,
            "lists": lists,
            "alerts": opened,
        }


def add_routes(app: FastAPI, api: Api) -> None:
    """``/v1/stream`` and ``/v1/ws``: a token of any role, in the header or
    as ``?access_token=`` (an EventSource cannot set headers)."""
    hub, push = api.hub, Push(api)

    @app.get("/v1/stream", dependencies=[api.guards.listener], response_class=Response)
    async def stream() -> Response:
        """Server-Sent Events: a snapshot (rankings and open alerts), then
        every ranking change and alert notice, with heartbeats."""
        return PushResponse(hub, push.relay)

    @app.websocket("/v1/ws")
    async def websocket(ws: WebSocket) -> None:
        """WebSocket: the same messages as ``/v1/stream``."""
        token = ws.query_params.get("access_token")
        header = ws.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        if api.gate.caller_of(token) is None:
            await ws.close(code=1008)
            return
        await ws.accept()
        client = hub.join()

        async def listen() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()  # (nothing is expected from clients)

        await first_of(push.relay(client, ws.send, True), listen(), client.dropped.wait())
        hub.leave(client)
        if client.dropped.is_set():
            # fell behind: cut it off (a close frame could wait on its full buffer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1013), 1.0)
