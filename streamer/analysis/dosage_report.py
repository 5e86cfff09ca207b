"""``hotspots dosage-report``: delivered vs planned patrol minutes per hot spot
and day, as a table (or JSON), a CSV and a PNG chart.

Each local day (``grid.timezone``) from ``--from`` to ``--to`` is read through
:meth:`streamer.adapters.patrols.Dosage.summary`, so the figures are those of
``GET /v1/dosage?date=``: *delivered* minutes are the time patrols spent in a
planned hot spot that day (pass-bys left out, a visit across midnight split),
*planned* minutes are the required visits times the required minutes, and a
hot spot is *covered* when its required dose was met. A day whose planned
cells were never fixed (no leader ran that day and no plan was set) is
reported with the plan as it stands, and the output says so.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter
from rich.console import Console
from rich.table import Table

from streamer.adapters.patrols import Dosage
from streamer.adapters.store import EngineClock, Store
from streamer.settings import Settings
from streamer.usage import UsageError

PLANNED_COLOR = "#b8c4d6"
DELIVERED_COLOR = "#1f5fa8"
COVERED_COLOR = "#c0392b"
MAX_DAYS = 400
"""Longest span: a day's fixed plan is kept this long (``P:dosage:planned:DAY``)."""


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """The command's flags, as given."""

    start: str  # --from, a local date
    end: str  # --to, inclusive
    out_dir: str = "."
    as_json: bool = False


@dataclass(frozen=True, slots=True)
class CellDay:
    """One planned hot spot on one day."""

    day: str
    cell: str
    required_visits: int
    required_minutes: float
    delivered_minutes: float
    visits: int
    koper_visits: int
    compliant: bool
    unit_minutes: dict[str, float]

    @property
    def planned_minutes(self) -> float:
        return self.required_visits * self.required_minutes


@dataclass(frozen=True, slots=True)
class DayTotals:
    """One day over its planned hot spots. ``plan_recorded`` is False when the
    day's planned cells were never fixed and the plan as it stands was used."""

    day: str
    plan_recorded: bool
    cells: tuple[CellDay, ...]

    @property
    def planned(self) -> int:
        return len(self.cells)

    @property
    def covered(self) -> int:
        return sum(1 for c in self.cells if c.compliant)

    @property
    def planned_minutes(self) -> float:
        return sum(c.planned_minutes for c in self.cells)

    @property
    def delivered_minutes(self) -> float:
        return sum(c.delivered_minutes for c in self.cells)

    @property
    def covered_share(self) -> float | None:
        return _share(self.covered, self.planned)

    @property
    def minutes_share(self) -> float | None:
        return _share(self.delivered_minutes, self.planned_minutes)


@dataclass(frozen=True, slots=True)
class Report:
    """The whole span. ``today`` is the engine's local day when it was read;
    ``plan_now`` describes the plan as it stands."""

    start: str
    end: str
    timezone: str
    at: str  # the engine's now, local time
    today: str
    plan_now: str
    days: tuple[DayTotals, ...]


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def days_of(start: str, end: str) -> list[date]:
    """The local days from ``start`` to ``end`` inclusive (``YYYY-MM-DD``).

    >>> [d.isoformat() for d in days_of("2025-02-27", "2025-03-01")]
    ['2025-02-27', '2025-02-28', '2025-03-01']
    >>> days_of("2025-03-02", "2025-03-01")
    Traceback (most recent call last):
    ...
    streamer.usage.UsageError: --from 2025-03-02 is after --to 2025-03-01
    """
    first, last = _date("--from", start), _date("--to", end)
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise UsageError(f"--from {first} --to {last} spans {count} days; at most {MAX_DAYS}")
    return [first + timedelta(days=i) for i in range(count)]


def _date(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag}: not a date (YYYY-MM-DD): {text!r}") from None


