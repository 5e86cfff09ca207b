"""Source-profile keys beyond one WGS84 point, one time and one id column:
projected coordinates, times in several columns or in parts, compound and
row-made ids, addresses, codes, cancels, renames, encodings, several files."""

from __future__ import annotations

import gzip
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pyproj import Transformer

from streamer.adapters.files import (
    Columns,
    SourceProfile,
    concat_columns,
    iter_records,
    load_profile,
    read_columns,
    standing,
)
from streamer.core.events import EventRules

NOW_S = datetime(2030, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()
RULES = EventRules()

BASE = """
format = "csv"
timezone = "America/Vancouver"
category = "TYPE"
"""
PROJECTED = (
    BASE
    + """
id = "@row"
occurred_at = { year = "YEAR", month = "MONTH", day = "DAY", hour = "HOUR", minute = "MINUTE" }
crs = "EPSG:26910"
x = "X"
y = "Y"
address = "BLOCK"
"""
)
PROJECTED_CSV = (
    "TYPE,YEAR,MONTH,DAY,HOUR,MINUTE,BLOCK,X,Y\n"
    "Mischief,2021,3,14,1,59,10XX ALBERNI ST,491102.2439,5459092.4351\n"
    "Mischief,2021,3,14,3,0,10XX ALBERNI ST,491102.2439,5459092.4351\n"
    "Homicide,2021,7,1,0,0,OFFSET TO PROTECT PRIVACY,0.0,0.0\n"
    "Collision,2021,7,2,9,5,CASSIAR TUNNEL,,\n"
    "Collision,2021,7,2,9,5,CASSIAR TUNNEL, ,5459092\n"
    "Other Theft,2021,7,3,12,30,5XX W PENDER ST,491k,5459000.5\n"
    "Mischief,2021,3,14,1,59,10XX ALBERNI ST,491102.2439,5459092.4351\n"
)


def profile_at(tmp_path: Path, body: str, name: str = "force") -> SourceProfile:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return load_profile(str(path))


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    data = text.encode(encoding)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def read(path: Path | str | list[str | Path], profile: SourceProfile, **kw: int) -> Columns:
    return concat_columns(read_columns(path, profile, **kw))


def local_s(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


# --------------------------------------------------------------------------- parsing


def test_new_keys_parse_into_the_profile(tmp_path: Path) -> None:
    body = (
        BASE
        + """
id = ["district", "number"]
occurred_at = ["DATE", "TIME"]
time_format = "%m/%d/%Y %H:%M"
crs = "ESRI:102642"
x = "XCOORD"
y = "YCOORD"
address = ["HOUSE", "STREET"]
category_code = "UCR"
op_column = "STATUS"
cancel_values = ["VOID", "UNFOUNDED"]
origin_column = "SOURCE"
proactive_contains = ["ONVIEW"]
encoding = "latin-1"

[rename]
DateOccured = "DATE"
"""
    )
    profile = profile_at(tmp_path, body)
    assert profile.id == ("district", "number") and not profile.row_ids
    assert profile.occurred_at == ("DATE", "TIME") and profile.occurred_parts == ()
    assert (profile.crs, profile.x, profile.y, profile.lat, profile.lon) == (
        "ESRI:102642",
        "XCOORD",
        "YCOORD",
        None,
        None,
    )
    assert profile.address == ("HOUSE", "STREET")
    assert profile.category_code == "UCR"
    assert profile.cancel_values == ("VOID", "UNFOUNDED")
    assert profile.proactive_contains == ("ONVIEW",) and profile.proactive_values == ()
    assert profile.rename == (("DateOccured", "DATE"),)
    assert profile.encoding == "latin-1"
    assert profile.columns == {
        "id[0]": "district",
        "id[1]": "number",
        "occurred_at[0]": "DATE",
        "occurred_at[1]": "TIME",
        "x": "XCOORD",
        "y": "YCOORD",
        "category": "TYPE",
        "origin_column": "SOURCE",
        "op_column": "STATUS",
        "category_code": "UCR",
        "address[0]": "HOUSE",
        "address[1]": "STREET",
    }


def test_row_ids_and_time_parts_parse(tmp_path: Path) -> None:
    profile = profile_at(tmp_path, PROJECTED.replace(', hour = "HOUR", minute = "MINUTE"', ""))
    assert profile.row_ids and profile.id == ()
    assert profile.occurred_parts == (("year", "YEAR"), ("month", "MONTH"), ("day", "DAY"))
    assert profile.occurred_at == ()
    assert profile.time_columns == ("YEAR", "MONTH", "DAY")
    assert profile.place_columns == ("X", "Y", "BLOCK")
    assert profile.encoding == "utf-8" and profile.rename == ()


def test_the_shared_city_profiles_load() -> None:
    seattle, vancouver, portland = (load_profile(n) for n in ("seattle", "vancouver", "portland"))
    assert seattle.kind == "call" and seattle.proactive_contains == ("ONVIEW",)
    assert seattle.encoding == "latin-1" and seattle.row_ids
    assert vancouver.crs == "EPSG:26910" and len(vancouver.occurred_parts) == 5
    assert portland.crs == "EPSG:2913" and portland.time_format == "%m/%d/%y"


LATLON = BASE + 'id = "ref"\noccurred_at = "when"\nlat = "lat"\nlon = "lon"\n'


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        (PROJECTED.replace('"EPSG:26910"', '"EPSG:999999"'), "crs", "not a CRS"),
        (PROJECTED.replace('crs = "EPSG:26910"\n', ""), "crs", "go together"),
        (PROJECTED.replace('y = "Y"\n', ""), "y", "go together"),
        (PROJECTED + 'lat = "LAT"\n', "crs", "not both"),
        (LATLON.replace('lon = "lon"\n', ""), "lon", "missing"),
        (LATLON + 'x = "X"\n', "x", "not both"),
        (PROJECTED.replace('minute = "MINUTE"', 'second = "S"'), "occurred_at", "unknown part"),
        (PROJECTED.replace('day = "DAY", ', ""), "occurred_at", "'day'"),
        (PROJECTED.replace('hour = "HOUR"', "hour = 3"), "occurred_at", "part 'hour'"),
        (PROJECTED + 'time_format = "%H"\n', "time_format", "does not apply"),
        (PROJECTED.replace('id = "@row"', 'id = ["@row", "X"]'), "id", "stands alone"),
        (PROJECTED.replace('id = "@row"', "id = []"), "id", "list of distinct"),
        (PROJECTED.replace('id = "@row"', 'id = ["a", "a"]'), "id", "list of distinct"),
        (PROJECTED.replace('address = "BLOCK"', "address = 7"), "address", "column name"),
        (PROJECTED + 'cancel_values = ["VOID"]\n', "cancel_values", "needs op_column"),
        (PROJECTED + 'op_column = "S"\ncancel_values = "VOID"\n', "cancel_values", "list"),
        (PROJECTED + 'proactive_contains = ["ONVIEW"]\n', "proactive_contains", "origin_column"),
        (PROJECTED + 'origin_column = "S"\n', "origin_column", "proactive_contains"),
        (PROJECTED + 'category_code = ""\n', "category_code", "non-empty string"),
        (PROJECTED + 'encoding = "klingon-8"\n', "encoding", "not a text encoding"),
        (PROJECTED + "[rename]\nOLD = 3\n", "rename", "'OLD'"),
        (PROJECTED + 'rename = "OLD"\n', "rename", "table"),
    ],
)
def test_bad_new_keys_name_the_file_and_the_key(
    tmp_path: Path, body: str, key: str, says: str
) -> None:
    with pytest.raises(ValueError, match=f"key '{key}'") as info:
        profile_at(tmp_path, body)
    assert str(tmp_path / "force.toml") in str(info.value)
    assert says in str(info.value)


