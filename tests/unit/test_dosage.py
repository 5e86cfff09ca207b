"""Patrol dosage: pings -> visits -> doses, on synthetic tracks whose true dwell is known.

Positions are built in metres around real H3 res-10 cells (the edge two
cells share, from their boundaries), so which cell each ping falls in is
known by construction; each test checks that precondition before relying on it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.area import Area
from streamer.core.cells import (
    cell_boundary,
    cell_from_hex,
    cell_hex,
    cell_of,
    center_hex,
    neighbours_hex,
)
from streamer.core.dosage import (
    LATE_REASON,
    NEVER_VISITED_REASON,
    PING_REASONS,
    DayDose,
    Ping,
    Requirement,
    Visit,
    VisitRules,
    compliance,
    days_since_last_visit,
    debounce,
    distance_m,
    dose_by_day,
    overdue,
    parse_ping,
    resume_at,
    unit_minutes_in,
    visits_by_day,
    visits_of,
)
from streamer.core.events import EventRules, InvalidEvent

RES = 10
RULES = VisitRules(resolution=RES)
T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
NY = ZoneInfo("America/New_York")
R_M = 6371008.8
UNIT = "car-7"

A = cell_hex(cell_of(39.9524, -75.1636, RES))  # a res-10 cell by Philadelphia City Hall
B = sorted(neighbours_hex(A))[0]  # one of its neighbours


def moved(point: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    """``point`` moved by a few metres (local flat approximation, exact enough at 100 m)."""
    lat, lon = point
    return (
        lat + math.degrees(north_m / R_M),
        lon + math.degrees(east_m / (R_M * math.cos(math.radians(lat)))),
    )


def metres(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(north, east) metres from ``a`` to ``b``."""
    north = math.radians(b[0] - a[0]) * R_M
    east = math.radians(b[1] - a[1]) * R_M * math.cos(math.radians(a[0]))
    return north, east


