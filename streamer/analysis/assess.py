"""``hotspots assess``: after an operation, did crime fall in the targeted
cells and did it move next door (the maths is :mod:`streamer.core.assessment`;
``hotspots feedback-check`` is :mod:`streamer.analysis.feedback_check`).

The file is read as ``backfill`` reads it (source profile, validation, the
last row of an id wins, cancels remove) and weighed with the settings' harm
table. Dates are local days in the profile's time zone (UTC for native JSON
lines); the end of every span is inclusive.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson
from rich.console import Console
from rich.table import Table

from streamer import app
from streamer.adapters.files import (
    Paths,
    SourceProfile,
    concat_columns,
    load_profile,
    read_columns,
)
from streamer.analysis.evaluate_alerts import parse_moment
from streamer.analysis.reading import existing_files, report_lines, rows_json, stand
from streamer.core.assessment import (
    Assessment,
    Effects,
    Period,
    assess,
    buffer_cells,
    control_band,
    count_area,
)
from streamer.core.cells import U64, cell_boundary, cell_from_hex, cell_hex, cells_of_many
from streamer.core.cells import resolution_of as cell_resolution
from streamer.core.row_report import RowReport
from streamer.core.weights import WeightTable
from streamer.settings import Settings
from streamer.usage import UsageError

Floats = npt.NDArray[np.float64]
Objects = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class AssessOptions:
    """``hotspots assess`` flags, as given."""

    path: str | list[str]  # one file, or several read as one
    targets_path: str
    before: str  # A..B
    after: str  # C..D
    profile: str | None = None
    buffer_rings: int = 2
    control_path: str | None = None
    control_rings: int = 6
    png_path: str | None = None
    as_json: bool = False


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class Loaded:
    """The file's valid, current events in a span (cancels applied)."""

    t_s: Floats
    lat_deg: Floats
    lon_deg: Floats
    categories: Objects
    origins: Objects
    zone: ZoneInfo
    origin_column: bool  # the profile reads an origin per row
    rows: RowReport  # what became of the file's rows


def source_profile(profile_name: str | None) -> tuple[SourceProfile | None, ZoneInfo]:
    """The profile named by ``--profile`` (None: native JSON lines) and its zone."""
    try:
        profile = load_profile(profile_name) if profile_name else None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    return profile, ZoneInfo(profile.timezone if profile else "UTC")


def load_events(
    path: Paths, profile: SourceProfile | None, settings: Settings, span: Period, now_s: float
) -> Loaded:
    """Valid events of the file in ``span`` (the last row of an id wins;
    cancels remove it)."""
    files = existing_files(path)
    cols = concat_columns(read_columns(files, profile))
    zone = ZoneInfo(profile.timezone if profile else "UTC")
    # native JSON lines carry an origin per event
    origin_column = profile is None or profile.origin_column is not None
    stood, report = stand(cols, settings, now_s=now_s)
    rows = stood.rows
    t = cols.occurred_at_s[rows]
    rows = rows[(t >= span.from_s) & (t < span.to_s)]
    return Loaded(
        cols.occurred_at_s[rows],
        cols.lat_deg[rows],
        cols.lon_deg[rows],
        cols.categories[rows],
        cols.origins[rows],
        zone,
        origin_column,
        report,
    )


def weights_of(table: WeightTable, categories: Objects, origins: Objects) -> Floats:
    """The harm weight of each event (0: it does not count)."""
    pairs = list(zip(categories.tolist(), origins.tolist(), strict=True))
    weighed = {p: table.weigh(*p).weight for p in set(pairs)}
    return np.fromiter((weighed[p] for p in pairs), dtype=np.float64, count=len(pairs))


