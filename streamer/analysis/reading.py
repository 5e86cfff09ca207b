"""The row report of a file an analysis reads: what became of its rows, and
the warnings a command prints before its results (:mod:`streamer.core.row_report`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamer import app
from streamer.adapters.files import Columns, Paths, Standing, expand_paths, load_profile, standing
from streamer.core.row_report import RowReport
from streamer.settings import Settings
from streamer.usage import UsageError


def existing_files(path: Paths) -> list[Path]:
    """The files a command's file argument names (paths, or glob patterns),
    sorted; a pattern that matches nothing, or a missing file, is a usage
    error naming it."""
    try:
        files = expand_paths(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for one in files:
        if not one.is_file():
            raise UsageError(f"{one}: no such file")
    return files


def stand(cols: Columns, settings: Settings, *, now_s: float) -> tuple[Standing, RowReport]:
    """The rows of ``cols`` that stand under the settings' event rules (as
    backfill would load them), and the report of what became of every row."""
    stood = standing(cols, app.event_rules(settings), now_s=now_s)
    return stood, row_report(cols, stood, settings)


def row_report(cols: Columns, stood: Standing, settings: Settings) -> RowReport:
    """The fate of every row of ``cols``, given their standing and the
    settings' harm table (for the events on the default weight)."""
    table = app.weight_table(settings)
    listed = np.isin(cols.categories[stood.rows], list(table.rules))
    return RowReport(
        read=len(cols),
        accepted=int(stood.rows.size),
        rejected=dict(stood.rejected),
        superseded=stood.superseded,
        cancelled=stood.cancelled,
        on_default=int(np.count_nonzero(~listed)),
    )


def profile_columns(profile_name: str | None) -> dict[str, str]:
    """Profile key -> the file column it reads (native JSON lines: the field names)."""
    if profile_name is None:
        return {}
    columns = load_profile(profile_name).columns
    return {key: str(column) for key, column in columns.items()}


def report_lines(report: RowReport, profile_name: str | None) -> list[str]:
    """The report's line, then a ``warning:`` line for each loss over the share."""
    return [report.line()] + [
        f"warning: {w}" for w in report.warnings(profile_columns(profile_name))
    ]


def rows_json(report: RowReport, profile_name: str | None) -> dict[str, object]:
    """The report and its warnings, JSON-ready."""
    return {**report.as_dict(), "warnings": report.warnings(profile_columns(profile_name))}
