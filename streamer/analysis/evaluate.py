"""``hotspots evaluate``: how well the rankings predict the next period's
events (hit rate, PAI, PEI), the engine's horizons next to the baselines
analysts use; with ``--grid``, a tuned blend chosen on a training span and
reported on the later span it did not see (the maths is
:mod:`streamer.core.accuracy`).

The file is read as ``backfill`` reads it (source profile, validation, the
last row of an id wins, cancels remove) and weighed with the settings' harm
table; only counting events (weight > 0) inside the study area are used.
Every event before ``--from`` in the file is history for the scores. Dates
are local days in the profile's time zone (UTC for native JSON lines);
``--to`` is inclusive.
"""

from __future__ import annotations

import time
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

from streamer import app
from streamer.adapters.files import (
    Columns,
    row_weights,
)
from streamer.analysis.evaluate_alerts import read_file_columns
from streamer.analysis.evaluate_output import pct, summary_of, table_of, write_csv, write_png
from streamer.analysis.reading import report_lines, rows_json, stand
from streamer.core.accuracy import (
    COVERAGES,
    DAY_S,
    F64,
    Backtest,
    Blend,
    Bools,
    Decayed,
    History,
    Method,
    PreviousPeriod,
    Window,
    backtest,
    duration_label,
    grid_methods,
    neighbour_index,
)
from streamer.core.area import Boundary
from streamer.core.cells import (
    U64,
    area_km2_of_many,
    cells_in_box,
    cells_of_many,
    centers_of_many,
    children_of_many,
)
from streamer.core.row_report import RowReport
from streamer.settings import AUTO, Settings
from streamer.usage import UsageError

GRID_HALF_LIVES_S = tuple(d * DAY_S for d in (3, 7, 14, 28, 90, 365))
SHIFT_HOURS = (0, 8, 16)


@dataclass(frozen=True, slots=True)
class EvaluateOptions:
    """The command's flags, as given."""

    path: str | list[str]  # one file, or several read as one
    start: str  # --from
    end: str  # --to (inclusive)
    profile: str | None = None
    resolution: int = 9
    period: str = "day"
    json_path: str | None = None  # "-": print JSON instead of the table
    csv_path: str | None = None
    png_path: str | None = None
    grid: bool = False
    train_to: str | None = None  # --train-to: first day of the test span
    coverage: float = 0.01  # the coverage the grid is tuned for
    quiet: bool = False


def parse_day(text: str, zone: ZoneInfo, flag: str, *, next_day: bool = False) -> date:
    """A ``YYYY-MM-DD`` flag (the day after with ``next_day``).

    >>> parse_day("2024-12-31", ZoneInfo("UTC"), "--to", next_day=True)
    datetime.date(2025, 1, 1)
    """
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag}: not a date (YYYY-MM-DD): {text!r}") from None
    return day + timedelta(days=1) if next_day else day


def period_edges(first: date, end: date, zone: ZoneInfo, period: str) -> list[float]:
    """Period boundaries from local midnight of ``first`` to that of ``end``
    (exclusive day): local days, or shifts starting 00:00, 08:00, 16:00 local.
    Daylight saving makes some days 23 or 25 hours long, as they are.

    >>> z = ZoneInfo("America/New_York")
    >>> e = period_edges(date(2025, 3, 8), date(2025, 3, 10), z, "day")
    >>> [(b - a) / 3600 for a, b in zip(e, e[1:])]
    [24.0, 23.0]
    >>> len(period_edges(date(2025, 1, 1), date(2025, 1, 3), z, "shift"))
    7
    """
    hours = (0,) if period == "day" else SHIFT_HOURS
    edges: list[float] = []
    day = first
    while day < end:
        edges += [datetime(day.year, day.month, day.day, h, tzinfo=zone).timestamp() for h in hours]
        day += timedelta(days=1)
    edges.append(datetime(end.year, end.month, end.day, tzinfo=zone).timestamp())
    return edges


# "auto": the study area is the resolution-7 cells (about 5 km² each) that
# hold at least one counting event of the file: a concave outline of the
# points, coarse enough that a quiet block inside the city is not left out
AUTO_RESOLUTION = 7


