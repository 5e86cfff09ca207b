"""Evaluating the alerts: synthetic clusters in a real background (pure).

A *cluster* of size ``k`` is ``k`` events uniformly spread over a disc of
radius ``r`` metres around a real event's place and at uniformly random
times within ``T`` hours. Clusters are injected into the real background
stream, and the background (with them, or alone) is replayed through the
engine's own detector (:class:`streamer.core.emerging.Detector`) tick by
tick, exactly as the live alerter would see it: at each tick the cells that
received events pass their exact decayed counts, then the detector steps.

A cluster is *detected* by the first alert notice (opened or escalated) at a
tick in ``[start, end + 24 h]`` whose cells, or their ring-1 neighbours,
hold one of the cluster's events. Its delay is counted in minutes from the
cluster's start and in cluster events that had happened by then.

The comparison is a naive rule: a cell alerts when its count of events in
the trailing 24 hours reaches ``c`` (having been below ``c`` at the previous
tick). ``c`` is tuned on the background alone: the smallest whose false
alerts per day do not exceed the engine's.

Everything here is deterministic given the random generator's seed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.core.cells import cell_hex, cells_of_many, neighbours_hex
from streamer.core.emerging import CellCounts, Detector, DetectorConfig

HOUR_S = 3600.0
DAY_S = 86400.0
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
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


# the naive rule -------------------------------------------------------------------
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


# clusters -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cluster:
    """One injected cluster: where, when, and the cells of its events."""

    number: int
    start_s: float
    end_s: float  # start + duration
    lat_deg: float  # centre
    lon_deg: float
    t_s: tuple[float, ...]  # its events' times, sorted
    cells: frozenset[str]  # the cells its events fell in


def offsets_in_disc(
    lat_deg: float, lon_deg: float, radius_m: float, n: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """``n`` points uniformly distributed over the disc of ``radius_m``
    around a point (great-circle distance; the destination-point formula)."""
    distance = radius_m * np.sqrt(rng.random(n)) / EARTH_RADIUS_M  # radians
    bearing = 2.0 * np.pi * rng.random(n)
    lat1, lon1 = math.radians(lat_deg), math.radians(lon_deg)
    lat2 = np.arcsin(
        math.sin(lat1) * np.cos(distance) + math.cos(lat1) * np.sin(distance) * np.cos(bearing)
    )
    lon2 = lon1 + np.arctan2(
        np.sin(bearing) * np.sin(distance) * math.cos(lat1),
        np.cos(distance) - math.sin(lat1) * np.sin(lat2),
    )
    return np.degrees(lat2), np.degrees(lon2)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine).

    >>> round(distance_m(39.95, -75.16, 39.96, -75.16))
    1112
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def draw_clusters(
    background: Events,
    *,
    size: int,
    count: int,
    radius_m: float,
    duration_s: float,
    from_s: float,
    to_s: float,
    resolution: int,
    rng: np.random.Generator,
    separation_m: float = 2000.0,
    separation_s: float = 2 * DAY_S,
    max_draws: int = 10_000,
) -> tuple[list[Cluster], Events]:
    """``count`` clusters of ``size`` events in ``[from_s, to_s)`` and their
    events (``cluster`` = the cluster's number, counting 1 each).

    Each centre is a random background event of the span; each start is
    uniform in ``[from_s, to_s - duration_s]``; its events are uniform over
    the disc of ``radius_m`` and at sorted uniform times within
    ``duration_s`` of the start; categories are drawn from the span's
    background events. A cluster closer than ``separation_m`` to another
    whose time (extended by ``separation_s`` after its end) overlaps is
    drawn again, so one alert can never detect two clusters.
    """
    if size < 1 or count < 1:
        raise ValueError("clusters need a size and a count of at least 1")
    if to_s - from_s < duration_s:
        raise ValueError("the evaluation span is shorter than one cluster")
    pool = np.flatnonzero((background.t_s >= from_s) & (background.t_s < to_s))
    if pool.size == 0:
        raise ValueError("no background event in the evaluation span to centre clusters on")
    clusters: list[Cluster] = []
    columns: list[tuple[FloatArray, FloatArray, FloatArray, IntArray]] = []
    draws = 0
    while len(clusters) < count:
        draws += 1
        if draws > max_draws:
            raise ValueError(
                f"could not place {count} separated clusters in the span after "
                f"{max_draws} draws; use fewer clusters or a longer span"
            )
        centre = int(pool[rng.integers(pool.size)])
        lat0, lon0 = float(background.lat_deg[centre]), float(background.lon_deg[centre])
        start = float(from_s + rng.random() * (to_s - duration_s - from_s))
        end = start + duration_s
        if any(
            start < other.end_s + separation_s
            and other.start_s < end + separation_s
            and distance_m(lat0, lon0, other.lat_deg, other.lon_deg) < separation_m
            for other in clusters
        ):
            continue
        lat, lon = offsets_in_disc(lat0, lon0, radius_m, size, rng)
        t = np.sort(start + rng.random(size) * duration_s)
        category = background.category[pool[rng.integers(pool.size, size=size)]]
        cells = cells_of_many(lat, lon, [resolution])[:, 0]
        clusters.append(
            Cluster(
                number=len(clusters),
                start_s=start,
                end_s=end,
                lat_deg=lat0,
                lon_deg=lon0,
                t_s=tuple(t.tolist()),
                cells=frozenset(cell_hex(int(c)) for c in cells.tolist()),
            )
        )
        columns.append((t, lat, lon, category))
    t_all = np.concatenate([c[0] for c in columns])
    lat_all = np.concatenate([c[1] for c in columns])
    lon_all = np.concatenate([c[2] for c in columns])
    order = np.argsort(t_all, kind="stable")
    numbers = np.repeat(np.arange(count, dtype=np.int64), size)
    injected = Events(
        t_s=t_all[order],
        lat_deg=lat_all[order],
        lon_deg=lon_all[order],
        cell=cells_of_many(lat_all[order], lon_all[order], [resolution])[:, 0],
        category=np.concatenate([c[3] for c in columns])[order],
        factor=np.ones(t_all.size),
        cluster=numbers[order],
        categories=background.categories,
    )
    return clusters, injected


# detection ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Detection:
    """How a cluster was detected (``at_s`` None: it was not)."""

    cluster: int
    at_s: float | None = None
    delay_s: float | None = None
    delay_events: int | None = None


def detect(
    clusters: Sequence[Cluster], fired: Iterable[Fired], *, grace_s: float = DAY_S
) -> list[Detection]:
    """Each cluster's first notice at a tick in ``[start, end + grace_s]``
    whose cells or their ring-1 neighbours hold one of its events' cells."""
    near: dict[str, list[Cluster]] = {}
    for cluster in clusters:
        reach: set[str] = set()
        for cell in cluster.cells:
            reach.add(cell)
            reach |= neighbours_hex(cell)  # adjacency is symmetric
        for cell in reach:
            near.setdefault(cell, []).append(cluster)
    found: dict[int, Detection] = {}
    for notice in sorted(fired, key=lambda f: f.at_s):
        for cell in notice.cells:
            for cluster in near.get(cell, ()):
                if cluster.number in found:
                    continue
                if cluster.start_s <= notice.at_s <= cluster.end_s + grace_s:
                    seen = sum(1 for t in cluster.t_s if t <= notice.at_s)
                    found[cluster.number] = Detection(
                        cluster.number, notice.at_s, notice.at_s - cluster.start_s, seen
                    )
    return [found.get(c.number, Detection(c.number)) for c in clusters]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Detection figures of one method over one set of clusters."""

    clusters: int
    detected: int
    median_delay_min: float | None
    median_delay_events: float | None
    chance_detected: int = 0  # by the background alone (no injection), same places and times

    @property
    def detection_rate(self) -> float:
        return self.detected / self.clusters if self.clusters else 0.0

    @property
    def chance_rate(self) -> float:
        return self.chance_detected / self.clusters if self.clusters else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "detection_rate": self.detection_rate,
            "median_delay_min": self.median_delay_min,
            "median_delay_events": self.median_delay_events,
            "detected": self.detected,
            "clusters": self.clusters,
            "chance_detection_rate": self.chance_rate,
        }


def outcome(detections: Sequence[Detection], chance: Sequence[Detection] = ()) -> Outcome:
    """Detection rate and median delays (over the detected clusters)."""
    delays_s = [d.delay_s for d in detections if d.delay_s is not None]
    delays_events = [d.delay_events for d in detections if d.delay_events is not None]
    return Outcome(
        clusters=len(detections),
        detected=len(delays_s),
        median_delay_min=float(np.median(delays_s)) / 60.0 if delays_s else None,
        median_delay_events=float(np.median(delays_events)) if delays_events else None,
        chance_detected=sum(1 for d in chance if d.at_s is not None),
    )


# the whole evaluation ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    """What to evaluate (times POSIX seconds; the span is ``[from_s, to_s)``)."""

    warmup_from_s: float
    from_s: float
    to_s: float
    sizes: tuple[int, ...] = (3, 5, 8)
    radius_m: float = 250.0
    duration_s: float = 6 * HOUR_S
    clusters: int = 60
    tick_s: float = 300.0
    area_every_s: float = HOUR_S
    seed: int = 1
    naive_window_s: float = DAY_S
    naive_thresholds: tuple[int, ...] = tuple(range(2, 31))
    grace_s: float = DAY_S  # a detection may come this long after a cluster's end
    separation_m: float = 2000.0
    separation_s: float = 2 * DAY_S

    @property
    def days(self) -> float:
        return (self.to_s - self.from_s) / DAY_S


@dataclass(frozen=True, slots=True)
class SizeResult:
    """Both methods on the clusters of one size."""

    size: int
    engine: Outcome
    naive: Outcome


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of :func:`evaluate`."""

    plan: Plan
    warmup_events: int
    background_events: int
    engine_false_per_day: float
    naive_false_per_day: dict[int, float]
    naive_threshold: int
    sizes: tuple[SizeResult, ...]

    def as_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "parameters": {
                "warmup_from_s": p.warmup_from_s,
                "from_s": p.from_s,
                "to_s": p.to_s,
                "days": p.days,
                "sizes": list(p.sizes),
                "radius_m": p.radius_m,
                "hours": p.duration_s / HOUR_S,
                "clusters": p.clusters,
                "tick_s": p.tick_s,
                "area_refresh_s": p.area_every_s,
                "seed": p.seed,
                "naive_window_s": p.naive_window_s,
                "grace_s": p.grace_s,
                "separation_m": p.separation_m,
                "separation_s": p.separation_s,
                "warmup_events": self.warmup_events,
                "background_events": self.background_events,
            },
            "false_alerts_per_day": {
                "engine": self.engine_false_per_day,
                "naive": self.naive_false_per_day[self.naive_threshold],
                "naive_threshold": self.naive_threshold,
                "naive_by_threshold": {str(c): r for c, r in self.naive_false_per_day.items()},
            },
            "sizes": [
                {"k": s.size, "engine": s.engine.as_json(), "naive": s.naive.as_json()}
                for s in self.sizes
            ],
        }


