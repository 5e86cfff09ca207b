"""Bulk file reading: source profiles, CSV and JSON-lines columns, replay records."""

from __future__ import annotations

import gzip
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.adapters import files
from streamer.adapters.files import (
    Columns,
    SourceProfile,
    iter_records,
    load_profile,
    read_columns,
)
from streamer.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "streamer" / "data" / "philadelphia_2025.csv.gz"
FAMILIES = {
    "violence",
    "sexual",
    "robbery",
    "burglary",
    "property",
    "vehicle",
    "drugs",
    "weapons",
    "disorder",
    "fraud",
    "other",
}


def utc_s(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    """POSIX seconds of a UTC wall time (independent of any zone rules)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def read_all(path: Path, profile: SourceProfile | None, **kwargs: int) -> Columns:
    chunks = list(read_columns(path, profile, **kwargs))
    fields = Columns.__dataclass_fields__
    return Columns(**{f: np.concatenate([getattr(c, f) for c in chunks]) for f in fields})


def write_profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "force.toml"
    path.write_text(body)
    return path


PROFILE_BODY = """
format = "csv"
id = "ref"
occurred_at = "when"
time_format = "%d/%m/%Y %H:%M"
timezone = "America/New_York"
lat = "y"
lon = "x"
category = "offence"
"""


@pytest.fixture(scope="module")
def philadelphia() -> SourceProfile:
    return load_profile("philadelphia")


@pytest.fixture(scope="module")
def sample(philadelphia: SourceProfile) -> Columns:
    return read_all(SAMPLE, philadelphia)


# --------------------------------------------------------------------------- profiles


def test_profile_by_name_and_by_path_are_the_same(philadelphia: SourceProfile) -> None:
    by_path = load_profile(str(REPO / "streamer" / "config" / "sources" / "philadelphia.toml"))
    assert by_path == philadelphia
    assert philadelphia.name == "philadelphia"
    assert philadelphia.columns == {
        "id": "dc_key",
        "occurred_at": "t_local",
        "lat": "lat",
        "lon": "lon",
        "category": "text_general_code",
    }
    assert (philadelphia.kind, philadelphia.origin) == ("incident", "reported")
    assert philadelphia.timezone == "America/New_York"
    assert philadelphia.time_format == "%Y-%m-%d %H:%M:%S"


def test_unknown_profile_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write_profile(tmp_path, PROFILE_BODY + 'lattitude = "y"\n')
    with pytest.raises(ValueError, match="lattitude") as info:
        load_profile(str(path))
    assert str(path) in str(info.value)
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("timezone", '"Mars/Olympus"'), "timezone"),
        (("format", '"xlsx"'), "format"),
        (("lat", "3"), "lat"),
        (("kind", '"crime"'), "kind"),
        (("origin", '"tip-off"'), "origin"),
        (("time_format", '"dd/mm/yyyy"'), "time_format"),
        (("origin_column", '"source"'), "origin_column"),
    ],
)
def test_bad_profile_values_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    name, value = change
    lines = [line for line in PROFILE_BODY.splitlines() if not line.startswith(f"{name} ")]
    path = write_profile(tmp_path, "\n".join([*lines, f"{name} = {value}"]) + "\n")
    with pytest.raises(ValueError, match=f"key '{key}'") as info:
        load_profile(str(path))
    assert str(path) in str(info.value)


def test_missing_required_key_and_missing_profile(tmp_path: Path) -> None:
    body = PROFILE_BODY.replace('category = "offence"\n', "")
    with pytest.raises(ValueError, match="key 'category': missing"):
        load_profile(str(write_profile(tmp_path, body)))
    with pytest.raises(ValueError, match="does not exist"):
        load_profile("no-such-force")


# --------------------------------------------------------------------------- the sample


def test_sample_row_count_matches_the_file(sample: Columns) -> None:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        lines = sum(1 for _ in handle)
    assert len(sample) == lines - 1
    for name in (
        "ids",
        "categories",
        "kinds",
        "origins",
        "ops",
        "priorities",
        "addresses",
        "category_codes",
        "coordinate_faults",
    ):
        assert getattr(sample, name).dtype == object
        assert len(getattr(sample, name)) == len(sample)
    for name in ("occurred_at_s", "lat_deg", "lon_deg"):
        assert getattr(sample, name).dtype == np.float64
        assert len(getattr(sample, name)) == len(sample)


def test_sample_values_are_whole_and_in_the_city(sample: Columns) -> None:
    assert np.isfinite(sample.occurred_at_s).all()
    assert sample.occurred_at_s.min() >= utc_s(2025, 1, 1, 5)
    assert sample.occurred_at_s.max() < utc_s(2026, 1, 1, 5)
    assert ((sample.lat_deg > 39.87) & (sample.lat_deg < 40.14)).all()
    assert ((sample.lon_deg > -75.29) & (sample.lon_deg < -74.95)).all()
    assert all(isinstance(i, str) and i.isdigit() for i in sample.ids[:1000])
    assert set(sample.kinds) == {"incident"}
    assert set(sample.origins) == {"reported"}
    assert set(sample.ops) == {"upsert"}
    assert set(sample.priorities) == {None}
    # the profile names no address or code, and WGS84 points have no faults
    assert set(sample.addresses) == set(sample.category_codes) == {""}
    assert set(sample.coordinate_faults) == {""}


@pytest.mark.parametrize(
    ("dc_key", "written", "utc"),
    [
        ("202507000002", "2025-01-01 00:00:00", (2025, 1, 1, 5, 0)),  # EST, UTC-5
        ("202535016975", "2025-03-09 01:58:00", (2025, 3, 9, 6, 58)),  # last EST minute
        ("202515019637", "2025-03-09 03:01:00", (2025, 3, 9, 7, 1)),  # first EDT, UTC-4
        ("202517031995", "2025-11-02 01:10:00", (2025, 11, 2, 5, 10)),  # repeated hour: EDT
        ("202522084842", "2025-11-02 02:16:00", (2025, 11, 2, 7, 16)),  # EST again
    ],
)
def test_local_times_become_utc_across_dst(
    sample: Columns, dc_key: str, written: str, utc: tuple[int, ...]
) -> None:
    (where,) = np.flatnonzero(sample.ids == dc_key)
    raw = pacsv.read_csv(
        SAMPLE,
        convert_options=pacsv.ConvertOptions(
            column_types={"dc_key": "string", "t_local": "string"}
        ),
    )
    assert raw["t_local"][int(where)].as_py() == written  # the row checked by hand
    assert sample.occurred_at_s[where] == utc_s(*utc)


def test_chunks_cover_the_file_in_order(philadelphia: SourceProfile, sample: Columns) -> None:
    chunks = list(read_columns(SAMPLE, philadelphia, chunk_rows=40_000))
    assert [len(c) for c in chunks] == [40_000, 40_000, 40_000, len(sample) - 120_000]
    assert np.array_equal(np.concatenate([c.ids for c in chunks]), sample.ids)
    assert np.array_equal(np.concatenate([c.occurred_at_s for c in chunks]), sample.occurred_at_s)


# --------------------------------------------------------------------------- CSV edge cases


CSV_ROWS = """ref,when,x,y,offence,source,prio,action
A1,09/03/2025 02:30,-75.1,39.9,Theft,911,2,
A2,02/11/2025 01:30,-75.1,39.9,Theft,OI,,
A3,02/11/2025 02:30,-75.1,not-a-number,Robbery,911,1,delete
A4,32/01/2025 10:00,,39.9,,911,3,
A5,15/07/2025 12:00,-75.1,39.9,Theft,Officer Initiated,4,
"""


@pytest.fixture
def force_csv(tmp_path: Path) -> tuple[Path, SourceProfile]:
    body = PROFILE_BODY + (
        'origin_column = "source"\n'
        'proactive_values = ["OI", "Officer Initiated"]\n'
        'priority = "prio"\n'
        'op_column = "action"\n'
    )
    data = tmp_path / "export.csv"
    data.write_text(CSV_ROWS)
    return data, load_profile(str(write_profile(tmp_path, body)))


def test_csv_edge_cases(force_csv: tuple[Path, SourceProfile]) -> None:
    data, profile = force_csv
    got = read_all(data, profile)
    assert list(got.ids) == ["A1", "A2", "A3", "A4", "A5"]
    # 02:30 on 9 March does not exist: the last second before the gap (01:59:59 EST).
    assert got.occurred_at_s[0] == utc_s(2025, 3, 9, 6, 59, 59)
    # 01:30 on 2 November happens twice: the earliest (EDT).
    assert got.occurred_at_s[1] == utc_s(2025, 11, 2, 5, 30)
    assert got.occurred_at_s[2] == utc_s(2025, 11, 2, 7, 30)
    assert np.isnan(got.occurred_at_s[3])  # 32 January
    assert got.occurred_at_s[4] == utc_s(2025, 7, 15, 16, 0)
    assert np.isnan(got.lat_deg[2]) and got.lon_deg[2] == -75.1
    assert np.isnan(got.lon_deg[3]) and got.lat_deg[3] == 39.9
    assert list(got.categories) == ["Theft", "Theft", "Robbery", "", "Theft"]
    assert list(got.origins) == ["reported", "proactive", "reported", "reported", "proactive"]
    assert list(got.priorities) == [2, None, 1, 3, 4]
    assert list(got.ops) == ["upsert", "upsert", "delete", "upsert", "upsert"]


def test_gzip_and_plain_csv_read_the_same(
    tmp_path: Path, force_csv: tuple[Path, SourceProfile]
) -> None:
    data, profile = force_csv
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(data.read_bytes()))
    plain, zipped = read_all(data, profile), read_all(packed, profile, chunk_rows=2)
    assert list(plain.ids) == list(zipped.ids)
    assert np.array_equal(plain.occurred_at_s, zipped.occurred_at_s, equal_nan=True)
    assert [len(c) for c in read_columns(packed, profile, chunk_rows=2)] == [2, 2, 1]


def test_iso_times_without_a_format(tmp_path: Path) -> None:
    body = PROFILE_BODY.replace('time_format = "%d/%m/%Y %H:%M"\n', "")
    profile = load_profile(str(write_profile(tmp_path, body)))
    data = tmp_path / "iso.csv"
    data.write_text(
        "ref,when,x,y,offence\n"
        "B1,2025-07-01T12:00:00+02:00,1,2,T\n"
        "B2,2025-07-01T12:00:00,1,2,T\n"  # no offset: wall time in the profile's zone
        "B3,2025-07-01T12:00:00.5Z,1,2,T\n"
        "B4,yesterday,1,2,T\n"
    )
    got = read_all(data, profile).occurred_at_s
    assert got[0] == utc_s(2025, 7, 1, 10)
    assert got[1] == utc_s(2025, 7, 1, 16)
    assert got[2] == utc_s(2025, 7, 1, 12) + 0.5
    assert np.isnan(got[3])


def test_missing_column_names_file_key_and_column(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path, PROFILE_BODY)))
    data = tmp_path / "short.csv"
    data.write_text("ref,when,x,offence\nC1,01/01/2025 00:00,1,T\n")
    with pytest.raises(ValueError, match=r"'y'.*key 'lat'") as info:
        list(read_columns(data, profile))
    assert str(data) in str(info.value)


def test_csv_without_a_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="source profile"):
        list(read_columns(SAMPLE, None))


# --------------------------------------------------------------------------- JSON lines


NATIVE: list[dict[str, object]] = [
    {
        "id": "n1",
        "kind": "call",
        "occurred_at": "2025-03-09T01:30:00-05:00",
        "lat": 39.95,
        "lon": -75.16,
        "category": "Robbery No Firearm",
        "priority": 1,
        "origin": "proactive",
        "op": "upsert",
    },
    {
        "id": "n2",
        "kind": "incident",
        "occurred_at": "2025-03-09T07:30:00Z",
        "lat": 39.96,
        "lon": -75.17,
        "category": "Thefts",
    },
    {
        "id": "n3",
        "occurred_at": 1741505400,
        "lat": "39.97",
        "lon": -75.18,
        "category": "Thefts",
        "op": "cancel",
    },
    {"id": "n4", "occurred_at": "2025-03-09T07:30:00", "category": "Thefts"},
    {"id": "n5", "occurred_at": "not a time", "lat": 1, "lon": 2, "category": "Thefts"},
]


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    blob = b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"\n"
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "events.ndjson.gz"])
def test_native_json_lines(tmp_path: Path, name: str) -> None:
    got = read_all(write_jsonl(tmp_path / name, NATIVE), None, chunk_rows=2)
    instant = utc_s(2025, 3, 9, 6, 30)
    assert list(got.ids) == ["n1", "n2", "n3", "n4", "n5"]
    assert got.occurred_at_s[0] == instant
    assert got.occurred_at_s[1] == instant + 3600
    assert got.occurred_at_s[2] == instant + 3600
    assert got.occurred_at_s[3] == instant + 3600  # naive native times are UTC
    assert np.isnan(got.occurred_at_s[4])
    assert got.lat_deg[2] == 39.97 and np.isnan(got.lat_deg[3])
    assert list(got.kinds) == ["call", "incident", "incident", "incident", "incident"]
    assert list(got.origins) == ["proactive", "reported", "reported", "reported", "reported"]
    assert list(got.ops) == ["upsert", "upsert", "cancel", "upsert", "upsert"]
    assert list(got.priorities) == [1, None, None, None, None]


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(orjson.dumps(NATIVE[0]) + b"\n{oops\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        list(read_columns(path, None))


def test_records_round_trip_native_json(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", NATIVE[:4])
    records = list(iter_records(path, None))
    again = read_all(write_jsonl(tmp_path / "again.jsonl", records), None)
    original = read_all(path, None)
    assert np.array_equal(again.occurred_at_s, original.occurred_at_s)
    assert list(again.ops) == list(original.ops)
    assert records[0]["priority"] == 1 and "priority" not in records[1]
    assert records[3]["lat"] is None


# --------------------------------------------------------------------------- replay records


def test_iter_records_agrees_with_read_columns(
    philadelphia: SourceProfile, sample: Columns
) -> None:
    records = []
    for record in iter_records(SAMPLE, philadelphia):
        records.append(record)
        if len(records) == 1000:
            break
    for i, record in enumerate(records):
        assert set(record) == {
            "id",
            "kind",
            "occurred_at",
            "lat",
            "lon",
            "category",
            "origin",
            "op",
        }
        assert record["id"] == sample.ids[i]
        moment = datetime.fromisoformat(record["occurred_at"])
        assert moment.utcoffset() is not None
        assert moment.timestamp() == sample.occurred_at_s[i]
        assert (record["lat"], record["lon"]) == (sample.lat_deg[i], sample.lon_deg[i])
        assert record["category"] == sample.categories[i]
        assert (record["kind"], record["origin"], record["op"]) == (
            "incident",
            "reported",
            "upsert",
        )
    assert orjson.loads(orjson.dumps(records)) == records  # JSON-able as they are


# --------------------------------------------------------------------------- harm table


def test_harm_table_rows_are_well_formed() -> None:
    with (REPO / "streamer" / "config" / "categories.toml").open("rb") as handle:
        table = tomllib.load(handle)["categories"]
    assert table["default"] == {
        "weight": 1.0,
        "family": "other",
        "include": True,
        "enforcement": False,
    }
    for name, rule in table.items():
        assert set(rule) == {"weight", "family", "include", "enforcement"}, name
        assert isinstance(rule["weight"], float) and rule["weight"] >= 0, name
        assert rule["family"] in FAMILIES, name
    settings = load_settings(environ={})  # the engine accepts the table as it is
    assert settings.category("Homicide - Criminal").weight == 5475.0
    assert settings.category("Narcotic / Drug Law Violations").enforcement is True
    assert settings.category("Homicide - Justifiable").include is False


def test_every_shared_data_category_has_a_rule(shared_data: Callable[..., Path]) -> None:
    incidents = shared_data("philadelphia", "incidents_2016_2025.csv.gz")
    column = pacsv.read_csv(
        incidents,
        convert_options=pacsv.ConvertOptions(include_columns=["text_general_code"]),
    )["text_general_code"]
    names = set(pc.unique(column).to_pylist())
    with (REPO / "streamer" / "config" / "categories.toml").open("rb") as handle:
        table = tomllib.load(handle)["categories"]
    assert len(names) == 32
    assert names <= set(table), sorted(names - set(table))


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["a", "b", "c", "é", ""]),
            st.integers(min_value=-3, max_value=3),
            st.integers(min_value=2**63, max_value=2**64),
            st.none(),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_the_last_row_of_each_id_as_a_dict_would_keep_it(ids: list[object], one_type: bool) -> None:
    if one_type:
        ids = [str(i) for i in ids]
    rows = np.arange(len(ids), dtype=np.int64) * 3 + 5
    by_id = dict(zip(ids, rows.tolist(), strict=True))
    want = sorted(by_id.values())
    column = np.empty(len(ids), dtype=object)
    column[:] = ids
    assert files._last_of_each_id(column, rows).tolist() == want