@dataclass(frozen=True, slots=True)
class StudyArea:
    """The study area's cells at one resolution and where they came from."""

    cells: U64  # sorted by id
    source: str  # the outline's path, or "auto"
    note: str | None = None  # what a derived area is, for the output


def study_area_of(settings: Settings, resolution: int, lat: F64, lon: F64) -> StudyArea:
    """The study area: the outline ``events.boundary`` names (else the
    display's ``display.districts``), or with ``events.boundary = "auto"``
    one derived from the events' points (``lat``, ``lon``)."""
    chosen = settings.events.boundary or settings.display.districts
    if chosen is None:
        raise UsageError(
            "no study area: set events.boundary in the config to the force's outline "
            '(a GeoJSON file), or to "auto" to derive it from the file\'s points'
        )
    if chosen == AUTO:
        coarse_res = min(AUTO_RESOLUTION, resolution)
        coarse = np.unique(cells_of_many(lat, lon, [coarse_res])[:, 0])
        cells = children_of_many(coarse, resolution)
        note = (
            f'study area derived from the file\'s points (events.boundary = "auto"): the '
            f"{coarse.size} H3 resolution-{coarse_res} cells holding events, "
            f"{area_km2_of_many(coarse):,.0f} km²; set events.boundary to the force's outline "
            "for a study area that does not depend on where the events fell"
        )
        return StudyArea(cells, AUTO, note)
    try:
        boundary = Boundary.load(chosen)
    except (OSError, ValueError) as exc:
        raise UsageError(f"events.boundary {chosen}: {exc}") from None
    cells = study_cells(boundary, resolution)
    if cells.size == 0:
        raise UsageError(f"events.boundary {chosen}: no cell of resolution {resolution} inside")
    return StudyArea(cells, chosen)


def study_cells(boundary: Boundary, resolution: int) -> U64:
    """The cells (sorted by id) whose centres lie inside the boundary."""
    min_lon, min_lat, max_lon, max_lat = boundary.bounds
    box = cells_in_box(min_lon, min_lat, max_lon, max_lat, resolution)
    lat, lon = centers_of_many(box)
    inside: U64 = box[boundary.contains_many(lat, lon)]
    return inside


def counting_events(
    cols: Columns, rows: npt.NDArray[np.int64], settings: Settings
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], ...]:
    """``(t_s, lat_deg, lon_deg, weight)`` of the events the engine counts
    among the standing ``rows`` (valid, the last row of each id, not
    cancelled): those of weight > 0."""
    weight = row_weights(cols, rows, app.weight_table(settings))
    counted = weight > 0
    rows = rows[counted]
    return cols.occurred_at_s[rows], cols.lat_deg[rows], cols.lon_deg[rows], weight[counted]


def reference_methods(settings: Settings, period: str) -> list[Method]:
    """The engine's horizons (shortest first), then the baselines."""
    horizons = sorted(settings.horizons.items(), key=lambda kv: (kv[1], kv[0]))
    out: list[Method] = [Decayed(f"engine {name} ({duration_label(h)})", h) for name, h in horizons]
    out += [
        Window("count last 28d", 28 * DAY_S),
        Window("count last 365d", 365 * DAY_S),
        PreviousPeriod(f"previous {period}"),
    ]
    return out


def publishable_blends(settings: Settings) -> list[Blend]:
    """The grid's blends the live store can serve: every pair of configured
    horizons at each share, harm-weighted, unsmoothed."""
    pairs = grid_methods(sorted(set(settings.horizons.values())), smoothings=(0.0,))
    return [b for b in pairs if b.weighted and b.long_s != b.short_s]


