"""Bulk aggregation against per-event oracles.

* :func:`dd_group_sums` against exact rational sums (``fractions.Fraction``);
* :func:`encode_cells` against a plain loop over the events that adds
  :func:`decay.term` cell by cell, as the store's apply script does;
* the :class:`Scorer` memos against the functions they memoise, and
  :func:`batch_of` against the contributions it packs.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core import aggregate, decay, scoring
from streamer.core.aggregate import Batch, batch_of, dd_group_sums, decode_cell, encode_cells
from streamer.core.cells import cell_hex, cells_of, cells_of_many
from streamer.core.events import Event
from streamer.core.scoring import Contribution, Scorer, clean_label, hour_of_week
from streamer.core.weights import CategoryWeight, WeightTable

DAY_S = 86400.0
HORIZONS = {"day": DAY_S, "week": 7 * DAY_S, "month": 28 * DAY_S, "year": 365 * DAY_S}
RESOLUTIONS = [8, 9, 10]
NY = ZoneInfo("America/New_York")


# --- dd_group_sums ---------------------------------------------------------


def assert_exact_enough(groups: np.ndarray, values: np.ndarray) -> None:
    """hi + lo within 2**-100 of the sum of magnitudes of the exact sum, per
    group and column; hi normalised; groups distinct and ascending."""
    got_groups, hi, lo = dd_group_sums(groups, values)
    assert got_groups.tolist() == sorted(set(groups.tolist()))
    assert hi.shape == lo.shape == (got_groups.size, values.shape[1])
    for gi, g in enumerate(got_groups.tolist()):
        rows = values[groups == g]
        for c in range(values.shape[1]):
            column = rows[:, c].tolist()
            exact = sum(map(Fraction, column), Fraction(0))
            magnitude = sum((abs(Fraction(v)) for v in column), Fraction(0))
            error = abs(Fraction(hi[gi, c]) + Fraction(lo[gi, c]) - exact)
            assert error <= magnitude / 2**100, (g, c)
            assert hi[gi, c] == hi[gi, c] + lo[gi, c]


def spread_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Both signs, magnitudes from 2**-60 to 2**60."""
    out: np.ndarray = rng.choice([-1.0, 1.0], shape) * np.exp2(rng.uniform(-60, 60, shape))
    return out


def test_dd_cancellation_is_exact() -> None:
    groups = np.array([5, 5, 5, 9, 9, 9, 9], dtype=np.int64)
    values = np.array([[2.0**100], [1.0], [-(2.0**100)], [1e-30], [1.0], [-1.0], [2.0**-80]])
    got, hi, lo = dd_group_sums(groups, values)
    assert got.tolist() == [5, 9]
    assert hi[0, 0] == 1.0 and lo[0, 0] == 0.0
    exact = Fraction(1e-30) + Fraction(2.0**-80)
    assert Fraction(hi[1, 0]) + Fraction(lo[1, 0]) == exact


@pytest.mark.parametrize("n_groups", [1, 7, 300, 2500])
def test_dd_matches_exact_sums(n_groups: int) -> None:
    rng = np.random.default_rng(n_groups)
    groups = rng.integers(-(10**12), 10**12, n_groups)[rng.integers(0, n_groups, 3000)]
    assert_exact_enough(groups, spread_values(rng, (3000, 3)))


