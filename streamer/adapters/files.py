"""Bulk event files: a force's CSV export (through a source profile) or native JSON lines.

A *source profile* (``streamer/config/sources/<name>.toml``, documented in
``streamer/config/sources/README.md``, loaded by
:mod:`streamer.adapters.source_profiles`) says which export column holds which field of
the event model and how its times are written. :func:`read_columns` turns a
file into chunks of numpy columns for the batch paths (backfill, benchmarks,
evaluation); :func:`iter_records` turns it into native event dicts for the
Kafka replay tool. Both read the file the same way, so they always agree.

Local times become UTC with the zone's daylight-saving rules, vectorised:
a wall time that occurs twice (the hour repeated when clocks go back) is
read as its *earliest* instant (daylight time); a wall time that does not
exist (the hour skipped when clocks go forward) becomes the *earliest*
neighbouring instant, the last second before the gap. Both are Arrow's
``assume_timezone(..., ambiguous="earliest", nonexistent="earliest")``.

This module only parses. It does not judge events: a row with a time it
cannot parse gets ``NaN`` (not a crash), and validation with reasons
(``bad_time``, ``lat_out_of_range`` ...) stays in :mod:`streamer.core.events`.
One limit of Arrow's ``strptime``: a day 29-31 past the end of its month
(``31/02``) rolls over into the next month instead of failing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from streamer.adapters.source_profiles import SourceProfile as SourceProfile
from streamer.adapters.source_profiles import load_profile as load_profile
from streamer.core.events import EventRules, validate_columns
from streamer.core.weights import WeightTable

DEFAULT_CHUNK_ROWS = 1_000_000

# Arrow's DST policy for local wall times (see the module docstring).
_AMBIGUOUS = "earliest"
_NONEXISTENT = "earliest"
_CSV_BLOCK_BYTES = 4 << 20  # measured: 1-4 MiB blocks read fastest here
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

ObjectArray = npt.NDArray[np.object_]
FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- columns


@dataclass
class Columns:
    """One chunk of events as parallel numpy arrays (row ``i`` across all)."""

    ids: ObjectArray  # str
    occurred_at_s: FloatArray  # POSIX seconds UTC; NaN where unparseable
    lat_deg: FloatArray  # NaN where missing or not a number
    lon_deg: FloatArray
    categories: ObjectArray  # str
    kinds: ObjectArray  # str
    origins: ObjectArray  # str
    ops: ObjectArray  # str: "upsert" unless the file says otherwise
    priorities: ObjectArray  # int, str (as written) or None
    # Columns constant in a file (kind, origin, ...) may be read-only
    # broadcast views; copy before writing into them.

    def __len__(self) -> int:
        return len(self.ids)


def concat_columns(chunks: Iterator[Columns]) -> Columns:
    """The chunks of :func:`read_columns` as one."""
    parts = list(chunks)
    if len(parts) == 1:
        return parts[0]
    names = [f.name for f in dataclasses.fields(Columns)]
    return Columns(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


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
    path: str | Path,
    profile: SourceProfile | None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[Columns]:
    """Read a CSV export (with ``profile``) or native JSON lines (``profile=None``).

    Plain or gzip-compressed files. Yields chunks of at most ``chunk_rows``
    rows in file order. A CSV is read with Arrow, only the columns the
    profile names. Raises ``ValueError`` naming the file when a named column
    is missing or a JSON line is not a JSON object.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    if profile is None:
        if not _is_jsonl(path):
            raise ValueError(
                f"{path}: without a source profile only native JSON lines "
                f"({', '.join(_JSONL_SUFFIXES)}, optionally .gz) can be read"
            )
        yield from _read_jsonl(path, chunk_rows)
    else:
        yield from _read_csv(path, profile, chunk_rows)


def iter_records(path: str | Path, profile: SourceProfile | None) -> Iterator[dict[str, Any]]:
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


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path, profile: SourceProfile, chunk_rows: int) -> Iterator[Columns]:
    wanted = profile.columns
    header = _csv_header(path, profile.delimiter)
    for key, column in wanted.items():
        if column not in header:
            raise ValueError(
                f"{path}: column {column!r} (source profile {profile.source}, key '{key}') "
                f"is not in the file; its columns are {header}"
            )
    names = list(dict.fromkeys(wanted.values()))
    types: dict[str, pa.DataType] = {name: pa.string() for name in names}
    # Categories repeat: dictionary-encode them so each distinct name becomes one str.
    types[profile.category] = pa.dictionary(pa.int32(), pa.string())
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=profile.delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=names, column_types=types, strings_can_be_null=True
        ),
    )
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in reader:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield _csv_columns(table.slice(0, chunk_rows), profile)
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield _csv_columns(pa.Table.from_batches(pending), profile)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    with _open_text(path) as handle:
        first = handle.readline()
    rows = list(csv.reader([first], delimiter=delimiter))
    return [name.strip() for name in rows[0]] if rows else []


