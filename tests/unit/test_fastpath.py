"""The compiled kernel against the Python code it stands in for.

:class:`FastParser` against :func:`parse_record` + :meth:`Scorer.contribution`
(+ :func:`batch_of`) message by message, on the bundled sample and on
hypothesis payloads (valid and every kind of invalid); the C
:func:`fastpath.encode_cells` against :func:`aggregate.encode_cells` blob by
blob.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import app
from streamer.adapters.files import iter_records, load_profile
from streamer.core import aggregate, decay, fastpath
from streamer.core.aggregate import Batch, batch_of, decode_cell
from streamer.core.area import Area
from streamer.core.events import Event, EventRules, parse_record
from streamer.core.fastpath import FastParser, Parsed
from streamer.core.scoring import Contribution, Scorer
from streamer.core.weights import CategoryWeight, WeightTable
from streamer.settings import load_settings
from tests import oracle

NY = "America/New_York"
NOW_S = 1_750_000_000.0  # 2025-06-15
RESOLUTIONS = (8, 9, 10)
HORIZONS = {"day": 86400.0, "week": 7 * 86400.0, "month": 28 * 86400.0, "year": 365 * 86400.0}


def test_the_compiled_module_is_built() -> None:
    # CI builds it (pip install -e .); without it the worker falls back to Python
    assert fastpath.AVAILABLE


# --- the contract -------------------------------------------------------------


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def check_contract(
    parser: FastParser,
    values: Sequence[bytes | None],
    rules: EventRules,
    scorer: Scorer,
    now_s: float = NOW_S,
) -> Parsed:
    """Every message: taken exactly as Python takes it, excluded as Python
    excludes it, or left to Python; the batch as batch_of builds it."""
    got = parser.parse(values, now_s)
    index = got.index.tolist()
    excluded_index = [i for i, _ in got.excluded]
    assert index == sorted(index)
    assert excluded_index == sorted(excluded_index)
    assert got.rest == sorted(got.rest)
    taken = index + excluded_index + got.rest
    assert sorted(taken) == list(range(len(values)))  # disjoint, and all of them
    assert len(got.ids) == len(got.packed) == len(got.batch) == len(index)

    contributions: list[Contribution] = []
    unknown: Counter[str] = Counter()
    for k, i in enumerate(index):
        value = values[i]
        assert value is not None
        event = parse_record(value, rules, now_s=now_s)
        assert isinstance(event, Event), (value, event)
        c = scorer.contribution(event)
        assert c is not None, value
        contributions.append(c)
        if event.category not in scorer.weights.rules:
            unknown[event.category] += 1
        b = got.batch
        assert got.ids[k] == c.id
        assert got.packed[k] == c.packed(), value
        assert bits(float(b.t_s[k])) == bits(c.t_s), value
        assert bits(float(b.weight[k])) == bits(c.weight)
        assert b.families[int(b.family[k])] == c.family
        assert b.categories[int(b.category[k])] == c.category
        assert int(b.hour_of_week[k]) == c.hour_of_week, value
        assert tuple(b.cells[k].tolist()) == c.cells, value
    for i, event_id in got.excluded:
        value = values[i]
        assert value is not None
        event = parse_record(value, rules, now_s=now_s)
        assert isinstance(event, Event)
        assert event.id == event_id
        assert scorer.contribution(event) is None
        if event.category not in scorer.weights.rules:
            unknown[event.category] += 1
    assert got.unknown_categories == dict(unknown)
    expected = batch_of(contributions)
    assert list(got.batch.families) == list(expected.families)
    assert list(got.batch.categories) == list(expected.categories)
    assert got.batch.family.tolist() == expected.family.tolist()
    assert got.batch.category.tolist() == expected.category.tolist()
    assert got.batch.cells.shape == (len(index), len(scorer.resolutions))
    newest = max((c.t_s for c in contributions), default=None)
    assert got.newest_event_s == newest
    return got


# --- real events ----------------------------------------------------------------


@cache
def sample_records() -> list[dict[str, Any]]:
    return list(itertools.islice(iter_records(oracle.SAMPLE, load_profile("philadelphia")), 12000))


@cache
def real_weights() -> WeightTable:
    return app.weight_table(load_settings())


def districts() -> Area:
    return Area.from_files(boundary_path=oracle.DISTRICTS)


def naive_local(record: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """The record with its time as a naive local wall-clock time."""
    when = datetime.fromisoformat(record["occurred_at"]).astimezone(zone)
    return {**record, "occurred_at": when.replace(tzinfo=None).isoformat()}


@pytest.mark.parametrize("zone", ["UTC", NY])
@pytest.mark.parametrize("with_area", [False, True])
@pytest.mark.parametrize("naive", [False, True])
def test_real_events_match_python(zone: str, with_area: bool, naive: bool) -> None:
    rules = EventRules(default_timezone=zone, area=districts() if with_area else None)
    scorer = Scorer(real_weights(), RESOLUTIONS, ZoneInfo(zone))
    records = sample_records()
    if naive:
        records = [naive_local(r, ZoneInfo(zone)) for r in records]
    values = [orjson.dumps(r) for r in records]
    parser = FastParser(rules, scorer)
    for start in range(0, len(values), 4000):  # memos carried from batch to batch
        got = check_contract(parser, values[start : start + 4000], rules, scorer, now_s=2e9)
        # the common real records take the fast path (a transition hour may not)
        assert got.index.size + len(got.excluded) > 0.95 * 4000


def test_real_records_mostly_take_the_fast_path() -> None:
    rules = EventRules(default_timezone=NY)
    scorer = Scorer(real_weights(), RESOLUTIONS, ZoneInfo(NY))
    values = [orjson.dumps(r) for r in sample_records()]
    got = FastParser(rules, scorer).parse(values, 2e9)
    assert got.index.size > 0.95 * len(values)
    assert got.newest_event_s is not None


# --- hypothesis payloads ------------------------------------------------------------


def odd_weights() -> WeightTable:
    return WeightTable(
        {
            "Robbery": CategoryWeight(365.0, "robbery"),
            "Thefts": CategoryWeight(30.0, "property"),
            "Excluded": CategoryWeight(5.0, "other", include=False),
            "Narcotics": CategoryWeight(10.0, "drugs", enforcement=True),
            "Zeroed": CategoryWeight(0.0, "other"),
            " Odd: label\x1f ": CategoryWeight(2.5, "fam:ily\x1f"),
            "Überfall 🚓": CategoryWeight(7.0, "gewalt ü"),
        },
        default=CategoryWeight(1.0, "other"),
        proactive_factor=0.5,
        enforcement_factor=0.25,
    )


CONFIGS = [
    ("UTC", "UTC", None),
    (NY, NY, None),
    (NY, "UTC", None),
    ("UTC", NY, (-75.3, 39.8, -74.9, 40.2)),
]


@cache
def configured(k: int) -> tuple[EventRules, Scorer, FastParser]:
    rules_zone, scorer_zone, bbox = CONFIGS[k]
    area = None if bbox is None else Area.from_files(bbox=bbox)
    rules = EventRules(max_payload_bytes=700, default_timezone=rules_zone, area=area)
    scorer = Scorer(odd_weights(), RESOLUTIONS, ZoneInfo(scorer_zone))
    return rules, scorer, FastParser(rules, scorer)


INT64 = st.integers(-(2**63), 2**63 - 1)
BIG_INT = st.one_of(st.integers(2**63, 2**64 - 1), st.integers(-(2**70), -(2**63) - 1))
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([[], {}, [1], {"a": 1}, "", " "]),
)
TEXT = st.one_of(
    st.text(min_size=1, max_size=8),
    st.text(min_size=120, max_size=140),
    st.sampled_from(["", "x" * 128, "x" * 129, "é" * 128, "🚓" * 129, "A-1"]),
)
CATEGORY = st.one_of(
    st.sampled_from(sorted(odd_weights().rules)),
    st.sampled_from(["Unheard of", "unknown", ":", "\x1f", " ", "a:b"]),
    TEXT,
    INT64,
    ODD_VALUES,
)
EVENT_ID = st.one_of(TEXT, INT64, BIG_INT, ODD_VALUES, st.floats(allow_nan=False))

# Times around clock changes in New York (gaps and overlaps), hour edges and the range ends
EDGE_TIMES = [
    "2024-03-10T02:30:00",
    "2024-03-10T01:59:59.999999",
    "2024-03-10T03:00:00",
    "2024-11-03T01:30:00",
    "2024-11-03T00:59:59.999",
    "2024-11-03T02:00:00",
    "2025-03-09T06:59:59.999500Z",
    "2025-03-09T07:00:00.000400Z",
    "2025-03-09T06:59:59.999000Z",
    "2025-11-02T05:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00.000001Z",
    "1969-12-31T23:59:59",
    "2200-12-31T23:59:59.999999Z",
    "2201-01-01T00:00:00Z",
    "2025-06-15T15:06:40Z",
    "2025-06-15T15:21:40Z",
    "2025-06-15T15:21:40.000001Z",
    "2025-02-29T00:00:00",
    "2024-02-29T00:00:00",
    "2025-01-01T05:00:00+00:60",
    "2025-01-01T05:00:00+24:00",
    "2025-01-01T05:00:00-23:59",
    "2025-01-01T05:00:00-00:00",
    "2025-01-01T05:00:00z",
    "2025-01-01 05:00:00",
    "2025-01-01T05:00",
    "2025-01-01T05:00:00+0100",
    "2025-01-01T05:00:00+01:00:30",
    "2025-01-01T05:00:60",
    "2025-01-01T24:00:00",
    "20250101T050000",
    "2025-01-01T05:00:00.Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "٢٠٢٥-01-01T05:00:00",
]


@st.composite
def iso_times(draw: st.DrawFn) -> str:
    year = draw(st.one_of(st.integers(2023, 2026), st.integers(0, 9999)))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    hour = draw(st.integers(0, 24))
    minute = draw(st.integers(0, 60))
    second = draw(st.integers(0, 60))
    sep = draw(st.sampled_from(["T", "T", "T", " ", "t"]))
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
    digits = draw(st.sampled_from([0, 0, 3, 6, 1, 2, 4, 5, 7, 8, 9]))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    zone = draw(
        st.one_of(
            st.sampled_from(["", "", "Z", "+00:00", "-05:00", "+05:30", "-04:00", "+14:00"]),
            st.builds(
                "{}{:02d}:{:02d}".format,
                st.sampled_from("+-"),
                st.integers(0, 24),
                st.integers(0, 60),
            ),
        )
    )
    return text + zone


@st.composite
def plausible_times(draw: st.DrawFn) -> str | float | int:
    """Mostly valid times before NOW_S, in the forms real feeds use."""
    form = draw(st.integers(0, 9))
    if form == 0:
        return draw(st.floats(1.5e9, NOW_S))
    if form == 1:
        return draw(st.integers(1_500_000_000, int(NOW_S)))
    text = (
        f"{draw(st.integers(2016, 2024)):04d}-{draw(st.integers(1, 12)):02d}-"
        f"{draw(st.integers(1, 31 if form > 6 else 28)):02d}T{draw(st.integers(0, 23)):02d}:"
        f"{draw(st.integers(0, 59)):02d}:{draw(st.integers(0, 59)):02d}"
    )
    digits = draw(st.sampled_from([0, 0, 3, 6, 6, 1, 9]))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    return text + draw(st.sampled_from(["", "", "Z", "+00:00", "-05:00", "+05:30", "-00:00"]))


OCCURRED_AT = st.one_of(
    iso_times(),
    st.sampled_from(EDGE_TIMES),
    plausible_times(),
    st.floats(min_value=-10.0, max_value=8e9),
    st.floats(),
    st.integers(-10, 8_000_000_000),
    st.sampled_from([0, 0.0, -0.0, 7289654399, 7289654400, 1750000900, 1750000901]),
    BIG_INT,
    ODD_VALUES,
)
COORDINATE = st.one_of(
    st.floats(min_value=39.8, max_value=40.2),
    st.floats(min_value=-75.3, max_value=-74.9),
    st.floats(min_value=-200.0, max_value=200.0),
    st.floats(),
    st.integers(-200, 200),
    st.sampled_from([0, 0.0, -0.0, 1e-10, -1e-10, 90, 90.0, -90.0, 180, -180.0, 180.0000001]),
    BIG_INT,
    ODD_VALUES,
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A mostly plausible record, with any field possibly odd or missing."""
    lat = draw(st.floats(min_value=39.85, max_value=40.15))
    lon = draw(st.floats(min_value=-75.25, max_value=-74.95))
    record: dict[str, Any] = {
        "id": draw(st.one_of(st.text(min_size=1, max_size=12), st.integers(0, 10**12))),
        "occurred_at": draw(
            st.one_of(*[plausible_times()] * 6, iso_times(), st.sampled_from(EDGE_TIMES))
        ),
        "lat": lat,
        "lon": lon,
        "category": draw(st.sampled_from([*sorted(odd_weights().rules), "Unheard of"])),
    }
    optional = {
        "kind": st.sampled_from(["incident", "call", "call", None, "Incident", "other", 1]),
        "origin": st.sampled_from(["reported", "proactive", "proactive", None, "Proactive", True]),
        "op": st.sampled_from(["upsert", "upsert", "upsert", "cancel", None, "delete", 0]),
        "priority": st.one_of(
            st.none(), INT64, BIG_INT, st.booleans(), st.sampled_from(["1", 1.5])
        ),
        "extra": st.just("ignored"),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            record[name] = draw(strategy)
    odd = {
        "id": EVENT_ID,
        "occurred_at": OCCURRED_AT,
        "lat": COORDINATE,
        "lon": COORDINATE,
        "category": CATEGORY,
    }
    for name in draw(
        st.sets(st.sampled_from(sorted(odd)), max_size=draw(st.sampled_from([0, 0, 1, 2])))
    ):
        if draw(st.booleans()):
            del record[name]
        else:
            record[name] = draw(odd[name])
    return record


def dump(record: dict[str, Any]) -> bytes:
    # orjson writes NaN and infinities as null; big ints beyond 64 bits need json
    try:
        return orjson.dumps(record)
    except TypeError:
        import json

        return json.dumps(record).encode()


RAW = st.one_of(
    *[payloads().map(dump)] * 6,
    st.sampled_from(
        [
            None,
            b"",
            b"[]",
            b"null",
            b'"text"',
            b"7",
            b"{",
            b'{"id": 1, "lat": NaN}',
            b'{"id": 1, "occurred_at": 1e400}',
            b'{"id": 1, "lat": 1e999, "lon": 1}',
            b"\xff\xfe",
            b'{"op": "cancel", "id": "7"}',
            b'{"id":"a","occurred_at":"2025-01-01T05:00:00Z","lat":40.0,"lon":-75.1,'
            b'"category":"Robbery","padding":"' + b"x" * 700 + b'"}',
            b'{"id":"a","occurred_at":"2025-01-01T05:00:00Z","lat":40.0,"lon":-75.1,'
            b'"category":"Robbery","id":"b"}',
        ]
    ),
    st.binary(max_size=40),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(CONFIGS) - 1), st.lists(RAW, min_size=1, max_size=25))
