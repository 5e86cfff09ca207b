"""What clients nobody here wrote found (issue 17), held over real HTTP
against a served app on a real Redis filled from the bundled records: bad
input gets a 4xx that says what is wrong, never a 5xx; a family view's shares
are of that family's ranking; tokens in URLs only where a browser needs them;
RFC 7946 GeoJSON; request metrics an on-call engineer can alert on."""

from __future__ import annotations

import math
from pathlib import Path

import h3
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from streamer import app
from tests import oracle
from tests.integration.test_api import DISPATCH, DISPLAY, auth, filled, serving, settings_for
from tests.integration.test_api_fast_lane import GENERAL, same


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=3000)


def says(response: httpx.Response, *words: str, status: int = 422) -> None:
    """A ``status`` answer whose message names each of ``words``."""
    assert response.status_code == status, (response.status_code, response.text)
    text = response.text
    for word in words:
        assert word in text, (word, text)


def short(response: httpx.Response) -> None:
    """An error that quotes a bad value at most 80 characters long."""
    assert len(response.content) < 1000 and "x" * 81 not in response.text, response.text[:200]


async def test_out_of_range_dates_are_refused_with_the_years_allowed(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        for path in ("/v1/dosage", "/v1/dosage/unit/car-7"):
            for day in ("0001-01-01", "1969-12-31", "9999-12-31"):
                says(await h.get(path, params={"date": day}), "1970", "9998", day)
            for day in ("2024-02-30", "2024-2-3", "today"):
                says(await h.get(path, params={"date": day}), "YYYY-MM-DD")
            for day in ("1970-01-01", "2024-02-29", "9998-12-31"):
                ok = await h.get(path, params={"date": day})
                assert ok.status_code == 200, (path, day, ok.text)
                assert ok.json()["date"] == day


async def test_malformed_cell_ids_are_not_found(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        top = (await h.get("/v1/hotspots", params={"resolution": 10, "limit": 1})).json()
        cell = top["hotspots"][0]["cell"]
        assert (await h.get(f"/v1/cells/{cell}")).status_code == 200
        for bad in (
            "f" * 17,  # 17 hex digits: beyond 64 bits
            "1" * 20,
            f"-{cell}",
            f"0x{cell}",
            f"%20{cell}",
            f"{cell}%20",
            cell.upper(),
            f"0{cell}",
            "not-a-cell",
        ):
            got = await h.get(f"/v1/cells/{bad}")
            assert got.status_code in (404, 422), (bad, got.status_code, got.text)


async def test_a_family_view_gives_shares_of_the_familys_own_total(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        everything = (await h.get("/v1/hotspots", params={"resolution": 8, "limit": 1})).json()
        families = everything["hotspots"][0]["families"]
        family = sorted(families, key=families.get)[len(families) // 2]  # not the biggest
        for extra in ({}, {"x": "1"}):  # the fast lane, then FastAPI's route
            params = {"resolution": 8, "limit": 1000, "family": family, **extra}
            body = (await h.get("/v1/hotspots", params=params)).json()
            items = body["hotspots"]
            assert 1 < len(items) < 1000  # the whole family ranking
            assert body["total"] < everything["total"]
            assert body["total"] == pytest.approx(math.fsum(i["score"] for i in items), rel=1e-9)
            for item in items:
                assert item["share"] == pytest.approx(item["score"] / body["total"], rel=1e-9)
                assert item["families"][family] == pytest.approx(item["score"], rel=1e-9)
            shares = [i["share"] for i in items]
            assert shares == sorted(shares, reverse=True)
            assert math.fsum(shares) == pytest.approx(1.0, rel=1e-9)


LONG = "x" * 9000  # a 9 KB value: not to be sent back whole


async def test_bad_values_get_the_same_short_422_on_both_ways(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows[:500])
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:

        async def both(path: str, token: str, **params: str) -> httpx.Response:
            lane = await h.get(path, params=params, headers=auth(token))
            general = await h.get(path, params={**params, **GENERAL}, headers=auth(token))
            same(lane, general)
            return lane

        for params, named in (
            ({"family": "unicorn"}, "unknown family 'unicorn'"),
            ({"family": ""}, "unknown family ''"),
            ({"family": LONG}, "unknown family"),
            ({"horizon": LONG}, "unknown horizon"),
            ({"bbox": "-inf,-inf,inf,inf"}, "bbox is west,south,east,north"),
            ({"bbox": "-500,-100,500,100"}, "longitudes -180..180"),
            ({"bbox": "nan,0,1,1"}, "bbox"),
            ({"bbox": "-75.2,39.9,-75.1,90.5"}, "latitudes -90..90"),
            ({"bbox": "1,2"}, "bbox"),
            ({"bbox": "1e1,2,3,4"}, "bbox"),
            ({"bbox": " 1,2,3,4"}, "bbox"),
            ({"bbox": ""}, "bbox"),
            ({"bbox": LONG}, "bbox"),
            ({"format": LONG}, "format"),
        ):
            bad = await both("/v1/hotspots", DISPLAY, **params)
            says(bad, named)
            short(bad)
            assert bad.json()["detail"][0]["loc"] == ["query", next(iter(params))]
        for params in (
            {"lat": "nan", "lon": "0"},
            {"lat": "inf", "lon": "0"},
            {"lat": "0", "lon": "-181"},
            {"lat": LONG, "lon": "0"},
        ):
            bad = await both("/v1/risk", DISPATCH, **params)
            assert bad.status_code == 422, (params, bad.text)
            short(bad)
        h.headers.update(auth(DISPLAY))
        for params, named in (
            ({"day": "Friday", "from": "22:00", "to": "02:00"}, "day must be one of mon"),
            ({"day": LONG, "from": "22:00", "to": "02:00"}, "day must be one of mon"),
            ({"day": "fri", "from": "22:30", "to": "02:00"}, "from must be a whole hour"),
            ({"day": "fri", "from": "22:00", "to": LONG}, "to must be a whole hour"),
        ):
            bad = await h.get("/v1/windows", params=params)
            says(bad, named)
            short(bad)
        says(await h.get(f"/v1/blends/{LONG}"), status=404)
        short(await h.get(f"/v1/blends/{LONG}"))


async def test_bbox_edges_in_either_order_and_across_the_antimeridian(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))

        async def cells(bbox: str) -> list[str]:
            got = await h.get("/v1/hotspots", params={"bbox": bbox, "limit": 50})
            assert got.status_code == 200, (bbox, got.text)
            return [i["cell"] for i in got.json()["hotspots"]]

        city = await cells("-75.3,39.85,-75.0,40.1")
        assert len(city) == 50
        assert await cells("-75.3,40.1,-75.0,39.85") == city  # north given first
        # west east of east: the box runs the other way round the globe
        strip = await cells("-75.2,-90,-75.15,90")
        across = await cells("-75.15,-90,-75.2,90")
        assert strip and across and not set(strip) & set(across)
        for cell in across:
            lon = h3.cell_to_latlng(cell)[1]
            assert lon >= -75.15 or lon <= -75.2, cell
        assert await cells("179.5,-90,-179.5,90") == []


async def test_risk_says_whether_the_point_is_in_the_study_area(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    # the study area the config names: the display's districts
    settings = settings_for(namespace, redis_url, display={"districts": str(oracle.DISTRICTS)})
    await filled(settings, client, rows[:500])
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for (lat, lon), inside in (
            ((39.9524, -75.1636), True),  # City Hall, Philadelphia
            ((rows[3].lat, rows[3].lon), True),
            ((0.0, 0.0), False),
            ((40.7128, -74.006), False),  # New York
        ):
            params = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}"}
            lane = await h.get("/v1/risk", params=params, headers=auth(DISPATCH))
            same(
                lane, await h.get("/v1/risk", params={**params, **GENERAL}, headers=auth(DISPATCH))
            )
            body = lane.json()
            assert body["in_study_area"] is inside, (lat, lon)
            if not inside:
                assert all(h["rank"] is None for c in body["cells"] for h in c["horizons"].values())


async def test_a_token_in_the_url_is_taken_only_by_the_push_stream(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows[:200])
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for path, token, params in (
            ("/v1/config", DISPLAY, {}),
            ("/v1/boundary", DISPLAY, {}),
            ("/v1/hotspots", DISPLAY, {}),
            ("/v1/hotspots", DISPLAY, GENERAL),
            ("/v1/risk", DISPATCH, {"lat": "39.95", "lon": "-75.16"}),
            ("/v1/risk", DISPATCH, {"lat": "39.95", "lon": "-75.16", **GENERAL}),
            ("/v1/alerts", DISPLAY, {}),
            ("/v1/dosage/plan", DISPLAY, {}),
        ):
            assert (await h.get(path, params=params, headers=auth(token))).status_code == 200
            in_url = await h.get(path, params={**params, "access_token": token})
            assert in_url.status_code == 401, (path, params, in_url.text)
            assert in_url.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer header" in in_url.json()["detail"]
            assert token not in in_url.text
            both = await h.get(path, params={**params, "access_token": token}, headers=auth(token))
            assert both.status_code == 401, path
        async with h.stream("GET", "/v1/stream", params={"access_token": DISPLAY}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        async with h.stream("GET", "/v1/stream", params={"access_token": "wrong"}) as stream:
            assert stream.status_code == 401


async def test_pages_send_security_headers_and_a_favicon(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    tiles = "https://{s}.tiles.example/{z}/{x}/{y}.png"
    settings = settings_for(namespace, redis_url, tile_url=tiles)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for page in ("/", "/officer", "/?token=abc"):
            got = await h.get(page)
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
            policy = dict(
                part.split(" ", 1) for part in got.headers["content-security-policy"].split("; ")
            )
            assert policy["default-src"] == "'none'"
            assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
            assert policy["img-src"] == "'self' data: https://*.tiles.example"
            assert policy["frame-ancestors"] == "'none'"
            assert got.headers["x-frame-options"] == "DENY"
            assert got.headers["x-content-type-options"] == "nosniff"
            assert got.headers["referrer-policy"] == "no-referrer"
        icon = await h.get("/favicon.ico")
        assert icon.status_code in (200, 204), icon.status_code
        script = await h.get("/static/display.js")
        assert script.headers["x-content-type-options"] == "nosniff"


def ring_area(ring: list[list[float]]) -> float:
    return 0.5 * math.fsum(
        a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, [*ring[1:], ring[0]], strict=True)
    )


def no_crs(node: object) -> bool:
    if isinstance(node, dict):
        return "crs" not in node and all(no_crs(v) for v in node.values())
    if isinstance(node, list):
        return all(no_crs(v) for v in node)
    return True


async def test_the_boundary_and_the_geojson_export_follow_rfc_7946(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row], tmp_path: Path
) -> None:
    # a district file as exported (crs member, clockwise exteriors), with a hole added
    bundled = orjson.loads(oracle.DISTRICTS.read_bytes())
    assert "crs" in bundled
    square = [[-75.3, 39.9], [-75.3, 40.0], [-75.2, 40.0], [-75.2, 39.9], [-75.3, 39.9]]
    hole = [[-75.28, 39.92], [-75.22, 39.92], [-75.22, 39.98], [-75.28, 39.98], [-75.28, 39.92]]
    assert ring_area(square) < 0 < ring_area(hole)  # both wound the wrong way
    bundled["features"].append(
        {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "MultiPolygon", "coordinates": [[square, hole]]},
        }
    )
    outline = tmp_path / "districts.geojson"
    outline.write_bytes(orjson.dumps(bundled))
    settings = settings_for(
        namespace, redis_url, display={"districts": str(outline), "district_label": "dist_numc"}
    )
    await filled(settings, client, rows)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        got = await h.get("/v1/boundary")
        assert got.headers["content-type"] == "application/geo+json"
        doc = got.json()
        assert no_crs(doc) and len(doc["features"]) == len(bundled["features"])
        # each district labelled by the property the config names
        labels = [f["properties"].get("label") for f in doc["features"]]
        numbers = [f["properties"].get("dist_numc") for f in bundled["features"]]
        assert labels == numbers and labels[0] is not None
        polygons = 0
        for feature in doc["features"]:
            geometry = feature["geometry"]
            parts = geometry["coordinates"]
            for polygon in [parts] if geometry["type"] == "Polygon" else parts:
                polygons += 1
                assert ring_area(polygon[0]) > 0  # exterior counter-clockwise
                assert all(ring_area(inner) < 0 for inner in polygon[1:])  # holes clockwise
        assert polygons == 22

        for params in ({"limit": 5}, {"limit": 5, "family": "violence"}, {"limit": 5, **GENERAL}):
            answer = (await h.get("/v1/hotspots", params=params)).json()
            exported = await h.get("/v1/hotspots", params={**params, "format": "geojson"})
            assert exported.headers["content-type"] == "application/geo+json"
            collection = exported.json()
            common = {k: v for k, v in answer.items() if k != "hotspots"}
            assert set(common) == {"sequence", "at", "horizon", "resolution", "family", "total"}
            assert {k: collection[k] for k in common} == common  # the snapshot time among them
            assert len(collection["features"]) == len(answer["hotspots"]) == 5
            for feature, item in zip(collection["features"], answer["hotspots"], strict=True):
                assert feature["geometry"]["coordinates"] == [item.pop("polygon")]
                assert feature["properties"] == {**item, **common}
                assert all(type(p) is int for p in feature["properties"]["peak_hours"])
                assert ring_area(feature["geometry"]["coordinates"][0]) > 0


def request_counts(text: str) -> dict[tuple[str, str, str], float]:
    """``hotspots_api_request_seconds_count`` by (route, method, status)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hotspots_api_request_seconds_count":
                labels = sample.labels
                assert set(labels) == {"route", "method", "status"}, labels
                out[labels["route"], labels["method"], labels["status"]] = sample.value
    return out


async def test_request_metrics_carry_method_and_status_on_both_ways(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = settings_for(namespace, redis_url)
    await filled(settings, client, rows[:300])
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        risk = {"lat": "39.95", "lon": "-75.16"}
        for path, token, params, status in (
            ("/v1/hotspots", DISPLAY, {}, 200),  # the fast lane
            ("/v1/hotspots", DISPLAY, GENERAL, 200),  # FastAPI's route
            ("/v1/hotspots", None, {}, 401),
            ("/v1/hotspots", DISPLAY, {"family": "unicorn"}, 422),
            ("/v1/risk", DISPATCH, risk, 200),
            ("/v1/risk", DISPATCH, {**risk, **GENERAL}, 200),
            ("/v1/risk", DISPLAY, risk, 403),
            ("/v1/cells/nonsense", DISPLAY, {}, 404),
        ):
            got = await h.get(path, params=params, headers=auth(token) if token else {})
            assert got.status_code == status, (path, params, got.text)
        assert (await h.put("/v1/config", headers=auth(DISPLAY))).status_code == 405
        assert (await h.get("/v1/no-such-route", headers=auth(DISPLAY))).status_code == 404
        page = await h.get("/metrics")
        counts = request_counts(page.text)
        assert counts == {
            ("/v1/hotspots", "GET", "200"): 2,
            ("/v1/hotspots", "GET", "401"): 1,
            ("/v1/hotspots", "GET", "422"): 1,
            ("/v1/risk", "GET", "200"): 2,
            ("/v1/risk", "GET", "403"): 1,
            ("/v1/cells/{cell}", "GET", "404"): 1,
            ("/v1/config", "PUT", "405"): 1,
            ("other", "GET", "404"): 1,
        }
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
            assert f"\n{name}" in page.text, name
        assert "python_gc_objects_collected_total{" in page.text

    nobody = settings.model_copy(
        update={"store": settings.store.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})}
    )
    down = app.redis_client(nobody)  # (nothing listens on port 1)
    try:
        async with (
            serving(settings, down) as host,
            httpx.AsyncClient(base_url=f"http://{host}") as h,
        ):
            for params in ({}, GENERAL):
                got = await h.get("/v1/hotspots", params=params, headers=auth(DISPLAY))
                assert got.status_code == 503
            counts = request_counts((await h.get("/metrics")).text)
            assert counts == {("/v1/hotspots", "GET", "503"): 2}
    finally:
        await down.aclose()


async def test_a_method_not_allowed_names_every_method_of_the_path(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_for(namespace, redis_url)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        for path, allowed in (
            ("/v1/dosage/plan", "GET, PUT"),  # two routes of one path
            ("/v1/config", "GET"),
        ):
            got = await h.request("DELETE", path)
            assert got.status_code == 405 and got.headers["allow"] == allowed, path


async def test_without_districts_or_an_outline_the_display_draws_none(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    # no config names an outline: nothing bundled stands in for the force's own
    settings = settings_for(namespace, redis_url)
    assert settings.events.boundary is None and settings.display.districts is None
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        h.headers.update(auth(DISPLAY))
        doc = (await h.get("/v1/boundary")).json()
        assert doc == {"type": "FeatureCollection", "features": []}
