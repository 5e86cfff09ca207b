"""Hit rate, PAI, PEI and the roll-forward (streamer.core.accuracy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.core.accuracy import (
    DAY_S,
    Blend,
    Decayed,
    DecayedSum,
    History,
    PreviousPeriod,
    Window,
    backtest,
    cells_for_coverage,
    grid_methods,
    measure,
    neighbour_index,
    smooth,
)
from streamer.core.cells import cell_of, neighbours_of_many, ring


def test_hand_computed_measures() -> None:
    # 10 cells, 20 events: cell 0 holds 8, cell 1 holds 5, cell 2 holds 4, cell 9 holds 3
    counts = np.zeros(10)
    counts[[0, 1, 2, 9]] = [8, 5, 4, 3]
    scores = np.zeros(10)
    scores[[9, 1, 4]] = [3.0, 2.0, 1.0]  # ranks 9, 1, 4, then 0, 2, 3 ... by id
    m = measure(scores[None, :], counts, np.array([1, 2, 3, 4]))
    # top 1 = {9}: n = 3; n* = 8
    # top 2 = {9, 1}: n = 8; n* = 13
    # top 3 = {9, 1, 4}: n = 8; n* = 17
    # top 4 = {9, 1, 4, 0}: n = 16; n* = 20
    assert m.captured.tolist() == [[3, 8, 8, 16]]
    assert m.best.tolist() == [[8, 13, 17, 20]]
    assert m.hit_rate[0] == pytest.approx([3 / 20, 8 / 20, 8 / 20, 16 / 20])
    # PAI = (n/N) / (a/A) with A = 10
    assert m.pai[0] == pytest.approx([1.5, 2.0, 8 / 20 / 0.3, 2.0])
    assert m.pei[0] == pytest.approx([3 / 8, 8 / 13, 8 / 17, 16 / 20])


def test_ties_are_broken_by_cell_index() -> None:
    counts = np.array([0.0, 1.0, 0.0, 1.0])
    m = measure(np.zeros((1, 4)), counts, np.array([1, 2]))
    # all tied: cells 0 then 1 are flagged
    assert m.captured.tolist() == [[0.0, 1.0]]


def test_a_period_without_events_is_refused() -> None:
    with pytest.raises(ValueError):
        measure(np.zeros((1, 3)), np.zeros(3), np.array([1]))


@pytest.mark.parametrize(
    ("share", "cells", "expected"),
    [
        (0.01, 100, 1),
        (0.01, 101, 2),
        (0.01, 3540, 36),
        (0.02, 3540, 71),
        (0.05, 3540, 177),
        (0.10, 3540, 354),
        (0.07, 100, 7),  # 0.07 * 100 = 7.000000000000001: not 8
        (0.1, 30, 3),  # 0.1 * 30 = 3.0000000000000004: not 4
        (0.01, 5, 1),  # at least one cell
        (1.0, 9, 9),
    ],
)
def test_coverage_to_cells(share: float, cells: int, expected: int) -> None:
    assert cells_for_coverage(share, cells) == expected


def test_coverage_out_of_range() -> None:
    with pytest.raises(ValueError):
        cells_for_coverage(0.0, 10)
    with pytest.raises(ValueError):
        cells_for_coverage(1.5, 10)


def _random_history(rng: np.random.Generator, cells: int, days: int, per_day: float) -> History:
    # a skewed intensity: a few cells much busier, as crime is
    intensity = rng.pareto(1.5, cells) + 0.05
    intensity /= intensity.sum()
    n = rng.poisson(per_day * days)
    t = rng.uniform(0, days * DAY_S, n)
    cell = rng.choice(cells, n, p=intensity)
    weight = rng.choice([1.0, 5.0, 100.0], n)
    return History.build(t, cell, weight, cells)


def test_an_oracle_ranking_has_pei_one() -> None:
    rng = np.random.default_rng(3)
    h = _random_history(rng, 200, 30, 40)
    sizes = np.array([2, 4, 10, 20])
    for day in range(30):
        counts = h.counts(day * DAY_S, (day + 1) * DAY_S)
        if counts.sum() == 0:
            continue
        m = measure(counts[None, :], counts, sizes)
        assert np.allclose(m.pei, 1.0)
        assert np.allclose(m.captured, m.best)


def test_a_random_ranking_has_pai_near_one() -> None:
    # E[n] = N * a/A for a uniformly random choice of a cells, so E[PAI] = 1 in
    # every period. 2000 periods of 50 events over 100 cells: at a = 5 the
    # per-period PAI has a standard deviation of about 1.5 here (skewed
    # intensities), so the mean's is about 1.5/sqrt(2000) = 0.034; 0.15 is
    # over four of those, and a ranking that ignored randomness (the same
    # cells every time, e.g. the busiest) would be far off.
    rng = np.random.default_rng(11)
    cells, periods = 100, 2000
    intensity = rng.pareto(1.5, cells) + 0.05
    intensity /= intensity.sum()
    sizes = np.array([5, 10, 20])
    pai = np.empty((periods, sizes.size))
    for k in range(periods):
        counts = np.bincount(rng.choice(cells, 50, p=intensity), minlength=cells).astype(float)
        pai[k] = measure(rng.random((1, cells)), counts, sizes).pai[0]
    assert np.all(np.abs(pai.mean(axis=0) - 1.0) < 0.15)
    # and the measure can tell: ranking by the true intensity is well above 1
    oracle = np.mean(
        [
            measure(
                intensity[None, :],
                np.bincount(rng.choice(cells, 50, p=intensity), minlength=cells).astype(float),
                sizes,
            ).pai[0, 0]
            for _ in range(200)
        ]
    )
    assert oracle > 3


@pytest.mark.parametrize("weighted", [True, False])
def test_incremental_decay_equals_a_direct_sum(weighted: bool) -> None:
    rng = np.random.default_rng(5)
    h = _random_history(rng, 30, 60, 20)
    half_life_s = 7 * DAY_S
    d = DecayedSum(h, half_life_s, weighted=weighted)
    # uneven steps, including one step with no event and a repeated time
    times = [10 * DAY_S, 10.5 * DAY_S, 10.5 * DAY_S, 23 * DAY_S, 59.9 * DAY_S, 75 * DAY_S]
    for t in times:
        got = d.at(t).copy()
        before = h.t_s < t
        w = h.weight[before] if weighted else np.ones(int(before.sum()))
        direct = np.zeros(h.cells)
        for cell, ti, wi in zip(h.cell[before], h.t_s[before], w, strict=True):
            direct[cell] += wi * 2.0 ** (-(t - ti) / half_life_s)
        assert got == pytest.approx(direct, rel=1e-12, abs=1e-12)


def test_decay_refuses_to_go_back() -> None:
    h = History.build([0.0], [0], [1.0], 1)
    d = DecayedSum(h, DAY_S)
    d.at(5.0)
    with pytest.raises(ValueError):
        d.at(4.0)


def test_backtest_by_hand() -> None:
    # 4 cells, daily periods 0..3. Day 0: two events in cell 2 (weights 1),
    # one in cell 1 (weight 10). Day 1: cell 2 twice, cell 0 once.
    # Day 2: nothing (skipped). Day 3: cell 1 once.
    t = [0.1, 0.2, 0.3, 1.1, 1.2, 1.3, 3.5]
    cell = [2, 2, 1, 2, 2, 0, 1]
    weight = [1.0, 1.0, 10.0, 1.0, 1.0, 1.0, 1.0]
    h = History.build(np.array(t) * DAY_S, cell, weight, 4)
    edges = np.arange(1, 5) * DAY_S  # periods day 1, day 2, day 3
    result = backtest(
        h,
        edges,
        [
            Decayed("harm 1d", DAY_S),
            Window("count 28d", 28 * DAY_S),
            PreviousPeriod("previous"),
        ],
        coverages=[0.25],
    )
    assert result.sizes == (1,)
    assert result.skipped == 1
    assert result.events.tolist() == [3, 1]
    # day 1: harm flags cell 1 (weight 10): captures 0 of 3; counts flag cell 2: 2 of 3
    # day 3: harm at t=3d: cell 1 = 10*2^-2.7, cell 2 = 2^-2.8+2^-2.9+2^-1.9+2^-1.8
    #   (about 1.54 vs 0.83): cell 1 again, captures 1 of 1;
    #   counts: cell 2 (4) captures 0; previous day (day 2, empty): all tied -> cell 0: 0
    assert result.captured[:, :, 0].tolist() == [[0, 1], [2, 0], [2, 0]]
    assert np.allclose(result.pai[:, :, 0], [[0, 4], [8 / 3, 0], [8 / 3, 0]])
    means = result.means()
    assert means["count 28d"][0.25]["pai"] == pytest.approx(4 / 3)
    assert means["harm 1d"][0.25]["pei"] == pytest.approx(0.5)


def test_backtest_blend_of_one_half_life_ranks_like_the_decayed_sum() -> None:
    rng = np.random.default_rng(8)
    h = _random_history(rng, 50, 40, 30)
    edges = np.arange(20, 41) * DAY_S
    result = backtest(
        h,
        edges,
        [Decayed("d", 7 * DAY_S), Blend("b", 7 * DAY_S, 7 * DAY_S, 1.0, 0.0, True)],
    )
    assert np.array_equal(result.captured[0], result.captured[1])


def test_grid_is_small_and_named_uniquely() -> None:
    grid = grid_methods([h * DAY_S for h in (3, 7, 14, 28, 90, 365)])
    # (6 alone + 15 pairs x 3 shares) x 2 smoothings x 2 weightings
    assert len(grid) == 204
    assert len({m.name for m in grid}) == len(grid)


def test_smoothing_uses_the_h3_ring() -> None:
    centre = cell_of(39.9524, -75.1636, 9)
    cells = np.array(sorted(ring(centre, 1)), dtype=np.uint64)
    nbr = neighbour_index(cells)
    assert nbr.shape == (7, 6)
    i = int(np.searchsorted(cells, np.uint64(centre)))
    # the centre's neighbours are the six others, all inside
    assert sorted(nbr[i].tolist()) == [j for j in range(7) if j != i]
    # an outer cell has the centre and two others inside, three outside (index 7)
    j = (i + 1) % 7
    assert int((nbr[j] == 7).sum()) == 3
    scores = np.zeros(7)
    scores[i] = 6.0
    smoothed = smooth(scores, nbr, 0.5)
    assert smoothed[i] == 6.0
    assert np.allclose(np.delete(smoothed, i), 0.5)
    assert neighbours_of_many(cells[:1]).shape == (1, 6)


def test_decay_of_far_history_underflows_to_zero_not_nan() -> None:
    h = History.build([0.0, 1.0], [0, 0], [1.0, 1.0], 1)
    d = DecayedSum(h, 60.0)
    value = d.at(3650 * DAY_S)
    assert value.tolist() == [0.0]
    assert not math.isnan(float(d.at(3651 * DAY_S)[0]))
