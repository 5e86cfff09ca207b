"""Bulk-file validation: the rules of :func:`~streamer.core.events.parse_record`
applied to whole columns, with the same reason codes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from streamer.core.event_model import (
    COORDINATE_FAULTS,
    MAX_TEXT_CHARS,
    MAX_TIME_S,
    MIN_TIME_S,
    NULL_ISLAND_DEG,
    EventRules,
    InvalidEvent,
    normalize_category,
    normalize_id,
)

Bools = npt.NDArray[np.bool_]


def validate_columns(
    ids: npt.ArrayLike | Sequence[object],
    occurred_at_s: npt.ArrayLike,
    lat_deg: npt.ArrayLike,
    lon_deg: npt.ArrayLike,
    categories: npt.ArrayLike | Sequence[object],
    rules: EventRules,
    *,
    now_s: float,
    coordinate_faults: npt.ArrayLike | Sequence[object] | None = None,
) -> tuple[Bools, npt.NDArray[np.object_]]:
    """Validate a bulk file column by column: ``(keep, reasons)``.

    ``keep[i]`` is True for rows that
    :func:`~streamer.core.events.parse_record` would accept as an upsert;
    ``reasons[i]`` is None for those and otherwise the same reason code
    ``parse_record`` raises for that row (given as a mapping with these
    five fields). ``occurred_at_s`` is POSIX seconds. Columns cannot hold an
    absent number, so a NaN time is ``bad_time`` and a NaN coordinate
    ``not_finite``; ``None`` ids and categories are ``missing_field``.

    ``coordinate_faults`` (from a file reader, which saw the coordinates as
    written: ``""`` where they were usable, else one of
    :data:`~streamer.core.event_model.COORDINATE_FAULTS`) gives those rows
    that reason in place of the coordinate checks; no single record has it.
    """
    id_col = _text_column(ids)
    category_col = _text_column(categories)
    t = np.asarray(occurred_at_s, dtype=np.float64)
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    n = len(t)
    for name, col in (
        ("ids", id_col),
        ("occurred_at_s", t),
        ("lat_deg", lat),
        ("lon_deg", lon),
        ("categories", category_col),
    ):
        if col.shape != (n,):
            raise ValueError(f"{name} has shape {col.shape}, expected ({n},)")
    faults = _faults(coordinate_faults, n)

    reasons: npt.NDArray[np.object_] = np.full(n, None, dtype=object)
    keep: Bools = np.ones(n, dtype=np.bool_)

    def reject(bad: Bools, reason: str | npt.NDArray[np.object_]) -> None:
        # Checks run in parse_record's order; a row keeps its first failure.
        hit = bad & keep
        reasons[hit] = reason if isinstance(reason, str) else reason[hit]
        keep[bad] = False

    for col, normalize, few in (
        (id_col, normalize_id, False),
        (category_col, normalize_category, True),
    ):
        codes = _column_reasons(col, normalize, few_distinct=few)
        if codes is not None:
            reject(codes.astype(np.bool_), codes)
    with np.errstate(invalid="ignore"):
        reject(~((t >= MIN_TIME_S) & (t < MAX_TIME_S)), "bad_time")
        reject(t > now_s + rules.max_future_skew_s, "future_time")
        if faults is not None:
            reject(faults != "", faults)
        reject(~(np.isfinite(lat) & np.isfinite(lon)), "not_finite")
        reject(~(np.abs(lat) <= 90.0), "lat_out_of_range")
        reject(~(np.abs(lon) <= 180.0), "lon_out_of_range")
        reject((np.abs(lat) < NULL_ISLAND_DEG) & (np.abs(lon) < NULL_ISLAND_DEG), "null_island")
    if rules.area is not None:
        rows = np.flatnonzero(keep)
        outside = rows[~rules.area.contains_many(lat[rows], lon[rows])]
        reasons[outside] = "outside_area"
        keep[outside] = False
    return keep, reasons


def _faults(
    values: npt.ArrayLike | Sequence[object] | None, n: int
) -> npt.NDArray[np.object_] | None:
    """``coordinate_faults`` checked: None when absent or all ``""``."""
    if values is None:
        return None
    faults = np.asarray(_text_column(values), dtype=object)
    if faults.shape != (n,):
        raise ValueError(f"coordinate_faults has shape {faults.shape}, expected ({n},)")
    marked = faults != ""
    if not marked.any():
        return None
    unknown = set(faults[marked].tolist()) - set(COORDINATE_FAULTS)
    if unknown:
        raise ValueError(f"coordinate_faults holds unknown reasons {sorted(map(str, unknown))}")
    return faults


def _column_reasons(
    col: npt.NDArray[np.generic], normalize: Callable[[object], str], *, few_distinct: bool
) -> npt.NDArray[np.object_] | None:
    """Per-row reason codes from ``normalize`` (None where valid), or None if all are valid.

    Shortcuts rely on the id and category rules depending only on a value's
    type, and for strings on their length. With ``few_distinct`` (categories)
    each distinct value is checked once, which relies on equal values getting
    the same reason; otherwise odd columns go row by row."""
    n = len(col)
    if n == 0:
        return None
    kind = col.dtype.kind
    if kind in "biuf":
        reason = _reason(normalize, col[0].item())
        return None if reason is None else np.full(n, reason, dtype=object)
    if kind == "U":
        return _length_reasons(np.strings.str_len(cast(npt.NDArray[np.str_], col)), normalize)
    values = col.tolist()
    if few_distinct:
        try:
            distinct = set(values)
        except TypeError:  # unhashable values: row by row below
            pass
        else:
            bad = {v: r for v in distinct if (r := _reason(normalize, v)) is not None}
            if not bad:
                return None
            return np.array([bad.get(v) for v in values], dtype=object)
    types = set(map(type, values))
    if types == {str}:
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        return _length_reasons(lengths, normalize)
    # Integers fail only for length, and no value is longer than both extremes.
    if (
        types == {int}
        and _reason(normalize, min(values)) is None
        and _reason(normalize, max(values)) is None
    ):
        return None
    codes = np.array([_reason(normalize, v) for v in values], dtype=object)
    return codes if codes.astype(np.bool_).any() else None


def _text_column(values: npt.ArrayLike | Sequence[object]) -> npt.NDArray[np.generic]:
    """A column as an array; a Python list stays a list of objects, so that
    mixed values are not turned into strings by numpy."""
    if isinstance(values, list | tuple):
        return np.fromiter(values, dtype=object, count=len(values))
    return np.asarray(values)


def _length_reasons(
    lengths: npt.NDArray[np.int64], normalize: Callable[[object], str]
) -> npt.NDArray[np.object_] | None:
    empty = lengths == 0
    long = lengths > MAX_TEXT_CHARS
    if not (empty.any() or long.any()):
        return None
    codes: npt.NDArray[np.object_] = np.full(len(lengths), None, dtype=object)
    codes[empty] = _reason(normalize, "")
    codes[long] = _reason(normalize, "x" * (MAX_TEXT_CHARS + 1))
    return codes


def _reason(normalize: Callable[[object], str], value: object) -> str | None:
    try:
        normalize(value)
    except InvalidEvent as exc:
        return exc.reason
    return None