def parse_span(text: str, zone: ZoneInfo, flag: str) -> Period:
    """``A..B`` (days or ISO times, B inclusive when a day) as a period.

    >>> p = parse_span("2025-01-01..2025-01-31", ZoneInfo("UTC"), "--before")
    >>> p.days
    31.0
    """
    start, sep, end = text.partition("..")
    if not sep or not start or not end:
        raise UsageError(f"{flag}: expected FROM..TO (e.g. 2025-01-01..2025-03-31), got {text!r}")
    period = Period(
        parse_moment(start.strip(), zone, flag),
        parse_moment(end.strip(), zone, flag, inclusive_end=True),
    )
    if period.to_s <= period.from_s:
        raise UsageError(f"{flag}: the span {text!r} ends before it starts")
    return period


def read_cells(path: str, flag: str) -> list[int]:
    """H3 cell ids from a text file (one a line, ``#`` comments) or a CSV
    with a ``cell`` column; all of one resolution."""
    file = Path(path)
    if not file.exists():
        raise UsageError(f"{flag}: {path}: no such file")
    lines = file.read_text(encoding="utf-8").splitlines()
    first = lines[0].strip().lower() if lines else ""
    if "," in first or first == "cell":
        rows = csv.DictReader(lines)
        if rows.fieldnames is None or "cell" not in [f.strip().lower() for f in rows.fieldnames]:
            raise UsageError(f"{flag}: {path}: a CSV needs a column named 'cell'")
        name = next(f for f in rows.fieldnames if f.strip().lower() == "cell")
        texts = [(row.get(name) or "").strip() for row in rows]
    else:
        texts = [line.split("#", 1)[0].strip() for line in lines]
    cells: list[int] = []
    for text in texts:
        if not text:
            continue
        try:
            cells.append(cell_from_hex(text))
        except ValueError as exc:
            raise UsageError(f"{flag}: {path}: {exc}") from None
    if not cells:
        raise UsageError(f"{flag}: {path}: no cell ids")
    resolutions = {cell_resolution(c) for c in cells}
    if len(resolutions) > 1:
        raise UsageError(f"{flag}: {path}: cells of several resolutions {sorted(resolutions)}")
    return list(dict.fromkeys(cells))


# --------------------------------------------------------------------------- assess


@dataclass(frozen=True, slots=True)
class Areas:
    """The three areas and how the control was chosen."""

    target: frozenset[int]
    buffer: frozenset[int]
    control: frozenset[int]
    control_note: str


def areas_of(
    options: AssessOptions, targets: list[int], event_cells: U64, before_mask: npt.NDArray[np.bool_]
) -> Areas:
    """Target, buffer and control from the flags."""
    target = frozenset(targets)
    buffer = buffer_cells(target, options.buffer_rings)
    if options.control_path is not None:
        given = frozenset(read_cells(options.control_path, "--control"))
        if cell_resolution(next(iter(given))) != cell_resolution(targets[0]):
            raise UsageError("--control: its cells are not of the targets' resolution")
        control = given - target - buffer
        note = f"control: {len(given)} cells from {options.control_path}"
        if len(control) < len(given):
            note += f", less {len(given) - len(control)} in the target or buffer"
        return Areas(target, buffer, control, note)
    band = control_band(target, options.buffer_rings, options.control_rings)
    active = frozenset(int(c) for c in np.unique(event_cells[before_mask]).tolist())
    control = band & active
    note = (
        f"control: the cells {options.buffer_rings + 1} to {options.control_rings} rings from "
        f"the targets that had counting events in the before period "
        f"({len(control)} of the band's {len(band)} cells)"
    )
    return Areas(target, buffer, control, note)


