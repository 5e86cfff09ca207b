"""Times as bulk files write them -> POSIX seconds UTC, vectorised with Arrow.

Local times become UTC with the zone's daylight-saving rules: a wall time
that occurs twice (the hour repeated when clocks go back) is read as its
*earliest* instant (daylight time); a wall time that does not exist (the
hour skipped when clocks go forward) becomes the *earliest* neighbouring
instant, the last second before the gap. Both are Arrow's
``assume_timezone(..., ambiguous="earliest", nonexistent="earliest")``.
A time that cannot be read is ``NaN``. One limit of Arrow's ``strptime``: a
day 29-31 past the end of its month (``31/02``) rolls over into the next
month instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamer.adapters.columns import FloatArray

# Arrow's DST policy for local wall times (see the module docstring).
_AMBIGUOUS = "earliest"
_NONEXISTENT = "earliest"
# A time in parts (year, month, ...) is put together as this text, then parsed.
_PARTS_WIDTH = {"year": 4, "month": 2, "day": 2, "hour": 2, "minute": 2}
PARTS_FORMAT = "%Y-%m-%d %H:%M"

Text: TypeAlias = pa.Array | pa.ChunkedArray


def joined_text(columns: Sequence[Text], separator: str) -> Text:
    """Text columns joined row by row with ``separator``; null where any is null."""
    if len(columns) == 1:
        return columns[0]
    joined: Text = pc.binary_join_element_wise(*columns, separator)
    return joined


def parts_text(parts: Sequence[tuple[str, Text | None]]) -> Text:
    """A time in parts (``year``, ``month``, ``day``, ``hour``, ``minute``;
    a missing part, None, is 0) as ``YYYY-MM-DD HH:MM`` text to parse with
    :data:`PARTS_FORMAT`. A part that is not a number of at most its width
    in digits makes the text unparseable (null or a misfit)."""
    pieces: dict[str, Text | str] = {}
    for part, column in parts:
        width = _PARTS_WIDTH[part]
        if column is None:
            pieces[part] = "0" * width
        else:
            pieces[part] = pc.utf8_lpad(pc.utf8_trim_whitespace(column), width, "0")
    year, month, day, hour, minute = (pieces[p] for p in _PARTS_WIDTH)
    date = pc.binary_join_element_wise(year, month, day, "-")
    clock = pc.binary_join_element_wise(hour, minute, ":")
    text: Text = pc.binary_join_element_wise(date, clock, " ")
    return text


def local_to_utc_s(text: Text, time_format: str, timezone: str) -> FloatArray:
    """``strptime`` text; without ``%z`` a wall time in ``timezone``."""
    stamps = pc.strptime(text, format=time_format, unit="s", error_is_null=True)
    if stamps.type.tz is None:  # no %z: wall time in the profile's zone
        stamps = pc.assume_timezone(
            stamps, timezone=timezone, ambiguous=_AMBIGUOUS, nonexistent=_NONEXISTENT
        )
    return epoch_s(stamps, per_second=1.0)


def iso_to_utc_s(text: Text, timezone: str) -> FloatArray:
    """ISO 8601 strings; those without an offset are wall times in ``timezone``."""
    try:  # fast path: every value carries an offset
        return epoch_s(pc.cast(text, pa.timestamp("us", "UTC")), per_second=1e6)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = text.to_pylist()
    out = np.full(len(values), np.nan)
    naive_us: list[int | None] = [None] * len(values)
    for i, value in enumerate(values):
        moment = parse_iso(value)
        if moment is None:
            continue
        if moment.tzinfo is None:
            naive_us[i] = _naive_micros(moment)
        else:
            out[i] = moment.timestamp()
    if any(v is not None for v in naive_us):
        local = pc.assume_timezone(
            pa.array(naive_us, pa.timestamp("us")),
            timezone=timezone,
            ambiguous=_AMBIGUOUS,
            nonexistent=_NONEXISTENT,
        )
        naive = epoch_s(local, per_second=1e6)
        out = np.where(np.isnan(out), naive, out)
    return out


def parse_iso(value: object) -> datetime | None:
    """An ISO 8601 string or POSIX seconds as a datetime; None when neither."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _naive_micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_s(stamps: Text, *, per_second: float) -> FloatArray:
    """Arrow timestamps (``per_second`` ticks a second) as float seconds, NaN for null."""
    counts = pc.cast(pc.cast(stamps, pa.int64()), pa.float64())
    seconds: FloatArray = np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.float64)
    return seconds / per_second if per_second != 1.0 else seconds
