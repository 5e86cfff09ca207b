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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.core.alert_clusters import (
    EARTH_RADIUS_M,
    Cluster,
    distance_m,
    draw_clusters,
    offsets_in_disc,
)
from streamer.core.alert_naive_rule import (
    Rises,
    count_rises,
    naive_fired,
    naive_rates,
    tune_threshold,
)
from streamer.core.alert_replay import (
    DAY_S,
    HOUR_S,
    Events,
    Fired,
    Progress,
    Replay,
    TickGrid,
)
from streamer.core.cells import neighbours_hex
from streamer.core.emerging import DetectorConfig

__all__ = [
    "DAY_S",
    "EARTH_RADIUS_M",
    "HOUR_S",
    "Cluster",
    "Detection",
    "EngineRun",
    "EngineTask",
    "Evaluation",
    "Events",
    "Fired",
    "Mapper",
    "Outcome",
    "Plan",
    "Progress",
    "Replay",
    "Rises",
    "SizeResult",
    "TickGrid",
    "clusters_for",
    "count_rises",
    "detect",
    "distance_m",
    "draw_clusters",
    "evaluate",
    "naive_fired",
    "naive_rates",
    "offsets_in_disc",
    "outcome",
    "run_engine",
    "tune_threshold",
]


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