def _check_assess(options: AssessOptions) -> None:
    if options.buffer_rings < 0:
        raise UsageError("--buffer-rings must be 0 or more")
    if options.control_path is None and options.control_rings <= options.buffer_rings:
        raise UsageError("--control-rings must be more than --buffer-rings")


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def assessment_table(result: Assessment) -> Table:
    """Counts per area and period as a rich table."""
    b, a = result.before, result.after
    table = Table(title="Events per area and period (counting events; harm in days)")
    for head in (
        "area",
        "cells",
        f"before\n{b.days:.0f} d",
        f"after\n{a.days:.0f} d",
        "before\nper day",
        "after\nper day",
        "change\nper day",
        "harm\nbefore",
        "harm\nafter",
    ):
        table.add_column(head, justify="left" if head == "area" else "right")
    for name, area in (
        ("R target", result.target),
        ("D buffer", result.buffer),
        ("C control", result.control),
    ):
        rate_b, rate_a = area.before / b.days, area.after / a.days
        change = None if rate_b == 0 else 100.0 * (rate_a - rate_b) / rate_b
        table.add_row(
            name,
            str(area.cells),
            str(area.before),
            str(area.after),
            f"{rate_b:.2f}",
            f"{rate_a:.2f}",
            _fmt(change, 1, "%"),
            f"{area.harm_before:,.0f}",
            f"{area.harm_after:,.0f}",
        )
    return table


def effect_lines(label: str, e: Effects, unit: str) -> list[str]:
    """The effects of one measure as text."""
    q = e.quotient
    return [
        f"[b]{label}[/b]: gross change in R {e.gross_change:+,.1f} {unit} "
        f"({e.gross_change_per_day:+,.2f} per day, {_fmt(e.gross_change_pct, 1, '%')} "
        "of the daily rate)",
        f"  net effect vs control (R_b*C_a/C_b - R_a, + = prevented): "
        f"target {_fmt(e.net_target)}, buffer {_fmt(e.net_buffer)}, "
        f"total {_fmt(e.total_net)} {unit}",
        f"  WDQ = {_fmt(q.value, 3)} (buffer measure {_fmt(q.buffer_measure, 4)}, "
        f"success measure {_fmt(q.success_measure, 4)}): {q.reading}",
    ]


