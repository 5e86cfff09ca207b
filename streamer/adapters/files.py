"""Bulk event files: a force's CSV export (through a source profile) or native JSON lines.

A *source profile* (``streamer/config/sources/<name>.toml``, documented in
``streamer/config/sources/README.md``, loaded by
:mod:`streamer.adapters.source_profiles`) says which export column holds which field of
the event model and how its times are written. :func:`read_columns` turns a
file into chunks of numpy columns for the batch paths (backfill, benchmarks,
evaluation); :func:`iter_records` turns it into native event dicts for the
Kafka replay tool. Both read the file the same way, so they always agree.

Several files are read as one stream: :func:`read_columns` and
:func:`iter_records` take a path, a glob pattern (``data/*.csv.gz``) or a
sequence of them, and read the files in sorted order (so the last row of an
id across all of them wins). CSV reading through a profile is
:mod:`streamer.adapters.csv_export`; times are :mod:`streamer.adapters.wall_times`
(local wall times become UTC with the zone's daylight-saving rules).

This module only parses. It does not judge events: a row with a time it
cannot parse gets ``NaN`` (not a crash), and validation with reasons
(``bad_time``, ``lat_out_of_range`` ...) stays in :mod:`streamer.core.events`.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamer.adapters.columns import Columns as Columns
from streamer.adapters.columns import FloatArray as FloatArray
from streamer.adapters.columns import ObjectArray as ObjectArray
from streamer.adapters.columns import concat_columns as concat_columns
from streamer.adapters.columns import constant
from streamer.adapters.csv_export import read_csv
from streamer.adapters.source_profiles import SourceProfile as SourceProfile
from streamer.adapters.source_profiles import load_profile as load_profile
from streamer.adapters.wall_times import iso_to_utc_s, parse_iso
from streamer.core.events import EventRules, validate_columns
from streamer.core.weights import WeightTable

DEFAULT_CHUNK_ROWS = 1_000_000

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_GLOB_CHARS = frozenset("*?[")

Paths = str | Path | Sequence[str | Path]
"""A file, a glob pattern, or a sequence of files and patterns."""


@dataclass(frozen=True, slots=True)
class Standing:
    """:func:`standing` of a file's columns."""

    rows: npt.NDArray[np.int64]  # the rows that stand, in file order
    rejected: Counter[str]  # invalid event rows, by reason (cancels need only an id)
    superseded: int  # rows replaced by a later row of the same id
    cancelled: int  # ids upserted in the file whose last row cancels them
    # cancel rows of an id before its first upsert in the file (or of an id
    # the file never upserts): they withdraw what the store already holds
    store_cancels: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    # which of ``store_cancels`` carry the event's own fields (valid)
    with_fields: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    # the last row of each id counted in ``cancelled``: the store may hold an
    # earlier version of it (loaded before this file), withdrawn by id
    cancelled_rows: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def standing(cols: Columns, rules: EventRules, *, now_s: float) -> Standing:
    """The rows of a file that stand: valid events, the last row of each id
    (a later row replaces an earlier one), and no id whose last row cancels
    it. What backfill loads and the offline tools count.

    The file is read as a sequence applied in order to what the store held
    before it: a cancel that comes before any upsert of its id in the file
    withdraws the stored event (:attr:`Standing.store_cancels`); from an
    id's first upsert on, its last row decides (it stands, or the id is
    cancelled within the file)."""
    keep, reasons = validate_columns(
        cols.ids,
        cols.occurred_at_s,
        cols.lat_deg,
        cols.lon_deg,
        cols.categories,
        rules,
        now_s=now_s,
        coordinate_faults=cols.coordinate_faults,
    )
    is_cancel = np.asarray(cols.ops == "cancel", dtype=np.bool_)
    rejected = Counter(r for r in reasons[~is_cancel] if r is not None)
    candidates = np.flatnonzero(keep | is_cancel)
    codes = _id_codes(cols.ids[candidates])
    cancel = is_cancel[candidates]
    n_ids = int(codes.max()) + 1 if codes.size else 0
    # each id's first upsert (as a position among the candidates)
    first_upsert = np.full(n_ids, candidates.size, dtype=np.int64)
    upserts = np.flatnonzero(~cancel)
    np.minimum.at(first_upsert, codes[upserts], upserts)
    position = np.arange(candidates.size)
    leading = position < first_upsert[codes]  # (only cancels come before an id's first upsert)
    tail = np.flatnonzero(~leading)
    last = _last_of_codes(codes[tail], tail)
    stands = last[~cancel[last]]
    dropped = last[cancel[last]]
    store_cancels = candidates[leading]
    return Standing(
        rows=candidates[stands],
        rejected=rejected,
        superseded=int(tail.size - last.size),
        cancelled=int(dropped.size),
        store_cancels=store_cancels,
        with_fields=keep[store_cancels],
        cancelled_rows=candidates[dropped],
    )


