"""Decoding and validating events: parse_record (one) and validate_columns (many)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamer.core.area import Area
from streamer.core.events import (
    KINDS,
    MAX_TIME_S,
    ORIGINS,
    REASONS,
    Cancel,
    Event,
    EventRules,
    InvalidEvent,
    parse_record,
    validate_columns,
)
from tests import oracle

DISTRICTS = oracle.DISTRICTS

NOW_S = 1_750_000_000.0  # 2025-06-15T15:06:40Z
RULES = EventRules()
CITY_HALL = (39.9524, -75.1636)
CAMDEN = (39.9259, -75.1196)
GOOD: dict[str, object] = {
    "id": "201635000002",
    "kind": "incident",
    "occurred_at": "2025-06-15T10:00:00Z",
    "lat": CITY_HALL[0],
    "lon": CITY_HALL[1],
    "category": "Robbery Firearm",
    "priority": 2,
    "origin": "reported",
}


@functools.cache
def philadelphia() -> Area:
    return Area.from_files(boundary_path=DISTRICTS)


def parse(payload: object, rules: EventRules = RULES, now_s: float = NOW_S) -> object:
    return parse_record(payload, rules, now_s=now_s)  # type: ignore[arg-type]


def with_(**changes: object) -> bytes:
    """GOOD with some fields changed (a value of ... removes the field)."""
    doc = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    return json.dumps(doc).encode()


def reason_of(payload: object, rules: EventRules = RULES, now_s: float = NOW_S) -> str | None:
    """The reason code parse_record gives, or None when it accepts an upsert."""
    try:
        record = parse(payload, rules, now_s)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return exc.reason
    assert isinstance(record, Event)
    return None


# -- the happy path ----------------------------------------------------------------------


def test_a_full_event_decodes_to_every_field() -> None:
    event = parse(orjson.dumps(GOOD))
    assert event == Event(
        id="201635000002",
        kind="incident",
        occurred_at=datetime(2025, 6, 15, 10, tzinfo=UTC),
        occurred_at_s=datetime(2025, 6, 15, 10, tzinfo=UTC).timestamp(),
        lat_deg=CITY_HALL[0],
        lon_deg=CITY_HALL[1],
        category="Robbery Firearm",
        origin="reported",
        priority=2,
    )


def test_defaults_and_integer_ids() -> None:
    event = parse(with_(id=12345, kind=..., origin=..., priority=..., op=...))
    assert isinstance(event, Event)
    assert (event.id, event.kind, event.origin, event.priority) == (
        "12345",
        "incident",
        "reported",
        None,
    )


def test_null_counts_as_absent_for_optional_fields() -> None:
    event = parse(with_(kind=None, origin=None, priority=None, op=None))
    assert isinstance(event, Event)
    assert (event.kind, event.origin, event.priority) == ("incident", "reported", None)


def test_other_kinds_and_origins() -> None:
    event = parse(with_(kind="call", origin="proactive", op="upsert", priority=-3))
    assert isinstance(event, Event)
    assert (event.kind, event.origin, event.priority) == ("call", "proactive", -3)


@pytest.mark.parametrize(
    "payload",
    [
        orjson.dumps(GOOD),
        orjson.dumps(GOOD).decode(),
        bytearray(orjson.dumps(GOOD)),
        memoryview(orjson.dumps(GOOD)),
        dict(GOOD),
    ],
    ids=["bytes", "str", "bytearray", "memoryview", "dict"],
)
def test_every_input_form_gives_the_same_event(payload: object) -> None:
    assert parse(payload) == parse(orjson.dumps(GOOD))


def test_a_non_dict_mapping_is_accepted() -> None:
    class Row(Mapping[str, object]):
        def __getitem__(self, key: str) -> object:
            return GOOD[key]

        def __iter__(self) -> Any:
            return iter(GOOD)

        def __len__(self) -> int:
            return len(GOOD)

    assert parse(Row()) == parse(dict(GOOD))


def test_subclasses_of_the_input_types_are_read_like_the_base_types() -> None:
    class Payload(bytes):
        pass

    class Text(str):
        pass

    class Doc(dict[str, object]):
        pass

    expected = parse(orjson.dumps(GOOD))
    assert parse(Payload(orjson.dumps(GOOD))) == expected
    assert parse(Text(orjson.dumps(GOOD).decode())) == expected
    assert parse(Doc(GOOD)) == expected
    event = parse({**GOOD, "id": Text("t-1"), "category": Text("Thefts"), "lat": FloatSub(39.95)})
    assert isinstance(event, Event)
    assert type(event.id) is str and type(event.category) is str and type(event.lat_deg) is float


class FloatSub(float):
    pass


def test_a_mapping_that_cannot_be_read_is_bad_json() -> None:
    class Broken(Mapping[str, object]):
        def __getitem__(self, key: str) -> object:
            raise RuntimeError("backend gone")

        def __iter__(self) -> Any:
            raise RuntimeError("backend gone")

        def __len__(self) -> int:
            return 1

    with pytest.raises(InvalidEvent) as caught:
        parse(Broken())
    assert caught.value.reason == "bad_json"


def test_a_cancel_needs_only_an_id_and_ignores_the_rest() -> None:
    assert parse(b'{"op": "cancel", "id": 99}') == Cancel(id="99", kind="incident")
    assert parse(b'{"op": "cancel", "id": "c-1", "kind": "call"}') == Cancel(id="c-1", kind="call")
    rubbish = b'{"op": "cancel", "id": "x", "lat": "north", "occurred_at": [], "origin": 5}'
    assert parse(rubbish) == Cancel(id="x")


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2025-06-15T10:00:00Z", datetime(2025, 6, 15, 10, tzinfo=UTC)),
        ("2025-06-15T10:00:00+00:00", datetime(2025, 6, 15, 10, tzinfo=UTC)),
        ("2025-06-15T12:30:00+02:30", datetime(2025, 6, 15, 10, tzinfo=UTC)),
        ("2025-06-15T10:00:00.250000", datetime(2025, 6, 15, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2025-06-15 10:00:00", datetime(2025, 6, 15, 10, tzinfo=UTC)),
        ("2025-06-15", datetime(2025, 6, 15, tzinfo=UTC)),
        (1_749_981_600, datetime(2025, 6, 15, 10, tzinfo=UTC)),
        (1_749_981_600.5, datetime(2025, 6, 15, 10, 0, 0, 500000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_time_forms(occurred_at: object, expected: datetime) -> None:
    event = parse(with_(occurred_at=occurred_at))
    assert isinstance(event, Event)
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at_s == expected.timestamp()


# -- every reason code -----------------------------------------------------------------------

AREA_RULES = EventRules(area=Area(bbox=(-75.3, 39.85, -74.95, 40.15)))
CASES: list[tuple[str, object, EventRules]] = [
    ("too_large", b" " * 16385, RULES),
    ("too_large", with_(category="x" * 100), EventRules(max_payload_bytes=100)),
    # 6000 three-byte characters: under the limit in characters, over it in bytes.
    ("too_large", json.dumps({**GOOD, "category": "€" * 6000}, ensure_ascii=False), RULES),
    ("bad_json", b"", RULES),
    ("bad_json", b"{", RULES),
    ("bad_json", b'{"id": "\xff"}', RULES),
    ("bad_json", "\ud800", RULES),
    ("bad_json", b"[1, 2]", RULES),
    ("bad_json", b'"just a string"', RULES),
    ("bad_json", b"null", RULES),
    ("bad_json", b"[" * 5000 + b"]" * 5000, RULES),
    ("bad_json", b'{"lat": NaN}', RULES),
    ("bad_json", 12345, RULES),
    ("bad_json", None, RULES),
    ("missing_field", with_(id=...), RULES),
    ("missing_field", with_(id=None), RULES),
    ("missing_field", with_(occurred_at=...), RULES),
    ("missing_field", with_(lat=...), RULES),
    ("missing_field", with_(lon=None), RULES),
    ("missing_field", with_(category=...), RULES),
    ("missing_field", with_(category=""), RULES),
    ("missing_field", b'{"op": "cancel"}', RULES),
    ("bad_type", with_(lat="39.9524"), RULES),
    ("bad_type", with_(lon=True), RULES),
    ("bad_type", with_(lat=[39.9]), RULES),
    ("bad_type", with_(category=5), RULES),
    ("bad_type", with_(category="x" * 129), RULES),
    ("bad_type", with_(priority="high"), RULES),
    ("bad_type", with_(priority=1.5), RULES),
    ("bad_type", with_(priority=True), RULES),
    ("bad_type", with_(priority=2**63), RULES),
    ("bad_type", with_(occurred_at=True), RULES),
    ("bad_type", with_(occurred_at={"t": 1}), RULES),
    ("bad_id", with_(id=""), RULES),
    ("bad_id", with_(id="x" * 129), RULES),
    ("bad_id", with_(id=1.5), RULES),
    ("bad_id", with_(id=True), RULES),
    ("bad_id", with_(id=["a"]), RULES),
    ("bad_id", {**GOOD, "id": 10**200}, RULES),
    ("bad_kind", with_(kind="crime"), RULES),
    ("bad_kind", with_(kind="Incident"), RULES),
    ("bad_kind", with_(kind=1), RULES),
    ("bad_kind", b'{"op": "cancel", "id": "1", "kind": "x"}', RULES),
    ("bad_origin", with_(origin="officer"), RULES),
    ("bad_origin", with_(origin=False), RULES),
    ("unknown_op", with_(op="delete"), RULES),
    ("unknown_op", with_(op=1), RULES),
    ("not_finite", {**GOOD, "lat": math.nan}, RULES),
    ("not_finite", {**GOOD, "lon": -math.inf}, RULES),
    ("lat_out_of_range", with_(lat=90.0001), RULES),
    ("lat_out_of_range", with_(lat=-91), RULES),
    ("lat_out_of_range", {**GOOD, "lat": 10**400}, RULES),
    ("lon_out_of_range", with_(lon=180.5), RULES),
    ("lon_out_of_range", with_(lon=-181), RULES),
    ("null_island", with_(lat=0, lon=0), RULES),
    ("null_island", with_(lat=0.0, lon=-0.0), RULES),
    ("null_island", with_(lat=5e-10, lon=-5e-10), RULES),
    ("outside_area", with_(lat=0.0, lon=10.0), AREA_RULES),
    ("outside_area", with_(lat=40.5, lon=-75.0), AREA_RULES),
    ("bad_time", with_(occurred_at="yesterday"), RULES),
    ("bad_time", with_(occurred_at="2025-13-01T00:00:00"), RULES),
    ("bad_time", with_(occurred_at=""), RULES),
    ("bad_time", with_(occurred_at="1969-12-31T23:59:59Z"), RULES),
    ("bad_time", with_(occurred_at="1970-01-01T00:30:00+01:00"), RULES),
    ("bad_time", with_(occurred_at="0001-01-01T00:00:00+05:00"), RULES),
    ("bad_time", with_(occurred_at="2201-01-01T00:00:00Z"), EventRules(max_future_skew_s=1e12)),
    ("bad_time", with_(occurred_at=-1), RULES),
    ("bad_time", with_(occurred_at=10**30), RULES),
    ("bad_time", {**GOOD, "occurred_at": math.nan}, RULES),
    ("bad_time", {**GOOD, "occurred_at": math.inf}, RULES),
    ("future_time", with_(occurred_at=NOW_S + 901), RULES),
    ("future_time", with_(occurred_at="2025-06-15T15:30:00Z"), RULES),
    ("future_time", with_(occurred_at="2025-06-15T15:10:00Z"), EventRules(max_future_skew_s=60)),
]


def test_every_reason_code_has_a_case() -> None:
    assert {reason for reason, _, _ in CASES} == set(REASONS)


@pytest.mark.parametrize(("reason", "payload", "rules"), CASES)
def test_reason_codes(reason: str, payload: object, rules: EventRules) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(payload, rules)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)
    assert caught.value.detail
    assert str(caught.value).startswith(f"{reason}: ")


def test_time_limits_are_inclusive_where_documented() -> None:
    assert reason_of(with_(occurred_at=NOW_S + 900)) is None
    assert reason_of(with_(occurred_at=MAX_TIME_S - 1), EventRules(max_future_skew_s=1e12)) is None
    assert reason_of(with_(lat=90, lon=180)) is None
    assert reason_of(with_(lat=-90.0, lon=-180.0)) is None
    assert reason_of(with_(lat=0.0, lon=1e-9)) is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_(id=...), "id"),
        (with_(lat=...), "lat"),
        (with_(lon="x"), "lon"),
        (with_(category=7), "category"),
        (with_(occurred_at="soon"), "occurred_at"),
        (with_(kind="x"), "kind"),
        (with_(origin="x"), "origin"),
        (with_(op="x"), "op"),
        (with_(priority="x"), "priority"),
    ],
)
def test_details_name_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(payload)
    assert field in caught.value.detail


@pytest.mark.parametrize(
    ("payload", "rules"),
    [
        (with_(lat=91.123456, lon=-75.163612), RULES),
        (with_(lat=39.952412, lon=-181.163612), RULES),
        (with_(lat=39.952412, lon=-75.163612), EventRules(area=Area(bbox=(0.0, 0.0, 1.0, 1.0)))),
        (with_(lat="39.952412", lon=-75.163612), RULES),
        (with_(lat=39.952412, lon="-75.163612"), RULES),
        (with_(lat=[39.952412], lon=-75.163612), RULES),
    ],
)
def test_details_never_echo_exact_coordinates(payload: bytes, rules: EventRules) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(payload, rules)
    message = str(caught.value)
    for exact in ("91.123", "39.952", "75.163", "181.163"):
        assert exact not in message


def test_rules_reject_an_unknown_zone_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="time zone"):
        EventRules(default_timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError):
        EventRules(max_payload_bytes=0)
    with pytest.raises(ValueError):
        EventRules(max_future_skew_s=-1.0)
    assert EventRules(default_timezone="America/New_York").zone == ZoneInfo("America/New_York")


# -- properties: anything in, only InvalidEvent out ------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["incident", "call", "cancel", "upsert", "reported", "2025-01-01T00:00:00"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
record_shaped = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.integers() | st.text(min_size=1, max_size=130),
        "kind": st.sampled_from([*KINDS, "other"]) | json_values,
        "op": st.sampled_from(["upsert", "cancel", "other"]) | json_values,
        "occurred_at": st.floats() | st.integers() | st.text(max_size=30) | st.datetimes().map(str),
        "lat": st.floats() | st.integers() | json_values,
        "lon": st.floats() | st.integers() | json_values,
        "category": st.text(max_size=130) | json_values,
        "priority": st.integers() | json_values,
        "origin": st.sampled_from([*ORIGINS, "other"]) | json_values,
    },
)


def _only_invalid_event(payload: object, rules: EventRules = RULES) -> None:
    try:
        record = parse(payload, rules)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        assert isinstance(exc.detail, str) and exc.detail
    else:
        assert isinstance(record, Event | Cancel)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_record_or_invalid_event(payload: bytes) -> None:
    _only_invalid_event(payload)


@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_record_or_invalid_event(payload: str) -> None:
    _only_invalid_event(payload)


@given(json_values | record_shaped)
def test_arbitrary_json_values_give_a_record_or_invalid_event(value: object) -> None:
    # As a decoded value (NaN, huge integers and all), and as JSON text.
    if isinstance(value, dict):
        _only_invalid_event(value)
        _only_invalid_event(value, EventRules(area=philadelphia(), default_timezone="Asia/Kolkata"))
    _only_invalid_event(json.dumps(value).encode())


# -- properties: valid events round-trip -----------------------------------------------------

texts = st.text(min_size=1, max_size=128)
events = st.builds(
    Event,
    id=texts,
    kind=st.sampled_from(KINDS),
    occurred_at=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
    ),
    occurred_at_s=st.just(0.0),  # filled in from occurred_at below
    lat_deg=st.floats(-90.0, 90.0),
    lon_deg=st.floats(-180.0, 180.0),
    category=texts,
    origin=st.sampled_from(ORIGINS),
    priority=st.none() | st.integers(-(2**63), 2**63 - 1),
)
LATE_RULES = EventRules(max_future_skew_s=MAX_TIME_S)


@given(events, st.integers(-14 * 60, 14 * 60))
def test_valid_events_round_trip(event: Event, offset_min: int) -> None:
    assume(abs(event.lat_deg) >= 1e-9 or abs(event.lon_deg) >= 1e-9)
    occurred_at_s = event.occurred_at.timestamp()
    # Any offset names the same instant.
    stamp = event.occurred_at.astimezone(timezone(timedelta(minutes=offset_min))).isoformat()
    doc = {
        "id": event.id,
        "kind": event.kind,
        "occurred_at": stamp,
        "lat": event.lat_deg,
        "lon": event.lon_deg,
        "category": event.category,
        "origin": event.origin,
        "priority": event.priority,
    }
    parsed = parse(orjson.dumps(doc), LATE_RULES, now_s=0.0)
    expected = Event(
        event.id,
        event.kind,
        event.occurred_at,
        occurred_at_s,
        event.lat_deg,
        event.lon_deg,
        event.category,
        event.origin,
        event.priority,
    )
    assert parsed == expected
    assert parse({**doc, "occurred_at": occurred_at_s}, LATE_RULES, now_s=0.0) == expected
    assert parse(orjson.dumps({"op": "cancel", "id": event.id, "kind": event.kind})) == Cancel(
        event.id, event.kind
    )


# -- properties: naive times in the default zone ---------------------------------------------

NEW_YORK = ZoneInfo("America/New_York")
NY_RULES = EventRules(default_timezone="America/New_York")


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        ("2024-01-15T12:00:00", "2024-01-15T17:00:00"),  # EST, UTC-5
        ("2024-07-01T12:00:00", "2024-07-01T16:00:00"),  # EDT, UTC-4
        ("2024-03-10T01:59:59", "2024-03-10T06:59:59"),  # last second of EST
        ("2024-03-10T03:00:00", "2024-03-10T07:00:00"),  # first second of EDT
        ("2024-03-10T02:30:00", "2024-03-10T07:30:00"),  # skipped: keeps the EST offset
        ("2024-11-03T00:59:59", "2024-11-03T04:59:59"),
        ("2024-11-03T01:30:00", "2024-11-03T05:30:00"),  # ambiguous: the first (EDT) one
        ("2024-11-03T02:00:00", "2024-11-03T07:00:00"),
        ("2024-11-03T12:00:00-05:00", "2024-11-03T17:00:00"),  # an offset wins over the zone
    ],
)
def test_new_york_wall_times_around_dst(local: str, utc: str) -> None:
    event = parse(with_(occurred_at=local), NY_RULES)
    assert isinstance(event, Event)
    expected = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert event.occurred_at == expected
    assert event.occurred_at_s == expected.timestamp()


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)))
def test_naive_times_take_the_default_zone(local: datetime) -> None:
    event = parse(with_(occurred_at=local.isoformat()), NY_RULES, now_s=MAX_TIME_S)
    assert isinstance(event, Event)
    # Text carries no fold, so an ambiguous time is the first one (fold=0). Converted
    # first: aware datetimes in a DST gap or fold never equal another zone's.
    expected = local.replace(fold=0, tzinfo=NEW_YORK).astimezone(UTC)
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at_s == expected.timestamp()
    assert event.occurred_at.replace(tzinfo=None) - local in (
        timedelta(hours=4),
        timedelta(hours=5),
    )


# -- many equals repeated one -----------------------------------------------------------------


def _rows_agree(
    ids: np.ndarray[Any, Any],
    t: np.ndarray[Any, Any],
    lat: np.ndarray[Any, Any],
    lon: np.ndarray[Any, Any],
    categories: np.ndarray[Any, Any],
    rules: EventRules,
) -> None:
    keep, reasons = validate_columns(ids, t, lat, lon, categories, rules, now_s=NOW_S)
    assert keep.dtype == np.bool_ and keep.shape == reasons.shape == (len(t),)
    one_by_one = [
        reason_of(
            {
                "id": ids[i].item() if isinstance(ids[i], np.generic) else ids[i],
                "occurred_at": float(t[i]),
                "lat": float(lat[i]),
                "lon": float(lon[i]),
                "category": categories[i].item()
                if isinstance(categories[i], np.generic)
                else categories[i],
            },
            rules,
        )
        for i in range(len(t))
    ]
    assert reasons.tolist() == one_by_one
    assert keep.tolist() == [r is None for r in one_by_one]


EDGE_TIMES = [NOW_S - 3600, NOW_S + 900, NOW_S + 900.001, math.nan, math.inf, -math.inf, -1.0, 0.0]
EDGE_TIMES += [MAX_TIME_S, MAX_TIME_S - 1, 1e300]
EDGE_LATS = [
    39.9524,
    39.9259,
    0.0,
    -0.0,
    5e-10,
    1e-9,
    90.0,
    -90.0,
    90.0001,
    math.nan,
    math.inf,
    1e300,
]
EDGE_LONS = [-75.1636, -75.1196, 0.0, 5e-10, -1e-9, 180.0, -180.0, 180.0001, -math.inf, math.nan]
EDGE_IDS: list[object] = ["a", "x" * 128, "x" * 129, "", None, 7, "201635000002"]
EDGE_CATEGORIES: list[object] = ["Thefts", "", None, "c" * 128, "c" * 129, 3, 2.5]


def _corpus(seed: int, n: int) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(seed)

    def mix(valid: np.ndarray[Any, Any], edges: Sequence[object]) -> np.ndarray[Any, Any]:
        out = valid.astype(object) if edges and not isinstance(edges[0], float) else valid.copy()
        pick = rng.random(n) < 0.3
        out[pick] = np.array(edges, dtype=out.dtype)[rng.integers(0, len(edges), int(pick.sum()))]
        return out

    t = mix(rng.uniform(NOW_S - 5 * 365 * 86400, NOW_S + 1800, n), EDGE_TIMES)
    lat = mix(rng.uniform(39.85, 40.16, n), EDGE_LATS)
    lon = mix(rng.uniform(-75.30, -74.94, n), EDGE_LONS)
    ids = mix(np.array([f"id-{i}" for i in range(n)], dtype=object), EDGE_IDS)
    categories = mix(np.array(["Thefts", "Vandalism/Criminal Mischief"] * n)[:n], EDGE_CATEGORIES)
    return ids, t, lat, lon, categories


@pytest.mark.parametrize("with_area", [False, True])
def test_validate_columns_agrees_with_parse_record_row_by_row(with_area: bool) -> None:
    ids, t, lat, lon, categories = _corpus(seed=7, n=4000)
    rules = EventRules(area=philadelphia()) if with_area else RULES
    _rows_agree(ids, t, lat, lon, categories, rules)


def test_validate_columns_agrees_for_typed_columns() -> None:
    _, t, lat, lon, _ = _corpus(seed=8, n=600)
    rules = EventRules(area=philadelphia())
    int_ids = np.arange(600, dtype=np.int64) - 300
    str_ids = np.array(["a", "", "b" * 129] * 200)  # fixed-width unicode
    str_categories = np.array(["Thefts", "", "c" * 129] * 200)
    float_ids = np.linspace(0, 1, 600)
    bool_categories = np.zeros(600, dtype=bool)
    object_int_ids = np.arange(600).astype(object)
    huge_int_ids = object_int_ids.copy()
    huge_int_ids[5] = -(10**130)
    for ids in (int_ids, str_ids, float_ids, object_int_ids, huge_int_ids):
        for categories in (str_categories, bool_categories, str_categories.astype(object)):
            _rows_agree(ids, t, lat, lon, categories, rules)


def test_validate_columns_takes_python_lists_value_by_value() -> None:
    # numpy would turn ["a", 1.5] into strings; a list must be checked as given.
    ids = ["a", 1.5, None, 10**200, -5, [1], "", True]
    categories = ["c", "c", "c", "c", "", None, 4, "c"]
    n = len(ids)
    keep, reasons = validate_columns(
        ids, [NOW_S] * n, [CITY_HALL[0]] * n, [CITY_HALL[1]] * n, categories, RULES, now_s=NOW_S
    )
    assert keep.tolist() == [True] + [False] * 7
    assert reasons.tolist() == [
        None,
        "bad_id",
        "missing_field",
        "bad_id",
        "missing_field",
        "bad_id",
        "bad_id",
        "bad_id",
    ]
    _rows_agree(
        np.array(ids, dtype=object),
        np.full(n, NOW_S),
        np.full(n, CITY_HALL[0]),
        np.full(n, CITY_HALL[1]),
        np.array(categories, dtype=object),
        RULES,
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(EDGE_IDS) | st.text(max_size=3) | st.integers(),
            st.sampled_from(EDGE_TIMES) | st.floats(),
            st.sampled_from(EDGE_LATS) | st.floats(),
            st.sampled_from(EDGE_LONS) | st.floats(),
            st.sampled_from(EDGE_CATEGORIES) | st.none() | st.text(max_size=3),
        ),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
)
def test_many_equals_repeated_one(rows: list[tuple[Any, ...]], with_area: bool) -> None:
    ids, t, lat, lon, categories = zip(*rows, strict=True)
    id_col = np.empty(len(ids), dtype=object)
    id_col[:] = ids
    category_col = np.empty(len(categories), dtype=object)
    category_col[:] = categories
    rules = EventRules(area=philadelphia()) if with_area else RULES
    _rows_agree(id_col, np.array(t), np.array(lat), np.array(lon), category_col, rules)


def test_validate_columns_keeps_clean_columns_and_checks_shapes() -> None:
    n = 1000
    keep, reasons = validate_columns(
        np.arange(n),
        np.full(n, NOW_S - 60),
        np.full(n, CITY_HALL[0]),
        np.full(n, CITY_HALL[1]),
        np.array(["Thefts"] * n, dtype=object),
        EventRules(area=philadelphia()),
        now_s=NOW_S,
    )
    assert keep.all() and all(r is None for r in reasons)
    with pytest.raises(ValueError, match="shape"):
        validate_columns([1, 2], [0.0], [1.0], [1.0], ["a"], RULES, now_s=NOW_S)
    keep, reasons = validate_columns([], [], [], [], [], RULES, now_s=NOW_S)
    assert keep.shape == reasons.shape == (0,)