# --------------------------------------------------------------------------- places


def test_projected_points_are_reprojected_like_pyproj_does(tmp_path: Path) -> None:
    cols = read(write(tmp_path / "v.csv", PROJECTED_CSV), profile_at(tmp_path, PROJECTED))
    lon, lat = Transformer.from_crs("EPSG:26910", "EPSG:4326", always_xy=True).transform(
        491102.2439, 5459092.4351
    )
    assert 49.2 < lat < 49.3 and -123.2 < lon < -123.0  # downtown Vancouver
    assert cols.lat_deg[0] == pytest.approx(lat, abs=1e-9)
    assert cols.lon_deg[0] == pytest.approx(lon, abs=1e-9)
    assert cols.addresses[0] == "10XX ALBERNI ST"
    assert cols.coordinate_faults.tolist() == [
        "",
        "",
        "zero_coordinates",
        "missing_coordinates",
        "missing_coordinates",  # a blank x beside a number
        "bad_coordinates",
        "",
    ]
    faulted = cols.coordinate_faults != ""
    assert np.isnan(cols.lat_deg[faulted]).all() and np.isnan(cols.lon_deg[faulted]).all()


def test_faulted_coordinates_are_rejected_with_their_own_reasons(tmp_path: Path) -> None:
    cols = read(write(tmp_path / "v.csv", PROJECTED_CSV), profile_at(tmp_path, PROJECTED))
    stand = standing(cols, RULES, now_s=NOW_S)
    assert stand.rejected == {
        "zero_coordinates": 1,
        "missing_coordinates": 2,
        "bad_coordinates": 1,
    }
    assert stand.rows.tolist() == [0, 1, 6]
    # replayed, such a row has no place at all (not the reprojected zero)
    records = list(iter_records(tmp_path / "v.csv", profile_at(tmp_path, PROJECTED)))
    assert (records[2]["lat"], records[2]["lon"]) == (None, None)