def cell_days(summary: dict[str, Any]) -> tuple[CellDay, ...]:
    """The planned cells of one :meth:`Dosage.summary`."""
    return tuple(
        CellDay(
            day=summary["date"],
            cell=row["cell"],
            required_visits=int(row["required"]["visits"]),
            required_minutes=float(row["required"]["minutes"]),
            delivered_minutes=float(row["minutes"]),
            visits=int(row["visits"]),
            koper_visits=int(row["koper_visits"]),
            compliant=bool(row["compliant"]),
            unit_minutes={str(u): float(m) for u, m in row["units"].items()},
        )
        for row in summary["cells"]
    )


def describe_plan(plan: dict[str, Any]) -> str:
    """The plan in a few words.

    >>> describe_plan({"mode": "list", "cells": [{"cell": "8a"}, {"cell": "8b"}]})
    'a list of 2 hot spots'
    >>> describe_plan({"mode": "top", "horizon": "week", "resolution": 10, "top_n": 20})
    'the top 20 of the week ranking at resolution 10'
    """
    if plan.get("mode") == "list":
        return f"a list of {len(plan.get('cells', []))} hot spots"
    return (
        f"the top {plan.get('top_n')} of the {plan.get('horizon')} ranking "
        f"at resolution {plan.get('resolution')}"
    )


async def collect(dosage: Dosage, days: Sequence[date], now_s: float) -> Report:
    """Read every day's summary (``now_s``: the engine's now)."""
    totals = []
    for day in days:
        name = day.isoformat()
        summary = await dosage.summary(name, now_s)
        # a day whose planned cells were never fixed (the engine's leader did
        # not run that day, and no plan was set) is read with the plan as it stands
        recorded = await dosage.plan_recorded(name)
        totals.append(DayTotals(name, recorded, cell_days(summary)))
    return Report(
        start=days[0].isoformat(),
        end=days[-1].isoformat(),
        timezone=dosage.settings.grid.timezone,
        at=datetime.fromtimestamp(now_s, dosage.tz).isoformat(timespec="seconds"),
        today=dosage.day_of(now_s),
        plan_now=describe_plan(await dosage.plan()),
        days=tuple(totals),
    )


# -- outputs -----------------------------------------------------------------


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def span_totals(report: Report) -> dict[str, Any]:
    """Totals over the whole span (hot-spot days and minutes)."""
    planned = sum(d.planned for d in report.days)
    covered = sum(d.covered for d in report.days)
    planned_min = sum(d.planned_minutes for d in report.days)
    delivered_min = sum(d.delivered_minutes for d in report.days)
    return {
        "planned": planned,
        "covered": covered,
        "covered_share": _share(covered, planned),
        "planned_minutes": round(planned_min, 2),
        "delivered_minutes": round(delivered_min, 2),
        "minutes_share": _share(delivered_min, planned_min),
    }


def footer(report: Report, files: Sequence[Path]) -> list[str]:
    """The lines printed under the table."""
    lines = [
        "delivered: minutes patrols spent in the hot spot that day (pass-bys left out); "
        "planned: required visits x minutes; covered: the day's required dose met "
        "(visits starting in the cell's peak hours, where known)"
    ]
    unrecorded = [d.day for d in report.days if not d.plan_recorded]
    if unrecorded:
        lines.append(
            f"no plan recorded for {_days_text(unrecorded)}: reported with the plan as it "
            f"stands ({report.plan_now})"
        )
    later = [d.day for d in report.days if d.day > report.today]
    if later:
        lines.append(f"after today ({report.today}): {_days_text(later)}, nothing delivered yet")
    t = span_totals(report)
    lines.append(
        f"{report.start} to {report.end} ({report.timezone}): covered {t['covered']}/"
        f"{t['planned']} hot-spot days ({_pct(t['covered_share'])}), delivered "
        f"{t['delivered_minutes']:.0f} of {t['planned_minutes']:.0f} planned minutes "
        f"({_pct(t['minutes_share'])}); read at {report.at}"
    )
    lines.append("wrote " + ", ".join(str(f) for f in files))
    return lines


def _days_text(days: Sequence[str]) -> str:
    if len(days) <= 4:
        return ", ".join(days)
    return f"{len(days)} days ({days[0]} .. {days[-1]})"


