"""The event records, their limits and the rules for ids and categories.

:class:`Event` and :class:`Cancel` are what :mod:`streamer.core.events`
makes of a payload; :class:`InvalidEvent` carries the reason code when it
cannot. :class:`EventRules` says what is accepted. The id and category rules
and the renderings of bad values live here because both the per-record parser
(:mod:`streamer.core.events`) and the column checks
(:mod:`streamer.core.event_columns`) give the same reasons and messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamer.core.area import Area

Kind = Literal["incident", "call"]
Origin = Literal["reported", "proactive"]

KINDS: tuple[Kind, ...] = ("incident", "call")
ORIGINS: tuple[Origin, ...] = ("reported", "proactive")


class InvalidEvent(ValueError):
    """Raised for input that cannot become an event.

    ``reason`` is a short stable code (``missing_field``, ``bad_type``,
    ``not_finite``, ``lat_out_of_range``, ``lon_out_of_range``,
    ``null_island``, ``outside_area``, ``bad_time``, ``future_time``,
    ``too_large``, ``bad_json``, ``unknown_op``, ``bad_kind``,
    ``bad_origin``, ``bad_id``); ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """An incident or call that should count (``op = "upsert"``).

    ``occurred_at`` is timezone-aware UTC; ``occurred_at_s`` the same instant
    as POSIX seconds (what the maths uses).
    """

    id: str
    kind: Kind
    occurred_at: datetime
    occurred_at_s: float
    lat_deg: float
    lon_deg: float
    category: str
    origin: Origin = "reported"
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraws the event with this id (``op = "cancel"``): a CAD correction,
    a call found to be a duplicate, a record deleted at source. ``event``:
    the withdrawn event's own fields, when the record carries them (valid)."""

    id: str
    kind: Kind = "incident"
    event: Event | None = None


Record = Event | Cancel


REASONS: tuple[str, ...] = (
    "too_large",
    "bad_json",
    "missing_field",
    "bad_type",
    "bad_id",
    "bad_kind",
    "bad_origin",
    "unknown_op",
    "not_finite",
    "lat_out_of_range",
    "lon_out_of_range",
    "null_island",
    "outside_area",
    "bad_time",
    "future_time",
)
"""Every ``InvalidEvent.reason`` code (for pre-registering metric labels)."""

COORDINATE_FAULTS: tuple[str, ...] = ("missing_coordinates", "bad_coordinates", "zero_coordinates")
"""Rejection reasons of bulk-file rows only (never raised by ``parse_record``):
a file reader gives them to a row whose coordinates, as written, are unusable:
an empty cell, text that is not a number, or a zero (the "no location" or
"withheld" marker of projected exports). Projected coordinates need them:
after reprojection the marker no longer looks like one."""

MAX_TEXT_CHARS = 128
"""Longest ``id`` and ``category`` accepted."""
MIN_TIME_S = 0.0
"""Earliest accepted ``occurred_at``: 1970-01-01T00:00:00Z."""
MAX_TIME_S = 7289654400.0
"""First rejected ``occurred_at``: 2201-01-01T00:00:00Z (years after 2200 are rejected)."""
NULL_ISLAND_DEG = 1e-9
"""A point with both ``|lat|`` and ``|lon|`` below this is the (0, 0) "no location" marker."""


@dataclass(frozen=True, slots=True)
class EventRules:
    """What :func:`~streamer.core.events.parse_record` and
    :func:`~streamer.core.event_columns.validate_columns` accept.

    ``default_timezone`` (an IANA name) is the zone of times given without an
    offset; ``area``, when set, rejects points outside it (``outside_area``).
    """

    max_payload_bytes: int = 16384
    max_future_skew_s: float = 900.0
    default_timezone: str = "UTC"
    area: Area | None = None
    _zone: tzinfo = field(init=False, repr=False, compare=False, default=UTC)

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be positive, got {self.max_payload_bytes}")
        if not self.max_future_skew_s >= 0.0:
            raise ValueError(f"max_future_skew_s must be >= 0, got {self.max_future_skew_s}")
        zone: tzinfo = UTC
        if self.default_timezone != "UTC":
            try:
                zone = ZoneInfo(self.default_timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {self.default_timezone!r}") from exc
        object.__setattr__(self, "_zone", zone)

    @property
    def zone(self) -> tzinfo:
        """The :class:`~datetime.tzinfo` of ``default_timezone``."""
        return self._zone


def normalize_id(value: object) -> str:
    """An event id as stored: a string of 1-128 characters, integers in decimal.

    >>> normalize_id(42), normalize_id("A-1")
    ('42', 'A-1')
    """
    if value is None:
        raise InvalidEvent("missing_field", "id is missing")
    if isinstance(value, str):
        text = _exact_str(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        # 10**128 has 426 bits; checking first keeps str() away from huge numbers.
        if int.bit_length(value) > 426:
            raise InvalidEvent("bad_id", f"id is longer than {MAX_TEXT_CHARS} characters")
        text = int.__repr__(value)
    else:
        raise InvalidEvent("bad_id", f"id must be a string or an integer, got {_json_type(value)}")
    if not text:
        raise InvalidEvent("bad_id", "id is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent("bad_id", f"id has {len(text)} characters, more than {MAX_TEXT_CHARS}")
    return text


def normalize_category(value: object) -> str:
    """A category as stored: a string of 1-128 characters (empty counts as missing).

    >>> normalize_category("Thefts")
    'Thefts'
    """
    if value is None:
        raise InvalidEvent("missing_field", "category is missing")
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"category must be a string, got {_json_type(value)}")
    text = _exact_str(value)
    if not text:
        raise InvalidEvent("missing_field", "category is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent(
            "bad_type", f"category has {len(text)} characters, more than {MAX_TEXT_CHARS}"
        )
    return text


# -- messages --------------------------------------------------------------------


def _exact_str(value: object) -> str | None:
    """``value`` as a plain ``str`` (subclasses copied), or None for non-strings."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (str, "a string"),
    (int, "an integer"),
    (float, "a number"),
    (dict, "an object"),
    (list, "an array"),
    (Mapping, "an object"),
)


def _show(value: object) -> str:
    """A short, safe rendering of a bad value for a ``detail`` message."""
    if isinstance(value, str):
        text = str.__str__(value)
        return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
    if isinstance(value, int) and not isinstance(value, bool) and int.bit_length(value) <= 64:
        return int.__repr__(value)
    return _json_type(value)


def _coarse(deg: float) -> str:
    """A coordinate rounded for messages: never a victim's exact position."""
    return f"{deg:.2f}" if abs(deg) < 1e6 else f"{deg:.1e}"
