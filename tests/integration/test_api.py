"""The HTTP API and live push against a real Redis filled from real records,
served by a real uvicorn on a local port, called by real HTTP, SSE and
WebSocket clients. Alert notices are written into Redis as docs/alerts.md
says the detector writes them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import h3
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
import websockets

from streamer import api as api_module
from streamer import app
from streamer.adapters.publisher import Publisher, channel
from streamer.settings import Settings, load_settings
from tests import oracle
from tests.integration.test_store_exact import to_op
from tests.pipeline_support import redis_key

DISPLAY, DISPATCH = "display-secret", "dispatch-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(
    namespace: str, redis_url: str, display: dict[str, Any] | None = None, **api: Any
) -> Settings:
    return load_settings(
        overrides={
            "display": display or {},
            "store": {"namespace": namespace, "redis_url": redis_url},
            "grid": {"timezone": "America/New_York"},
            "time": {"clock": "event"},  # now = the newest event (the records are old)
            "api": {
                "tokens": {
                    "wall": {"token_sha256": api_module.token_digest(DISPLAY), "role": "display"},
                    "cad": {"token_sha256": api_module.token_digest(DISPATCH), "role": "dispatch"},
                },
                "heartbeat": "1s",
                **api,
            },
        }
    )


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=4000)


@contextlib.asynccontextmanager
async def serving(settings: Settings, client: aioredis.Redis) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            api_module.build(settings, client),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def filled(settings: Settings, client: aioredis.Redis, rows: list[oracle.Row]) -> float:
    """Apply the rows; returns 'now' (a minute after the newest)."""
    store = app.store(settings, client)
    scorer = app.scorer(settings)
    now_s = max(r.t_s for r in rows) + 60
    await store.apply([to_op(scorer, "upsert", r) for r in rows], now_s=now_s)
    return now_s


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_and_roles(client: aioredis.Redis, namespace: str, redis_url: str) -> None:
    settings = settings_for(namespace, redis_url)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await h.get(path)).status_code == 200, path
        for path in ("/v1/hotspots", "/v1/config", "/v1/risk?lat=39.95&lon=-75.16"):
            no = await h.get(path)
            assert no.status_code == 401 and "secret" not in no.text
            assert (await h.get(path, headers=auth("wrong"))).status_code == 401
        assert (
            await h.get("/v1/risk?lat=39.95&lon=-75.16", headers=auth(DISPLAY))
        ).status_code == 403
        assert (
            await h.get("/v1/risk?lat=39.95&lon=-75.16", headers=auth(DISPATCH))
        ).status_code == 200
        # a token in the URL: only the push stream takes it (test_api_contract)
        assert (await h.get("/v1/config", params={"access_token": DISPLAY})).status_code == 401
        assert (await h.get("/", headers={})).status_code in (200, 404)  # the page itself is open


async def test_hotspots_match_the_oracle(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    now_s = await filled(settings, client, rows)
    table = oracle.weights()
    want = oracle.scores(rows, 9, 7 * 86400.0, now_s, *table)
    best = sorted(want.items(), key=lambda kv: -kv[1])[:10]
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        got = await h.get(
            "/v1/hotspots",
            params={"horizon": "week", "resolution": 9, "limit": 10},
            headers=auth(DISPLAY),
        )
        assert got.status_code == 200
        body = got.json()
        assert body["sequence"] >= 1
        items = body["hotspots"]
        assert [i["rank"] for i in items] == list(range(1, 11))
        # the API decays to the newest event; the oracle to a minute later:
        # compare the order and the relative sizes
        assert [i["cell"] for i in items] == [c for c, _ in best]
        ratio = items[0]["score"] / best[0][1]
        for item, (_, expected) in zip(items, best, strict=True):
            assert item["score"] == pytest.approx(expected * ratio, rel=1e-9)
        assert all(0 < i["share"] <= 1 for i in items)
        assert sum(i["share"] for i in items) <= 1.0 + 1e-9
        assert all(i["trend"] is not None and i["trend"] >= 0 for i in items)
        assert all(len(i["polygon"]) == 7 and i["polygon"][0] == i["polygon"][-1] for i in items)
        assert all(i["count"] >= 1 and i["families"] for i in items)

        geo = await h.get(
            "/v1/hotspots",
            params={"horizon": "week", "resolution": 9, "limit": 5, "format": "geojson"},
            headers=auth(DISPLAY),
        )
        doc = geo.json()
        assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 5
        feature = doc["features"][0]
        assert feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert h3.latlng_to_cell(ring[0][1], ring[0][0], 9) in {feature["id"]} | set(
            h3.grid_disk(feature["id"], 1)
        )
        assert feature["properties"]["rank"] == 1

        # bbox keeps only cells whose centre is inside; min_count is applied
        lat, lon = h3.cell_to_latlng(items[0]["cell"])
        box = f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}"
        boxed = (
            await h.get(
                "/v1/hotspots",
                params={"horizon": "week", "resolution": 9, "bbox": box},
                headers=auth(DISPLAY),
            )
        ).json()["hotspots"]
        assert boxed and boxed[0]["cell"] == items[0]["cell"]
        for item in boxed:
            c_lat, c_lon = h3.cell_to_latlng(item["cell"])
            assert abs(c_lat - lat) <= 0.01 and abs(c_lon - lon) <= 0.01
        # the first 20 of the whole ranking inside the box (the API reads it
        # page by page, 100 then 400 ranks...: this box's 20th is far down)
        inside = [
            c
            for c, _ in sorted(want.items(), key=lambda kv: -kv[1])
            if abs(h3.cell_to_latlng(c)[0] - lat) <= 0.01
            and abs(h3.cell_to_latlng(c)[1] - lon) <= 0.01
        ]
        assert len(boxed) == 20 and [i["cell"] for i in boxed] == inside[:20]
        ranks = [c for c, _ in sorted(want.items(), key=lambda kv: -kv[1])]
        assert ranks.index(inside[19]) >= 100, "the box should need more than one page"

        # by family: ranked by that family's score (each cell's own breakdown)
        family = max(items[0]["families"], key=items[0]["families"].get)
        fam = (
            await h.get(
                "/v1/hotspots",
                params={"horizon": "week", "resolution": 9, "limit": 10, "family": family},
                headers=auth(DISPLAY),
            )
        ).json()["hotspots"]
        assert fam and [i["rank"] for i in fam] == list(range(1, len(fam) + 1))
        scores = [i["score"] for i in fam]
        assert scores == sorted(scores, reverse=True)
        for item in fam:
            assert item["score"] == pytest.approx(item["families"][family], rel=1e-9)

        bad = await h.get("/v1/hotspots", params={"horizon": "decade"}, headers=auth(DISPLAY))
        assert bad.status_code == 422 and "configured" in bad.text


async def test_cells_risk_and_windows(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        top = (
            await h.get(
                "/v1/hotspots",
                params={"horizon": "year", "resolution": 10, "limit": 1},
                headers=auth(DISPLAY),
            )
        ).json()["hotspots"][0]
        cell = top["cell"]
        lat, lon = h3.cell_to_latlng(cell)
        here = [r for r in rows if h3.latlng_to_cell(r.lat, r.lon, 10) == cell]
        detail = (await h.get(f"/v1/cells/{cell}", headers=auth(DISPLAY))).json()
        assert detail["count"] == len(here)
        assert len(detail["neighbours"]) == 6
        assert sum(detail["categories"]["counts"].values()) == len(here)
        assert len(detail["hour_of_week"]) == 168
        assert (await h.get("/v1/cells/nothex", headers=auth(DISPLAY))).status_code == 404

        risk = (
            await h.get("/v1/risk", params={"lat": lat, "lon": lon}, headers=auth(DISPATCH))
        ).json()
        by_res = {c["resolution"]: c for c in risk["cells"]}
        assert {r: c["cell"] for r, c in by_res.items()} == {
            r: h3.latlng_to_cell(lat, lon, r) for r in (8, 9, 10)
        }
        year = by_res[10]["horizons"]["year"]
        assert year["rank"] == 1 and year["hotspot"] and year["percentile"] == pytest.approx(100)

        win = (
            await h.get(
                "/v1/windows",
                params={"day": "fri", "from": "22:00", "to": "02:00", "resolution": 9},
                headers=auth(DISPLAY),
            )
        ).json()
        assert win["hours_of_week"] == [118, 119, 120, 121]
        assert win["hotspots"] and win["hotspots"][0]["rank"] == 1
        bad = await h.get(
            "/v1/windows",
            params={"day": "someday", "from": "22:00", "to": "02:00"},
            headers=auth(DISPLAY),
        )
        assert bad.status_code == 422


async def test_min_count_hides_sparse_cells(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url, min_count=3)
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        items = (
            await h.get(
                "/v1/hotspots",
                params={"horizon": "year", "resolution": 10, "limit": 200},
                headers=auth(DISPLAY),
            )
        ).json()["hotspots"]
        assert items and all(i["count"] >= 3 for i in items)


async def sse_messages(host: str, out: asyncio.Queue[dict[str, Any]]) -> None:
    async with (
        httpx.AsyncClient(base_url=f"http://{host}", timeout=None) as h,
        h.stream("GET", "/v1/stream", params={"access_token": DISPLAY}) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                await out.put(orjson.loads(line[6:]))


async def next_of(q: asyncio.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    while True:
        m = await asyncio.wait_for(q.get(), 10)
        if m["type"] == kind:
            return m


async def test_push_snapshot_then_changes_in_order(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    now_s = await filled(settings, client, rows[:2000])
    store = app.store(settings, client)
    publisher = Publisher(store, 10, lambda: now_s)
    await publisher.tick()
    async with serving(settings, client) as host:
        sse: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reader = asyncio.create_task(sse_messages(host, sse))
        ws_url = f"ws://{host}/v1/ws?access_token={DISPLAY}"
        async with websockets.connect(ws_url) as ws:
            snap_ws = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            snap_sse = await next_of(sse, "snapshot")
            for snap in (snap_ws, snap_sse):
                assert snap["type"] == "snapshot"
                assert snap["sequence"] == await store.seq()
                assert len(snap["lists"]["week:9"]) == 10
            seen = snap_ws["sequence"]
            scorer = app.scorer(settings)
            for batch in (rows[2000:2500], rows[2500:3000]):
                await store.apply([to_op(scorer, "upsert", r) for r in batch], now_s=now_s)
                sent = await publisher.tick()
                assert sent is not None
                update = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                while update["type"] != "update":
                    update = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert update["previous"] == seen  # no gap
                assert update["sequence"] == sent["seq"] and update["lists"]
                seen = update["sequence"]
                via_sse = await next_of(sse, "update")
                assert via_sse["sequence"] == update["sequence"]
            heartbeat = await next_of(sse, "heartbeat")
            assert heartbeat["sequence"] == seen
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader


def stalled_websocket(host: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads
    (with a small receive buffer, so the server feels it soon)."""
    name, port = host.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((name, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws?access_token={DISPLAY} HTTP/1.1\r\nHost: {host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_stalled_client_is_dropped_while_others_keep_receiving(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url, client_queue=8)
    big = {f"week:{r}": {"entered": [["8a2a1072b59ffff", 1, 1.0]] * 4000} for r in (8, 9, 10)}
    async with serving(settings, client) as host:
        stalled = await asyncio.to_thread(stalled_websocket, host)
        url = f"ws://{host}/v1/ws?access_token={DISPLAY}"
        try:
            async with websockets.connect(url, max_size=None) as healthy:
                assert orjson.loads(await healthy.recv())["type"] == "snapshot"
                received = 0
                for seq in range(1, 101):
                    body = {"seq": seq, "previous": seq - 1, "at": 0.0, "lists": big}
                    await client.publish(channel(app.store(settings, client)), orjson.dumps(body))
                    while True:  # the healthy client reads everything as it comes
                        m = orjson.loads(await asyncio.wait_for(healthy.recv(), 10))
                        if m["type"] == "update":
                            assert m["sequence"] == seq
                            received += 1
                            break
                assert received == 100
            # the drop is the hub's answer to a full queue, made as it
            # fans out: on a loaded machine it may land after the last send
            async with httpx.AsyncClient(base_url=f"http://{host}") as h:
                deadline = time.monotonic() + 10
                while "hotspots_push_dropped_total 1.0" not in (metrics := await _text(h)):
                    assert time.monotonic() < deadline, metrics
                    await asyncio.sleep(0.2)
        finally:
            stalled.close()


async def _text(h: httpx.AsyncClient) -> str:
    return (await h.get("/metrics")).text


# --- alerts -------------------------------------------------------------------

OPENING = ("opened", "escalated")


def alert_at(alert_id: str, kind: str, minute: int, **extra: Any) -> dict[str, Any]:
    """An alert's JSON (docs/alerts.md) as a notice of ``kind`` leaves it,
    updated at 2025-03-14 21:MM UTC."""
    at = f"2025-03-14T21:{minute:02d}:00+00:00"
    return {
        "id": alert_id,
        "status": "open" if kind in OPENING else kind,
        "kind": kind,
        "title": f"3 events vs 0.08 expected ({alert_id})",
        "severity": "high",
        "pattern": "new",
        "resolution": 9,
        "cells": ["892a1008b23ffff"],
        "center": [39.95, -75.16],
        "observed": 2.93,
        "expected": 0.08,
        "p_value": 1.2e-05,
        "peak_p_value": 1.2e-05,
        "recurrence_days": 83.0,
        "top_categories": [["Thefts", 3.0]],
        "first_event_at": "2025-03-14T19:02:00+00:00",
        "last_event_at": at,
        "opened_at": at,
        "updated_at": at,
        "cleared_at": None if kind in OPENING else at,
        "merged_into": None,
        "horizon": "day",
        "baseline": "year",
        **extra,
    }


async def write_notice(client: aioredis.Redis, settings: Settings, alert: dict[str, Any]) -> str:
    """One notice as the detector writes it: the stream entry, the open set,
    the live message. Returns the entry's stream id."""
    store = app.store(settings, client)
    body = orjson.dumps(alert)
    kind = alert["kind"]
    stream_id = (
        await client.xadd(
            redis_key(store, "alerts"), {"kind": kind, "id": alert["id"], "alert": body}
        )
    ).decode()
    message = {"type": "alert", "kind": kind, "stream_id": stream_id, "alert": alert}
    async with client.pipeline(transaction=True) as pipe:
        if kind in OPENING:
            pipe.hset(redis_key(store, "alerts", "open"), alert["id"], body)
        else:
            pipe.hdel(redis_key(store, "alerts", "open"), alert["id"])
        pipe.publish(redis_key(store, "alerts", "live"), orjson.dumps(message))
        await pipe.execute()
    return stream_id


async def test_alerts_lists_open_then_recently_closed(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url)
    store = app.store(settings, client)
    # the open set's own order (A1, A3, A6) is not the answer's (by updated_at)
    for alert_id, kind, minute in [
        ("A1", "opened", 0),
        ("A2", "opened", 5),
        ("A3", "opened", 10),
        ("A6", "opened", 15),
        ("A1", "escalated", 20),
        ("A2", "cleared", 30),
        ("A4", "opened", 31),
        ("A4", "merged", 40),
        ("A5", "opened", 41),
        ("A5", "cleared", 50),
    ]:
        extra = {"merged_into": "A1"} if kind == "merged" else {}
        await write_notice(client, settings, alert_at(alert_id, kind, minute, **extra))
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:

        async def listed(**params: Any) -> list[tuple[str, str, str]]:
            got = await h.get("/v1/alerts", params=params, headers=auth(DISPLAY))
            assert got.status_code == 200, got.text
            return [(a["id"], a["kind"], a["updated_at"][11:16]) for a in got.json()["alerts"]]

        opened = [
            ("A1", "escalated", "21:20"),
            ("A6", "opened", "21:15"),
            ("A3", "opened", "21:10"),
        ]
        closed = [
            ("A5", "cleared", "21:50"),
            ("A4", "merged", "21:40"),
            ("A2", "cleared", "21:30"),
        ]
        assert await listed() == opened
        assert await listed(status="open", limit=1) == opened  # limit counts closed ones
        assert await listed(status="all") == opened + closed
        assert await listed(status="all", limit=2) == opened + closed[:2]
        full = (await h.get("/v1/alerts", params={"status": "all"}, headers=auth(DISPLAY))).json()
        assert full["alerts"][0] == alert_at("A1", "escalated", 20)
        assert full["alerts"][4] == alert_at("A4", "merged", 40, merged_into="A1")

        # closed alerts further back than one page of the stream are still found
        async with client.pipeline(transaction=False) as pipe:
            for minute in range(600):
                noisy = orjson.dumps(alert_at("A1", "escalated", 51 + minute % 9))
                pipe.xadd(
                    redis_key(store, "alerts"), {"kind": "escalated", "id": "A1", "alert": noisy}
                )
            await pipe.execute()
        assert await listed(status="all") == opened + closed

        assert (await h.get("/v1/alerts")).status_code == 401
        assert (await h.get("/v1/alerts", headers=auth(DISPATCH))).status_code == 200
        for bad in ({"status": "closed"}, {"limit": 0}, {"limit": 1001}, {"limit": "many"}):
            got = await h.get("/v1/alerts", params=bad, headers=auth(DISPLAY))
            assert got.status_code == 422, bad

    # the default number of closed alerts is alerts.recent
    fewer = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"recent": 1})})
    async with serving(fewer, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        got = await h.get("/v1/alerts", params={"status": "all"}, headers=auth(DISPLAY))
        assert [a["id"] for a in got.json()["alerts"]] == ["A1", "A6", "A3", "A5"]


async def test_push_forwards_alert_notices_and_snapshots_carry_open_alerts(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url)
    async with serving(settings, client) as host:
        sse: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reader = asyncio.create_task(sse_messages(host, sse))
        url = f"ws://{host}/v1/ws?access_token={DISPLAY}"
        try:
            async with websockets.connect(url) as ws:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["alerts"] == []
                assert (await next_of(sse, "snapshot"))["alerts"] == []
                opened = alert_at("A1", "opened", 0)
                stream_id = await write_notice(client, settings, opened)
                sent = {"type": "alert", "kind": "opened", "stream_id": stream_id, "alert": opened}

                ws_seen: list[dict[str, Any]] = []
                while len(ws_seen) < 2:  # until the heartbeat after the notice
                    m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    if m["type"] == "alert" or ws_seen:
                        ws_seen.append(m)
                assert ws_seen[0] == sent  # forwarded as it is
                assert ws_seen[1]["type"] == "heartbeat"  # once: nothing repeats it
                assert await next_of(sse, "alert") == sent
                assert (await next_of(sse, "heartbeat"))["type"] == "heartbeat"
                assert all(m["type"] != "alert" for m in drained(sse))

                # a client connecting now finds the open alert in its snapshot
                async with websockets.connect(url) as late:
                    snap = orjson.loads(await asyncio.wait_for(late.recv(), 10))
                    assert snap["type"] == "snapshot" and snap["alerts"] == [opened]

                cleared = alert_at("A1", "cleared", 9)
                await write_notice(client, settings, cleared)
                m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                while m["type"] != "alert":
                    m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert m["kind"] == "cleared" and m["alert"] == cleared
                async with websockets.connect(url) as later:
                    snap = orjson.loads(await asyncio.wait_for(later.recv(), 10))
                    assert snap["alerts"] == []

                # a notice that is not an alert message is dropped, not fatal
                live = redis_key(app.store(settings, client), "alerts", "live")
                await client.publish(live, b"not json")
                again = alert_at("A2", "opened", 10)
                await write_notice(client, settings, again)
                m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                while m["type"] != "alert":
                    assert m["type"] == "heartbeat"  # (no resync: the subscription held)
                    m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert m["alert"] == again
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await reader


def drained(q: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_a_lost_subscription_resyncs_clients_with_the_open_alerts(
    namespace: str, redis_url: str
) -> None:
    """A notice published while the hub's subscription is down never reaches
    it; the re-sync snapshot that follows the resubscription carries it."""
    settings = settings_for(namespace, redis_url)
    name = f"hub-{namespace}"  # the server's own connections, told apart by name
    served = aioredis.Redis.from_url(redis_url, client_name=name)
    try:
        async with serving(settings, served) as host:
            # the hub subscribes in the background: a client that joined
            # before would get the first subscription's re-sync snapshot too
            hubs: list[dict[str, Any]] = []
            for _ in range(500):
                hubs = [
                    c
                    for c in await served.client_list(_type="pubsub")
                    if c["name"] == name and int(c["sub"]) == 2
                ]
                if hubs:
                    break
                await asyncio.sleep(0.02)
            assert len(hubs) == 1, hubs  # ranking and alert channels
            url = f"ws://{host}/v1/ws?access_token={DISPLAY}"
            async with websockets.connect(url) as ws:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["alerts"] == []
                await served.client_kill_filter(_id=hubs[0]["id"])
                opened = alert_at("A1", "opened", 0)
                await write_notice(served, settings, opened)  # while the hub waits to resubscribe
                m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                while m["type"] != "snapshot":
                    assert m["type"] == "heartbeat"
                    m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert m["alerts"] == [opened]
    finally:
        await served.aclose()


async def test_first_concurrent_requests_all_see_the_event_clock(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    """(time.clock = "event") Requests that arrive while the server's first
    read of the clock is in flight wait for it, rather than answer with the
    server's start time."""
    settings = settings_for(namespace, redis_url)
    event_s = 1741989600.0
    await client.hset(redis_key(app.store(settings, client), "meta"), "watermark", event_s)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        got = await asyncio.gather(
            *(h.get("/v1/hotspots", headers=auth(DISPLAY)) for _ in range(8))
        )
        assert [r.json()["at"] for r in got] == [event_s] * 8


async def test_a_ranking_read_page_by_page_notices_a_write_in_between(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    now_s = await filled(settings, client, rows)
    store = app.store(settings, client)
    whole = await store.top("week", 9, 10**6, now_s)
    paged = api_module.pages(store, "week", 9, now_s, 1)  # pages of 100, 400, ...
    got = [r async for page in paged for r in page]
    assert got == whole and len(whole) > 100
    paged = api_module.pages(store, "week", 9, now_s, 1)
    first = await anext(paged)
    assert first == whole[:100]
    new = dataclasses.replace(rows[0], id="written-in-between")
    await store.apply([to_op(app.scorer(settings), "upsert", new)], now_s=now_s)
    with pytest.raises(api_module.RankingMoved):
        await anext(paged)
