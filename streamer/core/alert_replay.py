"""The alert harness's replay (pure): the background as columns, the tick
grid, and the engine's detector fed tick by tick as the live alerter feeds
it. :mod:`streamer.core.alert_evaluation` runs the evaluation on top."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.core.cells import cell_hex, cells_of_many
from streamer.core.emerging import CellCounts, Detector, DetectorConfig

HOUR_S = 3600.0
DAY_S = 86400.0
_NEGLIGIBLE = 1e-9  # a category's decayed short count below this is dropped

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Progress = Callable[[str, int, int], None]


# events ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Events:
    """Events as parallel columns, sorted by time.

    ``cell`` is the H3 cell at the alert resolution, ``category`` an index
    into ``categories``, ``factor`` what one event counts (1, or the
    proactive-origin factor), ``cluster`` -1 for the background and the
    injected cluster's number otherwise.
    """

    t_s: FloatArray
    lat_deg: FloatArray
    lon_deg: FloatArray
    cell: U64
    category: IntArray
    factor: FloatArray
    cluster: IntArray
    categories: tuple[str, ...]

    @classmethod
    def build(
        cls,
        t_s: npt.ArrayLike,
        lat_deg: npt.ArrayLike,
        lon_deg: npt.ArrayLike,
        categories: Sequence[str] | npt.NDArray[np.object_],
        *,
        resolution: int,
        factor: npt.ArrayLike | None = None,
    ) -> Events:
        """Background events (any order) with their cells found and the
        categories factorised."""
        t = np.asarray(t_s, dtype=np.float64)
        lat = np.asarray(lat_deg, dtype=np.float64)
        lon = np.asarray(lon_deg, dtype=np.float64)
        names = np.asarray(categories, dtype=object)
        n = t.size
        weight = np.ones(n) if factor is None else np.asarray(factor, dtype=np.float64)
        if not (lat.shape == lon.shape == names.shape == weight.shape == (n,)):
            raise ValueError("every column of the events must have the same length")
        order = np.argsort(t, kind="stable")
        unique, codes = np.unique(names, return_inverse=True) if n else (np.array([]), np.array([]))
        cells = cells_of_many(lat[order], lon[order], [resolution])[:, 0]
        return cls(
            t_s=t[order],
            lat_deg=lat[order],
            lon_deg=lon[order],
            cell=cells,
            category=np.asarray(codes, dtype=np.int64).reshape(-1)[order],
            factor=weight[order],
            cluster=np.full(n, -1, dtype=np.int64),
            categories=tuple(str(c) for c in unique.tolist()),
        )

    def __len__(self) -> int:
        return int(self.t_s.size)

    def take(self, rows: npt.NDArray[np.bool_] | IntArray) -> Events:
        """The events at ``rows`` (a mask or sorted indices)."""
        return replace(
            self,
            t_s=self.t_s[rows],
            lat_deg=self.lat_deg[rows],
            lon_deg=self.lon_deg[rows],
            cell=self.cell[rows],
            category=self.category[rows],
            factor=self.factor[rows],
            cluster=self.cluster[rows],
        )

    def merge(self, other: Events) -> Events:
        """Both sets in one, sorted by time (ties: ``self`` first)."""
        if other.categories != self.categories:
            raise ValueError("events to merge must share their category list")
        t = np.concatenate([self.t_s, other.t_s])
        order = np.argsort(t, kind="stable")

        def cat(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.concatenate([a, b])[order]

        return replace(
            self,
            t_s=t[order],
            lat_deg=cat(self.lat_deg, other.lat_deg),
            lon_deg=cat(self.lon_deg, other.lon_deg),
            cell=cat(self.cell, other.cell),
            category=cat(self.category, other.category),
            factor=cat(self.factor, other.factor),
            cluster=cat(self.cluster, other.cluster),
        )


# ticks -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TickGrid:
    """Detection ticks at whole multiples of ``tick_s`` since the epoch. An
    event at ``t`` is seen at the first tick at or after ``t``.

    >>> grid = TickGrid(300.0)
    >>> grid.index(np.array([0.0, 1.0, 300.0, 301.0])).tolist()
    [0, 1, 1, 2]
    >>> grid.time(2)
    600.0
    """

    tick_s: float

    def index(self, t_s: FloatArray) -> IntArray:
        """The tick that first sees each time."""
        return np.ceil(np.asarray(t_s, dtype=np.float64) / self.tick_s).astype(np.int64)

    def index_of(self, t_s: float) -> int:
        return math.ceil(t_s / self.tick_s)

    def time(self, tick: int) -> float:
        return tick * self.tick_s


@dataclass(frozen=True, slots=True)
class Fired:
    """An alert notice that can detect a cluster: its tick and cells."""

    at_s: float
    kind: str  # "opened" or "escalated"
    cells: tuple[str, ...]


# the engine, replayed ------------------------------------------------------------
@dataclass(slots=True)
class _Cell:
    """A cell's exact decayed counts as of its last event."""

    at_s: float
    short: float = 0.0
    long: float = 0.0
    total: int = 0
    last_event_s: float | None = None
    categories: dict[str, float] = field(default_factory=dict)