def test_wgs84_profiles_keep_their_reasons(tmp_path: Path) -> None:
    data = write(
        tmp_path / "p.csv",
        "ref,when,lat,lon,TYPE\n"
        "1,2025-01-01T10:00:00,0,0,Theft\n"
        "2,2025-01-01T10:00:00,,-75.1,Theft\n"
        "3,2025-01-01T10:00:00,40.0,-75.1,Theft\n",
    )
    cols = read(data, profile_at(tmp_path, LATLON))
    assert set(cols.coordinate_faults.tolist()) == {""}
    assert standing(cols, RULES, now_s=NOW_S).rejected == {"null_island": 1, "not_finite": 1}


# --------------------------------------------------------------------------- times


def test_a_time_in_parts_is_a_wall_time_in_the_zone(tmp_path: Path) -> None:
    cols = read(write(tmp_path / "v.csv", PROJECTED_CSV), profile_at(tmp_path, PROJECTED))
    zone = "America/Vancouver"
    assert cols.occurred_at_s[0] == local_s(zone, 2021, 3, 14, 1, 59)  # last PST minute
    assert cols.occurred_at_s[1] == local_s(zone, 2021, 3, 14, 3, 0)  # first PDT
    assert cols.occurred_at_s[1] - cols.occurred_at_s[0] == 60
    assert cols.occurred_at_s[2] == local_s(zone, 2021, 7, 1, 0, 0)


def test_time_parts_without_hour_and_minute_and_bad_parts(tmp_path: Path) -> None:
    body = PROJECTED.replace(', hour = "HOUR", minute = "MINUTE"', "")
    data = write(
        tmp_path / "v.csv",
        "TYPE,YEAR,MONTH,DAY,BLOCK,X,Y\n"
        "Mischief,2021,12,5,A,491102,5459092\n"
        "Mischief,2021,13,5,A,491102,5459092\n"
        "Mischief,2021,,5,A,491102,5459092\n"
        "Mischief,2021,x,5,A,491102,5459092\n"
        "Mischief, 2021 , 1 ,09,A,491102,5459092\n",
    )
    cols = read(data, profile_at(tmp_path, body))
    zone = "America/Vancouver"
    assert cols.occurred_at_s[0] == local_s(zone, 2021, 12, 5)
    assert np.isnan(cols.occurred_at_s[1:4]).all()
    assert cols.occurred_at_s[4] == local_s(zone, 2021, 1, 9)
    assert standing(cols, RULES, now_s=NOW_S).rejected == {"bad_time": 3}


def test_date_and_time_columns_are_joined_before_the_format(tmp_path: Path) -> None:
    body = (
        BASE
        + """
id = ["district", "number"]
occurred_at = ["DATE", "TIME"]
time_format = "%m/%d/%Y %H:%M"
lat = "lat"
lon = "lon"
"""
    )
    data = write(
        tmp_path / "p.csv",
        "district,number,DATE,TIME,lat,lon,TYPE\n"
        "12,00345,11/07/2021,01:30,49.28,-123.12,Theft\n"
        "12,,11/07/2021,13:05,49.28,-123.12,Theft\n"
        ",,11/07/2021,,49.28,-123.12,Theft\n",
    )
    cols = read(data, profile_at(tmp_path, body))
    zone = "America/Vancouver"
    # 01:30 on the night clocks go back: the earliest instant (daylight time)
    assert cols.occurred_at_s[0] == local_s(zone, 2021, 11, 7, 1, 30)
    assert cols.occurred_at_s[1] == local_s(zone, 2021, 11, 7, 13, 5)
    assert np.isnan(cols.occurred_at_s[2])  # no time: not midnight
    assert cols.ids.tolist() == ["12|00345", "12|", ""]


