"""One force's CSV export read through its source profile, into :class:`Columns`.

Arrow's streaming CSV reader reads only the columns the profile names (after
its ``rename``), decoded with its ``encoding``. Times become UTC
(:mod:`streamer.adapters.wall_times`); projected coordinates become WGS84
with pyproj, vectorised; ``id = "@row"`` makes ids from each row's fields.
This module only parses: bad values become ``NaN``, ``""`` or a coordinate
fault, and validation with reasons stays in :mod:`streamer.core.events`.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pyproj import Transformer

from streamer.adapters.columns import Columns, FloatArray, ObjectArray, constant
from streamer.adapters.source_profiles import TIME_PARTS, SourceProfile
from streamer.adapters.wall_times import (
    PARTS_FORMAT,
    iso_to_utc_s,
    joined_text,
    local_to_utc_s,
    parts_text,
)

_CSV_BLOCK_BYTES = 4 << 20  # measured: 1-4 MiB blocks read fastest here
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_ROW_KEY_SEPARATOR = "\x1f"  # ASCII unit separator: not in any field as written


class RowOrdinals:
    """How many rows of each ``@row`` key a file has shown so far (upserts
    and cancels counted apart), so ids carry on across its chunks."""

    def __init__(self) -> None:
        self.seen: dict[tuple[bytes, bool], int] = {}


def read_csv(path: Path, profile: SourceProfile, chunk_rows: int) -> Iterator[Columns]:
    """The rows of one CSV file, in chunks of at most ``chunk_rows``, in file order."""
    names = _header_names(path, profile)
    wanted = profile.columns
    for key, column in wanted.items():
        if column not in names:
            raise ValueError(
                f"{path}: column {column!r} (source profile {profile.source}, key '{key}') "
                f"is not in the file; its columns are {names}"
            )
    included = list(dict.fromkeys(wanted.values()))
    types: dict[str, pa.DataType] = {name: pa.string() for name in included}
    # Categories repeat: dictionary-encode them so each distinct name becomes one str.
    types[profile.category] = pa.dictionary(pa.int32(), pa.string())
    options = dict(
        read_options=pacsv.ReadOptions(
            block_size=_CSV_BLOCK_BYTES,
            column_names=names,
            skip_rows=1,
            encoding=profile.encoding,
        ),
        parse_options=pacsv.ParseOptions(delimiter=profile.delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=included, column_types=types, strings_can_be_null=True
        ),
    )
    ordinals = RowOrdinals()
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in _batches(path, profile, options):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield csv_columns(table.slice(0, chunk_rows), profile, ordinals)
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield csv_columns(pa.Table.from_batches(pending), profile, ordinals)


def _batches(
    path: Path, profile: SourceProfile, options: dict[str, Any]
) -> Iterator[pa.RecordBatch]:
    """Arrow's streaming reader's batches; text that is not in the profile's
    encoding is a ``ValueError`` naming the file and the key."""
    try:
        yield from pacsv.open_csv(path, **options)
    except pa.ArrowInvalid as exc:
        if "UTF8" not in str(exc) and "UTF-8" not in str(exc):
            raise
        raise _not_encoded(path, profile) from exc


def _not_encoded(path: Path, profile: SourceProfile) -> ValueError:
    return ValueError(
        f"{path}: text that is not {profile.encoding} (source profile {profile.source}, "
        f"key 'encoding'); an export with stray bytes reads with encoding = \"latin-1\""
    )


def _header_names(path: Path, profile: SourceProfile) -> list[str]:
    """The file's column names as the profile reads them (stripped, renamed)."""
    encoding = "utf-8-sig" if codec_name(profile.encoding) == "utf-8" else profile.encoding
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        line = handle.readline()
    try:
        first = line.decode(encoding)
    except UnicodeDecodeError:
        raise _not_encoded(path, profile) from None
    rows = list(csv.reader([first], delimiter=profile.delimiter))
    header = [name.strip() for name in rows[0]] if rows else []
    renames = dict(profile.rename)
    names = [renames.get(name, name) for name in header]
    for old, new in profile.rename:
        if old in header and names.count(new) > 1:
            raise ValueError(
                f"{path}: renaming {old!r} to {new!r} (source profile {profile.source}, "
                f"key 'rename') gives two columns of that name; its columns are {header}"
            )
    return names


def codec_name(encoding: str) -> str:
    """Python's canonical name of an encoding (``UTF8`` -> ``utf-8``)."""
    return codecs.lookup(encoding).name


def csv_columns(table: pa.Table, profile: SourceProfile, ordinals: RowOrdinals) -> Columns:
    """One chunk of a CSV export (all columns strings) as :class:`Columns`."""
    n = table.num_rows
    lat, lon, faults = _places(table, profile)
    ops = _ops(table, profile)
    if profile.row_ids:
        ids = _row_ids(table, profile, ops == "cancel", ordinals)
    else:
        ids = _strings(_joined_id(table, profile.id))
    return Columns(
        ids=ids,
        occurred_at_s=_times(table, profile),
        lat_deg=lat,
        lon_deg=lon,
        categories=_categories(table[profile.category]),
        kinds=constant(profile.kind, n),
        origins=_origins(table, profile),
        ops=ops,
        priorities=(
            constant(None, n) if profile.priority is None else _priorities(table[profile.priority])
        ),
        addresses=(
            constant("", n)
            if not profile.address
            else _trimmed(joined_text(_filled(table, profile.address), " "))
        ),
        category_codes=(
            constant("", n)
            if profile.category_code is None
            else _trimmed(table[profile.category_code])
        ),
        coordinate_faults=faults,
    )