def test_hypothesis_payloads_match_python(config: int, values: list[bytes | None]) -> None:
    rules, scorer, parser = configured(config)
    check_contract(parser, values, rules, scorer)


@settings(max_examples=150, deadline=None)
@given(st.lists(payloads().map(dump), min_size=1, max_size=40))
def test_a_fresh_parser_agrees_too(values: list[bytes]) -> None:
    rules = EventRules(default_timezone=NY)
    scorer = Scorer(odd_weights(), (7, 9), ZoneInfo(NY))
    check_contract(FastParser(rules, scorer), values, rules, scorer)


def test_valid_variants_take_the_fast_path() -> None:
    rules, scorer, parser = configured(1)
    base = {"id": "A-1", "lat": 39.95, "lon": -75.16, "category": "Robbery"}
    times: list[object] = [
        "2025-01-01T05:00:00Z",
        "2025-01-01T05:00:00.123Z",
        "2025-01-01T05:00:00.123456+05:30",
        "2025-01-01T05:00:00-04:00",
        "2025-05-01T05:00:00",
        "2025-05-01T05:00:00.5",  # one digit: Python decides
        1735707600,
        1735707600.25,
    ]
    values = [orjson.dumps({**base, "occurred_at": t}) for t in times]
    values.append(orjson.dumps({**base, "id": 42, "occurred_at": 1735707600, "lat": 40}))
    values.append(orjson.dumps({**base, "occurred_at": 1735707600, "category": "Excluded"}))
    values.append(orjson.dumps({**base, "occurred_at": 1735707600, "origin": "proactive"}))
    got = check_contract(parser, values, rules, scorer)
    assert got.index.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 10]
    assert got.excluded == [(9, "A-1")]
    assert got.rest == [5]
    assert got.ids[-2] == "42"


