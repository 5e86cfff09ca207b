"""The naive rule the alerts are compared with (pure): a cell alerts when
its count of events in a trailing window reaches a threshold, tuned on the
background to the engine's false alerts per day."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.core.alert_replay import DAY_S, U64, Events, Fired, IntArray, TickGrid
from streamer.core.cells import cell_hex


@dataclass(frozen=True, slots=True)
class Rises:
    """Every tick at which a cell's trailing-window count rose: from
    ``before`` (its count at the previous tick) to ``after``. The rule with
    threshold ``c`` opens an alert where ``before < c <= after``."""

    tick: IntArray
    cell: U64
    before: IntArray
    after: IntArray

    def opening(self, threshold: int) -> npt.NDArray[np.bool_]:
        mask: npt.NDArray[np.bool_] = (self.before < threshold) & (self.after >= threshold)
        return mask


def count_rises(events: Events, grid: TickGrid, window_s: float = DAY_S) -> Rises:
    """Per cell, the count of events in ``(t - window, t]`` at each tick
    ``t``, where it rises (vectorised: an event enters at the first tick at
    or after it and leaves at the first tick at or after it + window).

    At tick 3 one event leaves as another enters: no rise.

    >>> ev = Events.build([0.0, 100.0, 700.0, 1000.0], [39.95] * 4, [-75.16] * 4,
    ...                   ["a"] * 4, resolution=9)
    >>> r = count_rises(ev, TickGrid(300.0), window_s=600.0)
    >>> list(zip(r.tick.tolist(), r.before.tolist(), r.after.tolist()))
    [(0, 0, 1), (1, 1, 2), (4, 1, 2)]
    """
    n = len(events)
    ticks = np.concatenate([grid.index(events.t_s), grid.index(events.t_s + window_s)])
    cells = np.concatenate([events.cell, events.cell])
    delta = np.concatenate([np.ones(n, dtype=np.int64), -np.ones(n, dtype=np.int64)])
    order = np.lexsort((ticks, cells))
    ticks, cells, delta = ticks[order], cells[order], delta[order]
    if ticks.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Rises(empty, np.zeros(0, dtype=np.uint64), empty, empty)
    starts = np.flatnonzero(np.r_[True, (cells[1:] != cells[:-1]) | (ticks[1:] != ticks[:-1])])
    net = np.add.reduceat(delta, starts)
    # each cell's changes sum to zero, so the running sum restarts at 0 per cell
    after = np.cumsum(net)
    before = after - net
    rose = net > 0
    return Rises(ticks[starts][rose], cells[starts][rose], before[rose], after[rose])


def naive_rates(
    rises: Rises, first_tick: int, end_tick: int, days: float, thresholds: Iterable[int]
) -> dict[int, float]:
    """Alerts opened per day by each threshold, at ticks in
    ``[first_tick, end_tick)``."""
    inside = (rises.tick >= first_tick) & (rises.tick < end_tick)
    before, after = rises.before[inside], rises.after[inside]
    return {c: float(np.count_nonzero((before < c) & (after >= c))) / days for c in thresholds}


def tune_threshold(rates: dict[int, float], budget_per_day: float) -> int:
    """The smallest threshold whose false alerts per day do not exceed the
    budget (the largest tried when none does).

    >>> tune_threshold({2: 9.0, 3: 1.5, 4: 0.9, 5: 0.2}, 1.0)
    4
    >>> tune_threshold({2: 9.0, 3: 5.0}, 1.0)
    3
    """
    fitting = [c for c, rate in rates.items() if rate <= budget_per_day]
    return min(fitting) if fitting else max(rates)


def naive_fired(rises: Rises, threshold: int, grid: TickGrid) -> list[Fired]:
    """The naive rule's openings at ``threshold``, in time order."""
    rows = np.flatnonzero(rises.opening(threshold))
    rows = rows[np.argsort(rises.tick[rows], kind="stable")]
    return [
        Fired(grid.time(int(j)), "opened", (cell_hex(int(c)),))
        for j, c in zip(rises.tick[rows].tolist(), rises.cell[rows].tolist(), strict=True)
    ]
