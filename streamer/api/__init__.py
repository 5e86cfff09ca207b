"""The HTTP API, live push and wall display (``hotspots serve``).

An ASGI app (FastAPI on uvicorn) over the same Redis store the workers
write. Everything under ``/v1`` needs a bearer token, configured by its
SHA-256 digest with a role (``display``, ``dispatch``, ``admin``); the push
channels also take it as ``?access_token=`` (browsers cannot set headers on
an EventSource). ``/healthz``, ``/readyz`` and ``/metrics`` stay open. Only
aggregated cells leave the engine: no event ids, no coordinates of events.
The patrol dosage routes (``/v1/dosage``) read and set what
:class:`~streamer.adapters.patrols.Dosage` keeps; the officer's phone page
is served at ``/officer``.

:func:`build` wires the app; each route group lives in a module of its own
(``routes_*``, :mod:`~streamer.api.web`, :mod:`~streamer.api.push`) and
gets what it needs from one :class:`~streamer.api.context.Api`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.utils import HIREDIS_AVAILABLE

from streamer import app as composition
from streamer import openapi
from streamer.adapters.patrols import NOTE_MAX_CHARS
from streamer.adapters.store import EngineClock, Store
from streamer.api import (
    errors,
    push,
    routes_alerts,
    routes_cells,
    routes_display,
    routes_dosage,
    routes_hotspots,
    routes_probes,
    web,
)
from streamer.api.auth import ADMIN, ANY_ROLE, DISPATCH, ROLES, Caller, Gate, Guards, token_digest
from streamer.api.cache import RankingTotals
from streamer.api.context import Api
from streamer.api.geojson import read_outline, study_area
from streamer.api.hub import Hub
from streamer.api.lane import LaneApp
from streamer.api.metrics import ApiMetrics, Timing
from streamer.api.params import BBOX_PATTERN, DATE_PATTERN
from streamer.api.ranking import RankingMoved, pages
from streamer.core.weekhours import DAYS, HOUR_PATTERN
from streamer.settings import AUTO, Settings

log = logging.getLogger("hotspots.api")


def display_outline(settings: Settings) -> Path | None:
    """What the display draws: ``display.districts``, else the study area's
    outline (``events.boundary`` when it names a file), else nothing."""
    chosen = settings.display.districts or settings.events.boundary
    return Path(chosen) if chosen and chosen != AUTO else None


def build(settings: Settings, client: aioredis.Redis | None = None) -> FastAPI:
    """The ASGI app for ``settings`` (tests pass their own Redis client).

    An app that makes its own client is the whole of its process (``serve``,
    bench.api): at startup it takes what was built so far out of the garbage
    collector's rounds (:func:`gc.freeze`). Those objects live as long as the
    server, and a full collection that walked them (about 120 k) stopped every
    request for 60-80 ms about every ten seconds at 1,000 requests/s, the
    worst of the latency tail."""
    own_client = client is None
    # push clients and requests share the pool: room for many, waiting when full
    store = composition.store(
        settings, client or composition.redis_client(settings, max_connections=512)
    )
    metrics = ApiMetrics()
    hub = Hub(store, settings.api.client_queue, metrics)
    outline = display_outline(settings)
    gate = Gate({t.token_sha256: Caller(name, t.role) for name, t in settings.api.tokens.items()})
    api = Api(
        settings=settings,
        store=store,
        metrics=metrics,
        hub=hub,
        gate=gate,
        guards=Guards.of(gate),
        boundary=read_outline(outline, settings.display.district_label),
        area=study_area(settings, outline),
        families=sorted({rule.family for rule in settings.categories.values()}),
        clock=EngineClock(store, settings.time.clock),
        totals=RankingTotals(store),
    )
    app = LaneApp(
        metrics,
        title="hotspots",
        version="1",
        summary="Real-time hot spots: rankings, cells, dispatch risk, alerts, live push",
        lifespan=_lifespan(hub, store, own_client),
    )
    app.state.api = api
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )
    errors.add_handlers(app)
    app.add_middleware(Timing, metrics=metrics)
    # (in this order: the OpenAPI document lists the paths as they were added)
    routes_probes.add_routes(app, api)
    web.add_routes(app, settings.api.tile_url)
    routes_display.add_routes(app, api)
    routes_hotspots.add_routes(app, api)
    routes_cells.add_routes(app, api)
    routes_alerts.add_routes(app, api)
    routes_dosage.add_routes(app, api)
    push.add_routes(app, api)
    app.openapi = _document(app, api)  # type: ignore[method-assign]
    return app


def _lifespan(
    hub: Hub, store: Store, own_client: bool
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Starts the push hub (and, for an app with its own client, freezes
    what was built so far out of the garbage collector's rounds); on the
    way out stops the hub and closes the client the app made."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if own_client:
            gc.collect()
            gc.freeze()
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            if own_client:
                await store.client.aclose()

    return lifespan


def _document(app: FastAPI, api: Api) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, made once (:mod:`streamer.openapi`)."""
    store, settings = api.store, api.settings
    facts = openapi.Facts(
        horizons=store.names,
        resolutions=store.resolutions,
        families=api.families,
        blends=sorted(settings.blends),
        days=DAYS,
        bbox_pattern=BBOX_PATTERN,
        hour_pattern=HOUR_PATTERN,
        date_pattern=DATE_PATTERN,
        note_max_chars=NOTE_MAX_CHARS,
    )

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.document(FastAPI.openapi(app), facts)
        return app.openapi_schema

    return document


class _RedactTokens(logging.Filter):
    """Keeps ``access_token=...`` out of the server's log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _TOKEN_IN_URL.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        record.msg = _TOKEN_IN_URL.sub(r"\1<redacted>", str(record.msg))
        return True


_TOKEN_IN_URL = re.compile(r"(access_token=)[^&\s\"']+")


# uvicorn's options for this app (``serve`` and bench.api run it with them).
# The event loop and HTTP parser are named, not "auto": uvloop and httptools
# are dependencies, and without them a request takes 1.3-1.7 times the CPU
# (bench.api), so a broken install fails at start instead of running slow.
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "timeout_graceful_shutdown": 5,  # push clients never end by themselves
    "ws_per_message_deflate": False,  # compressing each update per client cost ~40 % of push CPU
}


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API until interrupted (``hotspots serve``)."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_RedactTokens())
    if not HIREDIS_AVAILABLE:  # (redis-py falls back to its own parser without a word)
        log.warning("redis_parser=python reason=hiredis_not_installed (more CPU per reply)")
    uvicorn.run(
        build(settings),
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_level="info",
        **SERVER_OPTIONS,
    )


__all__ = [
    "ADMIN",
    "ANY_ROLE",
    "DISPATCH",
    "ROLES",
    "SERVER_OPTIONS",
    "Api",
    "ApiMetrics",
    "Caller",
    "LaneApp",
    "RankingMoved",
    "build",
    "display_outline",
    "pages",
    "serve",
    "token_digest",
]