def test_local_times_in_clock_change_hours() -> None:
    # New York changes at 02:00 local: a skipped (02:30) or repeated (01:30)
    # wall-clock time has one offset through its hour (fold 0), so C takes it
    rules, scorer, parser = configured(1)
    base = {"id": "A-1", "lat": 39.95, "lon": -75.16, "category": "Robbery"}
    times = ["2024-03-10T02:30:00", "2024-11-03T01:30:00", "2024-11-03T03:30:00"]
    values = [orjson.dumps({**base, "occurred_at": t}) for t in times]
    assert check_contract(parser, values, rules, scorer).index.tolist() == [0, 1, 2]
    # Lord Howe Island moves by 30 minutes at 02:00: that hour is left to Python
    zone = "Australia/Lord_Howe"
    rules = EventRules(default_timezone=zone)
    scorer = Scorer(odd_weights(), RESOLUTIONS, ZoneInfo(zone))
    times = ["2024-10-06T02:15:00", "2024-10-06T02:45:00", "2024-10-06T03:15:00"]
    values = [orjson.dumps({**base, "occurred_at": t}) for t in times]
    got = check_contract(FastParser(rules, scorer), values, rules, scorer)
    assert got.rest == [0, 1]
    assert got.index.tolist() == [2]


def test_without_the_compiled_module_everything_is_left_to_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fastpath, "AVAILABLE", False)
    rules, scorer, _ = configured(0)
    got = FastParser(rules, scorer).parse([b"{}", None], NOW_S)
    assert got.rest == [0, 1]
    assert got.batch.cells.shape == (0, len(RESOLUTIONS))