def engine_config(blend: Blend, name: str = "tuned") -> str | None:
    """The config of a separate engine (its own namespace and consumer group,
    fed by the same topics) whose ranking ``name`` is ``blend``: its two
    half-lives as its horizons, plain counts unless harm-weighted. None for
    a smoothed blend, which the store cannot serve."""
    if blend.smoothing > 0:
        return None
    single = blend.long_s == blend.short_s
    served = f"/v1/hotspots?horizon={name}" if single else f"/v1/blends/{name}"
    text = (
        f"# publishes {blend.name!r} as its own ranking: a separate engine, fed by the\n"
        f"# same topics, serving it at {served}\n"
        f'[store]\nnamespace = "{name}"\n[kafka]\ngroup = "{name}"\n[horizons]\n'
    )
    if single:
        text += f'{name} = "{duration_label(blend.long_s)}"\n[grid]\nprofile_horizon = "{name}"\n'
    else:
        text += (
            f'long = "{duration_label(blend.long_s)}"\nshort = "{duration_label(blend.short_s)}"\n'
            '[grid]\nprofile_horizon = "long"\n'
        ) + _blend_section(name, "long", "short", blend.long_share)
    return text if blend.weighted else text + "[weights]\nharm = false\n"


def blend_config(settings: Settings, blend: Blend, name: str = "tuned") -> str:
    """The ``[blends.NAME]`` section that publishes ``blend``."""
    horizon = {h: n for n, h in sorted(settings.horizons.items(), reverse=True)}
    return _blend_section(name, horizon[blend.long_s], horizon[blend.short_s], blend.long_share)


def _blend_section(name: str, long: str, short: str, long_share: float) -> str:
    return f'[blends.{name}]\nlong = "{long}"\nshort = "{short}"\nlong_share = {long_share:g}\n'


# the command -------------------------------------------------------------------------
def _check(options: EvaluateOptions) -> None:
    if options.period not in ("day", "shift"):
        raise UsageError("--period: day or shift")
    if not 0 <= options.resolution <= 15:
        raise UsageError("--resolution: 0 to 15")
    if options.coverage not in COVERAGES:
        raise UsageError(f"--coverage: one of {', '.join(str(c) for c in COVERAGES)}")
    if options.grid and options.train_to is None:
        raise UsageError("--grid needs --train-to (the first day of the test span)")


@dataclass(frozen=True, slots=True)
class _Study:
    """The file read, cut to the study area and the dates."""

    zone: ZoneInfo
    split: date | None  # --train-to
    edges: list[float]
    area: StudyArea
    rows: RowReport  # what became of the file's rows
    history: History


@dataclass(slots=True)
class _Run:
    """One backtest and what its output needs."""

    options: EvaluateOptions
    study: _Study
    result: Backtest
    reference: list[Method]
    grid: list[Blend]
    publishable: list[Blend]
    console: Console
    report: dict[str, Any]

    @property
    def ref_names(self) -> list[str]:
        return [m.name for m in self.reference]

    @property
    def engine_names(self) -> list[str]:
        return [m.name for m in self.reference if isinstance(m, Decayed)]


def _read_study(options: EvaluateOptions, settings: Settings) -> _Study:
    cols, zone = read_file_columns(options.path, options.profile)
    first = parse_day(options.start, zone, "--from")
    end = parse_day(options.end, zone, "--to", next_day=True)
    if not first < end:
        raise UsageError("dates: need --from <= --to")
    split: date | None = None
    if options.train_to is not None:
        split = parse_day(options.train_to, zone, "--train-to")
        if not first < split < end:
            raise UsageError("--train-to: must fall after --from and no later than --to")
    edges = period_edges(first, end, zone, options.period)
    stood, rows = stand(cols, settings, now_s=time.time())
    t, lat, lon, weight = counting_events(cols, stood.rows, settings)
    before_end = t < edges[-1]
    t, lat, lon, weight = t[before_end], lat[before_end], lon[before_end], weight[before_end]
    area = study_area_of(settings, options.resolution, lat, lon)
    study = area.cells
    cell = cells_of_many(lat, lon, [options.resolution])[:, 0]
    pos = np.minimum(np.searchsorted(study, cell), study.size - 1)
    inside = study[pos] == cell
    history = History.build(t[inside], pos[inside], weight[inside], int(study.size))
    if not np.any(history.t_s >= edges[0]):
        raise UsageError("no counting event in the study area between --from and --to")
    return _Study(zone, split, edges, area, rows, history)