def table_of(report: Report) -> Table:
    """Per hot spot and day, with a total line per day."""
    table = Table(title=f"Patrol dosage {report.start} to {report.end} ({report.timezone})")
    table.add_column("date")
    table.add_column("hot spot")
    for head in ("planned\nminutes", "delivered\nminutes", "delivered\nshare"):
        table.add_column(head, justify="right")
    for head in ("visits", "Koper\nvisits"):
        table.add_column(head, justify="right")
    table.add_column("covered", justify="center")
    for d in report.days:
        label = d.day if d.plan_recorded else f"{d.day} *"
        if not d.cells:
            table.add_row(label, "[dim]no planned hot spots[/dim]", *[""] * 6)
        for i, c in enumerate(d.cells):
            table.add_row(
                label if i == 0 else "",
                c.cell,
                f"{c.planned_minutes:.0f}",
                f"{c.delivered_minutes:.1f}",
                _pct(_share(c.delivered_minutes, c.planned_minutes)),
                str(c.visits),
                str(c.koper_visits),
                "[green]yes[/green]" if c.compliant else "[red]no[/red]",
            )
        if d.cells:
            table.add_row(
                "",
                f"[bold]total: {d.covered}/{d.planned} covered[/bold]",
                f"[bold]{d.planned_minutes:.0f}[/bold]",
                f"[bold]{d.delivered_minutes:.1f}[/bold]",
                f"[bold]{_pct(d.minutes_share)}[/bold]",
                f"[bold]{sum(c.visits for c in d.cells)}[/bold]",
                f"[bold]{sum(c.koper_visits for c in d.cells)}[/bold]",
                f"[bold]{_pct(d.covered_share)}[/bold]",
            )
        table.add_section()
    if any(not d.plan_recorded for d in report.days):
        table.caption = "* no plan recorded for the day: the plan as it stands"
    return table


CSV_COLUMNS = (
    "date",
    "cell",
    "plan_recorded",
    "required_visits",
    "required_minutes",
    "planned_minutes",
    "delivered_minutes",
    "visits",
    "koper_visits",
    "compliant",
    "unit_minutes",
)