# --- encode_cells -------------------------------------------------------------


def assert_same_cells(batch: Batch, resolutions: Sequence[int], profile: str = "year") -> None:
    names = list(HORIZONS)
    landmarks = {n: decay.landmark_for(float(batch.t_s.max()), h) - 3 for n, h in HORIZONS.items()}
    kwargs: dict[str, Any] = {
        "resolutions": resolutions,
        "horizons": HORIZONS,
        "landmarks": landmarks,
        "profile_horizon": profile,
    }
    want_labels, want = aggregate.encode_cells(batch, **kwargs)
    got_labels, got = fastpath.encode_cells(batch, **kwargs)
    assert got_labels == want_labels
    assert [c for c, _ in got] == [c for c, _ in want]
    for (cell, got_blob), (_, want_blob) in zip(got, want, strict=True):
        g, w = decode_cell(got_blob, len(names)), decode_cell(want_blob, len(names))
        assert len(got_blob) == len(want_blob)
        assert g["n"] == w["n"], cell
        assert bits(g["last"]) == bits(w["last"])
        assert g["entries"] == w["entries"], cell
        assert g["hours"] == w["hours"], cell
        assert g["hi"] == w["hi"], cell
        for lo_got, lo_want, hi in zip(g["lo"], w["lo"], w["hi"], strict=True):
            assert abs(lo_got - lo_want) <= 2.0**-98 * abs(hi), cell
        if w["n"] == 1:
            assert got_blob == want_blob