def _times(table: pa.Table, profile: SourceProfile) -> FloatArray:
    if profile.occurred_parts:
        columns = dict(profile.occurred_parts)
        text = parts_text([(part, _get(table, columns.get(part))) for part in TIME_PARTS])
        return local_to_utc_s(text, PARTS_FORMAT, profile.timezone)
    text = joined_text([table[c] for c in profile.occurred_at], " ")
    if profile.time_format is None:
        return iso_to_utc_s(text, profile.timezone)
    return local_to_utc_s(text, profile.time_format, profile.timezone)


def _get(table: pa.Table, column: str | None) -> pa.ChunkedArray | None:
    return None if column is None else table[column]


def _places(table: pa.Table, profile: SourceProfile) -> tuple[FloatArray, FloatArray, ObjectArray]:
    """WGS84 latitude and longitude, and the coordinate faults."""
    n = table.num_rows
    if profile.crs is None:
        lat = _to_float(table[str(profile.lat)])
        return lat, _to_float(table[str(profile.lon)]), constant("", n)
    x_text, y_text = table[str(profile.x)], table[str(profile.y)]
    x, y = _to_float(x_text), _to_float(y_text)
    missing = _is_blank(x_text) | _is_blank(y_text)
    bad = ~missing & ~(np.isfinite(x) & np.isfinite(y))
    zero = ~missing & ~bad & ((x == 0.0) | (y == 0.0))
    faults = np.full(n, "", dtype=object)
    faults[zero] = "zero_coordinates"
    faults[bad] = "bad_coordinates"
    faults[missing] = "missing_coordinates"
    ok = faults == ""
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    if ok.any():
        lon[ok], lat[ok] = _to_wgs84(profile.crs).transform(x[ok], y[ok])
    return lat, lon, faults


@functools.lru_cache(maxsize=16)
def _to_wgs84(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def _is_blank(text: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True)
    return _to_bool(blank)


def _origins(table: pa.Table, profile: SourceProfile) -> ObjectArray:
    if profile.origin_column is None:
        return constant(profile.origin, table.num_rows)
    column = table[profile.origin_column]
    is_proactive = pc.is_in(column, pa.array(profile.proactive_values, pa.string()))
    for part in profile.proactive_contains:
        is_proactive = pc.or_(is_proactive, pc.match_substring(column, part))
    proactive = _to_bool(pc.fill_null(is_proactive, False))
    return np.where(proactive, "proactive", "reported").astype(object)


def _ops(table: pa.Table, profile: SourceProfile) -> ObjectArray:
    if profile.op_column is None:
        return constant("upsert", table.num_rows)
    column = table[profile.op_column]
    if not profile.cancel_values:
        return _strings(column, missing="upsert")
    cancel = pc.fill_null(pc.is_in(column, pa.array(profile.cancel_values, pa.string())), False)
    return np.where(_to_bool(cancel), "cancel", "upsert").astype(object)


def _joined_id(table: pa.Table, columns: tuple[str, ...]) -> pa.ChunkedArray:
    """Id columns joined with ``|`` (a missing part is empty); null when all are missing."""
    if len(columns) == 1:
        return table[columns[0]]
    parts = [table[c] for c in columns]
    joined = pc.binary_join_element_wise(*parts, "|", null_handling="replace", null_replacement="")
    none = functools.reduce(pc.and_, [pc.is_null(p) for p in parts])
    return pc.if_else(none, pa.scalar(None, pa.string()), joined)


def _row_ids(
    table: pa.Table, profile: SourceProfile, is_cancel: npt.NDArray[np.bool_], ordinals: RowOrdinals
) -> ObjectArray:
    """``id = "@row"``: a digest of the row's time, place and category as
    written, and its ordinal among the identical rows before it in the file
    (``-1`` for the first): the nth cancel row of a key gets the id of the
    nth upsert row of that key."""
    fields = (*profile.time_columns, *profile.place_columns, profile.category)
    columns = [pc.cast(table[c], pa.string()) for c in dict.fromkeys(fields)]
    keys = pc.binary_join_element_wise(
        *columns, _ROW_KEY_SEPARATOR, null_handling="replace", null_replacement=""
    ).to_pylist()
    seen = ordinals.seen
    out = np.empty(len(keys), dtype=object)
    for i, (key, cancel) in enumerate(zip(keys, is_cancel.tolist(), strict=True)):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        count = seen.get((digest, cancel), 0) + 1
        seen[(digest, cancel)] = count
        out[i] = f"{digest.hex()}-{count}"
    return out


def _filled(table: pa.Table, columns: tuple[str, ...]) -> list[pa.ChunkedArray]:
    return [pc.fill_null(table[c], "") for c in columns]


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


def _trimmed(text: pa.ChunkedArray) -> ObjectArray:
    """Text without surrounding spaces (exports pad fixed-width fields); ``""`` for none."""
    return _strings(pc.utf8_trim_whitespace(text))


def _categories(encoded: pa.ChunkedArray) -> ObjectArray:
    """Dictionary-encoded strings -> object array sharing one str per name,
    without surrounding spaces."""
    if encoded.num_chunks == 0:
        return np.empty(0, dtype=object)
    combined = encoded.unify_dictionaries().combine_chunks()
    names = np.asarray([*(s.strip() for s in combined.dictionary.to_pylist()), ""], dtype=object)
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