class Replay:
    """The detector fed tick by tick from an event stream, as the live
    alerter feeds it from the store.

    Each cell holds its short- and long-horizon counts as of its last event
    and decays them on use (``sum 2^(-(t - t_i)/h)``), with its event total,
    newest event time and per-category short counts. At each tick the cells
    that received events (only those: the detector decays what it holds)
    pass their counts to :meth:`Detector.update`, the area-wide rates are
    refreshed every ``area_every_s`` of event time (first at the first tick),
    and :meth:`Detector.step` runs. Ticks with no new event, no open alert
    and no refresh due are skipped: ``step`` would do nothing at them.

    A replay can be copied (:func:`copy.deepcopy`) to branch several runs
    from one warm-up.
    """

    def __init__(
        self,
        config: DetectorConfig,
        grid: TickGrid,
        *,
        history_from_s: float,
        area_every_s: float = HOUR_S,
        start_tick: int | None = None,
    ) -> None:
        self.detector = Detector(config)
        self.detector.history_from_s = history_from_s
        self.grid = grid
        self.area_every_s = area_every_s
        self.next_tick = grid.index_of(history_from_s) if start_tick is None else start_tick
        self.next_area_s = -math.inf
        self.cells: dict[str, _Cell] = {}
        self._hex: dict[int, str] = {}

    def run(self, events: Events, until_tick: int, progress: Progress | None = None) -> list[Fired]:
        """Process ticks ``next_tick .. until_tick - 1`` with ``events``
        (each must fall in one of them); returns the opened and escalated
        notices."""
        ticks = self.grid.index(events.t_s)
        if ticks.size and (ticks[0] < self.next_tick or ticks[-1] >= until_tick):
            raise ValueError(
                f"events fall outside ticks {self.next_tick}..{until_tick - 1} of this run"
            )
        first = np.flatnonzero(np.r_[True, ticks[1:] != ticks[:-1]]) if ticks.size else ticks
        group_ticks = ticks[first].tolist()
        bounds = [*first.tolist(), len(events)]
        t_list = events.t_s.tolist()
        factor_list = events.factor.tolist()
        names = events.categories
        category_list = [names[c] for c in events.category.tolist()]
        hex_list = [self._cell_hex(c) for c in events.cell.tolist()]

        detector = self.detector
        grid = self.grid
        fired: list[Fired] = []
        start, j, g = self.next_tick, self.next_tick, 0
        n_groups = len(group_ticks)
        while j < until_tick:
            has_events = g < n_groups and group_ticks[g] == j
            at_s = grid.time(j)
            area_due = at_s >= self.next_area_s
            if not (has_events or area_due or detector.alerts):
                upcoming = min(until_tick, grid.index_of(self.next_area_s))
                if g < n_groups:
                    upcoming = min(upcoming, group_ticks[g])
                j = max(upcoming, j + 1)
                continue
            if has_events:
                touched: set[str] = set()
                for i in range(bounds[g], bounds[g + 1]):
                    cell = hex_list[i]
                    self._add(cell, t_list[i], factor_list[i], category_list[i])
                    touched.add(cell)
                detector.update({c: self._counts(c, at_s) for c in touched}, at_s)
                g += 1
            if area_due:
                detector.refresh_area(at_s)
                self.next_area_s = at_s + self.area_every_s
                if progress is not None:
                    progress("ticks", j - start, until_tick - start)
            for notice in detector.step(at_s):
                if notice.kind in ("opened", "escalated"):
                    fired.append(Fired(at_s, notice.kind, tuple(notice.alert["cells"])))
            j += 1
        self.next_tick = until_tick
        return fired

    def _cell_hex(self, cell: int) -> str:
        text = self._hex.get(cell)
        if text is None:
            text = self._hex[cell] = cell_hex(cell)
        return text

    def _add(self, cell: str, t_s: float, weight: float, category: str) -> None:
        c = self.cells.get(cell)
        if c is None:
            c = self.cells[cell] = _Cell(at_s=t_s)
        cfg = self.detector.config
        dt = t_s - c.at_s
        if dt:
            short_factor = 2.0 ** (-dt / cfg.short_s)
            c.short *= short_factor
            c.long *= 2.0 ** (-dt / cfg.long_s)
            cats = c.categories
            for name in list(cats):
                value = cats[name] * short_factor
                if value < _NEGLIGIBLE:
                    del cats[name]
                else:
                    cats[name] = value
            c.at_s = t_s
        c.short += weight
        c.long += weight
        c.categories[category] = c.categories.get(category, 0.0) + weight
        c.total += 1
        if c.last_event_s is None or t_s > c.last_event_s:
            c.last_event_s = t_s

    def _counts(self, cell: str, at_s: float) -> CellCounts:
        c = self.cells[cell]
        cfg = self.detector.config
        dt = at_s - c.at_s
        short_factor = 2.0 ** (-dt / cfg.short_s)
        return CellCounts(
            at_s=at_s,
            short=c.short * short_factor,
            long=c.long * 2.0 ** (-dt / cfg.long_s),
            last_event_s=c.last_event_s,
            total=c.total,
            categories={name: v * short_factor for name, v in c.categories.items()},
        )
