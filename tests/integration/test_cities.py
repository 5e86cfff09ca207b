"""The shared cities' real exports read through their source profiles alone,
checked against an independent reading of the raw CSV (csv module, pyproj,
datetime/zoneinfo) and the counts of rows rejected, by reason."""

from __future__ import annotations

import csv
import gzip
import io
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pyproj import Transformer

from streamer.adapters.files import Columns, concat_columns, load_profile, read_columns, standing
from streamer.core.events import EventRules

RULES = EventRules()

SharedData = Callable[..., Path]


def raw_rows(paths: list[Path], encoding: str = "utf-8") -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(paths, key=str):
        with gzip.open(path, "rb") as handle:
            rows.extend(csv.DictReader(io.TextIOWrapper(handle, encoding=encoding, newline="")))
    return rows


def wall_to_utc_s(moment: datetime, zone: ZoneInfo) -> float | None:
    """A wall time in ``zone`` as POSIX seconds; None in the skipped hour
    (zoneinfo and the reader treat those differently, on purpose)."""
    aware = moment.replace(tzinfo=zone)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
        return None
    return aware.timestamp()


def read(paths: str | list[Path], profile_name: str) -> Columns:
    return concat_columns(read_columns(paths, load_profile(profile_name)))


def check_times(cols: Columns, expected: list[float | None]) -> None:
    known = np.array([e is not None for e in expected])
    wanted = np.array([np.nan if e is None else e for e in expected])
    assert known.sum() > 0.99 * len(expected)
    assert np.array_equal(cols.occurred_at_s[known], wanted[known])


def test_seattle_calls(shared_data: SharedData) -> None:
    path = shared_data("seattle", "seattle_911_2015.csv.gz")
    started = time.monotonic()
    cols = read(str(path), "seattle")
    rows = raw_rows([path], encoding="latin-1")
    assert len(cols) == len(rows) == 91_067
    zone = ZoneInfo("America/Los_Angeles")
    check_times(
        cols,
        [
            wall_to_utc_s(datetime.strptime(r["At.Scene.Time"], "%m/%d/%y %H:%M"), zone)
            for r in rows
        ],
    )
    assert cols.lat_deg.tolist() == [float(r["Latitude"]) for r in rows]
    assert cols.lon_deg.tolist() == [float(r["Longitude"]) for r in rows]
    assert cols.categories.tolist() == [r["Initial.Type.Group"].strip() for r in rows]
    assert cols.addresses.tolist() == [r["Hundred.Block.Location"].strip() for r in rows]
    assert cols.category_codes.tolist() == [r["Event.Clearance.Code"] for r in rows]
    onview = ["ONVIEW" in r["Initial.Type.Description"] for r in rows]
    assert cols.origins.tolist() == ["proactive" if p else "reported" for p in onview]
    assert set(cols.kinds.tolist()) == {"call"}
    # no record numbers: every row its own id; exact duplicates count 1, 2, ...
    assert len(set(cols.ids.tolist())) == len(rows)
    fields = ("At.Scene.Time", "Longitude", "Latitude", "Hundred.Block.Location")
    keys = [(*(r[f] for f in fields), r["Initial.Type.Group"]) for r in rows]
    repeats = sum(n - 1 for n in Counter(keys).values())
    assert repeats >= 782  # the README's exact duplicates, at least
    assert sum(not i.endswith("-1") for i in cols.ids.tolist()) == repeats
    assert cols.ids.tolist() == read(str(path), "seattle").ids.tolist()
    stand = standing(cols, RULES, now_s=time.time())
    assert stand.rejected == Counter() and stand.superseded == 0
    assert stand.rows.size == len(rows)
    assert time.monotonic() - started < 20


