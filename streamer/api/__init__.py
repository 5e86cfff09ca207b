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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import hmac
import logging
import math
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.utils import HIREDIS_AVAILABLE
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.websockets import WebSocketDisconnect

from streamer import app as wiring
from streamer import openapi
from streamer.adapters.patrols import NOTE_MAX_CHARS, Dosage, PlanError
from streamer.adapters.store import CellDetails, EngineClock, Ranked, Store
from streamer.api.alerts import read_alerts, text_of
from streamer.api.auth import (
    ADMIN,
    ANY_ROLE,
    DISPATCH,
    QUERY_TOKEN_REFUSED,
    Caller,
    bearer,
    token_digest,
)
from streamer.api.errors import (
    MESSAGE_CHARS,
    STORE_DOWN,
    cut,
    invalid,
    store_unavailable,
    validation_failed,
)
from streamer.api.geojson import in_box, polygon, read_outline, study_area
from streamer.api.hub import HEARTBEAT, Client, Hub, Send, sse_event, ws_event
from streamer.api.lane import LaneApp, header_of, query_of
from streamer.api.metrics import Metrics, Timing
from streamer.api.params import (
    BBOX_PATTERN,
    DATE_PATTERN,
    DAYS,
    HOTSPOTS_DEFAULT,
    HOUR_PATTERN,
    MAX_LIMIT,
    RISK_PARAMS,
    HotspotsQuery,
    decimal_in,
    local_day,
    parse_bbox,
    window_hours,
)
from streamer.core import decay
from streamer.core.cells import cell_from_hex, cell_hex, cell_of, ring
from streamer.settings import DATA_DIR, Settings

log = logging.getLogger("hotspots.api")

WEB = Path(str(resources.files("streamer") / "web"))
DEFAULT_BOUNDARY = DATA_DIR / "philadelphia_police_districts.geojson"


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


@dataclass(slots=True)
class Listing:
    """A ``/v1/hotspots`` answer for one query and sequence number, made at
    ``at_s``: its items (scores decayed to ``at_s``), the ranking's total,
    each item's hexagon encoded once (a third of the encoding's work), and,
    once a JSON request came at ``at_s`` itself (the event clock moves by
    steps), the JSON answer for that instant."""

    at_s: float
    items: list[dict[str, Any]]
    total: float
    polygons: list[orjson.Fragment]
    body: bytes | None = None


