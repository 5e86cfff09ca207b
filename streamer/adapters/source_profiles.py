"""Source profiles: how one force's CSV export maps onto the event model.

A profile (``streamer/config/sources/<name>.toml``, documented in
``streamer/config/sources/README.md``) says which export column holds which
field of the event model and how its times are written;
:mod:`streamer.adapters.files` reads a file through it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamer.core.events import KINDS, ORIGINS
from streamer.settings import CONFIG_DIR

SOURCES_DIR = CONFIG_DIR / "sources"


@dataclass(frozen=True, slots=True)
class SourceProfile:
    """How one force's export maps onto the event model.

    Fields ending in a column name (``id``, ``occurred_at``, ``lat``, ``lon``,
    ``category``, ``priority``, ``origin_column``, ``op_column``) name columns
    of the file; ``kind`` and ``origin`` are constants for every row.
    """

    name: str
    source: str  # the file the profile came from, for error messages
    format: str
    id: str
    occurred_at: str
    timezone: str
    lat: str
    lon: str
    category: str
    time_format: str | None = None  # strptime format; None = ISO 8601
    kind: str = "incident"
    origin: str = "reported"
    origin_column: str | None = None
    proactive_values: tuple[str, ...] = ()
    priority: str | None = None
    op_column: str | None = None
    delimiter: str = ","
    description: str = ""

    @property
    def columns(self) -> dict[str, str]:
        """Profile key -> file column, for every column the profile reads."""
        keys = ("id", "occurred_at", "lat", "lon", "category")
        out = {key: str(getattr(self, key)) for key in keys}
        for key in ("origin_column", "priority", "op_column"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


_REQUIRED = ("format", "id", "occurred_at", "timezone", "lat", "lon", "category")
_OPTIONAL_STR = ("time_format", "origin_column", "priority", "op_column", "description")
_KNOWN = (
    *_REQUIRED,
    *_OPTIONAL_STR,
    "kind",
    "origin",
    "proactive_values",
    "delimiter",
)


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
    for key in (*_REQUIRED, *_OPTIONAL_STR, "kind", "origin", "delimiter"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise fail(key, f"expected a non-empty string, got {raw[key]!r}")
    if raw["format"] != "csv":
        raise fail(
            "format",
            f'{raw["format"]!r} is not supported; use "csv" (native JSON lines need no profile)',
        )
    try:
        ZoneInfo(raw["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("timezone", f"{raw['timezone']!r} is not an IANA zone name") from None
    time_format = raw.get("time_format")
    if time_format is not None and "%" not in time_format:
        raise fail("time_format", f"{time_format!r} has no % directives (strptime format)")
    kind = raw.get("kind", "incident")
    if kind not in KINDS:
        raise fail("kind", f"{kind!r}: use one of {list(KINDS)}")
    origin = raw.get("origin", "reported")
    if origin not in ORIGINS:
        raise fail("origin", f"{origin!r}: use one of {list(ORIGINS)}")
    proactive = raw.get("proactive_values", [])
    if not isinstance(proactive, list) or not all(isinstance(v, str) for v in proactive):
        raise fail("proactive_values", f"expected a list of strings, got {proactive!r}")
    if proactive and "origin_column" not in raw:
        raise fail("proactive_values", "needs origin_column (the column they are values of)")
    if "origin_column" in raw and not proactive:
        raise fail("origin_column", "needs proactive_values (which values mean proactive)")
    delimiter = raw.get("delimiter", ",")
    if len(delimiter) != 1:
        raise fail("delimiter", f"expected one character, got {delimiter!r}")
    return SourceProfile(
        name=name,
        source=source,
        format=raw["format"],
        id=raw["id"],
        occurred_at=raw["occurred_at"],
        timezone=raw["timezone"],
        lat=raw["lat"],
        lon=raw["lon"],
        category=raw["category"],
        time_format=time_format,
        kind=kind,
        origin=origin,
        origin_column=raw.get("origin_column"),
        proactive_values=tuple(proactive),
        priority=raw.get("priority"),
        op_column=raw.get("op_column"),
        delimiter=delimiter,
        description=raw.get("description", ""),
    )


__all__ = ["SOURCES_DIR", "SourceProfile", "load_profile"]