def test_encode_cells_matches_python_on_real_batches() -> None:
    rules = EventRules(default_timezone=NY)
    scorer = Scorer(real_weights(), RESOLUTIONS, ZoneInfo(NY))
    values = [orjson.dumps(r) for r in sample_records()]
    parser = FastParser(rules, scorer)
    for start in range(0, len(values), 6000):
        batch = parser.parse(values[start : start + 6000], 2e9).batch
        assert_same_cells(batch, RESOLUTIONS)
        assert_same_cells(batch.take(np.arange(len(batch)) % 7 == 0), RESOLUTIONS, "day")


@st.composite
def batches(draw: st.DrawFn) -> tuple[Batch, list[int]]:
    m = draw(st.integers(1, 80))
    width = draw(st.integers(1, 3))
    pool = draw(st.lists(st.integers(1, 2**64 - 1), min_size=1, max_size=6, unique=True))
    rows = st.lists(st.integers(0, len(pool) - 1), min_size=m * width, max_size=m * width)
    cells = np.array([pool[k] for k in draw(rows)], dtype=np.uint64).reshape(m, width)
    n_families = draw(st.integers(1, 4))
    n_categories = draw(st.integers(1, 6))
    weight = st.one_of(st.sampled_from([1.0, 0.5, 365.0]), st.floats(1e-3, 1e4))
    t = st.one_of(st.floats(1.6e9, 1.8e9), st.sampled_from([1.7e9, 1.7e9 + 0.5, 1.75e9]))
    batch = Batch(
        t_s=np.array(draw(st.lists(t, min_size=m, max_size=m))),
        weight=np.array(draw(st.lists(weight, min_size=m, max_size=m))),
        family=np.array(draw(st.lists(st.integers(0, n_families - 1), min_size=m, max_size=m))),
        category=np.array(draw(st.lists(st.integers(0, n_categories - 1), min_size=m, max_size=m))),
        hour_of_week=np.array(draw(st.lists(st.integers(0, 167), min_size=m, max_size=m))),
        cells=cells,
        families=[f"fam{k}" for k in range(n_families)],
        categories=[f"cat é{k}" for k in range(n_categories)],
    )
    return batch, list(range(7, 7 + width))