@dataclass(frozen=True, slots=True)
class EngineTask:
    """One engine run branched from the warm-up: the background of the span
    alone (``size`` None) or with clusters of ``size`` injected."""

    span: Events  # the background from the first tick of the evaluation span
    plan: Plan
    warm: Replay  # the detector after the warm-up (copied, never changed)
    resolution: int
    size: int | None = None


@dataclass(frozen=True, slots=True)
class EngineRun:
    """What one engine run gave: the clusters it had and the notices."""

    size: int | None
    clusters: list[Cluster]
    injected: Events | None
    fired: list[Fired]


def clusters_for(
    span: Events, plan: Plan, resolution: int, size: int
) -> tuple[list[Cluster], Events]:
    """The clusters of one size: the same for a seed and size, whatever
    other sizes are evaluated."""
    return draw_clusters(
        span,
        size=size,
        count=plan.clusters,
        radius_m=plan.radius_m,
        duration_s=plan.duration_s,
        from_s=plan.from_s,
        to_s=plan.to_s,
        resolution=resolution,
        rng=np.random.default_rng([plan.seed, size]),
        separation_m=plan.separation_m,
        separation_s=plan.separation_s,
    )


def run_engine(task: EngineTask, progress: Progress | None = None) -> EngineRun:
    """One engine run (top level, so a process pool can run it)."""
    plan = task.plan
    grid = TickGrid(plan.tick_s)
    end_s = plan.to_s
    clusters: list[Cluster] = []
    injected: Events | None = None
    stream = task.span
    if task.size is not None:
        clusters, injected = clusters_for(task.span, plan, task.resolution, task.size)
        stream = task.span.merge(injected)
        end_s = max(end_s, max(c.end_s for c in clusters) + plan.grace_s)
    replay = copy.deepcopy(task.warm)
    fired = replay.run(stream, grid.index_of(end_s) + 1, progress)
    return EngineRun(task.size, clusters, injected, fired)


