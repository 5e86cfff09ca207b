"""The emerging-hot-spot statistics and alert lifecycle, against hand-computed cases."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h3
import pytest

from streamer.core.emerging import (
    CellCounts,
    DayBins,
    Detector,
    DetectorConfig,
    exposure_s,
    gamma_poisson_sf,
    mann_kendall,
    pattern_of,
)
from streamer.settings import ConfigError, load_settings

DAY = 86400.0
CENTRE = h3.latlng_to_cell(39.9526, -75.1652, 9)  # City Hall, Philadelphia
T0 = 1_750_000_000.0


def poisson_tail(k: int, mu: float) -> float:
    """1 - sum_{j<k} e^-mu mu^j / j!, term by term."""
    return 1.0 - sum(math.exp(-mu) * mu**j / math.factorial(j) for j in range(k))


def test_exposure_by_hand() -> None:
    h = 2 * DAY
    assert exposure_s(h, math.inf) == pytest.approx(h / math.log(2))
    # one half-life of history: half the full exposure
    assert exposure_s(h, h) == pytest.approx(h / math.log(2) / 2)
    # short history: about the age itself (each event still counts ~1)
    assert exposure_s(h, 60.0) == pytest.approx(60.0, rel=1e-3)


def test_mann_kendall_by_hand() -> None:
    t = mann_kendall([1, 3, 2, 4])
    # pairs: + + + - + + -> S = 4; var = 4*3*13/18; z = (4 - 1) / sqrt(var)
    assert t.s == 4
    z = 3 / math.sqrt(4 * 3 * 13 / 18)
    assert t.z == pytest.approx(z)
    assert t.p == pytest.approx(math.erfc(z / math.sqrt(2)))
    down = mann_kendall(list(range(14, 0, -1)))
    assert down.direction == -1 and down.p < 0.001
    # ties shrink the variance: [1, 1, 2]: S = 2, var = (3*2*11 - 2*1*9) / 18
    tied = mann_kendall([1, 1, 2])
    assert tied.s == 2
    assert tied.z == pytest.approx(1 / math.sqrt((66 - 18) / 18))


@pytest.mark.parametrize(
    ("hot", "counts", "expected"),
    [
        ([False] * 13 + [True], [0] * 13 + [5], "new"),
        ([False] * 11 + [True] * 3, [0] * 11 + [4, 4, 5], "consecutive"),
        (
            [True, False, False, True, False] + [False] * 8 + [True],
            [3] + [0] * 12 + [4],
            "sporadic",
        ),
        ([True] * 14, [5] * 14, "persistent"),
        ([True] * 14, list(range(3, 17)), "intensifying"),
        ([True] * 14, list(range(16, 2, -1)), "diminishing"),
        ([True] * 13 + [False], [5] * 13 + [0], "historical"),
        ([True] + [False] * 13, [5] + [0] * 13, None),
    ],
)
def test_pattern_rules(hot: list[bool], counts: list[float], expected: str | None) -> None:
    assert pattern_of(hot, counts, 0.05) == expected


def test_day_bins_round_trip_and_shift() -> None:
    bins = DayBins(700_000, 12, [0, 1, 2, 3])
    again = DayBins.decode(bins.encode(), 4)
    assert again == bins
    again.shift_to(700_002)
    assert again.counts == [2, 3, 0, 0] and again.day == 700_002
    again.shift_to(700_100)
    assert again.counts == [0, 0, 0, 0]


def config(**kw: float) -> DetectorConfig:
    base: dict[str, float] = {
        "short_s": DAY,
        "long_s": 100 * DAY,
        "prior_s": 10 * DAY,
        "area_weight": 1.0,
        "min_events": 2.5,
        "false_alerts_per_day": 1.0,
        "clear_quiet_s": 12 * 3600.0,
    }
    base.update(kw)
    return DetectorConfig(**base)  # type: ignore[arg-type]


def test_region_test_by_hand() -> None:
    d = Detector(config())
    d.area_mean_b = 0.5
    d.cells[CENTRE] = CellCounts(T0, short=3.0, long=3.0)
    ring2 = set(h3.grid_disk(CENTRE, 2)) - set(h3.grid_disk(CENTRE, 1))
    busy = sorted(ring2)[0]
    d.cells[busy] = CellCounts(T0, short=1.0, long=21.0)
    t = d.test(h3.grid_disk(CENTRE, 1), T0)
    ln2 = math.log(2)
    t_s, t_b = DAY / ln2, 100 * DAY / ln2 - DAY / ln2
    prior_rate = (20.0 + 1 * 0.5) / ((12 + 1) * t_b)  # 12 ring-2 cells + the area
    shape = 0.0 + 7 * prior_rate * 10 * DAY  # pseudo-events
    rate_s = t_b + 10 * DAY
    assert t.observed == pytest.approx(3.0)
    assert t.expected == pytest.approx(shape / rate_s * t_s, rel=1e-12)
    assert t.p == pytest.approx(negbin_tail(3, shape, rate_s / (rate_s + t_s)), rel=1e-9)


def negbin_tail(k: int, r: float, p: float) -> float:
    """1 - sum_{j<k} Gamma(r+j) / (Gamma(r) j!) p^r (1-p)^j, term by term."""
    return 1.0 - sum(
        math.exp(math.lgamma(r + j) - math.lgamma(r) - math.lgamma(j + 1)) * p**r * (1 - p) ** j
        for j in range(k)
    )


@pytest.mark.parametrize(
    ("k", "shape", "rate_s", "exposure"),
    [(1, 1.0, 1.0, 1.0), (3, 0.7, 50.0, 1.0), (3, 20.0, 300.0, 2.0), (12, 4.0, 2.0, 3.0)],
)
def test_gamma_poisson_tail_matches_the_negative_binomial_sum(
    k: int, shape: float, rate_s: float, exposure: float
) -> None:
    want = negbin_tail(k, shape, rate_s / (rate_s + exposure))
    assert gamma_poisson_sf(k, shape, rate_s, exposure) == pytest.approx(want, rel=1e-9)


def test_gamma_poisson_tail_is_heavier_and_tends_to_the_poisson() -> None:
    mu = 0.05
    thin = gamma_poisson_sf(3, 1.0, 1.0 / mu, 1.0)  # baseline from one pseudo-event
    thick = gamma_poisson_sf(3, 1e6, 1e6 / mu, 1.0)  # from a million
    assert thin > 3 * poisson_tail(3, mu)
    assert thick == pytest.approx(poisson_tail(3, mu), rel=1e-4)


def test_counts_decay_exactly_between_reads() -> None:
    d = Detector(config())
    d.cells[CENTRE] = CellCounts(T0, short=4.0, long=4.0)
    t = d.test([CENTRE], T0 + DAY)
    assert t.observed == pytest.approx(2.0)  # one short half-life later


def city(d: Detector) -> None:
    """Philadelphia-like area figures: ~400 events a day, ~37 per cell a year."""
    d.events_per_day = 400.0
    d.area_mean_b = 37.0 / 365 * (365 * DAY / math.log(2)) / DAY


def events(d: Detector, cell: str, n: int, at_s: float) -> None:
    """``n`` new events in ``cell`` just before ``at_s``."""
    old = d.cells.get(cell)
    short = (old.short * 2 ** (-(at_s - old.at_s) / DAY) if old else 0.0) + n
    long = (old.long * 2 ** (-(at_s - old.at_s) / (365 * DAY)) if old else 0.0) + n
    total = (old.total if old else 0) + n
    d.update({cell: CellCounts(at_s, short, long, at_s, total, {"Robbery": short})}, at_s)


def test_one_event_in_a_quiet_place_is_not_an_emergency_three_are() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d)
    events(d, CENTRE, 1, T0)
    assert d.step(T0) == []
    events(d, CENTRE, 2, T0 + 600)
    notices = d.step(T0 + 600)
    assert [n.kind for n in notices] == ["opened"]
    alert = notices[0].alert
    assert CENTRE in alert["cells"] or any(CENTRE in h3.grid_disk(c, 1) for c in alert["cells"])
    assert alert["observed"] == pytest.approx(3.0, rel=0.01)
    assert alert["p_value"] <= d.threshold()
    assert alert["pattern"] == "new"
    assert alert["top_categories"][0][0] == "Robbery"


def test_busy_place_needs_many_more_events() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d)
    # a busy block: 3 events a day for a year around the centre
    for cell in h3.grid_disk(CENTRE, 1):
        d.cells[cell] = CellCounts(T0, short=3 / 7 * 1.44, long=3 / 7 * 365 * 1.44, total=500)
    events(d, CENTRE, 3, T0)
    assert d.step(T0) == []


def test_lifecycle_open_escalate_hold_clear_no_reopen() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY, escalate_ratio=100.0))
    city(d)
    events(d, CENTRE, 3, T0)
    opened = d.step(T0)
    assert [n.kind for n in opened] == ["opened"]
    alert_id = opened[0].alert["id"]
    # a neighbour flares too: same alert, escalated (p fell 100-fold)
    neighbour = sorted(h3.grid_ring(CENTRE, 1))[0]
    events(d, neighbour, 3, T0 + 1800)
    escalated = d.step(T0 + 1800)
    assert [(n.kind, n.alert["id"]) for n in escalated] == [("escalated", alert_id)]
    # quiet ticks: still significant, no notice (no flapping)
    for hour in range(1, 6):
        assert d.step(T0 + 1800 + hour * 3600) == []
    # no new event for 12 h: cleared
    cleared = d.step(T0 + 1800 + 12 * 3600)
    assert [(n.kind, n.alert["id"]) for n in cleared] == [("cleared", alert_id)]
    assert cleared[0].alert["status"] == "cleared"
    # still elevated, but nothing new: it does not open again
    assert d.step(T0 + 13 * 3600) == []
    assert d.alerts == {}
    # one more event there soon after: not a new flare-up (escalation bar)
    events(d, CENTRE, 1, T0 + 14 * 3600)
    assert d.step(T0 + 14 * 3600) == []
    # a real new burst clears the bar and opens a new alert
    events(d, CENTRE, 5, T0 + 15 * 3600)
    again = d.step(T0 + 15 * 3600)
    assert [n.kind for n in again] == ["opened"] and again[0].alert["id"] != alert_id


def test_quiet_clears_are_remembered_across_restarts() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d)
    events(d, CENTRE, 3, T0)
    d.step(T0)
    assert [n.kind for n in d.step(T0 + 12 * 3600)] == ["cleared"]
    again = Detector(d.config)
    again.restore(d.state())
    assert again.quiet_cleared == d.quiet_cleared and again.quiet_cleared


def test_separate_flares_are_separate_alerts_and_merge_when_they_meet() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d)
    far = h3.latlng_to_cell(40.05, -75.05, 9)
    events(d, CENTRE, 3, T0)
    events(d, far, 3, T0)
    first = d.step(T0)
    assert sorted(n.kind for n in first) == ["opened", "opened"]
    # two flares four cells apart: two alerts, then a cell between joins them
    d2 = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d2)
    line = h3.grid_path_cells(CENTRE, h3.grid_disk(CENTRE, 4)[-1])
    a, b = line[0], line[4]
    assert h3.grid_distance(a, b) == 4
    events(d2, a, 3, T0)
    events(d2, b, 3, T0)
    assert sorted(n.kind for n in d2.step(T0)) == ["opened", "opened"]
    events(d2, line[2], 3, T0 + 600)
    kinds = sorted(n.kind for n in d2.step(T0 + 600))
    assert "merged" in kinds
    assert len(d2.alerts) == 1


def test_state_round_trip_keeps_alerts() -> None:
    d = Detector(config(long_s=365 * DAY, prior_s=30 * DAY))
    city(d)
    events(d, CENTRE, 3, T0)
    d.step(T0)
    again = Detector(d.config)
    again.restore(d.state())
    assert again.alerts.keys() == d.alerts.keys()
    assert again.next_id == d.next_id


def test_gamma_poisson_tail_is_monotone_between_whole_counts() -> None:
    values = [gamma_poisson_sf(x / 10, 2.5, 40.0, 3.0) for x in range(1, 80)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert gamma_poisson_sf(3, 2.5, 40.0, 3.0) < gamma_poisson_sf(2.5, 2.5, 40.0, 3.0)
    assert gamma_poisson_sf(2.5, 2.5, 40.0, 3.0) < gamma_poisson_sf(2, 2.5, 40.0, 3.0)


def test_alert_settings_follow_the_grid_and_horizons(tmp_path: Path) -> None:
    default = load_settings(environ={}).alerts
    assert (default.short, default.baseline, default.resolution) == ("day", "year", 9)
    force = tmp_path / "force.toml"
    force.write_text(
        '[horizons]\nshift = "8h"\nweek = "7d"\n[grid]\nresolutions = [10, 11]\n'
        'profile_horizon = "week"\n'
    )
    own = load_settings(force, environ={}).alerts
    assert (own.short, own.baseline, own.resolution, own.enabled) == ("shift", "week", 10, True)
    force.write_text('[horizons]\nweek = "7d"\n[grid]\nprofile_horizon = "week"\n')
    assert not load_settings(force, environ={}).alerts.enabled
    with pytest.raises(ConfigError, match=r"alerts\.short"):
        load_settings(environ={}, overrides={"alerts": {"short": "fortnight"}})
    with pytest.raises(ConfigError, match=r"alerts\.resolution"):
        load_settings(environ={}, overrides={"alerts": {"resolution": 7}})