def write_csv(report: Report, path: Path) -> None:
    """One row per planned hot spot and day (``unit_minutes``: ``unit=min;...``)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for d in report.days:
            for c in d.cells:
                writer.writerow(
                    [
                        c.day,
                        c.cell,
                        str(d.plan_recorded).lower(),
                        c.required_visits,
                        c.required_minutes,
                        c.planned_minutes,
                        round(c.delivered_minutes, 2),
                        c.visits,
                        c.koper_visits,
                        str(c.compliant).lower(),
                        ";".join(f"{u}={m:.2f}" for u, m in sorted(c.unit_minutes.items())),
                    ]
                )


def write_chart(report: Report, path: Path) -> None:
    """Per day: planned and delivered minutes (bars, summed over the planned
    hot spots) and the share of hot spots covered (line, right axis). Days
    without a recorded plan have hatched planned bars."""
    n = len(report.days)
    xs = list(range(n))
    figure = Figure(figsize=(max(7.0, min(18.0, 3.0 + 0.5 * n)), 5.2), layout="constrained")
    FigureCanvasAgg(figure)  # PNG through Agg, whatever backend the process has
    ax = figure.add_subplot()
    width = 0.4
    planned = ax.bar(
        [x - width / 2 for x in xs],
        [d.planned_minutes for d in report.days],
        width,
        color=PLANNED_COLOR,
    )
    for bar, d in zip(planned.patches, report.days, strict=True):
        if not d.plan_recorded:
            bar.set_hatch("//")
            bar.set_edgecolor("white")
    ax.bar(
        [x + width / 2 for x in xs],
        [d.delivered_minutes for d in report.days],
        width,
        color=DELIVERED_COLOR,
    )
    ax.set_ylabel("minutes (all planned hot spots)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = max([d.planned_minutes for d in report.days] + [d.delivered_minutes for d in report.days])
    ax.set_ylim(0, max(1.0, top * 1.12))
    step = max(1, math.ceil(n / 20))  # at most about 20 date labels
    labels = [f"{date.fromisoformat(d.day):%a %d %b}" for d in report.days]
    if n > 7:
        ax.set_xticks(xs[::step], labels[::step], rotation=45, ha="right")
    else:
        ax.set_xticks(xs, labels)
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(axis="y", alpha=0.3)

    share = ax.twinx()
    line = share.plot(
        xs,
        [math.nan if d.covered_share is None else d.covered_share for d in report.days],
        color=COVERED_COLOR,
        marker="o" if n <= 31 else None,
        linewidth=2,
        clip_on=False,
        label="hot spots covered (right axis)",
    )
    share.set_ylim(0, 1.1)
    share.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    share.set_ylabel("hot spots covered (required dose met)")
    if n <= 14:
        for x, d in zip(xs, report.days, strict=True):
            if d.planned:
                share.annotate(
                    f"{d.covered}/{d.planned}",
                    (x, d.covered / d.planned),
                    textcoords="offset points",
                    xytext=(0, 9),
                    ha="center",
                    fontsize=9,
                    color=COVERED_COLOR,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                )
    # proxies: the bars' own legend entry would copy a hatched first bar
    handles: list[Artist] = [Patch(facecolor=PLANNED_COLOR, label="planned minutes")]
    if any(not d.plan_recorded for d in report.days):
        handles.append(
            Patch(
                facecolor=PLANNED_COLOR,
                hatch="//",
                edgecolor="white",
                label="planned, no plan recorded (the plan as it stands)",
            )
        )
    handles += [Patch(facecolor=DELIVERED_COLOR, label="delivered minutes"), *line]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    ax.set_title(f"Patrol dosage {report.start} to {report.end} ({report.timezone})")
    figure.savefig(path, format="png", dpi=120)


def json_of(report: Report, files: dict[str, str]) -> dict[str, Any]:
    """The machine-readable summary ``--json`` prints."""
    return {
        "from": report.start,
        "to": report.end,
        "timezone": report.timezone,
        "at": report.at,
        "plan_as_it_stands": report.plan_now,
        "days": [
            {
                "date": d.day,
                "plan_recorded": d.plan_recorded,
                "planned": d.planned,
                "covered": d.covered,
                "covered_share": d.covered_share,
                "planned_minutes": round(d.planned_minutes, 2),
                "delivered_minutes": round(d.delivered_minutes, 2),
                "minutes_share": d.minutes_share,
                "cells": [
                    {
                        "cell": c.cell,
                        "planned_minutes": c.planned_minutes,
                        "delivered_minutes": round(c.delivered_minutes, 2),
                        "visits": c.visits,
                        "koper_visits": c.koper_visits,
                        "compliant": c.compliant,
                        "required": {"visits": c.required_visits, "minutes": c.required_minutes},
                        "unit_minutes": {u: round(m, 2) for u, m in c.unit_minutes.items()},
                    }
                    for c in d.cells
                ],
            }
            for d in report.days
        ],
        "totals": span_totals(report),
        "files": files,
    }


def _out_dir(text: str) -> Path:
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {text!r} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create {text!r}: {exc.strerror}") from None
    return out


async def main(options: ReportOptions, settings: Settings, store: Store) -> int:
    """Run the command; returns its exit code. Raises :class:`UsageError` for
    bad flags before reading anything."""
    days = days_of(options.start, options.end)
    out = _out_dir(options.out_dir)
    now_s = await EngineClock(store, settings.time.clock).refresh()
    report = await collect(Dosage(store, settings), days, now_s)
    stem = f"dosage-{report.start}-{report.end}"
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    write_csv(report, csv_path)
    write_chart(report, png_path)
    if options.as_json:
        files = {"csv": str(csv_path), "png": str(png_path)}
        print(orjson.dumps(json_of(report, files)).decode())
        return 0
    console = Console()
    if not console.is_terminal:  # a file or pipe: room for one line per row
        console = Console(width=120)
    console.print(table_of(report))
    for line in footer(report, [csv_path, png_path]):
        console.print(line, highlight=False, markup=False)
    return 0