Mapper = Callable[[Callable[[EngineTask], EngineRun], Sequence[EngineTask]], Iterable[EngineRun]]


def _stage(progress: Progress | None, name: str) -> Progress | None:
    if progress is None:
        return None
    return lambda _stage, done, total: progress(name, done, total)


def evaluate(
    events: Events,
    config: DetectorConfig,
    plan: Plan,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
) -> Evaluation:
    """The whole evaluation (see the module docstring). ``events`` is the
    background from ``plan.warmup_from_s`` to ``plan.to_s``. The warm-up
    runs once; the background run and one run per size branch from it,
    through ``mapper`` when given (e.g. a process pool's ``map``), else one
    after another."""
    if len(events) == 0:
        raise ValueError("no events to evaluate on")
    grid = TickGrid(plan.tick_s)
    first_tick, end_tick = grid.index_of(plan.from_s), grid.index_of(plan.to_s) + 1
    in_span = grid.index(events.t_s) >= first_tick
    warm = Replay(config, grid, history_from_s=float(events.t_s[0]), area_every_s=plan.area_every_s)
    warm.run(events.take(~in_span), first_tick, _stage(progress, "warm-up"))
    span = events.take(in_span)
    tasks = [EngineTask(span, plan, warm, config.resolution, size) for size in (None, *plan.sizes)]
    if mapper is None:
        runs = [
            run_engine(t, _stage(progress, f"size {t.size}" if t.size else "background"))
            for t in tasks
        ]
    else:
        runs = []
        if progress is not None:
            progress(f"{len(tasks)} engine runs", 0, len(tasks))
        for run in mapper(run_engine, tasks):
            runs.append(run)
            if progress is not None:
                progress(f"{len(tasks)} engine runs", len(runs), len(tasks))
    background, injected_runs = runs[0], runs[1:]

    opened = sum(1 for f in background.fired if f.kind == "opened")
    engine_rate = opened / plan.days
    rises = count_rises(events, grid, plan.naive_window_s)
    rates = naive_rates(rises, first_tick, end_tick, plan.days, plan.naive_thresholds)
    threshold = tune_threshold(rates, engine_rate)
    naive_background = naive_fired(rises, threshold, grid)

    results = []
    for run in injected_runs:
        assert run.size is not None and run.injected is not None
        clusters = run.clusters
        engine = outcome(
            detect(clusters, run.fired, grace_s=plan.grace_s),
            detect(clusters, background.fired, grace_s=plan.grace_s),
        )
        both = count_rises(events.merge(run.injected), grid, plan.naive_window_s)
        naive = outcome(
            detect(clusters, naive_fired(both, threshold, grid), grace_s=plan.grace_s),
            detect(clusters, naive_background, grace_s=plan.grace_s),
        )
        results.append(SizeResult(run.size, engine, naive))
    return Evaluation(
        plan=plan,
        warmup_events=int(np.count_nonzero(~in_span)),
        background_events=len(span),
        engine_false_per_day=engine_rate,
        naive_false_per_day=rates,
        naive_threshold=threshold,
        sizes=tuple(results),
    )