def test_vancouver_crime_in_projected_metres(shared_data: SharedData) -> None:
    paths = [
        shared_data("vancouver", f"crimedata_csv_AllNeighbourhoods_{year}.csv.gz")
        for year in (2018, 2020, 2021, 2022)
    ]
    started = time.monotonic()
    cols = read(str(paths[0].parent / "crimedata_csv_AllNeighbourhoods_*.csv.gz"), "vancouver")
    assert cols.ids.tolist() == read(paths[::-1], "vancouver").ids.tolist()  # a list, any order
    rows = raw_rows(paths)
    assert len(cols) == len(rows) == 148_295
    zone = ZoneInfo("America/Vancouver")
    parts = ("YEAR", "MONTH", "DAY", "HOUR", "MINUTE")
    check_times(cols, [wall_to_utc_s(datetime(*(int(r[p]) for p in parts)), zone) for r in rows])
    # the reasons, judged on the coordinates as written
    expected: Counter[str] = Counter()
    usable = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        if not r["X"].strip() or not r["Y"].strip():
            expected["missing_coordinates"] += 1
        elif float(r["X"]) == 0 or float(r["Y"]) == 0:
            expected["zero_coordinates"] += 1
        else:
            usable[i] = True
    assert expected == {"zero_coordinates": 14_594, "missing_coordinates": 2}
    # every offence against a person has its location withheld (and two
    # collisions at "99XXXX UNKNOWN")
    person = np.array([r["TYPE"] in {"Homicide", "Offence Against a Person"} for r in rows])
    zero = cols.coordinate_faults == "zero_coordinates"
    assert zero[person].all() and int(zero[~person].sum()) == 2
    stand = standing(cols, RULES, now_s=time.time())
    assert stand.rejected == expected
    assert stand.superseded == 0 and stand.rows.size == int(usable.sum())
    x = np.array([float(r["X"]) for r, ok in zip(rows, usable, strict=True) if ok])
    y = np.array([float(r["Y"]) for r, ok in zip(rows, usable, strict=True) if ok])
    lon, lat = Transformer.from_crs("EPSG:26910", "EPSG:4326", always_xy=True).transform(x, y)
    assert np.array_equal(cols.lat_deg[usable], lat)
    assert np.array_equal(cols.lon_deg[usable], lon)
    # in the city (lat 49.20-49.32, lon -123.23 to -123.02)
    assert ((lat > 49.19) & (lat < 49.32) & (lon > -123.23) & (lon < -123.02)).all()
    assert cols.addresses.tolist() == [r["HUNDRED_BLOCK"].strip() for r in rows]
    assert cols.categories.tolist() == [r["TYPE"] for r in rows]
    assert time.monotonic() - started < 20


def test_portland_calls_in_state_plane_feet(shared_data: SharedData) -> None:
    paths = [
        shared_data("portland", name)
        for name in (
            "NIJ2016_AUG01_AUG31_USE.csv.gz",
            "NIJ2016_SEP01_SEP30.csv.gz",
            "NIJ2016_NOV01_NOV30.csv.gz",
        )
    ]
    started = time.monotonic()
    cols = read(paths, "portland")
    rows = raw_rows(paths)
    assert len(cols) == len(rows) == 19_375 + 18_443 + 16_834
    zone = ZoneInfo("America/Los_Angeles")
    check_times(
        cols, [wall_to_utc_s(datetime.strptime(r["occ_date"], "%m/%d/%y"), zone) for r in rows]
    )
    months = Counter(datetime.fromtimestamp(t, zone).month for t in cols.occurred_at_s.tolist())
    assert months == {8: 19_375, 9: 18_443, 11: 16_834}
    x = np.array([float(r["x_coordinate"]) for r in rows])
    y = np.array([float(r["y_coordinate"]) for r in rows])
    lon, lat = Transformer.from_crs("EPSG:2913", "EPSG:4326", always_xy=True).transform(x, y)
    assert np.array_equal(cols.lat_deg, lat) and np.array_equal(cols.lon_deg, lon)
    # feet, not metres: the points land in Portland (lat 45.4-45.7, lon -122.9 to -122.4)
    assert ((lat > 45.35) & (lat < 45.7) & (lon > -122.9) & (lon < -122.3)).all()
    assert cols.categories.tolist() == [r["CASE DESC"].strip() for r in rows]
    assert cols.category_codes.tolist() == [r["final_case_type"].strip() for r in rows]
    assert len(set(cols.categories.tolist())) == 80
    assert set(cols.kinds.tolist()) == {"call"} and set(cols.origins.tolist()) == {"reported"}
    stand = standing(cols, RULES, now_s=time.time())
    assert stand.rejected == Counter() and stand.superseded == 0
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("name", ["seattle", "vancouver", "portland"])
def test_city_profiles_name_columns_the_exports_have(shared_data: SharedData, name: str) -> None:
    folder = shared_data(name, "README.txt").parent
    first = sorted(folder.glob("*.csv.gz"))[0]
    profile = load_profile(name)
    with gzip.open(first, "rt", encoding=profile.encoding) as handle:
        header = next(csv.reader(handle))
    assert set(profile.columns.values()) <= set(header)