def shared_edge(a: str, b: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """The midpoint of the edge cells ``a`` and ``b`` share, and the unit normal
    (north, east) pointing from ``a`` into ``b``."""
    vb = set(cell_boundary(cell_from_hex(b)))
    p, q = (v for v in cell_boundary(cell_from_hex(a)) if v in vb)
    mid = ((p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0)
    en, ee = metres(p, q)
    length = math.hypot(en, ee)
    normal = (-ee / length, en / length)
    to_b = metres(mid, center_hex(b))
    if normal[0] * to_b[0] + normal[1] * to_b[1] < 0:
        normal = (-normal[0], -normal[1])
    return mid, normal


EDGE_MID, EDGE_NORMAL = shared_edge(A, B)


def across(distance_m_into_b: float) -> tuple[float, float]:
    """A point on the normal through the edge midpoint: negative in A, positive in B."""
    return moved(EDGE_MID, distance_m_into_b * EDGE_NORMAL[0], distance_m_into_b * EDGE_NORMAL[1])


def cell(point: tuple[float, float]) -> str:
    return cell_hex(cell_of(point[0], point[1], RES))


def still(
    start_s: float,
    stop_s: float,
    point: tuple[float, float],
    *,
    step_s: float = 10.0,
    status: str | None = None,
    speed: float | None = None,
    unit: str = UNIT,
) -> list[Ping]:
    """Pings every ``step_s`` from ``start_s`` to ``stop_s`` (both included) at one point."""
    n = round((stop_s - start_s) / step_s)
    return [
        Ping(unit, T0 + start_s + k * step_s, point[0], point[1], status, speed)
        for k in range(n + 1)
    ]


def longest_run(flags: Sequence[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def test_the_constructed_cells_are_adjacent_and_the_edge_is_where_we_think() -> None:
    assert B in neighbours_hex(A)
    assert cell(across(-2.0)) == A
    assert cell(across(2.0)) == B
    assert cell(across(-50.0)) == A
    assert cell(across(50.0)) == B


# -- (a) a 15-minute foot patrol with GPS jitter by a cell edge ----------------------------


def jittered_patrol(seed: int, *, speed: float | None = None) -> list[Ping]:
    """91 pings, one every 10 s for 15 minutes, each within 8 m of a point 5 m
    inside A from its edge with B."""
    rng = random.Random(seed)
    true_point = across(-5.0)
    pings = []
    for k in range(91):
        r = 8.0 * math.sqrt(rng.random())
        theta = 2.0 * math.pi * rng.random()
        lat, lon = moved(true_point, r * math.cos(theta), r * math.sin(theta))
        pings.append(Ping(UNIT, T0 + 10.0 * k, lat, lon, None, speed))
    return pings


@pytest.mark.parametrize("speed", [None, 0.4])
def test_foot_patrol_with_jitter_near_an_edge_is_one_fifteen_minute_visit(
    speed: float | None,
) -> None:
    pings = jittered_patrol(6, speed=speed)
    in_b = [cell((p.lat_deg, p.lon_deg)) == B for p in pings]
    assert {cell((p.lat_deg, p.lon_deg)) for p in pings} == {A, B}
    assert sum(in_b) >= 5  # the jitter really crosses the edge...
    assert (longest_run(in_b) - 1) * 10.0 < RULES.debounce_s  # ...never for a minute

    visits = visits_of(pings, RULES, include_pass_bys=True)

    assert visits == [Visit(UNIT, A, T0, T0 + 900.0, 900.0, 91, "visit")]


def test_without_debounce_the_same_jitter_breaks_the_patrol_up() -> None:
    visits = visits_of(
        jittered_patrol(6), VisitRules(resolution=RES, debounce_s=0.0), include_pass_bys=True
    )
    assert len(visits) > 5
    assert {v.cell for v in visits} == {A, B}
    assert sum(v.seconds for v in visits) == 900.0  # time is attributed, never lost


# -- (b) a drive-through -----------------------------------------------------------------


def drive(speed_field: float | None) -> list[Ping]:
    """Driving east at 12 m/s for a minute from the centre of A: a ping every 5 s."""
    start = center_hex(A)
    return [
        Ping(UNIT, T0 + 5.0 * k, *moved(start, 0.0, 60.0 * k), "patrol", speed_field)
        for k in range(13)
    ]


@pytest.mark.parametrize("speed_field", [None, 12.0])
def test_drive_through_five_cells_is_no_visit(speed_field: float | None) -> None:
    pings = drive(speed_field)
    assert len({cell((p.lat_deg, p.lon_deg)) for p in pings}) >= 5
    assert (
        abs(
            distance_m(pings[0].lat_deg, pings[0].lon_deg, pings[1].lat_deg, pings[1].lon_deg)
            - 60.0
        )
        < 0.01
    )

    assert visits_of(pings, RULES, include_pass_bys=True) == []
    # control: the same track is counted when 12 m/s is allowed
    fast = VisitRules(resolution=RES, max_speed_mps=13.0, debounce_s=0.0, min_visit_s=0.0)
    assert sum(v.seconds for v in visits_of(pings, fast)) == 60.0


def test_the_device_speed_is_trusted_over_the_speed_implied_by_positions() -> None:
    slow_by_device = drive(1.0)
    assert (
        sum(
            v.seconds
            for v in visits_of(
                slow_by_device, VisitRules(resolution=RES, debounce_s=0.0, min_visit_s=0.0)
            )
        )
        == 60.0
    )
    parked_but_fast = still(0, 600, center_hex(A), speed=3.0)
    assert visits_of(parked_but_fast, RULES, include_pass_bys=True) == []
    assert visits_of(still(0, 600, center_hex(A), speed=2.5), RULES) == [
        Visit(UNIT, A, T0, T0 + 600.0, 600.0, 61)
    ]


def test_one_fast_ping_ends_a_visit_and_both_its_intervals_count_for_nothing() -> None:
    pings = still(0, 300, center_hex(A)) + still(310, 600, center_hex(A))
    pings[20] = Ping(UNIT, pings[20].at_s, pings[20].lat_deg, pings[20].lon_deg, None, 9.0)
    assert visits_of(pings, RULES) == [
        Visit(UNIT, A, T0, T0 + 190.0, 190.0, 20),
        Visit(UNIT, A, T0 + 210.0, T0 + 600.0, 390.0, 40),
    ]


# -- (c) a gap ---------------------------------------------------------------------------


def test_a_ten_minute_gap_makes_two_visits_and_is_not_counted() -> None:
    here = center_hex(A)
    pings = still(0, 600, here) + still(1200, 1800, here)
    assert visits_of(pings, RULES) == [
        Visit(UNIT, A, T0, T0 + 600.0, 600.0, 61),
        Visit(UNIT, A, T0 + 1200.0, T0 + 1800.0, 600.0, 61),
    ]


@pytest.mark.parametrize(("gap_s", "expected_s"), [(300.0, [1500.0]), (300.5, [600.0, 600.0])])
def test_a_gap_of_max_gap_s_is_still_counted(gap_s: float, expected_s: list[float]) -> None:
    here = center_hex(A)
    pings = still(0, 600, here) + [
        Ping(UNIT, p.at_s + gap_s - 10.0, p.lat_deg, p.lon_deg) for p in still(610, 1210, here)
    ]
    assert [v.seconds for v in visits_of(pings, RULES)] == expected_s


def test_speed_is_not_implied_across_a_gap() -> None:
    # after 10 minutes away the unit reappears 2 km off: that says nothing about
    # how fast it is now (3.3 m/s on average), so the new visit keeps its first interval
    far = moved(center_hex(A), 0.0, 2000.0)
    pings = still(0, 300, center_hex(A)) + still(900, 1200, far)
    assert [(v.cell, v.seconds) for v in visits_of(pings, RULES)] == [
        (A, 300.0),
        (cell(far), 300.0),
    ]


# -- (d) duplicated and shuffled pings ---------------------------------------------------


def test_duplicated_and_shuffled_pings_give_identical_visits() -> None:
    pings = jittered_patrol(6) + walk_a_to_b(offset_s=2000.0) + still(4000, 4300, center_hex(A))
    expected = visits_of(pings, RULES, include_pass_bys=True)
    assert len(expected) == 4
    rng = random.Random(1)
    for _ in range(5):
        mixed = pings + rng.sample(pings, len(pings) // 2)
        rng.shuffle(mixed)
        assert visits_of(mixed, RULES, include_pass_bys=True) == expected
        assert visits_of(iter(mixed), RULES, include_pass_bys=True) == expected


def test_differing_pings_at_one_instant_keep_one_whatever_the_order() -> None:
    here = center_hex(A)
    pings = still(0, 300, here)
    rival = Ping(UNIT, T0 + 150.0, here[0], here[1], "break", None)
    with_rival = visits_of([*pings, rival], RULES)
    assert with_rival == visits_of([rival, *pings], RULES)
    # the patrol ping (status None sorts first) wins, so nothing changes
    assert with_rival == visits_of(pings, RULES) == [Visit(UNIT, A, T0, T0 + 300.0, 300.0, 31)]


def test_pings_of_several_units_are_refused() -> None:
    here = center_hex(A)
    with pytest.raises(ValueError, match="one unit"):
        visits_of(still(0, 300, here) + still(0, 300, here, unit="car-8"), RULES)


def test_no_pings_or_one_ping_is_no_visit() -> None:
    assert visits_of([], RULES) == []
    assert visits_of(still(0, 0, center_hex(A)), RULES, include_pass_bys=True) == []


# -- (e) walking into the adjacent cell --------------------------------------------------


def walk_a_to_b(offset_s: float = 0.0) -> list[Ping]:
    """Stand 50 m inside A, walk at 0.5 m/s across the edge (crossed at 475 s),
    stand 50 m inside B: pings every 10 s from 0 to 960 s."""
    pings = []
    for k in range(97):
        t = 10.0 * k
        lat, lon = across(0.5 * max(-100.0, min(100.0, t - 475.0)))
        pings.append(Ping(UNIT, T0 + offset_s + t, lat, lon, "patrol"))
    return pings


def test_walking_into_the_adjacent_cell_gives_eight_minutes_in_each() -> None:
    pings = walk_a_to_b()
    cells = [cell((p.lat_deg, p.lon_deg)) for p in pings]
    assert cells == [A] * 48 + [B] * 49  # 0-470 s in A, 480-960 s in B

    assert visits_of(pings, RULES) == [
        Visit(UNIT, A, T0, T0 + 480.0, 480.0, 48),
        Visit(UNIT, B, T0 + 480.0, T0 + 960.0, 480.0, 49),
    ]


# -- (f) statuses ------------------------------------------------------------------------


@pytest.mark.parametrize("busy", ["responding", "break"])
def test_non_patrol_statuses_are_not_counted(busy: str) -> None:
    here = center_hex(A)
    pings = (
        still(0, 300, here, status="patrol")
        + still(310, 600, here, status=busy)
        + still(610, 900, here)  # no status: patrol
    )
    assert visits_of(pings, RULES) == [
        Visit(UNIT, A, T0, T0 + 300.0, 300.0, 31),
        Visit(UNIT, A, T0 + 610.0, T0 + 900.0, 290.0, 30),
    ]
    strict = VisitRules(resolution=RES, patrol_statuses=frozenset({"patrol"}))
    assert visits_of(pings, strict) == [Visit(UNIT, A, T0, T0 + 300.0, 300.0, 31)]
    both = VisitRules(resolution=RES, patrol_statuses=frozenset({"patrol", busy, None}))
    assert visits_of(pings, both) == [Visit(UNIT, A, T0, T0 + 900.0, 900.0, 91)]


# -- (g) pass-bys ------------------------------------------------------------------------


def test_a_sixty_second_stay_is_a_pass_by_not_a_visit() -> None:
    pings = still(0, 60, center_hex(A)) + still(70, 600, center_hex(A), status="break")
    assert visits_of(pings, RULES) == []
    assert visits_of(pings, RULES, include_pass_bys=True) == [
        Visit(UNIT, A, T0, T0 + 60.0, 60.0, 7, "pass-by")
    ]


def test_a_short_stay_between_two_visits_is_a_pass_by() -> None:
    # positions jump between cell centres; the device speed (1 m/s) says walking
    c = next(iter(sorted(neighbours_hex(B) - neighbours_hex(A) - {A})))
    pings = (
        still(0, 300, center_hex(A), speed=1.0)
        + still(310, 390, center_hex(B), speed=1.0)  # a run of 80 s: long enough to move
        + still(400, 700, center_hex(c), speed=1.0)
    )
    assert visits_of(pings, RULES, include_pass_bys=True) == [
        Visit(UNIT, A, T0, T0 + 310.0, 310.0, 31),
        Visit(UNIT, B, T0 + 310.0, T0 + 400.0, 90.0, 9, "pass-by"),
        Visit(UNIT, c, T0 + 400.0, T0 + 700.0, 300.0, 31),
    ]
    assert [v.cell for v in visits_of(pings, RULES)] == [A, c]


def test_an_excursion_shorter_than_the_debounce_stays_with_the_cell_it_came_from() -> None:
    pings = (
        still(0, 300, center_hex(A), speed=1.0)
        + still(310, 350, center_hex(B), speed=1.0)  # a run of 40 s
        + still(360, 700, center_hex(A), speed=1.0)
    )
    assert visits_of(pings, RULES, include_pass_bys=True) == [
        Visit(UNIT, A, T0, T0 + 700.0, 700.0, 71)
    ]


def test_debounce_rules() -> None:
    t = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    # a segment opens in the first cell that lasts, short leading runs join it
    assert debounce(t, ["b", "a", "a", "a", "b", "b"], 20.0) == ["a"] * 6
    # nothing lasts: the first ping's cell
    assert debounce(t, ["b", "a", "b", "a", "b", "a"], 20.0) == ["b"] * 6
    # a run of exactly debounce_s moves the unit
    assert debounce(t, ["a", "a", "a", "b", "b", "b"], 20.0) == ["a"] * 3 + ["b"] * 3
    assert debounce(t, ["a", "a", "a", "b", "b", "b"], 20.5) == ["a"] * 6
    # zero: every run counts
    assert debounce(t, ["b", "a", "b", "a", "b", "a"], 0.0) == ["b", "a", "b", "a", "b", "a"]


# -- rules ---------------------------------------------------------------------------------


def test_visit_rules_defaults_and_validation() -> None:
    assert RULES.patrol_statuses == frozenset({"patrol", None})
    assert (RULES.max_gap_s, RULES.min_visit_s, RULES.max_speed_mps) == (300.0, 120.0, 2.5)
    assert (RULES.debounce_s, RULES.koper_visit_s) == (60.0, 600.0)
    bad: dict[str, Any]
    for bad in (
        {"resolution": 16},
        {"resolution": -1},
        {"resolution": 10, "max_gap_s": -1.0},
        {"resolution": 10, "debounce_s": math.nan},
        {"resolution": 10, "max_speed_mps": math.inf},
    ):
        with pytest.raises(ValueError):
            VisitRules(**bad)


# -- doses ---------------------------------------------------------------------------------


def ny(text: str) -> float:
    """POSIX seconds of a New York local time."""
    return datetime.fromisoformat(text).replace(tzinfo=NY).timestamp()


def visit(unit: str, cell_id: str, start: str, end: str, kind: str = "visit") -> Visit:
    start_s, end_s = ny(start), ny(end)
    return Visit(unit, cell_id, start_s, end_s, end_s - start_s, 1, kind)  # type: ignore[arg-type]


def test_a_visit_across_midnight_is_split_between_the_days_by_time() -> None:
    across_midnight = visit("car-1", A, "2025-06-15T23:50", "2025-06-16T00:10")
    short = visit("car-2", A, "2025-06-16T10:00", "2025-06-16T10:05")
    elsewhere = visit("car-1", B, "2025-06-16T11:00", "2025-06-16T12:00")
    passing = visit("car-3", A, "2025-06-16T13:00", "2025-06-16T13:01", "pass-by")

    doses = dose_by_day([passing, short, elsewhere, across_midnight], {A}, NY)

    assert doses == {
        (A, "2025-06-15"): DayDose(
            A, "2025-06-15", 1, 600.0, 1, ny("2025-06-16T00:00"), {"car-1": 600.0}
        ),
        (A, "2025-06-16"): DayDose(
            A,
            "2025-06-16",
            1,
            900.0,
            0,
            ny("2025-06-16T10:05"),
            {"car-1": 600.0, "car-2": 300.0},
        ),
    }
    assert dose_by_day([short], {A}, NY, koper_visit_s=300.0)[(A, "2025-06-16")].koper_visits == 1


def test_days_are_local_days_even_across_a_clock_change() -> None:
    # 2025-03-09 in New York has 23 hours
    long_stay = visit("car-1", A, "2025-03-08T12:00", "2025-03-10T12:00")
    doses = dose_by_day([long_stay], {A}, NY)
    assert {day: d.seconds for (_, day), d in doses.items()} == {
        "2025-03-08": 12 * 3600.0,
        "2025-03-09": 23 * 3600.0,
        "2025-03-10": 12 * 3600.0,
    }
    assert [d.visits for d in doses.values()] == [1, 0, 0]
    assert [d.koper_visits for d in doses.values()] == [1, 0, 0]


def test_days_since_last_visit() -> None:
    assert days_since_last_visit(None, T0) is None
    assert days_since_last_visit(T0 - 86400.0 * 2.5, T0) == 2.5
    assert days_since_last_visit(T0 + 60.0, T0) == 0.0


PEAK = Requirement(hours=frozenset({20, 21, 22}))


@pytest.mark.parametrize(
    ("start", "minutes", "req", "expected"),
    [
        ("2025-06-15T10:00", 15, Requirement(), True),
        ("2025-06-15T10:00", 14.99, Requirement(), False),
        ("2025-06-15T21:30", 15, PEAK, True),
        ("2025-06-15T20:00", 15, PEAK, True),
        ("2025-06-15T22:59", 15, PEAK, True),  # starts in the window, ends after it
        ("2025-06-15T19:59", 15, PEAK, False),  # ends in the window, starts before it
        ("2025-06-15T23:00", 15, PEAK, False),
    ],
)
def test_compliance_with_duration_and_peak_hours(
    start: str, minutes: float, req: Requirement, expected: bool
) -> None:
    start_s = ny(start)
    v = Visit(UNIT, A, start_s, start_s + 60.0 * minutes, 60.0 * minutes, 10)
    assert compliance([v], req, NY) is expected


def test_compliance_counts_visits_not_pass_bys() -> None:
    a = visit("car-1", A, "2025-06-15T10:00", "2025-06-15T10:20")
    b = visit("car-2", A, "2025-06-15T14:00", "2025-06-15T14:20")
    odd = visit("car-3", A, "2025-06-15T15:00", "2025-06-15T15:20", "pass-by")
    twice = Requirement(visits_per_day=2)
    assert compliance([a, odd], twice, NY) is False
    assert compliance([a, b], twice, NY) is True
    assert compliance([], Requirement(visits_per_day=0), NY) is True
    assert compliance([], Requirement(), NY) is False


def test_requirement_validation() -> None:
    bad: dict[str, Any]
    for bad in ({"visits_per_day": -1}, {"hours": frozenset()}, {"hours": frozenset({24})}):
        with pytest.raises(ValueError):
            Requirement(**bad)


def test_visits_by_day_groups_by_cell_and_start_day() -> None:
    a = visit("car-1", A, "2025-06-15T23:50", "2025-06-16T00:10")
    b = visit("car-2", A, "2025-06-16T10:00", "2025-06-16T10:20")
    c = visit("car-2", B, "2025-06-16T11:00", "2025-06-16T11:20")
    assert visits_by_day([c, b, a], NY) == {
        (A, "2025-06-15"): [a],
        (A, "2025-06-16"): [b],
        (B, "2025-06-16"): [c],
    }


def test_unit_minutes_in_planned_cells() -> None:
    visits = [
        visit("car-1", A, "2025-06-15T10:00", "2025-06-15T10:20"),
        visit("car-1", B, "2025-06-15T11:00", "2025-06-15T11:10"),
        visit("car-2", B, "2025-06-15T11:00", "2025-06-15T11:15"),
        visit("car-3", A, "2025-06-15T12:00", "2025-06-15T12:01", "pass-by"),
    ]
    assert unit_minutes_in(visits, {A, B}) == {"car-1": 1800.0, "car-2": 900.0}
    assert unit_minutes_in(visits, {A}) == {"car-1": 1200.0}
    assert unit_minutes_in(visits, set()) == {}


# -- overdue -------------------------------------------------------------------------------

X, Y, Z, W = "cell-x", "cell-y", "cell-z", "cell-w"


def test_overdue_reasons_in_plan_order() -> None:
    now_s = ny("2025-06-15T19:00")
    last = {
        X: ny("2025-06-15T10:00"),  # compliant today
        Y: ny("2025-06-13T19:00"),  # two days ago
        W: ny("2025-06-12T19:00"),  # exactly three days ago
    }
    assert overdue([X, Y, Z, W, X], last, now_s, NY, Requirement(), compliant_today={X}) == [
        (Y, LATE_REASON),
        (Z, NEVER_VISITED_REASON),
        (W, "unvisited for 3 days"),
    ]
    # at 17:59 nothing is late yet, and W is 2.96 days old
    assert overdue([X, Y, Z, W], last, ny("2025-06-15T17:59"), NY, Requirement()) == [
        (Z, NEVER_VISITED_REASON)
    ]


def test_overdue_days_limit_and_whole_days() -> None:
    now_s = ny("2025-06-15T12:00")
    last = {X: now_s - 2.99 * 86400.0, Y: now_s - 3.0 * 86400.0, Z: now_s - 7.9 * 86400.0}
    assert overdue([X, Y, Z], last, now_s, NY, Requirement()) == [
        (Y, "unvisited for 3 days"),
        (Z, "unvisited for 7 days"),
    ]
    assert overdue([X, Y, Z], last, now_s, NY, Requirement(), days_limit=8.0) == []


@pytest.mark.parametrize(
    ("hours", "at", "late"),
    [
        (None, "2025-06-15T17:59", False),
        (None, "2025-06-15T18:00", True),
        (frozenset({8, 9, 10}), "2025-06-15T09:59", False),
        (frozenset({8, 9, 10}), "2025-06-15T10:00", True),  # the last hour has begun
        (frozenset({8, 9, 10}), "2025-06-15T15:00", True),
        (frozenset({20, 21, 22}), "2025-06-15T19:00", False),  # not in spite of 18:00
        (frozenset({20, 21, 22}), "2025-06-15T22:00", True),
    ],
)
def test_late_in_the_window(hours: frozenset[int] | None, at: str, late: bool) -> None:
    last = {X: ny("2025-06-14T12:00")}
    got = overdue([X], last, ny(at), NY, Requirement(hours=hours), compliant_today=())
    assert got == ([(X, LATE_REASON)] if late else [])


def test_late_hour_is_configurable_and_checked() -> None:
    last = {X: ny("2025-06-14T12:00")}
    now_s = ny("2025-06-15T16:00")
    assert overdue([X], last, now_s, NY, Requirement(), late_after_hour=16) == [(X, LATE_REASON)]
    assert overdue([X], last, now_s, NY, Requirement(), late_after_hour=24) == []
    with pytest.raises(ValueError):
        overdue([X], last, now_s, NY, Requirement(), late_after_hour=25)


def test_without_compliant_today_a_visit_today_counts_as_covered() -> None:
    now_s = ny("2025-06-15T19:00")
    visited_today = {X: ny("2025-06-15T00:30")}
    visited_last_night = {X: ny("2025-06-14T23:30")}
    assert overdue([X], visited_today, now_s, NY, Requirement()) == []
    assert overdue([X], visited_last_night, now_s, NY, Requirement()) == [(X, LATE_REASON)]
    # the caller's compliance wins over the fallback
    assert overdue([X], visited_today, now_s, NY, Requirement(), compliant_today=()) == [
        (X, LATE_REASON)
    ]


def test_no_required_visits_is_never_late() -> None:
    last = {X: ny("2025-06-14T12:00")}
    assert overdue([X], last, ny("2025-06-15T23:00"), NY, Requirement(visits_per_day=0)) == []


# -- parse_ping ----------------------------------------------------------------------------

NOW_S = T0
GOOD: dict[str, object] = {
    "unit": "car-7",
    "at": "2025-06-15T15:00:00Z",
    "lat": 39.9524,
    "lon": -75.1636,
    "status": " Patrol ",
    "speed": 1,
}


def payload(**changes: object) -> bytes:
    """GOOD with fields changed (a value of ... removes the field)."""
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


def test_parse_ping_good() -> None:
    at_s = datetime(2025, 6, 15, 15, tzinfo=UTC).timestamp()
    expected = Ping("car-7", at_s, 39.9524, -75.1636, "patrol", 1.0)
    rules = EventRules()
    assert parse_ping(payload(), rules, NOW_S) == expected
    assert parse_ping(payload().decode(), rules, NOW_S) == expected
    assert parse_ping(GOOD, rules, NOW_S) == expected
    assert parse_ping(bytearray(payload()), rules, NOW_S) == expected
    assert parse_ping(payload(at="2025-06-15T17:00:00+02:00"), rules, NOW_S) == expected
    assert parse_ping(payload(at=at_s), rules, NOW_S) == expected  # POSIX seconds, as events
    ny_rules = EventRules(default_timezone="America/New_York")
    assert parse_ping(payload(at="2025-06-15T11:00:00"), ny_rules, NOW_S) == expected
    bare = Ping("car-7", at_s, 39.9524, -75.1636, None, None)
    assert parse_ping(payload(status=..., speed=...), rules, NOW_S) == bare
    assert parse_ping(payload(status=None, speed=None), rules, NOW_S) == bare
    assert parse_ping(payload(status="  ", speed=...), rules, NOW_S) == bare
    assert parse_ping(payload(speed=0), rules, NOW_S).speed_mps == 0.0
    assert parse_ping(payload(speed=-0.0), rules, NOW_S).speed_mps == 0.0
    assert parse_ping(payload(status="RESPONDING"), rules, NOW_S).status == "responding"
    assert parse_ping(payload(unit="u" * 128), rules, NOW_S).unit == "u" * 128


def test_parse_ping_time_limits() -> None:
    rules = EventRules()
    skew_edge = NOW_S + rules.max_future_skew_s
    assert parse_ping(payload(at=skew_edge), rules, NOW_S).at_s == skew_edge
    far_future = payload(at="2100-01-01T00:00:00Z")
    assert parse_ping(far_future, rules).at_s == datetime(2100, 1, 1, tzinfo=UTC).timestamp()
    with pytest.raises(InvalidEvent) as info:
        parse_ping(far_future, rules, NOW_S)
    assert info.value.reason == "future_time"


SMALL = EventRules(max_payload_bytes=64)
AREA = EventRules(area=Area(bbox=(-75.3, 39.85, -74.95, 40.15)))

BAD: list[tuple[str, bytes | str | dict[str, object], EventRules]] = [
    ("too_large", payload(), SMALL),
    ("too_large", payload().decode() + " " * 64, SMALL),
    ("bad_json", b"{", EventRules()),
    ("bad_json", b"[1, 2]", EventRules()),
    ("bad_json", b"null", EventRules()),
    ("bad_json", b'{"lat": 1e400}', EventRules()),
    ("missing_field", payload(unit=...), EventRules()),
    ("missing_field", payload(unit=None), EventRules()),
    ("missing_field", payload(at=...), EventRules()),
    ("missing_field", payload(lat=...), EventRules()),
    ("missing_field", payload(lon=None), EventRules()),
    ("bad_type", payload(lat="39.95"), EventRules()),
    ("bad_type", payload(lon=True), EventRules()),
    ("bad_type", payload(at=True), EventRules()),
    ("bad_type", payload(at=[2025]), EventRules()),
    ("bad_type", payload(status=5), EventRules()),
    ("bad_type", payload(status="s" * 129), EventRules()),
    ("bad_type", payload(speed="1.2"), EventRules()),
    ("bad_type", payload(speed=False), EventRules()),
    ("bad_unit", payload(unit=""), EventRules()),
    ("bad_unit", payload(unit=7), EventRules()),
    ("bad_unit", payload(unit="u" * 129), EventRules()),
    ("bad_unit", payload(unit=["car-7"]), EventRules()),
    ("bad_speed", payload(speed=-0.1), EventRules()),
    ("not_finite", {**GOOD, "lat": math.nan}, EventRules()),
    ("not_finite", {**GOOD, "lon": -math.inf}, EventRules()),
    ("not_finite", {**GOOD, "speed": math.inf}, EventRules()),
    ("lat_out_of_range", payload(lat=90.5), EventRules()),
    ("lon_out_of_range", payload(lon=-180.5), EventRules()),
    ("null_island", payload(lat=0, lon=0.0), EventRules()),
    ("outside_area", payload(lat=40.7128, lon=-74.006), AREA),
    ("bad_time", payload(at="yesterday"), EventRules()),
    ("bad_time", payload(at="2025-13-01T00:00:00Z"), EventRules()),
    ("bad_time", payload(at="1969-12-31T23:59:59Z"), EventRules()),
    ("bad_time", payload(at="2201-01-01T00:00:00Z"), EventRules()),
    ("bad_time", payload(at=-1), EventRules()),
    ("bad_time", {**GOOD, "at": math.nan}, EventRules()),
    ("future_time", payload(at=NOW_S + 901.0), EventRules()),
]


@pytest.mark.parametrize(("reason", "raw", "rules"), BAD)
def test_parse_ping_bad(
    reason: str, raw: bytes | str | dict[str, object], rules: EventRules
) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_ping(raw, rules, NOW_S)
    assert info.value.reason == reason
    assert info.value.reason in PING_REASONS
    assert "39.95" not in info.value.detail  # never a precise position in a message


def test_every_ping_reason_is_tested_and_all_are_reachable() -> None:
    assert {reason for reason, _, _ in BAD} == set(PING_REASONS)
    assert len(set(PING_REASONS)) == len(PING_REASONS)


def test_parse_ping_area_accepts_inside() -> None:
    assert parse_ping(payload(), AREA, NOW_S).unit == "car-7"


# -- properties ----------------------------------------------------------------------------

# points a unit may report from: the two centres, and both sides of their edge
POINTS = [center_hex(A), center_hex(B), across(-3.0), across(3.0), across(-20.0)]

ping_st = st.builds(
    lambda k, where, status, speed: Ping(UNIT, T0 + 20.0 * k, *POINTS[where], status, speed),
    st.integers(0, 80),
    st.integers(0, len(POINTS) - 1),
    st.sampled_from([None, None, "patrol", "responding"]),
    st.sampled_from([None, None, 0.5, 4.0]),
)
rules_st = st.builds(
    lambda gap, debounce_s, min_visit_s: VisitRules(
        resolution=RES, max_gap_s=gap, debounce_s=debounce_s, min_visit_s=min_visit_s
    ),
    st.sampled_from([30.0, 60.0, 300.0]),
    st.sampled_from([0.0, 30.0, 60.0]),
    st.sampled_from([0.0, 60.0, 120.0]),
)


def oracle_track(pings: list[Ping]) -> list[Ping]:
    """Oracle: one ping per instant (the least by position, status, speed), by time."""

    def order(p: Ping) -> tuple[float, float, bool, str, bool, float]:
        status, speed = p.status, p.speed_mps
        return (
            p.lat_deg,
            p.lon_deg,
            status is not None,
            status or "",
            speed is not None,
            speed or 0.0,
        )

    chosen: dict[float, Ping] = {}
    for p in sorted(pings, key=order, reverse=True):
        chosen[p.at_s] = p  # the least comes last and wins
    return [chosen[t] for t in sorted(chosen)]


def counted_seconds(pings: list[Ping], rules: VisitRules) -> float:
    """Oracle: the time the rules count, straight from their wording."""
    track = oracle_track(pings)

    def ok(i: int) -> bool:
        p = track[i]
        if p.status not in rules.patrol_statuses:
            return False
        speed = p.speed_mps
        if speed is None and i > 0 and p.at_s - track[i - 1].at_s <= rules.max_gap_s:
            q = track[i - 1]
            speed = distance_m(q.lat_deg, q.lon_deg, p.lat_deg, p.lon_deg) / (p.at_s - q.at_s)
        return speed is None or speed <= rules.max_speed_mps

    return math.fsum(
        track[i].at_s - track[i - 1].at_s
        for i in range(1, len(track))
        if ok(i - 1) and ok(i) and track[i].at_s - track[i - 1].at_s <= rules.max_gap_s
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(ping_st, max_size=60), rules_st, st.randoms(use_true_random=False))
def test_visits_are_a_function_of_the_set_of_pings(
    pings: list[Ping], rules: VisitRules, rng: random.Random
) -> None:
    expected = visits_of(pings, rules, include_pass_bys=True)
    shuffled = pings + rng.sample(pings, len(pings) // 2) if pings else []
    rng.shuffle(shuffled)
    assert visits_of(shuffled, rules, include_pass_bys=True) == expected  # order independence
    assert visits_of(pings + pings, rules, include_pass_bys=True) == expected  # idempotence
    assert visits_of(expected_pings(pings), rules, include_pass_bys=True) == expected


def expected_pings(pings: list[Ping]) -> list[Ping]:
    """The set of pings, in reverse time order."""
    return sorted(set(pings), key=lambda p: p.at_s, reverse=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(ping_st, max_size=60), rules_st)
def test_visits_keep_all_counted_time_and_never_overlap(
    pings: list[Ping], rules: VisitRules
) -> None:
    visits = visits_of(pings, rules, include_pass_bys=True)
    total = math.fsum(v.seconds for v in visits)
    assert total == pytest.approx(counted_seconds(pings, rules), abs=1e-6)
    for v in visits:
        assert v.seconds == v.end_s - v.start_s > 0.0
        assert v.kind == ("visit" if v.seconds >= rules.min_visit_s else "pass-by")
        assert v.pings >= 1
        assert v.cell in {cell(p) for p in POINTS}
    for before, after in itertools.pairwise(visits):
        assert before.end_s <= after.start_s
        if before.end_s == after.start_s:
            assert before.cell != after.cell  # a visit is a maximal run in one cell
    assert visits_of(pings, rules) == [v for v in visits if v.kind == "visit"]


@settings(max_examples=100, deadline=None)
@given(st.lists(ping_st, max_size=60))
def test_without_debounce_visits_follow_the_raw_cells(pings: list[Ping]) -> None:
    rules = VisitRules(
        resolution=RES,
        debounce_s=0.0,
        min_visit_s=0.0,
        max_speed_mps=1e9,
        patrol_statuses=frozenset({None, "patrol", "responding"}),
    )
    track = oracle_track(pings)
    # oracle: per interval, the raw cell of its first ping
    per_cell: dict[str, float] = {}
    for a, b in itertools.pairwise(track):
        if b.at_s - a.at_s <= rules.max_gap_s:
            key = cell((a.lat_deg, a.lon_deg))
            per_cell[key] = per_cell.get(key, 0.0) + (b.at_s - a.at_s)
    got: dict[str, float] = {}
    for v in visits_of(pings, rules):
        got[v.cell] = got.get(v.cell, 0.0) + v.seconds
    assert got == pytest.approx(per_cell)


visit_st = st.builds(
    lambda unit, c, start, minutes: Visit(
        unit, c, T0 + 60.0 * start, T0 + 60.0 * (start + minutes), 60.0 * minutes, 2
    ),
    st.sampled_from(["car-1", "car-2"]),
    st.sampled_from([A, B, X]),
    st.integers(0, 6 * 24 * 60),
    st.integers(1, 3 * 24 * 60),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(visit_st, max_size=20), st.randoms(use_true_random=False))
def test_doses_split_time_without_losing_any(visits: list[Visit], rng: random.Random) -> None:
    planned = {A, B}
    doses = dose_by_day(visits, planned, NY)
    chosen = [v for v in visits if v.cell in planned]
    assert math.fsum(d.seconds for d in doses.values()) == pytest.approx(
        math.fsum(v.seconds for v in chosen)
    )
    assert sum(d.visits for d in doses.values()) == len(chosen)
    assert sum(d.koper_visits for d in doses.values()) == sum(v.seconds >= 600.0 for v in chosen)
    for d in doses.values():
        assert d.seconds == pytest.approx(math.fsum(d.units.values()))
    for v in chosen:  # one visit: at most a (long) day in each day, days in a row
        pieces = dose_by_day([v], planned, NY)
        assert all(0.0 < d.seconds <= 25 * 3600.0 for d in pieces.values())
        days = [date.fromisoformat(day) for _, day in pieces]
        assert days == [days[0] + timedelta(days=i) for i in range(len(days))]
        assert [d.visits for d in pieces.values()] == [1] + [0] * (len(days) - 1)
    minutes = unit_minutes_in(visits, planned)
    for unit, seconds in minutes.items():
        assert seconds == pytest.approx(math.fsum(d.units.get(unit, 0.0) for d in doses.values()))
    shuffled = list(visits)
    rng.shuffle(shuffled)
    assert dose_by_day(shuffled, planned, NY) == doses


def test_helpers_used_by_the_properties_are_sound() -> None:
    assert len({cell(p) for p in POINTS}) == 2
    assert counted_seconds(walk_a_to_b(), RULES) == 960.0
    assert counted_seconds(drive(None), RULES) == 0.0
    assert counted_seconds(still(0, 600, center_hex(A), status="break"), RULES) == 0.0


# -- recomputing from a resume point -------------------------------------------
# The patrol worker keeps, per unit, the time resume_at gives, and on the next
# batch walks only the pings from it on. That must give exactly the visits of
# the whole set, for any track and any way of cutting it into batches.


@st.composite
def tracks(draw: st.DrawFn) -> list[Ping]:
    """A random track near two adjacent cells: pauses that sometimes exceed
    max_gap_s, jitter across the edge, other statuses, fast pings."""
    n = draw(st.integers(2, 80))
    rng = random.Random(draw(st.integers(0, 2**32)))
    t, north = 0.0, 0.0
    out = []
    for _ in range(n):
        t += rng.choice([5.0, 10.0, 30.0, 60.0, 200.0, 299.0, 301.0, 900.0])
        north += rng.choice([-40.0, 0.0, 0.0, 0.0, 40.0])
        lat, lon = moved((39.9524, -75.1636), north, rng.uniform(-30.0, 30.0))
        status = rng.choice(["patrol", "patrol", "patrol", "patrol", "busy"])
        speed = rng.choice([None, None, None, 0.5, 20.0])
        out.append(Ping("u", t, lat, lon, status, speed))
    return out


def resumed_walk(track: list[Ping], cuts: list[int]) -> int:
    """Feed the track in batches cut at ``cuts`` the way the patrol worker
    does; after each, the visits must equal those of every ping so far.
    Returns how many batches took the short path."""
    rules = VisitRules(resolution=RES, debounce_s=60.0, min_visit_s=120.0)
    bounds = sorted({min(c, len(track)) for c in cuts} | {len(track)})
    seen: list[Ping] = []
    kept: list[Visit] = []  # visits settled before the resume point
    resume: float | None = None
    resumed = 0
    for end in bounds:
        batch = track[len(seen) : end]
        seen += batch
        if resume is not None and batch and min(p.at_s for p in batch) > resume:
            since = [p for p in seen if p.at_s >= resume]
            resumed += 1
        else:
            kept, since = [], list(seen)
        fresh = visits_of(since, rules, include_pass_bys=True)
        every = kept + fresh
        assert every == visits_of(seen, rules, include_pass_bys=True)
        resume = resume_at(since, fresh, rules)
        if resume is not None:
            kept = [v for v in every if v.start_s < resume]
            assert all(v.end_s <= resume for v in kept)
    return resumed


@given(tracks(), st.lists(st.integers(1, 80), min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_visits_resumed_from_resume_at_equal_the_visits_of_every_ping(
    track: list[Ping], cuts: list[int]
) -> None:
    resumed_walk(track, cuts)


def test_the_resumed_path_is_taken_and_exact_on_long_tracks() -> None:
    rng = random.Random(3)
    resumed = 0
    for seed in range(40):
        track = _track_of(seed)
        cuts = sorted(rng.sample(range(1, len(track) + 1), k=min(8, len(track))))
        resumed += resumed_walk(track, cuts)
    assert resumed > 40  # most batches after the first went the short way


def _track_of(seed: int) -> list[Ping]:
    rng = random.Random(seed)
    t, north, out = 0.0, 0.0, []
    for _ in range(200):
        t += rng.choice([10.0, 10.0, 30.0, 60.0, 400.0])
        north += rng.choice([-40.0, 0.0, 0.0, 0.0, 0.0, 40.0])
        lat, lon = moved((39.9524, -75.1636), north, rng.uniform(-20.0, 20.0))
        out.append(Ping("u", t, lat, lon, rng.choice(["patrol"] * 9 + ["busy"]), None))
    return out


def test_a_long_patrol_resumes_from_its_last_visit_not_its_first_ping() -> None:
    rules = VisitRules(resolution=RES)
    first = [Ping("u", 10.0 * i, *moved((39.9524, -75.1636), 0.0, 0.0)) for i in range(60)]
    second = [
        Ping("u", 600.0 + 10.0 * i, *moved((39.9524, -75.1636), 200.0, 0.0)) for i in range(60)
    ]
    pings = first + second
    every = visits_of(pings, rules, include_pass_bys=True)
    assert len(every) == 2
    assert resume_at(pings, every, rules) == every[-1].start_s > 0
    # a gap later than the last visit's start is the later resume point
    late = [*pings, Ping("u", 5000.0, *moved((39.9524, -75.1636), 200.0, 0.0))]
    assert resume_at(late, visits_of(late, rules, include_pass_bys=True), rules) == 5000.0
    assert resume_at([], [], rules) is None
