"""``hotspots evaluate-alerts``: synthetic clusters in a real file, both
methods scored (the simulation is :mod:`streamer.core.alert_evaluation`).

The file is read as ``backfill`` reads it (source profile, validation, the
last row of an id wins, cancels remove) and weighed with the settings' harm
table: events of categories that never count are dropped, a proactive-origin
event counts ``weights.proactive``. Dates are local days in the profile's
time zone (UTC for native JSON lines); ``--to`` is inclusive.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson
from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.table import Table

from streamer import app
from streamer.adapters.alerter import detector_config
from streamer.adapters.files import (
    Columns,
    Paths,
    concat_columns,
    load_profile,
    read_columns,
    row_weights,
)
from streamer.analysis.reading import existing_files, report_lines, rows_json, stand
from streamer.core.alert_evaluation import (
    HOUR_S,
    Evaluation,
    Events,
    Mapper,
    Outcome,
    Plan,
    evaluate,
)
from streamer.settings import Settings, parse_duration_s
from streamer.usage import UsageError


@dataclass(frozen=True, slots=True)
class EvaluateOptions:
    """The command's flags, as given."""

    path: str | list[str]  # one file, or several read as one
    profile: str | None = None
    warmup_from: str | None = None
    start: str | None = None  # --from
    end: str | None = None  # --to (inclusive)
    sizes: str = "3,5,8"
    radius_m: float = 250.0
    hours: float = 6.0
    clusters: int = 60
    tick: str = "5m"
    seed: int = 1
    json_path: str | None = None
    csv_path: str | None = None
    jobs: int | None = None  # engine runs in parallel processes (default: one per core)
    quiet: bool = False


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"3,5,8"`` -> ``(3, 5, 8)``.

    >>> parse_sizes("8, 3,5")
    (3, 5, 8)
    """
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--sizes: expected whole numbers like 3,5,8, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise UsageError(f"--sizes: cluster sizes must be at least 1, got {text!r}")
    return tuple(sizes)


def parse_moment(text: str, zone: ZoneInfo, flag: str, *, inclusive_end: bool = False) -> float:
    """A day (``YYYY-MM-DD``: its local midnight, or the next one with
    ``inclusive_end``) or an ISO 8601 time (naive: local) as POSIX seconds.

    >>> z = ZoneInfo("America/New_York")
    >>> parse_moment("2025-01-01", z, "--from")
    1735707600.0
    >>> parse_moment("2025-12-31", z, "--to", inclusive_end=True)
    1767243600.0
    """
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if inclusive_end:
                day += timedelta(days=1)
            return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag}: not a date (YYYY-MM-DD) or ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _year_before(t_s: float, zone: ZoneInfo) -> float:
    moment = datetime.fromtimestamp(t_s, zone)
    day = moment.date()
    try:
        earlier = day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        earlier = day.replace(year=day.year - 1, day=28)
    return datetime(earlier.year, earlier.month, earlier.day, tzinfo=zone).timestamp()


def read_file_columns(path: Paths, profile_name: str | None) -> tuple[Columns, ZoneInfo]:
    """A whole file's columns (with the ``--profile`` named) and its zone;
    several files or a glob are read as one."""
    try:
        profile = load_profile(profile_name) if profile_name else None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    files = existing_files(path)
    cols = concat_columns(read_columns(files, profile))
    return cols, ZoneInfo(profile.timezone if profile else "UTC")


def background_events(
    cols: Columns, rows: npt.NDArray[np.int64], settings: Settings, *, from_s: float, to_s: float
) -> Events:
    """The events the engine would count among the standing ``rows``, in
    ``[from_s, to_s)``."""
    t = cols.occurred_at_s[rows]
    rows = rows[(t >= from_s) & (t < to_s)]
    weight = row_weights(cols, rows, app.weight_table(settings))
    proactive = settings.weights.proactive
    factor = np.where(cols.origins[rows] == "proactive", proactive, 1.0)
    counted = weight > 0
    rows, factor = rows[counted], factor[counted]
    return Events.build(
        cols.occurred_at_s[rows],
        cols.lat_deg[rows],
        cols.lon_deg[rows],
        cols.categories[rows],
        resolution=settings.alerts.resolution,
        factor=factor,
    )


def plan_of(options: EvaluateOptions, zone: ZoneInfo, first_s: float, last_s: float) -> Plan:
    """The plan from the flags; without dates: the year up to the file's
    last day, after a year of warm-up."""
    if options.end is not None:
        to_s = parse_moment(options.end, zone, "--to", inclusive_end=True)
    else:
        last_day = datetime.fromtimestamp(last_s, zone).date().isoformat()
        to_s = parse_moment(last_day, zone, "--to", inclusive_end=True)
    from_s = (
        parse_moment(options.start, zone, "--from")
        if options.start is not None
        else max(_year_before(to_s, zone), first_s)
    )
    warmup_s = (
        parse_moment(options.warmup_from, zone, "--warmup-from")
        if options.warmup_from is not None
        else _year_before(from_s, zone)
    )
    if not warmup_s <= from_s < to_s:
        raise UsageError("dates: need --warmup-from <= --from <= --to")
    if options.radius_m <= 0 or options.hours <= 0:
        raise UsageError("--radius-m and --hours must be positive")
    if options.clusters < 1:
        raise UsageError("--clusters must be at least 1")
    if options.jobs is not None and options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    try:
        tick_s = parse_duration_s(options.tick)
    except ValueError as exc:
        raise UsageError(f"--tick: {exc}") from None
    return Plan(
        warmup_from_s=warmup_s,
        from_s=from_s,
        to_s=to_s,
        sizes=parse_sizes(options.sizes),
        radius_m=options.radius_m,
        duration_s=options.hours * HOUR_S,
        clusters=options.clusters,
        tick_s=tick_s,
        seed=options.seed,
    )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate(o: Outcome) -> str:
    return f"{o.detection_rate:.0%} ({o.detected}/{o.clusters})"


def table_of(result: Evaluation) -> Table:
    """The results as a rich table."""
    c = result.naive_threshold
    table = Table(title="Alert evaluation: injected clusters")
    table.add_column("k", justify="right")
    for method in ("engine", f"naive c={c}"):
        for head in ("detected", "median delay\nminutes", "median delay\nevents"):
            table.add_column(f"{method}\n{head}", justify="right")
    for s in result.sizes:
        table.add_row(
            str(s.size),
            _rate(s.engine),
            _num(s.engine.median_delay_min),
            _num(s.engine.median_delay_events, 1),
            _rate(s.naive),
            _num(s.naive.median_delay_min),
            _num(s.naive.median_delay_events, 1),
        )
    return table


def _day(t_s: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t_s, zone).isoformat(timespec="minutes")


def footer(result: Evaluation, zone: ZoneInfo, seconds: float) -> list[str]:
    """The lines printed under the table."""
    p = result.plan
    c = result.naive_threshold
    return [
        f"false alerts per day (background alone): engine {result.engine_false_per_day:.2f}, "
        f"naive c={c} {result.naive_false_per_day[c]:.2f} "
        f"(c={c - 1}: {result.naive_false_per_day.get(c - 1, float('nan')):.2f})",
        "chance detections (same places and times, background alone): "
        + ", ".join(
            f"k={s.size} engine {s.engine.chance_rate:.0%} naive {s.naive.chance_rate:.0%}"
            for s in result.sizes
        ),
        f"seed {p.seed}; {p.clusters} clusters per size, radius {p.radius_m:g} m, "
        f"{p.duration_s / HOUR_S:g} h; tick {p.tick_s:g} s, area refresh {p.area_every_s:g} s; "
        f"warm-up from {_day(p.warmup_from_s, zone)} ({result.warmup_events} events), "
        f"evaluated {_day(p.from_s, zone)} to {_day(p.to_s, zone)} "
        f"({result.background_events} events, {p.days:.1f} days); {seconds:.0f} s",
    ]


def write_csv(result: Evaluation, path: str) -> None:
    """One row per size and method."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "k",
                "method",
                "threshold",
                "clusters",
                "detected",
                "detection_rate",
                "median_delay_min",
                "median_delay_events",
                "chance_detection_rate",
                "false_alerts_per_day",
            ]
        )
        for s in result.sizes:
            for method, o, threshold, false_rate in (
                ("engine", s.engine, "", result.engine_false_per_day),
                (
                    "naive",
                    s.naive,
                    result.naive_threshold,
                    result.naive_false_per_day[result.naive_threshold],
                ),
            ):
                writer.writerow(
                    [
                        s.size,
                        method,
                        threshold,
                        o.clusters,
                        o.detected,
                        o.detection_rate,
                        "" if o.median_delay_min is None else o.median_delay_min,
                        "" if o.median_delay_events is None else o.median_delay_events,
                        o.chance_rate,
                        false_rate,
                    ]
                )