def test_dd_groups_bigger_than_a_tree_chunk() -> None:
    """Groups are cut between chunks of rows; the pieces are summed again."""
    rng = np.random.default_rng(11)
    m = 3 * aggregate._TREE_CHUNK + 17
    sizes = [1, 2 * aggregate._TREE_CHUNK + 5, 3, aggregate._TREE_CHUNK - 1]
    sizes.append(m - sum(sizes))
    groups = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(m)]
    values = spread_values(rng, (m, 1))
    values[groups == 1] *= 2.0**40  # a big group cancelling against itself
    values[groups == 1, 0][:-1:2] = -values[groups == 1, 0][1::2]
    assert_exact_enough(groups, values)
    two = spread_values(rng, (aggregate._TREE_CHUNK + 3, 2))
    assert_exact_enough(np.zeros(two.shape[0], dtype=np.int64), two)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),
            st.floats(-(2.0**60), 2.0**60, allow_nan=False, allow_infinity=False),
        ),
        max_size=80,
    ),
    st.randoms(use_true_random=False),
)
def test_dd_any_order(rows: list[tuple[int, float]], shuffler: random.Random) -> None:
    """Whatever the values and their order, hi + lo is the exact sum."""
    shuffler.shuffle(rows)
    groups = np.array([g for g, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=np.float64).reshape(-1, 1)
    assert_exact_enough(groups, values)


def test_dd_edges() -> None:
    got, hi, lo = dd_group_sums(np.zeros(0, dtype=np.int64), np.zeros((0, 4)))
    assert got.shape == (0,) and hi.shape == lo.shape == (0, 4)
    with pytest.raises(ValueError):
        dd_group_sums(np.zeros(3, dtype=np.int64), np.zeros((2, 1)))
    with pytest.raises(ValueError):
        dd_group_sums(np.zeros(3, dtype=np.int64), np.zeros(3))


# --- encode_cells ------------------------------------------------------------


def random_batch(seed: int, size: int = 2000) -> Batch:
    """Events like a city's: repeated addresses, minute times over a year (a
    few shared), 5 families, 20 categories, hours of the week in New York."""
    rng = np.random.default_rng(seed)
    places = np.column_stack(
        (rng.uniform(39.87, 40.14, size // 4 + 1), rng.uniform(-75.28, -74.96, size // 4 + 1))
    )
    where = places[rng.integers(0, places.shape[0], size)]
    t_s = rng.integers(1_735_707_600 // 60, 1_767_133_500 // 60, size) * 60.0
    t_s[rng.random(size) < 0.1] = t_s[0]
    return Batch(
        t_s=t_s,
        weight=rng.choice([0.5, 1.0, 3.0, 30.0, 365.0], size),
        family=rng.integers(0, 5, size),
        category=rng.integers(0, 20, size),
        hour_of_week=aggregate.hours_of_week(t_s, NY),
        cells=cells_of_many(where[:, 0], where[:, 1], RESOLUTIONS),
        families=[f"family {i}" for i in range(5)],
        categories=[f"category {i}" for i in range(20)],
    )


def landmarks_for(batch: Batch) -> dict[str, int]:
    newest = float(batch.t_s.max()) if len(batch) else 0.0
    return {name: decay.landmark_for(newest, h) for name, h in HORIZONS.items()}


def encode(batch: Batch, **overrides: Any) -> tuple[list[str], list[tuple[str, bytes]]]:
    options: dict[str, Any] = {
        "resolutions": RESOLUTIONS,
        "horizons": HORIZONS,
        "landmarks": landmarks_for(batch),
        "profile_horizon": "year",
    }
    options.update(overrides)
    return encode_cells(batch, **options)


def oracle(batch: Batch, profile: str = "year") -> dict[str, dict[str, Any]]:
    """Per cell, event by event, as the store's apply script adds them."""
    landmarks = landmarks_for(batch)
    names = list(HORIZONS)
    cells: dict[str, dict[str, Any]] = {}
    for i in range(len(batch)):
        t, w = float(batch.t_s[i]), float(batch.weight[i])
        tv = [decay.term(w, t, HORIZONS[n], landmarks[n]) for n in names]
        labels = [
            "f:" + batch.families[int(batch.family[i])],
            "c:" + batch.categories[int(batch.category[i])],
        ]
        for j in range(len(RESOLUTIONS)):
            d = cells.setdefault(
                cell_hex(int(batch.cells[i, j])),
                {
                    "n": 0,
                    "last": -math.inf,
                    "terms": [[] for _ in names],
                    "entries": defaultdict(lambda: [0, [0.0] * len(names)]),
                    "hours": defaultdict(float),
                },
            )
            d["n"] += 1
            d["last"] = max(d["last"], t)
            for h, v in enumerate(tv):
                d["terms"][h].append(v)
            for label in labels:
                entry = d["entries"][label]
                entry[0] += 1
                entry[1] = [s + v for s, v in zip(entry[1], tv, strict=True)]
            d["hours"][int(batch.hour_of_week[i])] += tv[names.index(profile)]
    return cells


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_encode_cells_matches_event_by_event(seed: int) -> None:
    batch = random_batch(seed)
    labels, cells = encode(batch)
    expected = oracle(batch)
    assert sorted(c for c, _ in cells) == sorted(expected)  # each cell once
    assert len(labels) == len(set(labels))
    assert {label[:2] for label in labels} == {"f:", "c:"}
    nh = len(HORIZONS)
    for cell, blob in cells:
        got, want = decode_cell(blob, nh), expected[cell]
        assert got["n"] == want["n"]
        assert got["last"] == want["last"]
        for h in range(nh):
            column, hi, lo = want["terms"][h], got["hi"][h], got["lo"][h]
            exact = sum(map(Fraction, column), Fraction(0))
            assert abs(Fraction(hi) + Fraction(lo) - exact) <= exact / 2**100
            # hi is the correctly rounded sum, except that terms 2**-106 below
            # the rest (old events, short half-life) cannot break a tie
            assert hi == math.fsum(column) or abs(lo) == math.ulp(hi) / 2
        entries = {labels[i - 1]: (n, v) for i, n, v in got["entries"]}
        assert len(entries) == len(got["entries"])
        # plain sums in event order, exactly as one-by-one additions make them
        assert entries == {k: (n, v) for k, (n, v) in want["entries"].items()}
        assert dict(got["hours"]) == dict(want["hours"])
        assert len(got["hours"]) == len(want["hours"])


def test_encode_cells_labels_and_profile() -> None:
    batch = random_batch(4, 300)
    batch = batch.take(np.isin(batch.family, [1, 3]) & (batch.category % 3 == 0))
    labels, cells = encode(batch, profile_horizon="week")
    assert labels == ["f:family 1", "f:family 3"] + [
        f"c:category {c}" for c in sorted(set(batch.category.tolist()))
    ]
    expected = oracle(batch, profile="week")
    for cell, blob in cells:
        assert dict(decode_cell(blob, 4)["hours"]) == dict(expected[cell]["hours"])


def test_encode_cells_one_horizon_one_event() -> None:
    batch = random_batch(5, 1).take(np.array([True]))
    landmarks = {"day": decay.landmark_for(float(batch.t_s[0]), DAY_S)}
    labels, cells = encode(
        batch, horizons={"day": DAY_S}, landmarks=landmarks, profile_horizon="day"
    )
    assert len(cells) == 3
    v = decay.term(float(batch.weight[0]), float(batch.t_s[0]), DAY_S, landmarks["day"])
    how = int(batch.hour_of_week[0])
    assert decode_cell(cells[0][1], 1) == {
        "n": 1,
        "last": float(batch.t_s[0]),
        "hi": [v],
        "lo": [0.0],
        "entries": [(1, 1, [v]), (2, 1, [v])],
        "hours": [(how, v)],
    }
    raw = np.frombuffer(cells[0][1], dtype="<f8").tolist()
    assert raw == [1, batch.t_s[0], v, 0.0, 2, 1, 1, 1, v, 2, 1, v, how, v]
    assert labels == [
        f"f:{batch.families[batch.family[0]]}",
        f"c:{batch.categories[batch.category[0]]}",
    ]


def test_encode_cells_edges() -> None:
    batch = random_batch(6, 10)
    assert encode(batch.take(np.zeros(10, dtype=np.bool_))) == ([], [])
    with pytest.raises(ValueError):
        encode(batch, resolutions=[8, 9])
    _, cells = encode(batch)
    with pytest.raises(ValueError):
        decode_cell(cells[0][1][:-8], 4)


# --- Scorer memos and batch_of -------------------------------------------------


def transitions(zone: ZoneInfo, years: range) -> list[float]:
    """UTC instants at which ``zone``'s offset changes, found hour by hour."""
    out: list[float] = []
    t = datetime(years.start, 1, 1, tzinfo=UTC)
    end = datetime(years.stop, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    while t < end:
        t += timedelta(minutes=30)
        offset = t.astimezone(zone).utcoffset()
        if offset != prev:
            out.append(t.timestamp())
            prev = offset
    return out


def awkward_times(zone: ZoneInfo, seed: int) -> list[float]:
    """Random instants, and instants close to every hour edge around the
    zone's transitions (exact edges, microsecond rounding, fractions)."""
    rng = random.Random(seed)
    times = [rng.uniform(1.45e9, 1.80e9) for _ in range(1500)]
    times += [float(rng.randrange(1_450_000_000, 1_800_000_000)) for _ in range(500)]
    nudges = [0.0, 1e-7, -1e-7, 4e-7, -4e-7, 5e-7, -5e-7, 6e-7, -6e-7, 1e-3, -1e-3, 0.5, -0.5]
    for edge in transitions(zone, range(2024, 2027)):
        for hours in range(-2, 3):
            base = edge + 1800.0 * hours
            times += [base + d for d in nudges]
            times += [base + rng.uniform(-1800.0, 1800.0) for _ in range(4)]
    return times


@pytest.mark.parametrize(
    "zone_name", ["America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe"]
)
def test_scorer_hour_of_week_memo_is_exact(zone_name: str) -> None:
    """New York's DST; a half-hour offset; a half-hour DST shift."""
    zone = ZoneInfo(zone_name)
    scorer = Scorer(WeightTable(), RESOLUTIONS, zone)
    times = awkward_times(zone, len(zone_name))
    if zone_name == "America/New_York":
        assert len(transitions(zone, range(2024, 2027))) == 6
    for t in times + times[::-1]:  # memo filled, then read
        assert scorer.hour_of_week(t) == hour_of_week(t, zone), t
    assert scorer._hours  # the memo was used


def test_scorer_cells_memo_is_exact() -> None:
    rng = random.Random(9)
    city = [(rng.uniform(39.87, 40.14), rng.uniform(-75.28, -74.96)) for _ in range(1500)]
    world = [(rng.uniform(-89.9, 89.9), rng.uniform(-180.0, 180.0)) for _ in range(500)]
    edges = [(0.0, 0.0), (-0.0, -0.0), (89.99999, 179.99999), (-89.9, -180.0)]
    points = city + world + edges + city[:500]
    scorer = Scorer(WeightTable(), RESOLUTIONS, NY)
    for lat, lon in points + points[::-1]:
        assert scorer.cells_of(lat, lon) == cells_of(lat, lon, RESOLUTIONS)
    assert len(scorer._cells) == len(set(city + world + edges))


def uncached_contribution(scorer: Scorer, e: Event) -> Contribution | None:
    weighing = scorer.weights.weigh(e.category, e.origin)
    if weighing.weight <= 0.0:
        return None
    return Contribution(
        e.id,
        e.occurred_at_s,
        weighing.weight,
        clean_label(weighing.family),
        clean_label(e.category),
        hour_of_week(e.occurred_at_s, scorer.zone),
        cells_of(e.lat_deg, e.lon_deg, scorer.resolutions),
    )


def random_events(seed: int, size: int) -> list[Event]:
    rng = random.Random(seed)
    places = [(rng.uniform(39.87, 40.14), rng.uniform(-75.28, -74.96)) for _ in range(size // 3)]
    categories = ["Robbery", "Burglary: Residential", "Traffic Stop", "Thefts", "Odd\x1fone"]
    times = awkward_times(NY, seed)
    events = []
    for i in range(size):
        t = rng.choice(times)
        lat, lon = rng.choice(places)
        events.append(
            Event(
                id=str(i),
                kind="incident",
                occurred_at=datetime.fromtimestamp(t, UTC),
                occurred_at_s=t,
                lat_deg=lat,
                lon_deg=lon,
                category=rng.choice(categories),
                origin=rng.choice(["reported", "proactive"]),
            )
        )
    return events


def weight_table() -> WeightTable:
    return WeightTable(
        {
            "Robbery": CategoryWeight(365.0, "robbery"),
            "Traffic Stop": CategoryWeight(1.0, "stops", include=False),
            "Thefts": CategoryWeight(3.0, "theft", enforcement=True),
        },
        proactive_factor=0.5,
        enforcement_factor=0.0,
    )


def test_scorer_contribution_memo_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    events = random_events(12, 3000)
    scorer = Scorer(weight_table(), RESOLUTIONS, NY)
    for e in events + events[::-1]:
        assert scorer.contribution(e) == uncached_contribution(scorer, e)
    # bounded: a memo at its limit starts afresh, and stays right
    monkeypatch.setattr(scoring, "CACHE_MAX_ENTRIES", 50)
    small = Scorer(weight_table(), RESOLUTIONS, NY)
    for e in events[:500]:
        assert small.contribution(e) == uncached_contribution(small, e)
        assert max(len(small._cells), len(small._hours), len(small._labels)) <= 50
    assert small == Scorer(weight_table(), RESOLUTIONS, NY)  # memos are not compared


def test_batch_of_contributions() -> None:
    scorer = Scorer(weight_table(), RESOLUTIONS, NY)
    found = (scorer.contribution(e) for e in random_events(13, 500))
    contributions = [c for c in found if c is not None]
    batch = batch_of(contributions)
    assert len(batch) == len(contributions)
    assert batch.cells.shape == (len(contributions), len(RESOLUTIONS))
    assert batch.cells.dtype == np.uint64
    for i, c in enumerate(contributions):
        assert batch.t_s[i] == c.t_s and batch.weight[i] == c.weight
        assert batch.families[batch.family[i]] == c.family
        assert batch.categories[batch.category[i]] == c.category
        assert batch.hour_of_week[i] == c.hour_of_week
        assert tuple(batch.cells[i].tolist()) == c.cells
    assert len(set(batch.families)) == len(batch.families)
    assert len(set(batch.categories)) == len(batch.categories)
    empty = batch_of([])
    assert len(empty) == 0 and encode(empty) == ([], [])


def test_encode_cells_of_contributions_matches_oracle() -> None:
    scorer = Scorer(weight_table(), RESOLUTIONS, NY)
    found = (scorer.contribution(e) for e in random_events(14, 800))
    batch = batch_of([c for c in found if c is not None])
    labels, cells = encode(batch)
    expected = oracle(batch)
    for cell, blob in cells:
        got = decode_cell(blob, len(HORIZONS))
        assert got["n"] == expected[cell]["n"]
        assert {labels[i - 1]: n for i, n, _ in got["entries"]} == {
            k: n for k, (n, _) in expected[cell]["entries"].items()
        }
