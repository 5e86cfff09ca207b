"""``/v1/risk`` and ``/v1/hotspots`` answer their usual requests without
FastAPI's per-request work (``streamer.api.LaneApp``). These tests hold the
two ways to one answer: a request the lane takes gets exactly what FastAPI's
own route gives (the route is made to serve it by a parameter the lane does
not know, which FastAPI ignores), and everything the lane leaves alone
(refused tokens, values it does not read, errors) is FastAPI's, as before.
Real Redis filled from real records, real uvicorn, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import h3
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute

from streamer import api as api_module
from streamer import app
from tests import oracle
from tests.integration.test_api import (
    DISPATCH,
    DISPLAY,
    auth,
    filled,
    free_port,
    settings_for,
)
from tests.integration.test_store_exact import to_op

GENERAL = {"x": "1"}  # a parameter FastAPI ignores and the lane does not take


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=3000)


class Counted:
    """A route's own handling (FastAPI's), counting the requests it serves."""

    def __init__(self, route_app: Any) -> None:
        self.route_app = route_app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.route_app(scope, receive, send)


def count_general(application: FastAPI) -> dict[str, Counted]:
    """Per lane, a counter of the requests its route served the general way."""
    assert isinstance(application, api_module.LaneApp)
    out = {}
    for route in application.routes:
        if isinstance(route, APIRoute) and route.path in application.lanes:
            route.app = out[route.path] = Counted(route.app)
    assert set(out) == {"/v1/risk", "/v1/hotspots"}
    return out


@contextlib.asynccontextmanager
async def serving(application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    # as `hotspots serve` runs it (httptools; the event loop is the test's own)
    options = {**api_module.SERVER_OPTIONS, "timeout_graceful_shutdown": 2}
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning", **options)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as h:
            yield h
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def same(a: httpx.Response, b: httpx.Response) -> None:
    """Two answers alike: status, body, and the headers a client reads."""
    assert (a.status_code, a.content) == (b.status_code, b.content)
    for name in ("content-type", "content-length", "www-authenticate"):
        assert a.headers.get(name) == b.headers.get(name), name


async def test_the_lane_answers_as_fastapi_does(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows)
    application = api_module.build(settings, client)
    general = count_general(application)
    async with serving(application) as h:

        async def both(path: str, params: dict[str, Any], token: str) -> httpx.Response:
            lane = await h.get(path, params=params, headers=auth(token))
            fastapi = await h.get(path, params={**params, **GENERAL}, headers=auth(token))
            same(lane, fastapi)
            return lane

        top = (await both("/v1/hotspots", {"resolution": 10, "limit": 3}, DISPLAY)).json()
        lat, lon = h3.cell_to_latlng(top["hotspots"][0]["cell"])
        family = max(top["hotspots"][0]["families"], key=top["hotspots"][0]["families"].get)
        box = f"{lon - 0.02},{lat - 0.02},{lon + 0.02},{lat + 0.02}"
        for params in (
            {},
            {"horizon": "week", "resolution": 9, "limit": 20},
            {"horizon": "day", "resolution": 8, "limit": 1000, "format": "json"},
            {"horizon": "year", "resolution": 10, "limit": 5, "format": "geojson"},
            {"horizon": "month", "family": family},
            {"bbox": box, "limit": 7},
        ):
            got = await both("/v1/hotspots", params, DISPLAY)
            assert got.status_code == 200, (params, got.text)
        assert general["/v1/hotspots"].calls == 7  # one per pair: the lane took the rest

        for point in [(lat, lon), (rows[7].lat, rows[7].lon), (39.0, -75.0), (-90, 180), (0, 0)]:
            params = {"lat": f"{point[0]:.6f}", "lon": f"{point[1]:.6f}"}
            got = await both("/v1/risk", params, DISPATCH)
            assert got.status_code == 200 and len(got.json()["cells"]) == 3
        ranked = await h.get("/v1/risk", params={"lat": lat, "lon": lon}, headers=auth(DISPATCH))
        assert ranked.json()["cells"][2]["horizons"]["year"]["rank"] == 1
        assert general["/v1/risk"].calls == 5

        # a token in the URL is refused (only the push stream takes one), by FastAPI
        h.headers.clear()
        calls = general["/v1/risk"].calls
        via_query = await h.get(
            "/v1/risk", params={"lat": lat, "lon": lon, "access_token": DISPATCH}
        )
        assert via_query.status_code == 401
        assert general["/v1/risk"].calls == calls + 1


async def test_what_the_lane_leaves_is_answered_by_fastapi_as_before(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows[:500])
    application = api_module.build(settings, client)
    general = count_general(application)
    async with serving(application) as h:

        async def get(path: str, token: str | None = None, **params: Any) -> httpx.Response:
            return await h.get(path, params=params, headers=auth(token) if token else {})

        # refused tokens: FastAPI's 401 and 403, with no detail
        for token in (None, "wrong"):
            no = await get("/v1/risk", token, lat=39.95, lon=-75.16)
            assert no.status_code == 401 and no.headers["www-authenticate"] == "Bearer"
            assert no.json() == {"detail": "Unauthorized"}
        assert (await get("/v1/hotspots", "wrong")).status_code == 401
        forbidden = await get("/v1/risk", DISPLAY, lat=39.95, lon=-75.16)
        assert forbidden.status_code == 403 and forbidden.json() == {"detail": "Forbidden"}
        assert general["/v1/risk"].calls == 3 and general["/v1/hotspots"].calls == 1

        # values FastAPI reads but the lane does not: the same answer, the long way
        for odd, plain in (
            ({"lat": "3.995e1", "lon": "-75.16"}, {"lat": "39.95", "lon": "-75.16"}),
            ({"lat": " 39.95", "lon": "+75.16"}, {"lat": "39.95", "lon": "75.16"}),
        ):
            calls = general["/v1/risk"].calls
            same(
                await get("/v1/risk", DISPATCH, **odd),
                await get("/v1/risk", DISPATCH, **plain),
            )
            assert general["/v1/risk"].calls == calls + 1
        calls = general["/v1/hotspots"].calls
        same(
            await get("/v1/hotspots", DISPLAY, limit="020", resolution="09"),
            await get("/v1/hotspots", DISPLAY, limit="20", resolution="9"),
        )
        assert general["/v1/hotspots"].calls == calls + 1

        # malformed: FastAPI's validation errors, as before
        for params in ({"lat": "91", "lon": "0"}, {"lat": "north", "lon": "0"}, {"lat": "1"}):
            bad = await get("/v1/risk", DISPATCH, **params)
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][0] == "query"
        for params in ({"limit": "0"}, {"limit": "1001"}, {"format": "xml"}, {"resolution": "x"}):
            bad = await get("/v1/hotspots", DISPLAY, **params)
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][0] == "query"

        # errors of the answer itself are the route's own, on either way
        for params, says in (
            ({"horizon": "decade"}, "unknown horizon 'decade'"),
            ({"resolution": "7"}, "resolution 7 is not configured"),
            ({"bbox": "1,2"}, "bbox is west,south,east,north"),
            ({"family": "no-such-family"}, "unknown family 'no-such-family'"),
        ):
            lane = await get("/v1/hotspots", DISPLAY, **params)
            assert lane.status_code == 422 and says in lane.text
            same(lane, await get("/v1/hotspots", DISPLAY, **params, **GENERAL))

        # both ways are timed under their route
        metrics = (await h.get("/metrics")).text
        counts: dict[str, float] = {}
        for line in metrics.splitlines():
            if line.startswith("hotspots_api_request_seconds_count"):
                route = line.split('route="')[1].split('"')[0]
                counts[route] = counts.get(route, 0.0) + float(line.rsplit(" ", 1)[1])
        assert counts["/v1/risk"] == 3 + 4 + 3
        assert counts["/v1/hotspots"] == 1 + 2 + 4 + 8


async def test_a_write_between_two_requests_changes_the_answer(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    """Answers kept per sequence number are not served after a write."""
    settings = settings_for(namespace, redis_url)
    now_s = await filled(settings, client, rows[:2000])
    store = app.store(settings, client)
    async with serving(api_module.build(settings, client)) as h:
        h.headers.update(auth(DISPLAY))
        params = {"horizon": "week", "resolution": 9, "limit": 5}
        before = (await h.get("/v1/hotspots", params=params)).json()
        assert (await h.get("/v1/hotspots", params=params)).json() == before  # kept
        top = before["hotspots"][0]
        lat, lon = h3.cell_to_latlng(top["cell"])
        scorer = app.scorer(settings)
        # ten thefts at its centre, at the newest time (the clock stays put)
        extra = [oracle.Row(f"extra-{i}", now_s - 60, lat, lon, "Thefts") for i in range(10)]
        await store.apply([to_op(scorer, "upsert", r) for r in extra], now_s=now_s)
        after = (await h.get("/v1/hotspots", params=params)).json()
        assert after["sequence"] == await store.seq() > before["sequence"]
        moved = {i["cell"]: i for i in after["hotspots"]}[top["cell"]]
        assert moved["count"] == top["count"] + len(extra)
        assert moved["score"] > top["score"]

        h.headers.clear()
        h.headers.update(auth(DISPATCH))
        risk = (await h.get("/v1/risk", params={"lat": lat, "lon": lon})).json()
        assert risk["sequence"] == after["sequence"]
        assert risk["cells"][1]["horizons"]["week"]["score"] == pytest.approx(moved["score"])


async def test_a_store_that_is_down_gets_the_same_503_both_ways(
    namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url)
    nobody = settings.model_copy(
        update={"store": settings.store.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})}
    )
    down = app.redis_client(nobody)  # (as `serve` makes it; nothing listens on port 1)
    application = api_module.build(settings, down)
    general = count_general(application)
    try:
        async with serving(application) as h:
            for path, token, params in (
                ("/v1/risk", DISPATCH, {"lat": "39.95", "lon": "-75.16"}),
                ("/v1/hotspots", DISPLAY, {}),
            ):
                lane = await h.get(path, params=params, headers=auth(token))
                assert lane.status_code == 503 and lane.json() == {"error": "store unavailable"}
                same(lane, await h.get(path, params={**params, **GENERAL}, headers=auth(token)))
                assert general[path].calls == 1
            metrics = (await h.get("/metrics")).text
            assert (
                'hotspots_api_request_seconds_count{method="GET",route="/v1/risk",status="503"} 2.0'
                in metrics
            )
    finally:
        await down.aclose()