# --------------------------------------------------------------------------- ids


def test_row_ids_are_stable_and_duplicates_stay_distinct(tmp_path: Path) -> None:
    data = write(tmp_path / "v.csv", PROJECTED_CSV)
    profile = profile_at(tmp_path, PROJECTED)
    first, again = read(data, profile), read(data, profile, chunk_rows=2)
    assert first.ids.tolist() == again.ids.tolist()  # and across chunk boundaries
    ids = first.ids.tolist()
    # rows 0 and 6 are exact duplicates: one digest, first and second
    assert ids[0].split("-")[0] == ids[6].split("-")[0]
    assert (ids[0].split("-")[1], ids[6].split("-")[1]) == ("1", "2")
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= 128 for i in ids)
    # a re-export with other rows around it keeps the ids of the same rows
    lines = PROJECTED_CSV.splitlines(keepends=True)
    shuffled = write(tmp_path / "w.csv", lines[0] + lines[3] + lines[7] + lines[1])
    assert read(shuffled, profile).ids.tolist() == [ids[2], ids[0], ids[6]]
    assert standing(first, RULES, now_s=NOW_S).superseded == 0


def test_row_ids_of_cancel_rows_name_the_upserts_they_cancel(tmp_path: Path) -> None:
    body = BASE + (
        'id = "@row"\noccurred_at = "when"\nlat = "lat"\nlon = "lon"\n'
        'op_column = "status"\ncancel_values = ["VOID"]\n'
    )
    data = write(
        tmp_path / "p.csv",
        "when,lat,lon,TYPE,status\n"
        "2025-01-01T10:00:00,49.28,-123.12,Theft,OPEN\n"
        "2025-01-01T10:00:00,49.28,-123.12,Theft,OPEN\n"
        "2025-01-01T10:00:00,49.28,-123.12,Theft,VOID\n",
    )
    cols = read(data, profile_at(tmp_path, body))
    assert cols.ops.tolist() == ["upsert", "upsert", "cancel"]
    assert cols.ids[2] == cols.ids[0] != cols.ids[1]
    stand = standing(cols, RULES, now_s=NOW_S)
    assert stand.rows.tolist() == [1] and stand.cancelled == 1


# --------------------------------------------------------------------------- cancels, origins


def test_cancel_values_make_cancels_that_keep_their_fields(tmp_path: Path) -> None:
    body = LATLON + (
        'op_column = "status"\ncancel_values = ["VOID", "UNFOUNDED"]\n'
        'category_code = "ucr"\norigin_column = "src"\n'
        'proactive_values = ["SELF"]\nproactive_contains = ["ONVIEW"]\n'
    )
    data = write(
        tmp_path / "p.csv",
        "ref,when,lat,lon,TYPE,status,ucr,src\n"
        "1,2025-01-01T10:00:00,49.28,-123.12,  Theft ,OPEN, 600 ,911\n"
        "2,2025-01-01T11:00:00,49.29,-123.13,Robbery,,300,TRAFFIC STOP ONVIEW\n"
        "1,2025-01-01T12:00:00,49.28,-123.12,Theft,VOID,600,SELF\n"
        "3,2025-01-01T13:00:00,49.30,-123.14,Theft,void,,\n"
        "4,2025-01-01T14:00:00,49.31,-123.15,Theft,UNFOUNDED,600,self\n",
    )
    cols = read(data, profile_at(tmp_path, body))
    assert cols.ops.tolist() == ["upsert", "upsert", "cancel", "upsert", "cancel"]
    assert cols.categories.tolist()[:2] == ["Theft", "Robbery"]  # padding dropped
    assert cols.category_codes.tolist() == ["600", "300", "600", "", "600"]
    assert cols.origins.tolist() == ["reported", "proactive", "proactive", "reported", "reported"]
    # a cancel row keeps its own time, place and category
    assert cols.lat_deg[4] == 49.31 and cols.categories[4] == "Theft"
    stand = standing(cols, RULES, now_s=NOW_S)
    assert stand.rows.tolist() == [1, 3]
    assert stand.cancelled == 1  # id 1: upserted, then cancelled
    assert stand.store_cancels.tolist() == [4]  # id 4: never upserted here
    assert stand.with_fields.tolist() == [True]


