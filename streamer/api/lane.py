"""The fast lane: the busiest reads answered before FastAPI's per-request
work, reading the request's scope exactly as Starlette would."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from streamer.api.auth import Caller, Gate, bearer
from streamer.api.errors import STORE_DOWN, store_unavailable
from streamer.api.metrics import ApiMetrics

Answer = Callable[[Any], Awaitable[Response | None]]  # an ASGI scope -> a response or None


class LaneApp(FastAPI):
    """FastAPI, with a fast lane for the busiest reads (``/v1/risk`` and
    ``/v1/hotspots``): their usual request is answered here, before FastAPI's
    per-request work (its middleware stack, routing through every route, a
    request object, solving the token dependency and each query parameter
    through pydantic: more than half the CPU of such a request).

    A lane's answer returns None for anything unusual (a missing or refused
    token, a parameter it does not know, a value it cannot read exactly as
    FastAPI would), and the lane leaves alone requests with an ``Origin``
    (browsers' cross-origin calls: CORS adds its headers) or a root path:
    those go the general way, which answers them as before. So does a
    request whose answer raised (say an unknown horizon: the route raises the
    same error again, through FastAPI's handlers), except that a store that
    is down gets its 503 at once. Lane requests are timed under their
    route, as the general way's."""

    def __init__(self, metrics: ApiMetrics, **options: Any) -> None:
        super().__init__(**options)
        self.metrics = metrics
        self.lanes: dict[str, Answer] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        answer = self.lanes.get(scope["path"]) if scope["type"] == "http" else None
        if (
            answer is None
            or scope["method"] != "GET"
            or scope.get("root_path")
            or any(key == b"origin" for key, _ in scope["headers"])
        ):
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        response: Response | None = None
        try:
            try:
                response = await answer(scope)
            except STORE_DOWN:
                response = store_unavailable()
            except Exception:  # the general way raises it again, through FastAPI's handlers
                response = None
            if response is None:
                await super().__call__(scope, receive, send)  # (which times it)
            else:
                await response(scope, receive, send)
        finally:
            if response is not None:
                took = time.perf_counter() - started
                self.metrics.request_took(scope["path"], "GET", response.status_code, took)


def query_of(scope: Any) -> dict[str, str]:
    """A request's query parameters as Starlette reads them (the last of a
    repeated one wins, as in ``request.query_params.get``)."""
    text = scope["query_string"].decode("latin-1")
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def header_of(scope: Any, name: bytes) -> str:
    """A request header (lower-case ``name``) as Starlette reads it: the
    first one, or "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def caller_of(gate: Gate, scope: Any) -> Caller | None:
    """Who the request's ``Authorization: Bearer`` token is (a token in the
    URL is not read here: the general way refuses it)."""
    return gate.caller_of(bearer(header_of(scope, b"authorization"), None))
