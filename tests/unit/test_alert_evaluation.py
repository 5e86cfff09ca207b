"""The alert evaluation harness, on small synthetic backgrounds."""

from __future__ import annotations

import copy
import math

import h3
import numpy as np
import pytest

from streamer.core.alert_evaluation import (
    DAY_S,
    HOUR_S,
    Cluster,
    EngineTask,
    Evaluation,
    Events,
    Fired,
    Plan,
    Replay,
    TickGrid,
    count_rises,
    detect,
    distance_m,
    draw_clusters,
    evaluate,
    naive_fired,
    naive_rates,
    outcome,
    run_engine,
    tune_threshold,
)
from streamer.core.emerging import DetectorConfig

T0 = 1_735_689_600.0  # 2025-01-01T00:00Z, a whole number of ticks
CITY_HALL = (39.9526, -75.1652)
CONFIG = DetectorConfig(short_s=DAY_S, long_s=365 * DAY_S, min_events=3.0, resolution=9)


def uniform_background(
    days: float, per_day: float, seed: int, *, half_lat: float = 0.03, half_lon: float = 0.04
) -> Events:
    """A homogeneous Poisson process over a box around City Hall."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(days * per_day)
    return Events.build(
        T0 + rng.random(n) * days * DAY_S,
        CITY_HALL[0] + (rng.random(n) * 2 - 1) * half_lat,
        CITY_HALL[1] + (rng.random(n) * 2 - 1) * half_lon,
        rng.choice(["Thefts", "Vandalism", "Other Assaults"], n),
        resolution=9,
    )


# clusters -------------------------------------------------------------------------
def test_cluster_events_stay_within_radius_and_duration() -> None:
    background = uniform_background(30, 50, seed=2)
    radius_m, duration_s = 250.0, 6 * HOUR_S
    from_s, to_s = T0 + 10 * DAY_S, T0 + 30 * DAY_S
    clusters, injected = draw_clusters(
        background,
        size=8,
        count=12,
        radius_m=radius_m,
        duration_s=duration_s,
        from_s=from_s,
        to_s=to_s,
        resolution=9,
        rng=np.random.default_rng(5),
    )
    assert len(clusters) == 12 and len(injected) == 12 * 8
    assert np.all(np.diff(injected.t_s) >= 0)
    assert injected.categories == background.categories
    for cluster in clusters:
        rows = np.flatnonzero(injected.cluster == cluster.number)
        assert rows.size == 8
        assert from_s <= cluster.start_s and cluster.end_s == cluster.start_s + duration_s
        assert cluster.end_s <= to_s
        times = injected.t_s[rows]
        assert np.all((times >= cluster.start_s) & (times <= cluster.end_s))
        assert tuple(times.tolist()) == cluster.t_s
        for lat, lon, cell in zip(
            injected.lat_deg[rows], injected.lon_deg[rows], injected.cell[rows], strict=True
        ):
            assert distance_m(cluster.lat_deg, cluster.lon_deg, lat, lon) <= radius_m * (1 + 1e-9)
            assert h3.latlng_to_cell(lat, lon, 9) == format(int(cell), "x")
            assert format(int(cell), "x") in cluster.cells
        # centred on a real background event of the span
        at_centre = (background.lat_deg == cluster.lat_deg) & (
            background.lon_deg == cluster.lon_deg
        )
        assert np.any(at_centre & (background.t_s >= from_s) & (background.t_s < to_s))


def test_clusters_are_separated_in_space_or_time() -> None:
    background = uniform_background(40, 50, seed=3, half_lat=0.01, half_lon=0.012)
    clusters, _ = draw_clusters(
        background,
        size=3,
        count=10,
        radius_m=250.0,
        duration_s=6 * HOUR_S,
        from_s=T0,
        to_s=T0 + 40 * DAY_S,
        resolution=9,
        rng=np.random.default_rng(1),
    )
    for a in clusters:
        for b in clusters:
            if a.number >= b.number:
                continue
            apart_in_time = a.start_s >= b.end_s + 2 * DAY_S or b.start_s >= a.end_s + 2 * DAY_S
            far = distance_m(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg) >= 2000.0
            assert apart_in_time or far


def test_clusters_depend_only_on_the_seed() -> None:
    background = uniform_background(20, 50, seed=4)
    kwargs = {
        "size": 5,
        "count": 4,
        "radius_m": 250.0,
        "duration_s": 6 * HOUR_S,
        "from_s": T0,
        "to_s": T0 + 20 * DAY_S,
        "resolution": 9,
    }
    a, ev_a = draw_clusters(background, rng=np.random.default_rng(9), **kwargs)  # type: ignore[arg-type]
    b, ev_b = draw_clusters(background, rng=np.random.default_rng(9), **kwargs)  # type: ignore[arg-type]
    assert a == b and np.array_equal(ev_a.lat_deg, ev_b.lat_deg)


def test_an_impossible_packing_is_refused() -> None:
    background = uniform_background(3, 50, seed=4, half_lat=0.002, half_lon=0.002)
    with pytest.raises(ValueError, match="could not place"):
        draw_clusters(
            background,
            size=3,
            count=5,
            radius_m=100.0,
            duration_s=6 * HOUR_S,
            from_s=T0,
            to_s=T0 + 3 * DAY_S,
            resolution=9,
            rng=np.random.default_rng(0),
            max_draws=500,
        )


# detection by hand ----------------------------------------------------------------
def _cluster(start_s: float, times: list[float], cell: str) -> Cluster:
    lat, lon = h3.cell_to_latlng(cell)
    return Cluster(0, start_s, start_s + 6 * HOUR_S, lat, lon, tuple(times), frozenset({cell}))


def test_detection_delay_in_minutes_and_events() -> None:
    cell = h3.latlng_to_cell(*CITY_HALL, 9)
    start = T0 + 1000.0
    cluster = _cluster(start, [start + 60, start + 600, start + 1200, start + 4000], cell)
    neighbour = sorted(h3.grid_ring(cell, 1))[0]
    two_away = sorted(h3.grid_ring(cell, 2))[0]
    fired = [
        Fired(start - 300, "opened", (cell,)),  # before the cluster began
        Fired(start + 900, "opened", (two_away,)),  # too far
        Fired(start + 1500, "escalated", (neighbour,)),  # the first that counts
        Fired(start + 2000, "opened", (cell,)),
    ]
    (found,) = detect([cluster], fired)
    assert found.at_s == start + 1500
    assert found.delay_s == 1500
    assert found.delay_events == 3  # events at +60, +600, +1200
    result = outcome([found])
    assert result.detected == 1 and result.median_delay_min == 25.0
    assert result.median_delay_events == 3.0


def test_detection_window_ends_a_day_after_the_cluster() -> None:
    cell = h3.latlng_to_cell(*CITY_HALL, 9)
    cluster = _cluster(T0, [T0 + 10.0, T0 + 20.0, T0 + 30.0], cell)
    late = Fired(cluster.end_s + DAY_S + 1, "opened", (cell,))
    just = Fired(cluster.end_s + DAY_S, "opened", (cell,))
    assert detect([cluster], [late])[0].at_s is None
    assert detect([cluster], [late, just])[0].delay_events == 3
    none = outcome(detect([cluster], []))
    assert none.detected == 0 and none.median_delay_min is None


# the naive rule -------------------------------------------------------------------
def test_count_rises_against_brute_force() -> None:
    rng = np.random.default_rng(11)
    cells = [h3.latlng_to_cell(39.95 + 0.01 * i, -75.16, 9) for i in range(3)]
    n = 300
    times = T0 + np.floor(rng.random(n) * 2 * DAY_S)  # whole seconds: no rounding ties
    which = rng.integers(0, 3, n)
    points = [h3.cell_to_latlng(cells[i]) for i in which.tolist()]
    events = Events.build(
        times, [p[0] for p in points], [p[1] for p in points], ["x"] * n, resolution=9
    )
    grid, window = TickGrid(300.0), 4 * HOUR_S
    rises = count_rises(events, grid, window)
    got = set(
        zip(
            rises.tick.tolist(),
            [format(c, "x") for c in rises.cell.tolist()],
            rises.before.tolist(),
            rises.after.tolist(),
            strict=True,
        )
    )
    expected = set()
    first, last = grid.index_of(T0), grid.index_of(T0 + 2 * DAY_S + window) + 1
    for cell in cells:
        mine = events.t_s[np.array([format(int(c), "x") == cell for c in events.cell])]
        previous = 0
        for j in range(first, last):
            t = grid.time(j)
            now = int(np.count_nonzero((mine <= t) & (mine > t - window)))
            if now > previous:
                expected.add((j, cell, previous, now))
            previous = now
    assert got == expected
    # openings by threshold
    rates = naive_rates(rises, first, last, 2.0, range(1, 6))
    for c in range(1, 6):
        opened = sum(1 for _, _, b, a in expected if b < c <= a)
        assert rates[c] == opened / 2.0
        assert len(naive_fired(rises, c, grid)) == opened


def test_tuning_picks_the_smallest_threshold_within_the_engine_rate() -> None:
    rates = {2: 30.0, 3: 8.0, 4: 2.5, 5: 1.2, 6: 1.2, 7: 0.4, 8: 0.0}
    assert tune_threshold(rates, 1.2) == 5
    assert tune_threshold(rates, 1.19) == 7
    assert tune_threshold(rates, 100.0) == 2
    assert tune_threshold(rates, 0.0) == 8
    assert tune_threshold({2: 5.0, 3: 4.0}, 1.0) == 3  # none fits: the strictest tried


# the engine, replayed -----------------------------------------------------------------
def test_replay_passes_exact_decayed_counts() -> None:
    events = uniform_background(5, 200, seed=6, half_lat=0.004, half_lon=0.005)
    grid = TickGrid(300.0)
    replay = Replay(CONFIG, grid, history_from_s=float(events.t_s[0]))
    replay.run(events, grid.index_of(float(events.t_s[-1])) + 1)
    held = replay.detector.cells
    assert len(held) == len(set(events.cell.tolist()))
    ticks = grid.index(events.t_s)
    for cell, counts in held.items():
        mine = np.array([format(int(c), "x") == cell for c in events.cell])
        seen = mine & (ticks <= grid.index_of(counts.at_s))
        age = counts.at_s - events.t_s[seen]
        assert counts.at_s % 300.0 == 0
        assert counts.total == int(mine.sum())
        assert counts.short == pytest.approx(np.sum(2.0 ** (-age / DAY_S)), rel=1e-12)
        assert counts.long == pytest.approx(np.sum(2.0 ** (-age / (365 * DAY_S))), rel=1e-12)
        assert counts.last_event_s == float(events.t_s[seen].max())
        for code, name in enumerate(events.categories):
            of = seen & (events.category == code)
            want = float(np.sum(2.0 ** (-(counts.at_s - events.t_s[of]) / DAY_S)))
            assert counts.categories.get(name, 0.0) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_a_replay_branched_after_warm_up_equals_one_run() -> None:
    events = uniform_background(12, 120, seed=7, half_lat=0.01, half_lon=0.012)
    grid = TickGrid(300.0)
    split = grid.index_of(T0 + 8 * DAY_S)
    end = grid.index_of(T0 + 12 * DAY_S) + 1
    ticks = grid.index(events.t_s)
    whole = Replay(CONFIG, grid, history_from_s=float(events.t_s[0]))
    all_fired = whole.run(events, end)
    warm = Replay(CONFIG, grid, history_from_s=float(events.t_s[0]))
    first = warm.run(events.take(ticks < split), split)
    branch = copy.deepcopy(warm)
    rest = branch.run(events.take(ticks >= split), end)
    assert first + rest == all_fired
    assert warm.next_tick == split  # the warm-up itself is untouched by the branch
    with pytest.raises(ValueError, match="outside ticks"):
        branch.run(events, end + 10)


# the whole evaluation ---------------------------------------------------------------
@pytest.fixture(scope="module")
def small_evaluation() -> tuple[Events, Plan, Evaluation]:
    background = uniform_background(24, 80, seed=8)
    plan = Plan(
        warmup_from_s=T0,
        from_s=T0 + 14 * DAY_S,
        to_s=T0 + 24 * DAY_S,
        sizes=(12,),
        radius_m=100.0,
        duration_s=3 * HOUR_S,
        clusters=3,
        seed=3,
    )
    return background, plan, evaluate(background, CONFIG, plan)


def test_a_large_cluster_in_a_uniform_background_is_detected(
    small_evaluation: tuple[Events, Plan, Evaluation],
) -> None:
    background, plan, result = small_evaluation
    report = result.as_json()
    (size,) = report["sizes"]
    engine = size["engine"]
    assert size["k"] == 12 and engine["clusters"] == 3
    assert engine["detected"] == 3 and engine["detection_rate"] == 1.0
    # the engine never alerts on fewer than min_events events (the background is thin)
    assert CONFIG.min_events <= engine["median_delay_events"] <= 12
    assert 0 < engine["median_delay_min"] <= plan.duration_s / 60
    assert engine["chance_detection_rate"] == 0.0
    # a homogeneous Poisson background: about the configured false alerts, not many more
    false = report["false_alerts_per_day"]
    assert false["engine"] <= 3 * CONFIG.false_alerts_per_day
    c = false["naive_threshold"]
    by_c = false["naive_by_threshold"]
    assert by_c[str(c)] <= false["engine"] or c == max(plan.naive_thresholds)
    assert c == min(plan.naive_thresholds) or by_c[str(c - 1)] > false["engine"]
    assert report["parameters"]["background_events"] == int(
        np.count_nonzero(background.t_s >= plan.from_s)
    )


def test_delays_match_the_tick_the_alert_came_at(
    small_evaluation: tuple[Events, Plan, Evaluation],
) -> None:
    background, plan, _ = small_evaluation
    grid = TickGrid(plan.tick_s)
    first_tick = grid.index_of(plan.from_s)
    in_span = grid.index(background.t_s) >= first_tick
    warm = Replay(CONFIG, grid, history_from_s=float(background.t_s[0]))
    warm.run(background.take(~in_span), first_tick)
    run = run_engine(EngineTask(background.take(in_span), plan, warm, 9, 12))
    for cluster, found in zip(run.clusters, detect(run.clusters, run.fired), strict=True):
        assert found.at_s is not None and found.delay_s is not None
        assert found.at_s % plan.tick_s == 0
        assert found.delay_s == found.at_s - cluster.start_s
        n = found.delay_events
        assert n is not None and n >= 1
        # the n-th event came before the alert, and the alert came at its tick or later
        assert cluster.t_s[n - 1] <= found.at_s
        assert n == len(cluster.t_s) or cluster.t_s[n] > found.at_s
        assert math.ceil(cluster.t_s[n - 1] / plan.tick_s) * plan.tick_s <= found.at_s