@contextmanager
def _mapper(jobs: int | None, runs: int) -> Iterator[Mapper | None]:
    """A process pool's ``map`` for the engine runs (None: run them here,
    one after another, with a progress bar per run)."""
    workers = min(jobs if jobs is not None else os.cpu_count() or 1, runs)
    if workers <= 1:
        yield None
        return
    # spawn: the parent runs a progress thread, and forking a threaded process is unsafe
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool.map


def main(options: EvaluateOptions, settings: Settings) -> int:
    """Run the command; returns its exit code."""
    started = time.monotonic()
    console = Console()
    if not console.is_terminal:  # a file or pipe: room for the table on one line per row
        console = Console(width=120)
    cols, zone = read_file_columns(options.path, options.profile)
    stood, rows = stand(cols, settings, now_s=time.time())
    for line in report_lines(rows, options.profile):
        console.print(line, highlight=False, soft_wrap=True)
    finite = cols.occurred_at_s[np.isfinite(cols.occurred_at_s)]
    if finite.size == 0:
        raise UsageError(f"{options.path}: no event with a readable time")
    plan = plan_of(options, zone, float(finite.min()), float(finite.max()))
    events = background_events(
        cols, stood.rows, settings, from_s=plan.warmup_from_s, to_s=plan.to_s
    )
    if not np.any(events.t_s >= plan.from_s):
        raise UsageError("no event in the evaluation span (--from .. --to)")
    with RichProgress(disable=options.quiet, transient=True, console=console) as bar:
        task = bar.add_task("evaluate", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        with _mapper(options.jobs, len(plan.sizes) + 1) as mapper:
            result = evaluate(events, detector_config(settings), plan, progress, mapper)
    seconds = time.monotonic() - started
    console.print(table_of(result))
    for line in footer(result, zone, seconds):
        console.print(line, highlight=False, soft_wrap=True)
    if options.json_path:
        report: dict[str, Any] = result.as_json()
        report["rows"] = rows_json(rows, options.profile)
        report["parameters"].update(
            {
                "path": options.path,
                "profile": options.profile,
                "warmup_from": _day(plan.warmup_from_s, zone),
                "from": _day(plan.from_s, zone),
                "to": _day(plan.to_s, zone),
                "seconds": round(seconds, 1),
            }
        )
        Path(options.json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if options.csv_path:
        write_csv(result, options.csv_path)
    return 0