def _csv_columns(table: pa.Table, profile: SourceProfile) -> Columns:
    n = table.num_rows
    if profile.time_format is None:
        occurred = _iso_to_utc_s(table[profile.occurred_at], profile.timezone)
    else:
        occurred = _local_to_utc_s(
            table[profile.occurred_at], profile.time_format, profile.timezone
        )
    if profile.origin_column is None:
        origins = _constant(profile.origin, n)
    else:
        is_proactive = pc.fill_null(
            pc.is_in(table[profile.origin_column], pa.array(profile.proactive_values)), False
        )
        origins = np.where(_to_bool(is_proactive), "proactive", "reported").astype(object)
    return Columns(
        ids=_strings(table[profile.id]),
        occurred_at_s=occurred,
        lat_deg=_to_float(table[profile.lat]),
        lon_deg=_to_float(table[profile.lon]),
        categories=_categories(table[profile.category]),
        kinds=_constant(profile.kind, n),
        origins=origins,
        ops=(
            _constant("upsert", n)
            if profile.op_column is None
            else _strings(table[profile.op_column], missing="upsert")
        ),
        priorities=(
            _constant(None, n) if profile.priority is None else _priorities(table[profile.priority])
        ),
    )


def _local_to_utc_s(text: pa.ChunkedArray, time_format: str, timezone: str) -> FloatArray:
    stamps = pc.strptime(text, format=time_format, unit="s", error_is_null=True)
    if stamps.type.tz is None:  # no %z: wall time in the profile's zone
        stamps = pc.assume_timezone(
            stamps, timezone=timezone, ambiguous=_AMBIGUOUS, nonexistent=_NONEXISTENT
        )
    return _epoch_s(stamps, per_second=1.0)


def _iso_to_utc_s(text: pa.Array | pa.ChunkedArray, timezone: str) -> FloatArray:
    """ISO 8601 strings; those without an offset are wall times in ``timezone``."""
    try:  # fast path: every value carries an offset
        return _epoch_s(pc.cast(text, pa.timestamp("us", "UTC")), per_second=1e6)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = text.to_pylist()
    out = np.full(len(values), np.nan)
    naive_us: list[int | None] = [None] * len(values)
    for i, value in enumerate(values):
        moment = _parse_iso(value)
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
        naive = _epoch_s(local, per_second=1e6)
        out = np.where(np.isnan(out), naive, out)
    return out


def _parse_iso(value: object) -> datetime | None:
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


def _epoch_s(stamps: pa.Array | pa.ChunkedArray, *, per_second: float) -> FloatArray:
    counts = pc.cast(pc.cast(stamps, pa.int64()), pa.float64())
    seconds: FloatArray = np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.float64)
    return seconds / per_second if per_second != 1.0 else seconds


def _to_float(text: pa.ChunkedArray) -> FloatArray:
    try:
        numbers = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:  # some cell is not a number: only those become NaN
        valid = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
        numbers = pc.cast(pc.if_else(valid, text, pa.scalar(None, pa.string())), pa.float64())
    return np.asarray(numbers.to_numpy(zero_copy_only=False), dtype=np.float64)


def _to_bool(mask: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _strings(text: pa.ChunkedArray, *, missing: str = "") -> ObjectArray:
    filled = pc.fill_null(text, missing)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=object)


def _categories(encoded: pa.ChunkedArray) -> ObjectArray:
    """Dictionary-encoded strings -> object array sharing one str per name."""
    if encoded.num_chunks == 0:
        return np.empty(0, dtype=object)
    combined = encoded.unify_dictionaries().combine_chunks()
    names = np.asarray([*combined.dictionary.to_pylist(), ""], dtype=object)
    missing_code = len(names) - 1
    codes = pc.fill_null(combined.indices, missing_code).to_numpy(zero_copy_only=False)
    result: ObjectArray = names[codes]
    return result


def _priorities(text: pa.ChunkedArray) -> ObjectArray:
    try:  # numeric priorities become ints
        values = pc.cast(text, pa.int64()).to_pylist()
    except pa.ArrowInvalid:  # codes such as "P1" stay as written
        values = text.to_pylist()
    return np.asarray(values, dtype=object)


def _constant(value: object, n: int) -> ObjectArray:
    """``n`` copies of ``value`` as a read-only zero-stride view: O(1), not O(n)."""
    one = np.empty(1, dtype=object)
    one[0] = value
    view: ObjectArray = np.broadcast_to(one, (n,))
    return view


def _floats_or_none(values: FloatArray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


# --------------------------------------------------------------------------- JSON lines


def _is_jsonl(path: Path) -> bool:
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in _JSONL_SUFFIXES


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


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
    occurred = _iso_to_utc_s(times, "UTC")
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
    )


def _time_text(value: object) -> str | None:
    """A native ``occurred_at`` as ISO text: strings as given, POSIX seconds converted."""
    if isinstance(value, str):
        return value
    moment = _parse_iso(value)
    return None if moment is None else moment.isoformat()
