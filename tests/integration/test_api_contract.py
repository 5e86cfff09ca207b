"""What clients nobody here wrote found (issue 17), held over real HTTP
against a served app on a real Redis filled from the bundled records: bad
input gets a 4xx that says what is wrong, never a 5xx; a family view's shares
are of that family's ranking; tokens in URLs only where a browser needs them;
RFC 7946 GeoJSON; request metrics an on-call engineer can alert on."""

from __future__ import annotations

import math

import httpx
import pytest
import redis.asyncio as aioredis

from tests import oracle
from tests.integration.test_api import DISPLAY, auth, filled, serving, settings_for


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=3000)


def says(response: httpx.Response, *words: str) -> None:
    """A 422 whose message names each of ``words``."""
    assert response.status_code == 422, (response.status_code, response.text)
    text = response.text
    for word in words:
        assert word in text, (word, text)


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