# --------------------------------------------------------------------------- files


def test_rename_maps_old_headers_onto_the_profile_names(tmp_path: Path) -> None:
    body = LATLON + '[rename]\nDateOccured = "when"\nLatitude = "lat"\n'
    old = write(
        tmp_path / "old.csv", "ref,DateOccured,Latitude,lon,TYPE\n1,2020-05-01,49.2,-123.1,A\n"
    )
    new = write(tmp_path / "new.csv", "ref,when,lat,lon,TYPE\n2,2024-05-01,49.3,-123.2,B\n")
    profile = profile_at(tmp_path, body)
    both = read([old, new], profile)
    assert both.ids.tolist() == ["2", "1"]  # sorted paths: new.csv before old.csv
    assert both.lat_deg.tolist() == [49.3, 49.2]
    clash = write(tmp_path / "clash.csv", "ref,when,DateOccured,lat,lon,TYPE\n")
    with pytest.raises(ValueError, match="key 'rename'") as info:
        read(clash, profile)
    assert "'DateOccured' to 'when'" in str(info.value)


def test_latin1_exports_are_decoded_with_their_encoding(tmp_path: Path) -> None:
    text = "ref,when,lat,lon,TYPE\n1,2025-01-01T10:00:00,49.2,-123.1,Vol à l'étalage\n"
    data = write(tmp_path / "l.csv.gz", text, encoding="latin-1")
    cols = read(data, profile_at(tmp_path, LATLON + 'encoding = "latin-1"\n'))
    assert cols.categories.tolist() == ["Vol à l'étalage"]
    with pytest.raises(ValueError, match=r"not utf-8.*key 'encoding'") as info:
        read(data, profile_at(tmp_path, LATLON))
    assert str(data) in str(info.value)
    # stray bytes past the header are Arrow's to find
    late = write(tmp_path / "late.csv", text.replace("ref,", "ref ,"), encoding="latin-1")
    with pytest.raises(ValueError, match="key 'encoding'"):
        read(late, profile_at(tmp_path, LATLON))


def test_globs_and_lists_read_as_one_stream_in_sorted_order(tmp_path: Path) -> None:
    profile = profile_at(tmp_path, LATLON)
    folder = tmp_path / "data"
    folder.mkdir()
    header = "ref,when,lat,lon,TYPE\n"
    write(folder / "2021.csv.gz", header + "1,2021-06-01T10:00:00,49.2,-123.1,A\n")
    write(folder / "2020.csv", header + "1,2020-06-01T10:00:00,49.2,-123.1,A\n")
    write(folder / "2022.csv.gz", header + "2,2022-06-01T10:00:00,49.2,-123.1,A\n")
    by_glob = read(str(folder / "*.csv*"), profile)
    by_list = read([folder / "2022.csv.gz", str(folder / "202[01].csv*")], profile)
    assert by_glob.ids.tolist() == by_list.ids.tolist() == ["1", "1", "2"]
    years = [datetime.fromtimestamp(t).year for t in by_glob.occurred_at_s]
    assert years == [2020, 2021, 2022]
    stand = standing(by_glob, RULES, now_s=NOW_S)
    assert stand.rows.tolist() == [1, 2] and stand.superseded == 1  # the last row of id 1 wins
    records = list(iter_records(str(folder / "*.csv*"), profile))
    assert [r["id"] for r in records] == ["1", "1", "2"]
    with pytest.raises(ValueError, match=re.escape("'" + str(folder / "nothing-*.csv") + "'")):
        read(str(folder / "nothing-*.csv"), profile)
    with pytest.raises(ValueError, match="no file given"):
        read([], profile)


def test_native_json_lines_carry_an_optional_address(tmp_path: Path) -> None:
    data = write(
        tmp_path / "e.jsonl",
        '{"id": "a", "occurred_at": "2025-01-01T10:00:00Z", "lat": 49.2, "lon": -123.1,'
        ' "category": "Theft", "address": "10XX ALBERNI ST"}\n'
        '{"id": "b", "occurred_at": "2025-01-01T10:00:00Z", "lat": 49.2, "lon": -123.1,'
        ' "category": "Theft"}\n',
    )
    cols = concat_columns(read_columns(data, None))
    assert cols.addresses.tolist() == ["10XX ALBERNI ST", ""]
    assert cols.category_codes.tolist() == ["", ""]
    assert cols.coordinate_faults.tolist() == ["", ""]