@dataclass
class Api:
    """What the routes share."""

    settings: Settings
    store: Store
    metrics: Metrics
    hub: Hub
    digests: dict[str, Caller]  # sha256 hex -> the token's name and role
    boundary: bytes
    clock: EngineClock
    _totals: dict[tuple[str, int, int], float] = field(default_factory=dict)
    # /v1/hotspots answers per query and sequence number
    _lists: dict[tuple[Any, ...], Listing] = field(default_factory=dict)
    _clock_read: float = -1.0
    _clock_reading: asyncio.Future[float] | None = None

    async def now(self) -> float:
        """``now`` for decay: the wall clock, or (``time.clock = "event"``,
        replays of old data) the newest event time the store applied, read
        at most twice a second."""
        if self.clock.mode == "wall":
            return time.time()
        if time.monotonic() - self._clock_read >= 0.5:
            self._clock_read = time.monotonic()
            self._clock_reading = asyncio.ensure_future(self.clock.refresh())
        if self._clock_reading is not None and not self._clock_reading.done():
            # callers meanwhile wait for the same read: until the first one
            # ends, the clock holds the wall time, not an event time
            return await asyncio.shield(self._clock_reading)
        return self.clock()

    async def sequence(self) -> int:
        return await self.store.seq()

    async def total(self, horizon: str, resolution: int, seq: int, at_s: float) -> float:
        """Sum of the ranking's stored scores (cached per sequence number),
        decayed to ``at_s``."""
        key = (horizon, resolution, seq)
        stored = self._totals.get(key)
        landmark = (await self.store.landmarks()).get(horizon, 0)
        if stored is None:
            rows: Any = await self.store.client.zrange(
                self.store.key("rank", horizon, resolution), 0, -1, withscores=True
            )
            stored = math.fsum(float(v) for _, v in rows)
            if len(self._totals) > 256:
                self._totals.clear()
            self._totals[key] = stored
        return stored * decay.decay_factor(at_s, self.store.horizons[horizon], landmark)


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
    store = wiring.store(settings, client or wiring.redis_client(settings, max_connections=512))
    metrics = Metrics()
    hub = Hub(store, settings.api.client_queue, metrics)
    boundary_path = settings.api.boundary or settings.events.boundary or str(DEFAULT_BOUNDARY)
    api = Api(
        settings,
        store,
        metrics,
        hub,
        {t.token_sha256: Caller(name, t.role) for name, t in settings.api.tokens.items()},
        read_outline(Path(boundary_path)),
        EngineClock(store, settings.time.clock),
    )

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

    app = LaneApp(
        metrics,
        title="hotspots",
        version="1",
        summary="Real-time hot spots: rankings, cells, dispatch risk, alerts, live push",
        lifespan=lifespan,
    )
    app.state.api = api
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )

    async def store_down(request: Request, exc: Exception) -> Response:
        return store_unavailable()

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_failed(exc.errors())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route of the
            # path only (GET of /v1/dosage/plan, not its PUT): every route's
            allowed: set[str] = set()
            for route in app.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE and isinstance(route, APIRoute | Route):
                    allowed |= route.methods or set()
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
        return await http_exception_handler(request, exc)

    for error in STORE_DOWN:
        app.add_exception_handler(error, store_down)
    app.add_exception_handler(RequestValidationError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(Timing, metrics=metrics)

    def caller_of(token: str | None) -> Caller | None:
        if not token:
            return None
        digest = token_digest(token)
        for known, caller in api.digests.items():
            if hmac.compare_digest(known, digest):
                return caller
        return None

    def allow(
        roles: frozenset[str], in_query: bool = False
    ) -> Callable[[Request], Awaitable[Caller]]:
        """A dependency that admits tokens of ``roles``: from the
        ``Authorization`` header, and from ``?access_token=`` only where
        ``in_query`` (the push stream: an EventSource cannot set headers). A
        token in the URL elsewhere is refused, whatever the header says:
        URLs end up in logs, histories and Referer headers."""

        # async, though it awaits nothing: FastAPI runs a plain def dependency
        # in its thread pool, a thread hop on every request
        async def check(request: Request) -> Caller:
            header = request.headers.get("authorization", "")
            query_token = request.query_params.get("access_token")
            if query_token is not None and not in_query:
                raise HTTPException(401, QUERY_TOKEN_REFUSED, {"WWW-Authenticate": "Bearer"})
            caller = caller_of(bearer(header, query_token))
            if caller is None:
                raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
            if caller.role not in roles:
                raise HTTPException(403)
            return caller

        return check

    families = sorted({rule.family for rule in settings.categories.values()})
    area = study_area(settings, boundary_path)
    anyone = Depends(allow(ANY_ROLE))
    listener = Depends(allow(ANY_ROLE, in_query=True))
    dispatch = Depends(allow(DISPATCH))
    admin = Depends(allow(ADMIN))

    # open ------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            await store.client.ping()
        except STORE_DOWN:
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # (no-cache: displays run for days; an upgrade must reach them on reload)
    page_headers = {"Cache-Control": "no-cache", **page_security(settings.api.tile_url)}

    @app.get("/", include_in_schema=False)
    async def display() -> Response:
        return FileResponse(WEB / "index.html", headers=page_headers)

    @app.get("/officer", include_in_schema=False)
    async def officer() -> Response:
        """The officer's phone page (its API calls carry ``?token=``, as the display's)."""
        return FileResponse(WEB / "officer.html", headers=page_headers)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # (the pages have no icon: browsers ask anyway; nothing, for a day)
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = (WEB / "static" / name).resolve()
        if path.parent != (WEB / "static").resolve() or not path.is_file():
            raise HTTPException(404)
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, headers=headers)

    # /v1 -------------------------------------------------------------
    @app.get("/v1/config", dependencies=[anyone])
    async def config() -> dict[str, Any]:
        """What a display needs to draw itself."""
        s = api.settings
        names = sorted(store.names, key=lambda n: store.horizons[n])
        return {
            "name": s.api.name,
            "horizons": names,
            "half_lives_s": {n: store.horizons[n] for n in names},
            "resolutions": store.resolutions,
            "families": families,
            "default": {
                "horizon": "week" if "week" in names else names[0],
                "resolution": store.resolutions[len(store.resolutions) // 2],
            },
            "tile_url": s.api.tile_url,
            "stale_after_s": s.api.stale_after,
            "top_n": s.publish.top_n,
            "timezone": s.grid.timezone,
        }

    @app.get("/v1/boundary", dependencies=[anyone])
    async def boundary() -> Response:
        """The area's outline (GeoJSON), the display's base map."""
        return Response(api.boundary, media_type="application/geo+json")

    @app.get("/v1/hotspots", dependencies=[anyone])
    async def hotspots(
        horizon: str = Query(HOTSPOTS_DEFAULT.horizon, description="a configured horizon name"),
        resolution: int = Query(
            HOTSPOTS_DEFAULT.resolution, description="a configured H3 resolution"
        ),
        limit: int = Query(HOTSPOTS_DEFAULT.limit, ge=1, le=MAX_LIMIT),
        family: str | None = Query(None, description="rank by this family's score"),
        bbox: str | None = Query(None, description="min_lon,min_lat,max_lon,max_lat"),
        format: str = Query(HOTSPOTS_DEFAULT.format, pattern="^(json|geojson)$"),
    ) -> Response:
        """Ranked hot spot cells, scores decayed to now."""
        return await hotspots_answer(
            HotspotsQuery(horizon, resolution, limit, family, bbox, format)
        )

    async def hotspots_fast(scope: Any) -> Response | None:
        """``/v1/hotspots`` in the fast lane (:class:`LaneApp`), or None."""
        query = query_of(scope)
        caller = caller_of(bearer(header_of(scope, b"authorization"), None))
        if caller is None or caller.role not in ANY_ROLE:
            return None
        asked = HotspotsQuery.read(query)
        return None if asked is None else await hotspots_answer(asked)

    async def hotspots_answer(q: HotspotsQuery) -> Response:
        horizon, resolution, limit, family = q.horizon, q.resolution, q.limit, q.family
        check_grid(horizon, resolution, family)
        box = parse_bbox(q.bbox)
        at_s = await api.now()
        seq = await api.sequence()
        # Until the store changes (seq), the list, its shares, trends, counts
        # and peak hours stay as they are, and every score decays by one
        # factor: the answer is kept per query and seq, and rescaled.
        key = (horizon, resolution, limit, family, box, seq)
        kept = api._lists.get(key)
        if kept is None:
            at_ref, template, total_ref = await hotspot_items(
                horizon, resolution, limit, family, box, at_s, seq
            )
            polygons = [orjson.Fragment(orjson.dumps(item["polygon"])) for item in template]
            kept = Listing(at_ref, template, total_ref, polygons)
            if len(api._lists) > 256:
                api._lists.clear()
            api._lists[key] = kept
        as_json = q.format == "json"
        if as_json and at_s == kept.at_s and kept.body is not None:
            # the same query, sequence number and instant: the same answer
            return Response(kept.body, media_type="application/json")
        factor = 2.0 ** (-(at_s - kept.at_s) / store.horizons[horizon])
        total = kept.total * factor
        items = [
            {
                **item,
                "score": item["score"] * factor,
                "families": {f: v * factor for f, v in item["families"].items()},
                "polygon": encoded if as_json else item["polygon"],
            }
            for item, encoded in zip(kept.items, kept.polygons, strict=True)
        ]
        body = {
            "sequence": seq,
            "at": at_s,
            "horizon": horizon,
            "resolution": resolution,
            "family": family,
            "total": total,
            "hotspots": items,
        }
        if not as_json:
            return geojson_of(items, {k: v for k, v in body.items() if k != "hotspots"})
        content = orjson.dumps(body)
        if at_s == kept.at_s:  # (factor 1.0 exactly: x * 1.0 == x)
            kept.body = content
        return Response(content, media_type="application/json")

    async def hotspot_items(
        horizon: str,
        resolution: int,
        limit: int,
        family: str | None,
        box: tuple[float, float, float, float] | None,
        at_s: float,
        seq: int,
    ) -> tuple[float, list[dict[str, Any]], float]:
        """``/v1/hotspots``'s items and the ranking's total, decayed to ``at_s``."""
        filtered = box is not None or api.settings.api.min_count > 0
        min_count = api.settings.api.min_count

        family_total = 0.0

        async def whole() -> AsyncGenerator[list[Ranked], None]:
            nonlocal family_total
            rows = await ranked(horizon, resolution, family, at_s, seq, limit, filtered)
            if family is not None:  # (a family's ranking is read whole)
                family_total = math.fsum(r.score for r in rows)
            step = max(limit * 2, 50)
            for start in range(0, len(rows), step):
                yield rows[start : start + step]

        async def pick(
            chunks: AsyncGenerator[list[Ranked], None],
        ) -> list[tuple[Ranked, CellDetails]]:
            picked: list[tuple[Ranked, CellDetails]] = []
            async with contextlib.aclosing(chunks):
                async for rows in chunks:
                    chunk = rows if box is None else [r for r in rows if in_box(r.cell, box)]
                    details = await store.cells([r.cell for r in chunk], at_s)
                    for r in chunk:
                        d = details.get(r.cell)
                        if d is not None and d.count >= min_count:
                            picked.append((r, d))
                            if len(picked) >= limit:
                                return picked
            return picked

        picked: list[tuple[Ranked, CellDetails]] | None = None
        if family is None and filtered:
            # down the ranking page by page until enough are picked, rather
            # than all of it (0.9 s at 175 k cells); again if it moved meanwhile
            for _ in range(3):
                with contextlib.suppress(RankingMoved):
                    picked = await pick(pages(store, horizon, resolution, at_s, limit))
                    break
        if picked is None:
            picked = await pick(whole())
        # share and total are of the ranking listed: a family's own when asked
        total = (
            family_total if family is not None else await api.total(horizon, resolution, seq, at_s)
        )
        shorter = shorter_horizon(horizon)
        trend: dict[str, float | None] = {}
        if shorter is not None and picked:
            # (the cell's all-crime trend, in a family view too)
            long_total = await api.total(horizon, resolution, seq, at_s)
            short_total = await api.total(shorter, resolution, seq, at_s)
            for r, d in picked:
                share = d.scores.get(horizon, 0.0) / long_total if long_total > 0 else 0.0
                short_share = d.scores.get(shorter, 0.0) / short_total if short_total > 0 else 0.0
                trend[r.cell] = short_share / share if share > 0 else None
        items: list[dict[str, Any]] = []
        for rank, (r, d) in enumerate(picked, start=1):
            score = r.score
            items.append(
                {
                    "cell": r.cell,
                    "rank": rank,
                    "score": score,
                    "share": score / total if total > 0 else 0.0,
                    "trend": trend.get(r.cell),
                    "count": d.count,
                    "families": {f: v.get(horizon, 0.0) for f, v in d.family_scores.items()},
                    "peak_hours": peak_hours(d.hour_of_week),
                    "polygon": polygon(r.cell),
                }
            )
        return at_s, items, total

    @app.get("/v1/blends/{name}", dependencies=[anyone])
    async def blend(
        name: str,
        resolution: int = Query(9, description="a configured H3 resolution"),
        limit: int = Query(20, ge=1, le=1000),
        format: str = Query("json", pattern="^(json|geojson)$"),
    ) -> Response:
        """A configured blend's ranking (``[blends.NAME]``): each cell's score
        is ``long_share * its share of the long horizon's decayed harm + (1 -
        long_share) * its share of the short one's``; shares do not decay."""
        rule = api.settings.blends.get(name)
        if rule is None:
            known = sorted(api.settings.blends)
            raise HTTPException(404, f"no blend {cut(name)}; configured: {known}")
        check_grid(rule.long, resolution)
        min_count = api.settings.api.min_count
        seq, rows = await store.blend_top(
            rule.long, rule.short, rule.long_share, resolution, limit * 4 if min_count else limit
        )
        if min_count:
            details = await store.cells([r.cell for r in rows], await api.now())
            rows = [r for r in rows if r.cell in details and details[r.cell].count >= min_count]
        items = [
            {"cell": r.cell, "rank": rank, "score": r.score, "polygon": polygon(r.cell)}
            for rank, r in enumerate(rows[:limit], start=1)
        ]
        body = {
            "sequence": seq,
            "blend": name,
            "long": rule.long,
            "short": rule.short,
            "long_share": rule.long_share,
            "resolution": resolution,
            "hotspots": items,
        }
        if format == "geojson":
            return geojson_of(items, {k: v for k, v in body.items() if k != "hotspots"})
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/v1/cells/{cell}", dependencies=[anyone])
    async def cell_detail(cell: str) -> dict[str, Any]:
        """One cell in full, with its neighbours' scores."""
        try:
            value = cell_from_hex(cell)
        except ValueError:
            raise HTTPException(404, "not an H3 cell id") from None
        hexed = cell_hex(value)
        at_s = await api.now()
        d = await store.cell(hexed, at_s)
        if d is None or d.count < api.settings.api.min_count:
            raise HTTPException(404, "no data for this cell")
        neighbours = [cell_hex(c) for c in ring(value, 1) if c != value]
        near = await store.cells(neighbours, at_s)
        return {
            "cell": hexed,
            "resolution": (value >> 52) & 0xF,
            "at": at_s,
            "count": d.count,
            "last_event_at": d.last_event_s,
            "scores": d.scores,
            "families": {"counts": d.family_counts, "scores": d.family_scores},
            "categories": {"counts": d.category_counts, "scores": d.category_scores},
            "hour_of_week": d.hour_of_week,
            "peak_hours": peak_hours(d.hour_of_week),
            "polygon": polygon(hexed),
            "neighbours": {
                c: near[c].scores if c in near else dict.fromkeys(store.names, 0.0)
                for c in neighbours
            },
        }

    @app.get("/v1/risk", dependencies=[dispatch])
    async def risk(
        lat: float = Query(..., ge=-90, le=90), lon: float = Query(..., ge=-180, le=180)
    ) -> Response:
        """For dispatch: the location's cell at each resolution and its rank,
        percentile and hot-spot status (in the top ``publish.top_n``) per horizon."""
        return await risk_answer(lat, lon)

    async def risk_fast(scope: Any) -> Response | None:
        """``/v1/risk`` in the fast lane (:class:`LaneApp`), or None."""
        query = query_of(scope)
        caller = caller_of(bearer(header_of(scope, b"authorization"), None))
        if caller is None or caller.role not in DISPATCH or not query.keys() <= RISK_PARAMS:
            # (a token in the URL among them: refused the general way)
            return None
        lat = decimal_in(query.get("lat"), 90.0)
        lon = decimal_in(query.get("lon"), 180.0)
        return None if lat is None or lon is None else await risk_answer(lat, lon)

    async def risk_answer(lat: float, lon: float) -> Response:
        at_s = await api.now()
        cells = [cell_hex(cell_of(lat, lon, r)) for r in store.resolutions]
        pairs = list(zip(store.resolutions, cells, strict=True))
        seq, landmarks, rows = await store.positions(pairs)
        top_n = api.settings.publish.top_n
        factors = {
            n: decay.decay_factor(at_s, store.horizons[n], k)
            for n, k in landmarks.items()
            if k is not None
        }
        out = []
        for res, c, per in zip(store.resolutions, cells, rows, strict=True):
            horizons: dict[str, Any] = {}
            for n, found in per.items():
                if found is None or n not in factors:
                    horizons[n] = {"rank": None, "score": 0.0, "percentile": 0.0, "hotspot": False}
                    continue
                rank, stored, size = found
                horizons[n] = {
                    "rank": rank + 1,
                    "score": stored * factors[n],
                    "percentile": 100.0 * (1.0 - rank / max(size, 1)),
                    "hotspot": rank < top_n,
                }
            out.append({"resolution": res, "cell": c, "horizons": horizons})
        # serialised here: FastAPI's encoder walks every value of a returned dict
        inside = area is None or area.contains(lat, lon)
        body = {"at": at_s, "sequence": seq, "in_study_area": inside, "cells": out}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/v1/windows", dependencies=[anyone])
    async def windows(
        day: str = Query(..., description="mon..sun"),
        start: str = Query(..., alias="from", description="HH:MM"),
        end: str = Query(..., alias="to", description="HH:MM (may pass midnight)"),
        resolution: int = Query(9),
        limit: int = Query(20, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Top cells for a time-of-week window, by their hour-of-week profile."""
        check_grid(store.profile_horizon, resolution)
        hours = window_hours(day, start, end)
        at_s = await api.now()
        rows = await store.window(resolution, hours, limit, at_s)
        return {
            "at": at_s,
            "resolution": resolution,
            "hours_of_week": hours,
            "timezone": api.settings.grid.timezone,
            "hotspots": [
                {"cell": r.cell, "rank": r.rank, "score": r.score, "polygon": polygon(r.cell)}
                for r in rows
            ],
        }

    @app.get("/v1/alerts", dependencies=[anyone])
    async def alerts(
        status: str = Query(
            "open",
            pattern="^(open|all)$",
            description="open: the open alerts; all: also the most recently closed ones",
        ),
        limit: int | None = Query(
            None,
            ge=1,
            le=1000,
            description="with status=all, at most this many closed alerts (default alerts.recent)",
        ),
    ) -> dict[str, Any]:
        """Alerts of emerging hot spots, as the detector keeps them
        (docs/alerts.md): the open ones, newest ``updated_at`` first; with
        ``status=all`` then the most recently closed (cleared or merged)
        ones, newest first, each as its last notice left it."""
        recent = 0
        if status == "all":
            recent = api.settings.alerts.recent if limit is None else limit
        opened, closed = await read_alerts(store, recent)
        return {"alerts": [*opened, *closed]}

    # patrol dosage -----------------------------------------------------
    dosage = Dosage(store, api.settings)

    def dosage_on() -> None:
        if not api.settings.dosage.enabled:
            raise HTTPException(404, "patrol dosage is off on this server (dosage.enabled = false)")

    # (routes list it after the token check: no token, nothing learnt, not even this)
    dosage_enabled = Depends(dosage_on)
    day_query = Query(
        None,
        alias="date",
        description="local day YYYY-MM-DD in grid.timezone (default: today on the engine's clock)",
    )

    @app.get("/v1/dosage", dependencies=[anyone, dosage_enabled])
    async def dosage_summary(day: str | None = day_query) -> dict[str, Any]:
        """Per planned hot spot on ``date``: visits, minutes, Koper visits,
        last visit, days since, compliance, minutes per unit, briefing note,
        hexagon; per unit: minutes in the planned hot spots."""
        now_s = await api.now()
        summary = await dosage.summary(local_day(day, dosage.day_of(now_s)), now_s)
        for row in summary["cells"]:
            row["polygon"] = polygon(row["cell"])
        return summary

    @app.get("/v1/dosage/plan", dependencies=[anyone, dosage_enabled])
    async def dosage_plan() -> dict[str, Any]:
        """The plan: the ranking's top N, or a list of cells with their units."""
        return await dosage.plan()

    @app.put("/v1/dosage/plan", dependencies=[admin, dosage_enabled])
    async def set_dosage_plan(
        body: Annotated[dict[str, Any], Body(examples=[{"mode": "list", "cells": []}])],
        caller: Caller = admin,
    ) -> dict[str, Any]:
        """Set the plan (admin): ``{"mode": "top"}`` or ``{"mode": "list",
        "cells": [{"cell": HEX, "units": [UNIT, ...]}, ...]}``; today's
        planned cells follow at once."""
        try:
            plan = await dosage.set_plan(body, await api.now())
        except PlanError as exc:
            raise invalid("body", "plan", str(exc)[:MESSAGE_CHARS], None) from None
        log.info("dosage_plan_set by=%s mode=%s", caller.name, plan.get("mode"))
        return plan

    @app.get("/v1/dosage/notes", dependencies=[anyone, dosage_enabled])
    async def dosage_notes() -> dict[str, Any]:
        """Briefing notes by cell: ``{"notes": {cell: {text, author, updated_at}}}``."""
        return {"notes": await dosage.notes()}

    @app.put("/v1/dosage/notes/{cell}", dependencies=[admin, dosage_enabled])
    async def set_dosage_note(
        cell: str,
        text: Annotated[str, Body(embed=True, description="the note; empty removes it")],
        caller: Caller = admin,
    ) -> dict[str, Any]:
        """Write a hot spot's briefing note (admin); its author is the token's name."""
        try:
            note = await dosage.set_note(cell, text, caller.name, await api.now())
        except PlanError as exc:
            raise invalid("body", "text", str(exc)[:MESSAGE_CHARS], None) from None
        log.info("dosage_note_set cell=%s by=%s chars=%d", cell.lower(), caller.name, len(text))
        return {"cell": cell.lower(), **note}

    @app.get("/v1/dosage/unit/{unit}", dependencies=[anyone, dosage_enabled])
    async def dosage_unit(unit: str, day: str | None = day_query) -> dict[str, Any]:
        """The officer's page: the unit's tasked hot spots, notes and minutes."""
        now_s = await api.now()
        view = await dosage.unit_view(unit, local_day(day, dosage.day_of(now_s)), now_s)
        for task in view["tasks"]:
            task["polygon"] = polygon(task["cell"])
        return view

    @app.get("/v1/stream", dependencies=[listener], response_class=Response)
    async def stream() -> Response:
        """Server-Sent Events: a snapshot (rankings and open alerts), then
        every ranking change and alert notice, with heartbeats."""
        return PushResponse(hub, relay)

    @app.websocket("/v1/ws")
    async def websocket(ws: WebSocket) -> None:
        """WebSocket: the same messages as ``/v1/stream``."""
        token = ws.query_params.get("access_token")
        header = ws.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        if caller_of(token) is None:
            await ws.close(code=1008)
            return
        await ws.accept()
        client = hub.join()

        async def listen() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()  # (nothing is expected from clients)

        await first_of(relay(client, ws.send, True), listen(), client.dropped.wait())
        hub.leave(client)
        if client.dropped.is_set():
            # fell behind: cut it off (a close frame could wait on its full buffer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1013), 1.0)

    async def relay(client: Client, send: Send, websocket: bool) -> None:
        """Sends one client its messages, in order. It joined the hub
        before the snapshot is read, so nothing published in between is
        missed; updates the snapshot already holds are skipped. Alert
        notices are not sequenced: each is passed on (one the snapshot
        already reflects is harmless, as clients apply notices by alert id,
        in order). Per message this is one wake-up and one ``send`` of the
        event the hub encoded for everyone: 500 clients share one loop."""
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
            snap = await snapshot()
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
                            "pipeline_age_s": await pipeline_age(),
                        }
                        await send(encode(orjson.dumps(beat)))
                        client.due_s = time.monotonic() + heartbeat_s
                    check_due()
        finally:
            if client.timer is not None:
                client.timer.cancel()
            hub.leave(client)
            metrics.push_clients.labels("all").dec()

    pulse_read_at = -math.inf
    pulse_reading: asyncio.Future[Any] | None = None  # the raw tick_at

    async def pipeline_age() -> float | None:
        """Seconds since the publisher last ticked (None: it never did); the
        pulse is read at most once a second, one read for all clients (the
        heartbeats of hundreds fall due together)."""
        nonlocal pulse_read_at, pulse_reading
        now = time.time()
        if pulse_reading is None or now - pulse_read_at >= 1.0:
            pulse_read_at = now
            pulse_reading = asyncio.ensure_future(
                store.client.hget(store.key("published"), "tick_at")
            )
        raw = await asyncio.shield(pulse_reading)
        return max(now - float(raw), 0.0) if raw is not None else None

    async def snapshot() -> dict[str, Any]:
        raw = await store.client.hgetall(store.key("published"))
        state = {text_of(k): v for k, v in raw.items()}
        tick_at = state.pop("tick_at", None)
        at_s = await api.now()
        lists: dict[str, Any] = {}
        for key, value in state.items():
            if key == "seq":
                continue
            k, rows = orjson.loads(value)
            name = key.split(":")[0]
            if name in store.horizons:
                factor = decay.decay_factor(at_s, store.horizons[name], k)
            elif name in settings.blends:
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

    # helpers ---------------------------------------------------------
    def geojson_of(items: list[dict[str, Any]], common: dict[str, Any]) -> Response:
        """Ranked items (each with its ``polygon``) as an RFC 7946
        FeatureCollection: each feature's properties are the JSON answer's
        item (the same fields and types, less the polygon) and the answer's
        own fields (``common``: its sequence, snapshot time ``at``, ...),
        which the collection also carries as foreign members."""
        features = [
            {
                "type": "Feature",
                "id": item["cell"],
                "geometry": {"type": "Polygon", "coordinates": [item["polygon"]]},
                "properties": {
                    **{k: v for k, v in item.items() if k != "polygon"},
                    **common,
                },
            }
            for item in items
        ]
        collection = {"type": "FeatureCollection", **common, "features": features}
        return Response(orjson.dumps(collection), media_type="application/geo+json")

    def check_grid(horizon: str, resolution: int, family: str | None = None) -> None:
        if horizon not in store.horizons:
            message = f"unknown horizon {cut(horizon)}; configured: {store.names}"
            raise invalid("query", "horizon", message, horizon)
        if resolution not in store.resolutions:
            message = f"resolution {resolution} is not configured; configured: {store.resolutions}"
            raise invalid("query", "resolution", message, resolution)
        if family is not None and family not in families:
            message = f"unknown family {cut(family)}; configured: {families}"
            raise invalid("query", "family", message, family)

    def shorter_horizon(horizon: str) -> str | None:
        shorter = [n for n in store.names if store.horizons[n] < store.horizons[horizon]]
        return max(shorter, key=lambda n: store.horizons[n]) if shorter else None

    family_rankings: dict[tuple[str, int, str, int], list[tuple[float, str]]] = {}

    async def ranked(
        horizon: str,
        resolution: int,
        family: str | None,
        at_s: float,
        seq: int,
        limit: int,
        filtered: bool,
    ) -> list[Ranked]:
        """Candidates best first: the top ``limit`` when nothing filters
        them, else the whole ranking; by a family's score when asked (the
        whole ranking read once per sequence number)."""
        if family is None:
            return await store.top(horizon, resolution, 10**9 if filtered else limit, at_s)
        key = (horizon, resolution, family, seq)
        if key not in family_rankings:
            family_rankings.clear()  # (the sequence moved on)
            family_rankings[key] = await by_family(horizon, resolution, family, at_s)
        landmark = (await store.landmarks()).get(horizon, 0)
        factor = decay.decay_factor(at_s, store.horizons[horizon], landmark)
        floor = store.prune_below
        return [
            Ranked(c, i + 1, v * factor)
            for i, (v, c) in enumerate(family_rankings[key])
            if v * factor >= floor
        ]

    async def by_family(
        horizon: str, resolution: int, family: str, at_s: float
    ) -> list[tuple[float, str]]:
        """Cells by their stored (undecayed) score for one family."""
        rows = await store.ranking(horizon, resolution, at_s)
        landmark = (await store.landmarks()).get(horizon, 0)
        undo = 1.0 / decay.decay_factor(at_s, store.horizons[horizon], landmark)
        scored: list[tuple[float, str]] = []
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            details = await store.cells([r.cell for r in chunk], at_s)
            for r in chunk:
                d = details.get(r.cell)
                v = d.family_scores.get(family, {}).get(horizon, 0.0) if d else 0.0
                if v > 0:
                    scored.append((v * undo, r.cell))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return scored

    app.lanes.update({"/v1/risk": risk_fast, "/v1/hotspots": hotspots_fast})
    facts = openapi.Facts(
        horizons=store.names,
        resolutions=store.resolutions,
        families=families,
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

    app.openapi = document  # type: ignore[method-assign]
    return app


class RankingMoved(Exception):
    """The store changed while a ranking was read page by page."""


async def pages(
    store: Store, horizon: str, resolution: int, at_s: float, limit: int
) -> AsyncGenerator[list[Ranked], None]:
    """A ranking best first, in pages that grow fourfold (from ``4 * limit``,
    at least 100), all of one snapshot: :class:`RankingMoved` when the store
    changed in between."""
    start, count, first = 0, max(4 * limit, 100), None
    while True:
        seq, page = await store.top_page(horizon, resolution, start, count, at_s)
        if first is None:
            first = seq
        elif seq != first:
            raise RankingMoved
        if page:
            yield page
        if len(page) < count:  # the end, or the tail below prune_below
            return
        start += count
        count *= 4


def page_security(tile_url: str | None) -> dict[str, str]:
    """The headers of the HTML pages: scripts, styles and calls of this
    server only, images also from the base map's tile server; never framed,
    never sniffed, no Referer (the page address carries its token).

    >>> policy = page_security("https://{s}.tiles.example:8443/{z}/{x}/{y}.png")
    >>> [p for p in policy["Content-Security-Policy"].split("; ") if p.startswith("img")]
    ["img-src 'self' data: https://*.tiles.example:8443"]
    """
    images = "'self' data:"
    if tile_url:
        parts = urllib.parse.urlsplit(tile_url.replace("{", "%7B").replace("}", "%7D"))
        host = parts.netloc
        if "%7B" in host:  # a templated subdomain ({s}.tiles...): any subdomain
            host = "*." + host.split(".", 1)[1]
        if parts.scheme in ("http", "https") and host:
            images += f" {parts.scheme}://{host}"
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def peak_hours(profile: Sequence[float], n: int = 3) -> list[int]:
    """The ``n`` hours of the week with the most weight (Monday 00h = 0).

    >>> peak_hours([0.0] * 10 + [5.0, 1.0] + [0.0] * 156, 2)
    [10, 11]
    """
    best = heapq.nlargest(n, range(len(profile)), key=profile.__getitem__)
    return [h for h in best if profile[h] > 0]


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


__all__ = ["SERVER_OPTIONS", "build", "serve", "token_digest"]
