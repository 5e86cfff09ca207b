"""``hotspots feedback-check``: how much of the flagged area only shows where
police already were, the ranking with and without proactive-origin events and
enforcement categories (the maths is :mod:`streamer.core.assessment`).

The file is read as ``assess`` reads it; dates are local days in the
profile's time zone, ``--to`` inclusive.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from rich.table import Table

from streamer import app
from streamer.analysis.assess import (
    Objects,
    load_events,
    report_console,
    source_profile,
    weights_of,
)
from streamer.analysis.evaluate_alerts import parse_moment
from streamer.analysis.reading import report_lines, rows_json
from streamer.core.assessment import FeedbackCheck, Period, feedback_check
from streamer.core.cells import cell_hex, cells_of_many
from streamer.core.weights import WeightTable
from streamer.settings import Settings
from streamer.usage import UsageError


@dataclass(frozen=True, slots=True)
class FeedbackOptions:
    """``hotspots feedback-check`` flags, as given."""

    path: str | list[str]  # one file, or several read as one
    start: str  # --from
    end: str  # --to (inclusive)
    profile: str | None = None
    resolution: int = 10
    horizon: str = "week"
    coverage: float = 0.01
    as_json: bool = False


def driven_mask(table: WeightTable, categories: Objects, origins: Objects) -> npt.NDArray[np.bool_]:
    """Events that measure police presence: proactive origin or an
    enforcement-flagged category."""
    enforcement = {
        c: table.rules.get(c, table.default).enforcement for c in set(categories.tolist())
    }
    return np.fromiter(
        (
            origin == "proactive" or enforcement[cat]
            for cat, origin in zip(categories.tolist(), origins.tolist(), strict=True)
        ),
        dtype=bool,
        count=len(categories),
    )


def main_feedback(options: FeedbackOptions, settings: Settings) -> int:
    """Run ``hotspots feedback-check``; returns its exit code."""
    started = time.monotonic()
    if options.horizon not in settings.horizons:
        raise UsageError(
            f"--horizon {options.horizon!r}: configured horizons are {sorted(settings.horizons)}"
        )
    if not 0 < options.coverage <= 1:
        raise UsageError("--coverage must be a share in (0, 1], e.g. 0.01 for 1%")
    if not 0 <= options.resolution <= 15:
        raise UsageError("--resolution must be an H3 resolution, 0 to 15")
    profile, zone = source_profile(options.profile)
    span = Period(
        parse_moment(options.start, zone, "--from"),
        parse_moment(options.end, zone, "--to", inclusive_end=True),
    )
    if span.to_s <= span.from_s:
        raise UsageError("--to must not be before --from")
    events = load_events(options.path, profile, settings, span, now_s=time.time())
    # "every event" at full weight, whatever the configured feedback factors are
    configured = app.weight_table(settings)
    table = dataclasses.replace(configured, proactive_factor=1.0, enforcement_factor=1.0)
    weight = weights_of(table, events.categories, events.origins)
    driven = driven_mask(table, events.categories, events.origins)
    counted = weight > 0
    cells = cells_of_many(events.lat_deg[counted], events.lon_deg[counted], [options.resolution])[
        :, 0
    ]
    half_life_s = settings.horizons[options.horizon]
    check = feedback_check(
        cells,
        events.t_s[counted],
        weight[counted],
        driven[counted],
        at_s=span.to_s,
        half_life_s=half_life_s,
        coverage=options.coverage,
    )
    proactive_events = int(np.count_nonzero(events.origins[counted] == "proactive"))
    enforcement_categories = sorted(
        c for c, r in table.rules.items() if r.enforcement and r.include
    )
    notes = [
        f"flagged: the top {options.coverage:.2%} of the {check.cells_with_events} res "
        f"{options.resolution} cells with counting events = {check.flagged} cells, by harm-"
        f"weighted score decayed with the {options.horizon} half-life "
        f"({half_life_s / 86400:g} d) to the end of {options.end}",
        "with: every counting event at its full harm weight (the configured multipliers "
        f"[weights] proactive = {configured.proactive_factor:g}, enforcement = "
        f"{configured.enforcement_factor:g} are ignored); without: proactive-origin events "
        "and enforcement categories weighted 0",
        f"enforcement categories: {', '.join(enforcement_categories) or 'none'}",
    ]
    if not events.origin_column or proactive_events == 0:
        notes.append(
            "this file has no proactive-origin events (its profile has no origin column: every "
            "record counts as reported), so only the enforcement categories matter here"
        )
    seconds = time.monotonic() - started
    if options.as_json:
        report = {
            "parameters": {
                "path": options.path,
                "profile": options.profile,
                "from": options.start,
                "to": options.end,
                "resolution": options.resolution,
                "horizon": options.horizon,
                "half_life_s": half_life_s,
                "coverage": options.coverage,
                "seconds": round(seconds, 2),
            },
            "events": int(np.count_nonzero(counted)),
            "driven_events": int(np.count_nonzero(driven[counted])),
            "proactive_events": proactive_events,
            "origin_column": events.origin_column,
            **feedback_json(check),
            "notes": notes,
            "rows": rows_json(events.rows, options.profile),
        }
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    console = report_console()
    for line in report_lines(events.rows, options.profile):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(feedback_table(check, int(np.count_nonzero(driven[counted])), int(counted.sum())))
    if check.dropped:
        dropped = Table(title="Flagged only with proactive/enforcement events (top 15)")
        for head in ("cell", "score", "share from them"):
            dropped.add_column(head, justify="right")
        for d in sorted(check.dropped, key=lambda d: -d.score)[:15]:
            dropped.add_row(cell_hex(d.cell), f"{d.score:,.1f}", f"{d.driven_share:.0%}")
        console.print(dropped)
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False, soft_wrap=True)
    return 0


def feedback_json(check: FeedbackCheck) -> dict[str, Any]:
    """The check's figures as a JSON-ready dict."""
    return {
        "cells_with_events": check.cells_with_events,
        "flagged": check.flagged,
        "driven_share_of_flagged_score": check.driven_share,
        "driven_share_of_all_score": check.driven_share_everywhere,
        "stay_flagged": check.stay_flagged,
        "overlap_pct": check.overlap_pct,
        "dropped": [
            {"cell": cell_hex(d.cell), "score": d.score, "driven_share": d.driven_share}
            for d in check.dropped
        ],
        "added": [cell_hex(c) for c in check.added],
    }


def feedback_table(check: FeedbackCheck, driven_events: int, events: int) -> Table:
    """The headline figures as a rich table."""
    table = Table(title="Feedback-loop check: flagged cells with and without them")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: Sequence[tuple[str, str]] = (
        ("counting events", f"{events:,}"),
        (
            "of them proactive/enforcement",
            f"{driven_events:,} ({driven_events / max(events, 1):.1%})",
        ),
        ("cells with events", f"{check.cells_with_events:,}"),
        ("flagged cells", f"{check.flagged:,}"),
        ("share of flagged score from them", f"{check.driven_share:.1%}"),
        ("share of all score from them", f"{check.driven_share_everywhere:.1%}"),
        ("stay flagged without them", f"{check.stay_flagged} ({check.overlap_pct:.1f}%)"),
        ("drop out", f"{len(check.dropped)}"),
    )
    for name, value in rows:
        table.add_row(name, value)
    return table