@settings(max_examples=300, deadline=None)
@given(batches(), st.sampled_from(list(HORIZONS)))
def test_encode_cells_matches_python_on_random_batches(
    drawn: tuple[Batch, list[int]], profile: str
) -> None:
    batch, resolutions = drawn
    assert_same_cells(batch, resolutions, profile)


def test_encode_cells_big_cells_and_shapes() -> None:
    rng = np.random.default_rng(7)
    m = 20000
    batch = Batch(
        t_s=rng.uniform(1.7e9, 1.75e9, m),
        weight=rng.choice([1.0, 30.0, 365.0, 1825.0], m) * rng.uniform(0.5, 1.5, m),
        family=rng.integers(0, 5, m),
        category=rng.integers(0, 12, m),
        hour_of_week=rng.integers(0, 168, m),
        cells=rng.integers(1, 40, (m, 2)).astype(np.uint64) << np.uint64(40),
        families=[f"f{k}" for k in range(5)],
        categories=[f"c{k}" for k in range(12)],
    )
    assert_same_cells(batch, [8, 9])
    empty = batch.take(np.zeros(m, dtype=np.bool_))
    kwargs: dict[str, Any] = {"horizons": HORIZONS, "landmarks": dict.fromkeys(HORIZONS, 0)}
    assert fastpath.encode_cells(empty, resolutions=[8, 9], profile_horizon="day", **kwargs) == (
        [],
        [],
    )
    with pytest.raises(ValueError, match="do not match"):
        fastpath.encode_cells(batch, resolutions=[8], profile_horizon="day", **kwargs)
