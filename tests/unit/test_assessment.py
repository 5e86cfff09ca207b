"""Assessment maths on hand-computed cases: WDQ, net effects, areas, feedback."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from streamer.analysis.assess import parse_span, read_cells
from streamer.core.assessment import (
    AreaCounts,
    Period,
    assess,
    buffer_cells,
    control_band,
    count_area,
    decayed_scores,
    disk,
    effects,
    feedback_check,
    net_effect,
    wdq,
)
from streamer.core.cells import cell_hex, cell_of, ring
from streamer.usage import UsageError

CITY_HALL_9 = cell_of(39.9524, -75.1636, 9)


# --------------------------------------------------------------------------- WDQ and net effects


def test_displacement_case() -> None:
    # target 100 -> 60, buffer 50 -> 60, control flat at 100
    q = wdq(100, 60, 50, 60, 100, 100)
    assert q.success_measure == pytest.approx(-0.4)
    assert q.buffer_measure == pytest.approx(0.1)
    assert q.value == pytest.approx(-0.25)
    assert q.reading.startswith("displacement (-1 <= WDQ < 0)")
    assert "net benefit" in q.reading
    e = effects((100, 60), (50, 60), (100, 100), 90, 90)
    assert e.net_target == pytest.approx(40.0)
    assert e.net_buffer == pytest.approx(-10.0)  # ten moved next door
    assert e.total_net == pytest.approx(30.0)
    assert e.gross_change == -40.0 and e.gross_change_pct == pytest.approx(-40.0)


def test_diffusion_case() -> None:
    # control rose 10%: target expected 110, saw 50; buffer expected 88, saw 60
    q = wdq(100, 50, 80, 60, 200, 220)
    assert q.success_measure == pytest.approx(-60 / 220)
    assert q.buffer_measure == pytest.approx(-28 / 220)
    assert q.value == pytest.approx(28 / 60)
    assert q.reading.startswith("diffusion of benefits (0 < WDQ <= 1)")
    e = effects((100, 50), (80, 60), (200, 220), 30, 30)
    assert e.net_target == pytest.approx(60.0)
    assert e.net_buffer == pytest.approx(28.0)
    assert e.total_net == pytest.approx(88.0)


def test_wdq_beyond_one_either_way() -> None:
    assert wdq(100, 90, 100, 70, 100, 100).value == pytest.approx(3.0)
    assert "by more than the target" in wdq(100, 90, 100, 70, 100, 100).reading
    worse = wdq(100, 90, 100, 130, 100, 100)
    assert worse.value == pytest.approx(-3.0)
    assert "counterproductive" in worse.reading
    assert "WDQ = 0" in wdq(100, 90, 50, 50, 100, 100).reading


def test_target_worse_than_control_is_no_success() -> None:
    q = wdq(100, 120, 50, 40, 100, 100)
    assert q.value == pytest.approx(-0.5)
    assert q.reading.startswith("no success to weigh")


def test_zero_denominators_explain_instead_of_crashing() -> None:
    no_control_before = wdq(10, 5, 10, 5, 0, 3)
    assert no_control_before.value is None and "no events before" in no_control_before.reading
    no_control_after = wdq(10, 5, 10, 5, 3, 0)
    assert no_control_after.value is None and "no events after" in no_control_after.reading
    flat = wdq(100, 100, 50, 40, 100, 100)  # R/C unchanged
    assert flat.value is None and flat.success_measure == 0
    assert "did not change relative to the control" in flat.reading
    assert net_effect(10, 5, 0, 7) is None
    e = effects((0, 4), (1, 1), (0, 5), 10, 10)
    assert e.net_target is None and e.total_net is None and e.gross_change_pct is None
    assert e.gross_change == 4.0


def test_unequal_periods_compare_daily_rates() -> None:
    # 90 days before, 45 after; the control's daily rate is unchanged
    e = effects((90, 30), (45, 20), (180, 90), 90, 45)
    assert e.gross_change_per_day == pytest.approx(30 / 45 - 1.0)
    assert e.gross_change_pct == pytest.approx(100 * (30 / 45 - 1.0))
    # expected in the after period: 90 * 90/180 = 45, saw 30
    assert e.net_target == pytest.approx(15.0)
    assert e.net_buffer == pytest.approx(22.5 - 20)
    # the same daily rates over equal periods give the same WDQ
    same = effects((90, 60), (45, 40), (180, 180), 90, 90)
    assert e.quotient.value == pytest.approx(same.quotient.value)


def test_assess_puts_counts_and_harm_together() -> None:
    before, after = Period(0.0, 10 * 86400.0), Period(10 * 86400.0, 20 * 86400.0)
    result = assess(
        AreaCounts(2, 100, 60, 1000.0, 500.0),
        AreaCounts(12, 50, 60, 400.0, 500.0),
        AreaCounts(30, 100, 100, 800.0, 800.0),
        before,
        after,
    )
    assert result.equal_periods
    assert result.counts.quotient.value == pytest.approx(-0.25)
    assert result.harm.net_target == pytest.approx(500.0)
    report = result.as_json()
    assert set(report["areas"]) == {"target", "buffer", "control"}
    assert report["areas"]["target"]["before_per_day"] == pytest.approx(10.0)
    assert report["counts"]["total_net_effect"] == pytest.approx(30.0)
    with pytest.raises(ValueError):
        assess(result.target, result.buffer, result.control, Period(5.0, 5.0), after)


# --------------------------------------------------------------------------- areas


def test_rings_of_a_real_cell_hold_1_6_12_cells() -> None:
    c = CITY_HALL_9
    assert len(disk([c], 0)) == 1
    assert len(disk([c], 1)) == 1 + 6
    assert len(disk([c], 2)) == 1 + 6 + 12
    buffer = buffer_cells([c], 2)
    assert len(buffer) == 18 and c not in buffer
    band = control_band([c], 2, 6)
    assert len(band) == 1 + 3 * 6 * 7 - 19  # rings 3..6: 18 + 24 + 30 + 36
    assert not band & buffer and c not in band
    assert set(ring(c, 6)) == band | buffer | {c}
    with pytest.raises(ValueError):
        control_band([c], 2, 2)


def test_buffer_of_two_neighbouring_targets() -> None:
    a = CITY_HALL_9
    b = next(n for n in ring(a, 1) if n != a)
    buffer = buffer_cells([a, b], 1)
    # the two 1-disks share a, b and their two common neighbours
    assert len(buffer) == 7 + 7 - 4 - 2
    assert a not in buffer and b not in buffer


def test_count_area_splits_periods_half_open() -> None:
    cells = np.array([1, 1, 1, 2, 9], dtype=np.uint64)
    t = np.array([0.0, 4.999, 5.0, 14.0, 1.0])
    harm = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    got = count_area(cells, t, harm, frozenset({1, 2}), Period(0, 5), Period(5, 15))
    assert got == AreaCounts(2, 2, 2, 3.0, 12.0)


# --------------------------------------------------------------------------- feedback loops


def test_decayed_scores_halve_per_half_life() -> None:
    cells = np.array([1, 1, 2], dtype=np.uint64)
    scores = decayed_scores(
        cells, np.array([0.0, 20.0, 31.0]), np.array([8.0, 1.0, 1.0]), 20.0, 10.0
    )
    assert scores == {1: pytest.approx(8 / 4 + 1)}  # the later event is after at_s


def test_feedback_check_on_a_tiny_set() -> None:
    # A: reported 10; B: enforcement 12; C: reported 5 one half-life ago + enforcement 4;
    # D: reported 3. Every score at t = 100 s, half-life 100 s.
    cells = np.array([1, 2, 3, 3, 4], dtype=np.uint64)
    t = np.array([100.0, 100.0, 0.0, 100.0, 100.0])
    weight = np.array([10.0, 12.0, 5.0, 4.0, 3.0])
    driven = np.array([False, True, False, True, False])
    r = feedback_check(cells, t, weight, driven, at_s=100.0, half_life_s=100.0, coverage=0.5)
    # all: B 12, A 10, C 6.5, D 3 -> B, A; without: A 10, D 3, C 2.5 -> A, D
    assert r.cells_with_events == 4 and r.flagged == 2
    assert r.driven_share == pytest.approx(12 / 22)
    assert r.driven_share_everywhere == pytest.approx(16 / 31.5)
    assert r.stay_flagged == 1 and r.overlap_pct == pytest.approx(50.0)
    assert [d.cell for d in r.dropped] == [2]
    assert r.dropped[0].driven_share == pytest.approx(1.0)
    assert r.added == (4,)


def test_feedback_check_without_driven_events_changes_nothing() -> None:
    cells = np.array([1, 2, 3], dtype=np.uint64)
    r = feedback_check(
        cells,
        np.zeros(3),
        np.array([1.0, 2.0, 3.0]),
        np.zeros(3, dtype=bool),
        at_s=0.0,
        half_life_s=1.0,
        coverage=1.0,
    )
    assert r.flagged == 3 and r.stay_flagged == 3 and r.driven_share == 0.0
    assert not r.dropped and not r.added
    with pytest.raises(ValueError):
        feedback_check(
            cells, np.zeros(3), np.ones(3), np.zeros(3, dtype=bool),
            at_s=0.0, half_life_s=1.0, coverage=0.0,
        )  # fmt: skip


# --------------------------------------------------------------------------- flags


def test_parse_span_days_are_inclusive_and_local() -> None:
    zone = ZoneInfo("America/New_York")
    p = parse_span("2025-01-01..2025-03-31", zone, "--before")
    assert p.days == pytest.approx(90 - 1 / 24)  # clocks went forward on 9 March
    for bad in ("2025-01-01", "2025-03-01..2025-01-01", "x..y"):
        with pytest.raises(UsageError):
            parse_span(bad, zone, "--before")


def test_read_cells_lines_and_csv(tmp_path: Path) -> None:
    a, b = cell_hex(CITY_HALL_9), cell_hex(buffer_cells([CITY_HALL_9], 1).__iter__().__next__())
    lines = tmp_path / "t.txt"
    lines.write_text(f"# targets\n{a}\n\n{b}  # second\n{a}\n")
    assert read_cells(str(lines), "--targets") == [int(a, 16), int(b, 16)]
    table = tmp_path / "t.csv"
    table.write_text(f"rank,cell\n1,{a}\n2,{b}\n")
    assert read_cells(str(table), "--targets") == [int(a, 16), int(b, 16)]
    mixed = tmp_path / "m.txt"
    mixed.write_text(f"{a}\n{cell_hex(cell_of(39.9524, -75.1636, 10))}\n")
    with pytest.raises(UsageError, match="several resolutions"):
        read_cells(str(mixed), "--targets")
    junk = tmp_path / "j.txt"
    junk.write_text("not-a-cell\n")
    with pytest.raises(UsageError, match="not an H3 cell"):
        read_cells(str(junk), "--targets")