def _run_backtest(
    options: EvaluateOptions, settings: Settings, study: _Study, console: Console
) -> _Run:
    reference = reference_methods(settings, options.period)
    methods: list[Method] = list(reference)
    grid: list[Blend] = grid_methods(GRID_HALF_LIVES_S) if options.grid else []
    methods += grid
    # what the live engine can publish ([blends.NAME]): two configured
    # horizons, harm-weighted, unsmoothed
    publishable = publishable_blends(settings) if options.grid else []
    methods += [b for b in publishable if b.name not in {g.name for g in grid}]
    smoothing = any(m.smoothing > 0 for m in grid)
    history = study.history
    neighbours = neighbour_index(study.area.cells) if smoothing else None
    with RichProgress(disable=options.quiet, transient=True, console=console) as bar:
        task = bar.add_task(f"backtest ({len(methods)} methods)", total=len(study.edges) - 1)
        result = backtest(
            history,
            study.edges,
            methods,
            neighbours=neighbours,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if result.events.size == 0:
        raise UsageError("no period between --from and --to holds an event")
    report: dict[str, Any] = {
        "parameters": {
            "path": options.path,
            "profile": options.profile,
            "from": options.start,
            "to": options.end,
            "period": options.period,
            "resolution": options.resolution,
            "boundary": study.area.source,
            "study_area_note": study.area.note,
            "history_from": datetime.fromtimestamp(float(history.t_s[0]), study.zone).isoformat(),
        },
        "rows": rows_json(study.rows, options.profile),
        "study_cells": result.study_cells,
        "periods": int(result.events.size),
        "periods_skipped": result.skipped,
        "events": int(result.events.sum()),
    }
    return _Run(options, study, result, reference, grid, publishable, console, report)


def _whole_span(run: _Run) -> tuple[list[str], str]:
    """Without ``--train-to``: every method over the whole span; returns the
    methods shown and the PNG's title."""
    options, result = run.options, run.result
    pai = result.mean_pai(COVERAGES[0])
    best = max(run.engine_names, key=lambda n: (pai[result.methods.index(n)], n))
    run.report["best_engine"] = best
    run.report["methods"] = summary_of(result, run.ref_names)
    span = f"{options.start} .. {options.end}"
    run.console.print(
        table_of(
            result,
            f"Backtest {span}, {options.period}s, resolution "
            f"{options.resolution}: mean over {result.events.size} periods",
            None,
            run.ref_names,
        )
    )
    return run.ref_names, f"PAI by coverage, {span}"


def _split_span(run: _Run, split: date, settings: Settings) -> tuple[list[str], Bools]:
    """With ``--train-to``: choices made on the training span, reported on the
    test span; returns the methods shown and the test span's mask."""
    options, result = run.options, run.result
    split_s = datetime(split.year, split.month, split.day, tzinfo=run.study.zone).timestamp()
    train = result.period_start_s < split_s
    test = ~train
    if not np.any(train) or not np.any(test):
        raise UsageError("--train-to: both spans need periods with events")
    run.report.update(
        {"train_periods": int(train.sum()), "test_periods": int(test.sum()), "split": str(split)}
    )
    train_pai = result.mean_pai(options.coverage, train)
    best_engine = max(run.engine_names, key=lambda n: (train_pai[result.methods.index(n)], n))
    run.report["best_engine"] = best_engine
    run.report["methods"] = summary_of(result, run.ref_names, test)
    shown = run.ref_names
    if run.grid:
        shown = _grid_choice(run, split, train, test, best_engine, settings)
    run.console.print(
        table_of(
            result,
            f"Test span {split} .. {options.end} ({int(test.sum())} {options.period}s, "
            f"resolution {options.resolution}), unseen by the choice",
            test,
            shown,
        )
    )
    return shown, test


def _grid_choice(
    run: _Run, split: date, train: Bools, test: Bools, best_engine: str, settings: Settings
) -> list[str]:
    """The grid's configuration chosen on the training span, and the best blend
    the live engine can publish; returns the methods to show."""
    options, result, grid = run.options, run.result, run.grid
    train_pai = result.mean_pai(options.coverage, train)
    test_pai = result.mean_pai(options.coverage, test)
    offset = len(run.reference)
    ranked = sorted(range(len(grid)), key=lambda i: (-train_pai[offset + i], grid[i].name))
    chosen = grid[ranked[0]]
    run.report["grid"] = {
        "coverage": options.coverage,
        "configurations": len(grid),
        "chosen": {
            "name": chosen.name,
            "long_half_life_s": chosen.long_s,
            "short_half_life_s": chosen.short_s,
            "long_share": chosen.long_share,
            "smoothing": chosen.smoothing,
            "weights": "harm" if chosen.weighted else "count",
            "train_pai": round(float(train_pai[offset + ranked[0]]), 6),
            "test_pai": round(float(test_pai[offset + ranked[0]]), 6),
            "engine_config": engine_config(chosen),
        },
        "top_train": [
            {
                "name": grid[i].name,
                "train_pai": round(float(train_pai[offset + i]), 6),
                "test_pai": round(float(test_pai[offset + i]), 6),
            }
            for i in ranked[:10]
        ],
        "test": summary_of(result, [chosen.name, *run.ref_names], test),
    }
    own = engine_config(chosen)
    run.console.print(
        f"The chosen configuration as a ranking of its own, from an engine configured with:\n{own}"
        if own is not None
        else "The chosen configuration is smoothed over neighbours: the live "
        "store cannot serve it.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if run.publishable:
        at = {m: result.methods.index(m) for m in result.methods}
        best_pub = max(run.publishable, key=lambda b: (train_pai[at[b.name]], b.name))
        config = blend_config(settings, best_pub)
        run.report["grid"]["publishable"] = {
            "name": best_pub.name,
            "train_pai": round(float(train_pai[at[best_pub.name]]), 6),
            "test_pai": round(float(test_pai[at[best_pub.name]]), 6),
            "best_engine_test_pai": round(float(test_pai[at[best_engine]]), 6),
            "config": config,
        }
        run.console.print(
            f"Best blend the live engine can publish (configured horizons, harm "
            f"weights): {best_pub.name}, PAI at {pct(options.coverage)} "
            f"{train_pai[at[best_pub.name]]:.2f} on the training span, "
            f"{test_pai[at[best_pub.name]]:.2f} on the test span (the best engine "
            f"horizon: {test_pai[at[best_engine]]:.2f}). To publish it, add to the "
            f"config:\n{config}",
            highlight=False,
            markup=False,  # the section header is in brackets
            soft_wrap=True,
        )
    run.console.print(
        table_of(
            result,
            f"Grid ({len(grid)} configurations), training span {options.start} .. "
            f"{split - timedelta(days=1)}: top 5 by mean PAI at {pct(options.coverage)}",
            train,
            [grid[i].name for i in ranked[:5]],
        )
    )
    return [chosen.name, *run.ref_names]


def main(options: EvaluateOptions, settings: Settings) -> int:
    """Run the command; returns its exit code."""
    started = time.monotonic()
    _check(options)
    as_json_only = options.json_path == "-"
    console = Console(quiet=as_json_only)
    if not console.is_terminal:
        console = Console(width=170, quiet=as_json_only)
    study = _read_study(options, settings)
    for line in report_lines(study.rows, options.profile):
        console.print(line, highlight=False, soft_wrap=True)
    if study.area.note is not None:
        console.print(f"warning: {study.area.note}", highlight=False, soft_wrap=True)
    loaded_s = time.monotonic() - started
    run = _run_backtest(options, settings, study, console)
    seconds = time.monotonic() - started
    result, report, split = run.result, run.report, study.split
    mask: Bools | None = None
    if split is None:
        shown, png_title = _whole_span(run)
    else:
        shown, mask = _split_span(run, split, settings)
        png_title = f"PAI by coverage, {split} .. {options.end}"
    report["seconds"] = round(time.monotonic() - started, 1)
    console.print(
        f"{result.study_cells} study cells; {int(result.events.sum())} events in "
        f"{result.events.size} {options.period}s ({result.skipped} without events skipped); "
        f"best engine horizon at {pct(COVERAGES[0] if split is None else options.coverage)}: "
        f"{report['best_engine']}; loaded in {loaded_s:.0f} s, total {seconds:.0f} s",
        highlight=False,
        soft_wrap=True,
    )
    if options.csv_path:
        write_csv(result, shown, study.zone, options.csv_path)
    if options.png_path:
        write_png(result, shown, options.png_path, png_title, mask)
    if as_json_only:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    elif options.json_path:
        Path(options.json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0