def _last_of_each_id(
    ids: npt.NDArray[np.object_], rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Of ``rows`` (ascending, their ids ``ids``), the last row of each id, ascending."""
    return _last_of_codes(_id_codes(ids), rows)


def _last_of_codes(
    codes: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Of ``rows`` (ascending, their id codes ``codes``), the last row of each code, ascending."""
    # the first of each code in the reversed rows is the last in file order
    _, first_reversed = np.unique(codes[::-1], return_index=True)
    last: npt.NDArray[np.int64] = rows[rows.size - 1 - first_reversed]
    last.sort()
    return last


def _id_codes(ids: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """A number per distinct id (equal ids, equal numbers). Ids of one type
    are numbered by Arrow (a Python dict of 1.5 M ids took most of a
    second); mixed ones (ints beside strings: Python's equality, not
    Arrow's, decides) go through a dict."""
    try:
        column = pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        column = None
    if (
        column is not None
        and column.null_count == 0
        and (pa.types.is_string(column.type) or pa.types.is_integer(column.type))
    ):
        indices = pc.dictionary_encode(column).indices.to_numpy(zero_copy_only=False)
        return np.asarray(indices, dtype=np.int64)
    number: dict[object, int] = {}
    return np.fromiter(
        (number.setdefault(i, len(number)) for i in ids.tolist()), dtype=np.int64, count=len(ids)
    )


def standing_rows(cols: Columns, rules: EventRules, *, now_s: float) -> npt.NDArray[np.int64]:
    """The rows of :func:`standing` alone."""
    return standing(cols, rules, now_s=now_s).rows


def row_weights(
    cols: Columns, rows: npt.NDArray[np.int64], table: WeightTable
) -> npt.NDArray[np.float64]:
    """The harm weight of each of ``rows`` (category and origin)."""
    pairs = list(zip(cols.categories[rows].tolist(), cols.origins[rows].tolist(), strict=True))
    weighed = {p: table.weigh(*p).weight for p in set(pairs)}
    return np.array([weighed[p] for p in pairs], dtype=np.float64)


def read_columns(
    path: Paths,
    profile: SourceProfile | None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[Columns]:
    """Read CSV exports (with ``profile``) or native JSON lines (``profile=None``).

    ``path`` is a file, a glob pattern or a sequence of them (see
    :func:`expand_paths`); the files are read one after another, as one
    stream. Plain or gzip-compressed files. Yields chunks of at most
    ``chunk_rows`` rows in file order (a chunk holds rows of one file). A
    CSV is read with Arrow, only the columns the profile names. Raises
    ``ValueError`` naming the file when a named column is missing or a JSON
    line is not a JSON object, and naming the pattern when a glob matches
    no file.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    files = expand_paths(path)
    if profile is None:
        for file in files:
            if not _is_jsonl(file):
                raise ValueError(
                    f"{file}: without a source profile only native JSON lines "
                    f"({', '.join(_JSONL_SUFFIXES)}, optionally .gz) can be read"
                )
    for file in files:
        if profile is None:
            yield from _read_jsonl(file, chunk_rows)
        else:
            yield from read_csv(file, profile, chunk_rows)


def expand_paths(path: Paths) -> list[Path]:
    """The files ``path`` names, sorted and each once.

    A string with ``*``, ``?`` or ``[`` that is not itself a file is a glob
    pattern (``**`` reaches into subfolders); one that matches no file is a
    ``ValueError`` naming it. Other paths are taken as they are (a missing
    one fails when it is read)."""
    items = [path] if isinstance(path, str | Path) else list(path)
    if not items:
        raise ValueError("no file given (an empty list of paths)")
    found: set[Path] = set()
    for item in items:
        text = str(item)
        if _GLOB_CHARS.isdisjoint(text) or Path(text).is_file():
            found.add(Path(text))
            continue
        matches = [Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file()]
        if not matches:
            raise ValueError(f"the pattern {text!r} matches no file")
        found.update(matches)
    return sorted(found, key=str)


def iter_records(path: Paths, profile: SourceProfile | None) -> Iterator[dict[str, Any]]:
    """Native, JSON-able event dicts in file order (for replay onto Kafka).

    Keys: ``id, kind, occurred_at`` (ISO 8601 UTC with ``+00:00``, ``None``
    when unparseable), ``lat, lon`` (``None`` when missing), ``category,
    origin, op`` and ``priority`` when the source has one.
    """
    for columns in read_columns(path, profile):
        rows = zip(
            columns.ids.tolist(),
            columns.kinds.tolist(),
            iso_utc(columns.occurred_at_s),
            _floats_or_none(columns.lat_deg),
            _floats_or_none(columns.lon_deg),
            columns.categories.tolist(),
            columns.origins.tolist(),
            columns.ops.tolist(),
            columns.priorities.tolist(),
            strict=True,
        )
        for id_, kind, occurred_at, lat, lon, category, origin, op, priority in rows:
            record: dict[str, Any] = {
                "id": id_,
                "kind": kind,
                "occurred_at": occurred_at,
                "lat": lat,
                "lon": lon,
                "category": category,
                "origin": origin,
                "op": op,
            }
            if priority is not None:
                record["priority"] = priority
            yield record


def iso_utc(seconds: FloatArray) -> list[str | None]:
    """POSIX seconds -> ISO 8601 strings in UTC with an explicit offset.

    >>> iso_utc(np.array([0.0, 1741501800.0, np.nan]))
    ['1970-01-01T00:00:00+00:00', '2025-03-09T06:30:00+00:00', None]
    >>> iso_utc(np.array([0.25]))
    ['1970-01-01T00:00:00.250000+00:00']
    """
    missing = ~np.isfinite(seconds)
    micros = np.where(missing, 0.0, np.round(seconds * 1e6)).astype(np.int64)
    whole = bool(np.all(micros % 1_000_000 == 0))
    text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="s" if whole else "us")
    return [None if gone else f"{value}+00:00" for value, gone in zip(text, missing, strict=True)]


def _floats_or_none(values: FloatArray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


# --------------------------------------------------------------------------- JSON lines


def _is_jsonl(path: Path) -> bool:
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in _JSONL_SUFFIXES


def _read_jsonl(path: Path, chunk_rows: int) -> Iterator[Columns]:
    rows: list[dict[str, Any]] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line")
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _json_columns(rows)
                rows = []
    if rows:
        yield _json_columns(rows)


def _json_columns(rows: list[dict[str, Any]]) -> Columns:
    def text(key: str, default: str) -> ObjectArray:
        return np.asarray(
            [default if (v := r.get(key)) is None else str(v) for r in rows], dtype=object
        )

    def number(key: str) -> FloatArray:
        out = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            value = row.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[i] = float(value)
            elif isinstance(value, str):
                with contextlib.suppress(ValueError):  # not a number: stays NaN
                    out[i] = float(value)
        return out

    # Native naive timestamps are UTC, as in the engine's [events] default_timezone.
    times = pa.array([_time_text(r.get("occurred_at")) for r in rows], pa.string())
    occurred = iso_to_utc_s(times, "UTC")
    return Columns(
        ids=text("id", ""),
        occurred_at_s=occurred,
        lat_deg=number("lat"),
        lon_deg=number("lon"),
        categories=text("category", ""),
        kinds=text("kind", "incident"),
        origins=text("origin", "reported"),
        ops=text("op", "upsert"),
        priorities=np.asarray([r.get("priority") for r in rows], dtype=object),
        addresses=text("address", ""),
        category_codes=text("category_code", ""),
        coordinate_faults=constant("", len(rows)),
    )


def _time_text(value: object) -> str | None:
    """A native ``occurred_at`` as ISO text: strings as given, POSIX seconds converted."""
    if isinstance(value, str):
        return value
    moment = parse_iso(value)
    return None if moment is None else moment.isoformat()
