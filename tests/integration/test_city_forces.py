"""Cities the engine was never tuned for, onboarded with a source profile and
a force config alone (streamer/config/sources/, streamer/config/forces/):
backfilled into a real Redis, their scores checked against an independent
computation from the raw export inside the test (csv, pyproj, zoneinfo and
h3 directly), and evaluated and served."""

from __future__ import annotations

import csv
import gzip
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import h3
import httpx
import orjson
import pyproj
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.files import load_profile
from streamer.settings import Settings, load_settings
from tests.cli_support import hotspots
from tests.integration.test_api import DISPLAY, auth, serving
from tests.oracle import ROOT

FORCES = ROOT / "streamer" / "config" / "forces"
FILES = {  # the shared data set's files of each city (its README says what each is)
    "vancouver": [f"crimedata_csv_AllNeighbourhoods_{y}.csv.gz" for y in (2018, 2020, 2021, 2022)],
    "seattle": ["seattle_911_2015.csv.gz"],
    "portland": [
        "NIJ2016_AUG01_AUG31_USE.csv.gz",
        "NIJ2016_SEP01_SEP30.csv.gz",
        "NIJ2016_NOV01_NOV30.csv.gz",
    ],
}
RESOLUTION = 9


@dataclass(frozen=True)
class Raw:
    """One row of an export as the test reads it, independently of the engine."""

    t_s: float
    lat: float
    lon: float
    category: str


def _local_s(naive: datetime, zone: ZoneInfo) -> float:
    """A local wall time as the engine reads it: a repeated hour's first
    instant (fold 0), and a skipped hour's last second before the gap."""
    moment = naive.replace(tzinfo=zone)
    if datetime.fromtimestamp(moment.timestamp(), zone).replace(tzinfo=None) != naive:
        gap_start = naive.replace(minute=0, second=0).replace(tzinfo=zone)
        return gap_start.timestamp() - 1.0
    return moment.timestamp()


def _rows(paths: list[Path], encoding: str) -> Iterator[dict[str, str]]:
    for path in paths:
        with gzip.open(path, "rt", encoding=encoding, newline="") as handle:
            yield from csv.DictReader(handle)


def vancouver(paths: list[Path]) -> list[Raw]:
    zone, to_wgs84 = (
        ZoneInfo("America/Vancouver"),
        pyproj.Transformer.from_crs("EPSG:26910", "EPSG:4326", always_xy=True),
    )
    out = []
    for r in _rows(paths, "utf-8"):
        if not r["X"] or not r["Y"] or float(r["X"]) == 0 or float(r["Y"]) == 0:
            continue  # withheld or missing locations
        lon, lat = to_wgs84.transform(float(r["X"]), float(r["Y"]))
        parts = [int(r[k]) for k in ("YEAR", "MONTH", "DAY", "HOUR", "MINUTE")]
        out.append(Raw(_local_s(datetime(*parts), zone), lat, lon, r["TYPE"]))
    return out


def seattle(paths: list[Path]) -> list[Raw]:
    zone = ZoneInfo("America/Los_Angeles")
    out = []
    for r in _rows(paths, "latin-1"):
        if not r["Latitude"] or not r["Longitude"] or not r["At.Scene.Time"]:
            continue
        naive = datetime.strptime(r["At.Scene.Time"], "%m/%d/%y %H:%M")
        lat, lon = float(r["Latitude"]), float(r["Longitude"])
        if lat == 0 or lon == 0:
            continue
        out.append(Raw(_local_s(naive, zone), lat, lon, r["Initial.Type.Group"]))
    return out


def portland(paths: list[Path]) -> list[Raw]:
    zone, to_wgs84 = (
        ZoneInfo("America/Los_Angeles"),
        pyproj.Transformer.from_crs("EPSG:2913", "EPSG:4326", always_xy=True),
    )
    out = []
    for r in _rows(paths, "utf-8"):
        if not r["x_coordinate"] or float(r["x_coordinate"]) == 0:
            continue
        lon, lat = to_wgs84.transform(float(r["x_coordinate"]), float(r["y_coordinate"]))
        naive = datetime.strptime(r["occ_date"], "%m/%d/%y")
        out.append(Raw(_local_s(naive, zone), lat, lon, r["CASE DESC"].strip()))
    return out