def write_map(areas: Areas, path: str, title: str) -> None:
    """A PNG of the target (red), buffer (orange) and control (grey) cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 8))
    lat_all: list[float] = []
    lon_all: list[float] = []
    layers = (
        (areas.control, "#b0b0b0", "control C"),
        (areas.buffer, "#f39c12", "buffer D"),
        (areas.target, "#d62728", "target R"),
    )
    for cells, colour, _ in layers:
        polygons = []
        for cell in sorted(cells):
            vertices = [(lon, lat) for lat, lon in cell_boundary(cell)]
            polygons.append(vertices)
            lat_all.extend(v[1] for v in vertices)
            lon_all.extend(v[0] for v in vertices)
        if polygons:
            ax.add_collection(
                PolyCollection(polygons, facecolors=colour, edgecolors="white", linewidths=0.3)
            )
    lat0, lat1, lon0, lon1 = min(lat_all), max(lat_all), min(lon_all), max(lon_all)
    pad_lat, pad_lon = 0.05 * (lat1 - lat0) + 1e-4, 0.05 * (lon1 - lon0) + 1e-4
    ax.set_xlim(lon0 - pad_lon, lon1 + pad_lon)
    ax.set_ylim(lat0 - pad_lat, lat1 + pad_lat)
    mid_lat = (lat0 + lat1) / 2
    ax.set_aspect(1 / math.cos(math.radians(mid_lat)))  # metres equal in both directions
    # a scale bar of a round length near a fifth of the width
    width_m = (lon1 - lon0) * 111_320 * math.cos(math.radians(mid_lat))
    bar_m = _round_length(width_m / 5)
    bar_deg = bar_m / (111_320 * math.cos(math.radians(mid_lat)))
    x0, y0 = lon0, lat0 - pad_lat / 2
    ax.plot([x0, x0 + bar_deg], [y0, y0], color="black", linewidth=3)
    ax.text(x0, y0 + pad_lat / 6, f"{bar_m:,.0f} m", fontsize=9)
    edge_m = _edge_m(next(iter(areas.target)))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.legend(
        handles=[Patch(facecolor=c, label=f"{n} ({len(cells)} cells)") for cells, c, n in layers][
            ::-1
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title=f"H3 res {cell_resolution(next(iter(areas.target)))}, edge ~{edge_m:.0f} m",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _round_length(m: float) -> float:
    scale = 10 ** math.floor(math.log10(max(m, 1.0)))
    return float(max(s * scale for s in (1, 2, 5) if s * scale <= max(m, 1.0)))


def _edge_m(cell: int) -> float:
    (lat_a, lon_a), (lat_b, lon_b) = cell_boundary(cell)[:2]
    dlat, dlon = math.radians(lat_b - lat_a), math.radians(lon_b - lon_a)
    h = (
        math.sin(dlat / 2) ** 2
        + math.cos(math.radians(lat_a)) * math.cos(math.radians(lat_b)) * math.sin(dlon / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def report_console() -> Console:
    """A console for the report: the terminal's width, else 120 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def main_assess(options: AssessOptions, settings: Settings) -> int:
    """Run ``hotspots assess``; returns its exit code."""
    started = time.monotonic()
    _check_assess(options)
    targets = read_cells(options.targets_path, "--targets")
    resolution = cell_resolution(targets[0])
    profile, zone = source_profile(options.profile)
    before = parse_span(options.before, zone, "--before")
    after = parse_span(options.after, zone, "--after")
    if before.to_s > after.from_s:
        raise UsageError("--before must end before --after starts")
    span = Period(before.from_s, after.to_s)
    events = load_events(options.path, profile, settings, span, now_s=time.time())
    harm = weights_of(app.weight_table(settings), events.categories, events.origins)
    counted = harm > 0
    t_s, harm = events.t_s[counted], harm[counted]
    event_cells = cells_of_many(events.lat_deg[counted], events.lon_deg[counted], [resolution])[
        :, 0
    ]
    in_before = (t_s >= before.from_s) & (t_s < before.to_s)
    areas = areas_of(options, targets, event_cells, in_before)
    if not areas.control:
        raise UsageError(
            "the control area is empty (no cell of the band had events before); "
            "widen --control-rings or give --control FILE"
        )
    counts = [
        count_area(event_cells, t_s, harm, area, before, after)
        for area in (areas.target, areas.buffer, areas.control)
    ]
    result = assess(counts[0], counts[1], counts[2], before, after)
    notes = [
        areas.control_note,
        f"buffer: the {len(areas.buffer)} cells within {options.buffer_rings} rings of the "
        f"{len(areas.target)} targets (H3 res {resolution}), targets excluded",
        "events: those the engine counts (harm weight > 0); harm = summed weights",
    ]
    if not result.equal_periods:
        notes.append(
            f"periods differ in length ({before.days:.1f} vs {after.days:.1f} days): "
            "gross changes compare rates per day; WDQ and net effects use within-period "
            "ratios to the control, so need no correction (net effects are in after-period events)"
        )
    if options.png_path:
        write_map(
            areas,
            options.png_path,
            f"Assessment areas: before {options.before}, after {options.after}",
        )
        notes.append(f"map written to {options.png_path}")
    seconds = time.monotonic() - started
    if options.as_json:
        report = result.as_json()
        report["parameters"] = {
            "path": options.path,
            "profile": options.profile,
            "before": options.before,
            "after": options.after,
            "resolution": resolution,
            "buffer_rings": options.buffer_rings,
            "control": options.control_path
            or f"rings {options.buffer_rings + 1}..{options.control_rings}",
            "seconds": round(seconds, 2),
        }
        report["cells"] = {
            name: sorted(cell_hex(c) for c in cells)
            for name, cells in (
                ("target", areas.target),
                ("buffer", areas.buffer),
                ("control", areas.control),
            )
        }
        report["notes"] = notes
        report["rows"] = rows_json(events.rows, options.profile)
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    console = report_console()
    for line in report_lines(events.rows, options.profile):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(assessment_table(result))
    for line in effect_lines("Counts", result.counts, "events") + effect_lines(
        "Harm", result.harm, "harm days"
    ):
        console.print(line, highlight=False, soft_wrap=True)
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False, soft_wrap=True)
    return 0
