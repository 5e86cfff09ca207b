"""Source profiles: how one force's CSV export maps onto the event model.

A profile (``streamer/config/sources/<name>.toml``, documented in
``streamer/config/sources/README.md``) says which export column holds which
field of the event model and how its times and places are written;
:mod:`streamer.adapters.files` reads a file through it.
"""

from __future__ import annotations

import codecs
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pyproj import CRS
from pyproj.exceptions import CRSError

from streamer.core.events import KINDS, ORIGINS
from streamer.settings import CONFIG_DIR

SOURCES_DIR = CONFIG_DIR / "sources"

ROW_ID = "@row"
"""``id = "@row"``: ids made from each row's fields and its ordinal among identical rows."""
TIME_PARTS = ("year", "month", "day", "hour", "minute")
"""Keys of an ``occurred_at`` table; ``hour`` and ``minute`` may be left out (0)."""


@dataclass(frozen=True, slots=True)
class SourceProfile:
    """How one force's export maps onto the event model.

    Column fields name columns of the file as the profile reads it (after
    ``rename``). Multi-column fields are tuples: ``id`` (joined with ``|``;
    empty with ``row_ids``), ``occurred_at`` (joined with a space; empty
    with ``occurred_parts``), ``address`` (joined with a space). Places are
    WGS84 ``lat``/``lon`` or projected ``x``/``y`` in ``crs``, never both.
    ``kind`` and ``origin`` are constants for every row.
    """

    name: str
    source: str  # the file the profile came from, for error messages
    format: str
    id: tuple[str, ...]
    occurred_at: tuple[str, ...]
    timezone: str
    category: str
    lat: str | None = None
    lon: str | None = None
    time_format: str | None = None  # strptime format; None = ISO 8601
    kind: str = "incident"
    origin: str = "reported"
    origin_column: str | None = None
    proactive_values: tuple[str, ...] = ()
    priority: str | None = None
    op_column: str | None = None
    delimiter: str = ","
    description: str = ""
    row_ids: bool = False  # id = "@row"
    occurred_parts: tuple[tuple[str, str], ...] = ()  # (part, column), part in TIME_PARTS
    crs: str | None = None  # with x and y: the CRS they are in
    x: str | None = None
    y: str | None = None
    address: tuple[str, ...] = ()
    category_code: str | None = None
    cancel_values: tuple[str, ...] = ()  # op_column values that mean "cancel"
    proactive_contains: tuple[str, ...] = ()  # substrings of origin_column meaning proactive
    rename: tuple[tuple[str, str], ...] = ()  # (header in the file, name the profile uses)
    encoding: str = "utf-8"

    @property
    def columns(self) -> dict[str, str]:
        """Profile key -> file column, for every column the profile reads.

        A key of several columns is listed as ``key[i]`` (lists) or
        ``key.part`` (the ``occurred_at`` table)."""
        out: dict[str, str] = {}

        def add(key: str, names: tuple[str, ...]) -> None:
            if len(names) == 1:
                out[key] = names[0]
            else:
                out.update({f"{key}[{i}]": name for i, name in enumerate(names)})

        add("id", self.id)
        add("occurred_at", self.occurred_at)
        out.update({f"occurred_at.{part}": column for part, column in self.occurred_parts})
        for key in ("lat", "lon", "x", "y", "category"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("origin_column", "priority", "op_column", "category_code"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        add("address", self.address)
        return out

    @property
    def time_columns(self) -> tuple[str, ...]:
        """The columns the event time is read from."""
        return self.occurred_at or tuple(column for _, column in self.occurred_parts)

    @property
    def place_columns(self) -> tuple[str, ...]:
        """The columns the place is read from (coordinates, then address)."""
        if self.crs is None:
            return (str(self.lat), str(self.lon), *self.address)
        return (str(self.x), str(self.y), *self.address)


_REQUIRED = ("format", "id", "occurred_at", "timezone", "category")
_OPTIONAL_STR = (
    "time_format",
    "origin_column",
    "priority",
    "op_column",
    "description",
    "lat",
    "lon",
    "crs",
    "x",
    "y",
    "category_code",
)
_STR_LISTS = ("proactive_values", "proactive_contains", "cancel_values")
_KNOWN = (
    *_REQUIRED,
    *_OPTIONAL_STR,
    *_STR_LISTS,
    "kind",
    "origin",
    "delimiter",
    "address",
    "rename",
    "encoding",
)

Fail = Callable[[str, str], ValueError]


def load_profile(name_or_path: str) -> SourceProfile:
    """Load a source profile by name (``streamer/config/sources/NAME.toml``) or path.

    Raises ``ValueError`` naming the file and the offending key.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = SOURCES_DIR / f"{name_or_path}.toml"
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        known = sorted(p.stem for p in SOURCES_DIR.glob("*.toml"))
        raise ValueError(
            f"source profile {path} does not exist (profiles in {SOURCES_DIR}: {known})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"source profile {path} is not valid TOML: {exc}") from None
    return _profile_from_dict(raw, name=path.stem, source=str(path))


def _profile_from_dict(raw: Mapping[str, Any], *, name: str, source: str) -> SourceProfile:
    def fail(key: str, message: str) -> ValueError:
        return ValueError(f"source profile {source}: key '{key}': {message}")

    for key in raw:
        if key not in _KNOWN:
            raise fail(key, f"unknown key; known keys are {', '.join(_KNOWN)}")
    for key in _REQUIRED:
        if key not in raw:
            raise fail(key, "missing (required)")
    for key in (*_OPTIONAL_STR, "format", "timezone", "category", "kind", "origin"):
        _text(raw, key, fail)
    for key in ("delimiter", "encoding"):
        _text(raw, key, fail)
    if raw["format"] != "csv":
        raise fail(
            "format",
            f'{raw["format"]!r} is not supported; use "csv" (native JSON lines need no profile)',
        )
    try:
        ZoneInfo(raw["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("timezone", f"{raw['timezone']!r} is not an IANA zone name") from None
    kind = raw.get("kind", "incident")
    if kind not in KINDS:
        raise fail("kind", f"{kind!r}: use one of {list(KINDS)}")
    origin = raw.get("origin", "reported")
    if origin not in ORIGINS:
        raise fail("origin", f"{origin!r}: use one of {list(ORIGINS)}")
    lists = {key: _str_list(raw, key, fail) for key in _STR_LISTS}
    _check_needs(raw, lists, fail)
    delimiter = raw.get("delimiter", ",")
    if len(delimiter) != 1:
        raise fail("delimiter", f"expected one character, got {delimiter!r}")
    encoding = raw.get("encoding", "utf-8")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise fail("encoding", f"{encoding!r} is not a text encoding Python knows") from None
    row_ids, ids = _ids(raw, fail)
    occurred_at, parts = _times(raw, fail)
    return SourceProfile(
        name=name,
        source=source,
        format=raw["format"],
        id=ids,
        occurred_at=occurred_at,
        timezone=raw["timezone"],
        category=raw["category"],
        lat=raw.get("lat"),
        lon=raw.get("lon"),
        time_format=raw.get("time_format"),
        kind=kind,
        origin=origin,
        origin_column=raw.get("origin_column"),
        proactive_values=lists["proactive_values"],
        priority=raw.get("priority"),
        op_column=raw.get("op_column"),
        delimiter=delimiter,
        description=raw.get("description", ""),
        row_ids=row_ids,
        occurred_parts=parts,
        crs=_place(raw, fail),
        x=raw.get("x"),
        y=raw.get("y"),
        address=_columns(raw, "address", fail) if "address" in raw else (),
        category_code=raw.get("category_code"),
        cancel_values=lists["cancel_values"],
        proactive_contains=lists["proactive_contains"],
        rename=_rename(raw, fail),
        encoding=encoding,
    )


def _text(raw: Mapping[str, Any], key: str, fail: Fail) -> None:
    if key in raw and (not isinstance(raw[key], str) or not raw[key]):
        raise fail(key, f"expected a non-empty string, got {raw[key]!r}")


def _str_list(raw: Mapping[str, Any], key: str, fail: Fail) -> tuple[str, ...]:
    values = raw.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise fail(key, f"expected a list of non-empty strings, got {values!r}")
    return tuple(values)


def _columns(raw: Mapping[str, Any], key: str, fail: Fail) -> tuple[str, ...]:
    """A key naming one column (a string) or several (a non-empty list)."""
    value = raw[key]
    if isinstance(value, str) and value:
        return (value,)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise fail(key, f"expected a column name or a list of distinct column names, got {value!r}")


def _check_needs(raw: Mapping[str, Any], lists: Mapping[str, tuple[str, ...]], fail: Fail) -> None:
    proactive = lists["proactive_values"] or lists["proactive_contains"]
    for key in ("proactive_values", "proactive_contains"):
        if lists[key] and "origin_column" not in raw:
            raise fail(key, "needs origin_column (the column they are values of)")
    if "origin_column" in raw and not proactive:
        raise fail(
            "origin_column",
            "needs proactive_values or proactive_contains (which values mean proactive)",
        )
    if lists["cancel_values"] and "op_column" not in raw:
        raise fail("cancel_values", "needs op_column (the column they are values of)")
    time_format = raw.get("time_format")
    if time_format is not None and "%" not in time_format:
        raise fail("time_format", f"{time_format!r} has no % directives (strptime format)")


def _ids(raw: Mapping[str, Any], fail: Fail) -> tuple[bool, tuple[str, ...]]:
    if raw["id"] == ROW_ID:
        return True, ()
    ids = _columns(raw, "id", fail)
    if ROW_ID in ids:
        raise fail("id", f'"{ROW_ID}" stands alone (id = "{ROW_ID}"), not in a list')
    return False, ids


def _times(
    raw: Mapping[str, Any], fail: Fail
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    value = raw["occurred_at"]
    if not isinstance(value, dict):
        return _columns(raw, "occurred_at", fail), ()
    for part in value:
        if part not in TIME_PARTS:
            raise fail("occurred_at", f"unknown part {part!r}; parts are {', '.join(TIME_PARTS)}")
    for part in ("year", "month", "day"):
        if part not in value:
            raise fail("occurred_at", f"the table needs {part!r} (year, month and day)")
    for part, column in value.items():
        if not isinstance(column, str) or not column:
            raise fail("occurred_at", f"part {part!r}: expected a column name, got {column!r}")
    if "time_format" in raw:
        raise fail("time_format", "does not apply to an occurred_at table (a time in parts)")
    return (), tuple((part, value[part]) for part in TIME_PARTS if part in value)


def _place(raw: Mapping[str, Any], fail: Fail) -> str | None:
    """The CRS of ``x``/``y``, or None for ``lat``/``lon``; one of the two, whole."""
    wgs84 = [key for key in ("lat", "lon") if key in raw]
    projected = [key for key in ("crs", "x", "y") if key in raw]
    if wgs84 and projected:
        raise fail(projected[0], "use lat/lon (WGS84) or crs with x/y, not both")
    if not projected:
        for key in ("lat", "lon"):
            if key not in raw:
                raise fail(key, "missing (required, or give crs with x and y)")
        return None
    for key in ("crs", "x", "y"):
        if key not in raw:
            raise fail(key, "missing (crs, x and y go together)")
    crs: str = raw["crs"]
    try:
        CRS.from_user_input(crs)
    except CRSError as exc:
        raise fail("crs", f"{crs!r} is not a CRS pyproj knows ({exc})") from None
    return crs


def _rename(raw: Mapping[str, Any], fail: Fail) -> tuple[tuple[str, str], ...]:
    table = raw.get("rename", {})
    if not isinstance(table, dict):
        raise fail("rename", f"expected a table of header = name, got {table!r}")
    for header, name in table.items():
        if not isinstance(name, str) or not name or not header:
            raise fail("rename", f"{header!r}: expected a non-empty column name, got {name!r}")
    return tuple(table.items())


__all__ = ["ROW_ID", "SOURCES_DIR", "TIME_PARTS", "SourceProfile", "load_profile"]