def scores(
    rows: list[Raw], settings: Settings, half_life_s: float, at_s: float
) -> dict[str, float]:
    """Cell -> harm-weighted decayed score at ``at_s``, from the config's table."""
    rules, default = settings.categories, settings.categories["default"]
    terms: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        rule = rules.get(r.category, default)
        if not rule.include or rule.weight <= 0:
            continue
        cell = h3.latlng_to_cell(r.lat, r.lon, RESOLUTION)
        terms[cell].append(rule.weight * 2.0 ** (-(at_s - r.t_s) / half_life_s))
    return {c: math.fsum(v) for c, v in terms.items()}


async def _onboard(
    shared_data: Callable[..., Path],
    city: str,
    pattern: str,
    read: Callable[[list[Path]], list[Raw]],
    namespace: str,
    redis_url: str,
    client: aioredis.Redis,
) -> None:
    paths = [shared_data(city, name) for name in FILES[city]]
    folder = paths[0].parent
    config = FORCES / f"{city}.toml"
    settings = load_settings(
        config,
        environ={},
        # the records are years old: now is the newest event's time
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "time": {"clock": "event"},
        },
    )
    store = app.store(settings, client)
    report = await app.backfill(
        settings, store, str(folder / pattern), load_profile(city), now_s=time.time()
    )
    raw = read(paths)
    # every row the independent reading can place stands (counting or not)
    assert report.accepted + report.excluded == len(raw)
    # the engine's scores equal the independent ones, cell by cell, for the
    # top of every horizon
    at_s = max(r.t_s for r in raw) + 3600.0
    for name, half_life in settings.horizons.items():
        want = scores(raw, settings, half_life, at_s)
        top = await store.top(name, RESOLUTION, 20, at_s)
        assert len(top) == 20
        expected = sorted(want.items(), key=lambda kv: -kv[1])[:20]
        assert [r.cell for r in top][:5] == [c for c, _ in expected][:5], name
        for ranked in top:
            assert math.isclose(ranked.score, want[ranked.cell], rel_tol=1e-9), (name, ranked)
    # served: the API answers from the same store, in the force's own name
    async with (
        serving(
            settings.model_copy(
                update={"api": settings.api.model_copy(update={"tokens": _tokens()})}
            ),
            client,
        ) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as h,
    ):
        h.headers.update(auth(DISPLAY))
        config_doc = (await h.get("/v1/config")).json()
        assert config_doc["name"] == settings.api.name != ""
        hot = (await h.get("/v1/hotspots", params={"resolution": RESOLUTION, "limit": 5})).json()
        assert len(hot["hotspots"]) == 5


def _tokens() -> dict[str, object]:
    from streamer.api import token_digest
    from streamer.settings import TokenRule

    return {"wall": TokenRule(token_sha256=token_digest(DISPLAY), role="display")}


async def test_vancouver_from_its_profile_and_config(
    shared_data: Callable[..., Path], namespace: str, redis_url: str, client: aioredis.Redis
) -> None:
    await _onboard(
        shared_data,
        "vancouver",
        "crimedata_csv_AllNeighbourhoods_*.csv.gz",
        vancouver,
        namespace,
        redis_url,
        client,
    )


async def test_seattle_from_its_profile_and_config(
    shared_data: Callable[..., Path], namespace: str, redis_url: str, client: aioredis.Redis
) -> None:
    await _onboard(
        shared_data, "seattle", "seattle_911_2015.csv.gz", seattle, namespace, redis_url, client
    )


async def test_portland_from_its_profile_and_config(
    shared_data: Callable[..., Path], namespace: str, redis_url: str, client: aioredis.Redis
) -> None:
    await _onboard(
        shared_data, "portland", "NIJ2016_*.csv.gz", portland, namespace, redis_url, client
    )


def test_vancouver_evaluates_on_a_derived_study_area(shared_data: Callable[..., Path]) -> None:
    folder = shared_data("vancouver", FILES["vancouver"][0]).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}
    done = hotspots(
        "--config",
        str(FORCES / "vancouver.toml"),
        "evaluate",
        str(folder / "crimedata_csv_AllNeighbourhoods_*.csv.gz"),
        "--profile",
        "vancouver",
        "--from",
        "2022-06-01",
        "--to",
        "2022-06-30",
        "--json",
        "--quiet",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["parameters"]["boundary"] == "auto"
    assert report["events"] > 1000 and report["study_cells"] > 100
    # the withheld locations are said, with their column and share
    warnings = report["rows"]["warnings"]
    assert any("zero coordinates" in w and "'X', 'Y'" in w for w in warnings), warnings
    assert datetime.fromisoformat(report["parameters"]["history_from"]).astimezone(UTC).year == 2018
