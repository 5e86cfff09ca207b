"""Patrol location pings (pure): one JSON payload -> a :class:`Ping`.

:func:`parse_ping` checks coordinates and decodes payloads exactly as
:mod:`streamer.core.events` does, so a bad ping gets the same reason codes
and messages as a bad event (:data:`PING_REASONS`); what a ping adds is the
unit, its status and its speed. :mod:`streamer.core.dosage` turns pings into
visits and doses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from streamer.core.event_model import (
    MAX_TEXT_CHARS,
    MAX_TIME_S,
    MIN_TIME_S,
    EventRules,
    InvalidEvent,
    _exact_str,
    _json_type,
    _show,
)
from streamer.core.events import decode_object, position

PING_REASONS: tuple[str, ...] = (
    "too_large",
    "bad_json",
    "missing_field",
    "bad_type",
    "bad_unit",
    "bad_speed",
    "not_finite",
    "lat_out_of_range",
    "lon_out_of_range",
    "null_island",
    "outside_area",
    "bad_time",
    "future_time",
)
"""Every ``InvalidEvent.reason`` :func:`parse_ping` raises (for metric labels)."""


_fromisoformat = datetime.fromisoformat


@dataclass(frozen=True, slots=True)
class Ping:
    """One location report of a unit.

    ``at_s`` is POSIX seconds (UTC); ``status`` is lower-case (None: not
    given); ``speed_mps`` is the device's own speed over ground (None: not
    given, :func:`~streamer.core.dosage.visits_of` then infers it from
    consecutive positions).
    """

    unit: str
    at_s: float
    lat_deg: float
    lon_deg: float
    status: str | None = None
    speed_mps: float | None = None


def parse_ping(
    raw: bytes | bytearray | memoryview | str | Mapping[str, object],
    rules: EventRules,
    now_s: float | None = None,
) -> Ping:
    """Decode and validate one ping payload into a :class:`Ping`.

    Fields: ``unit`` (string of 1-128 characters), ``at`` (ISO 8601; without
    an offset it is in ``rules.default_timezone``; POSIX seconds are accepted
    too, as for events), ``lat``, ``lon`` (numbers, degrees), optional
    ``status`` (string of at most 128 characters, stripped and lower-cased;
    empty counts as absent) and optional ``speed`` (m/s, a number >= 0). A
    null field counts as absent. ``now_s`` bounds how far in the future
    ``at`` may be (``rules.max_future_skew_s``); None skips that check. The
    only exception raised is :class:`InvalidEvent`, with a reason from
    :data:`PING_REASONS`.

    >>> p = parse_ping(b'{"unit": "car-7", "at": "2024-05-01T12:00:00Z",'
    ...                b' "lat": 39.95, "lon": -75.16, "status": "Patrol", "speed": 1.2}',
    ...                EventRules(), now_s=1.8e9)
    >>> p.at_s, p.status, p.speed_mps
    (1714564800.0, 'patrol', 1.2)
    """
    get = decode_object(raw, rules.max_payload_bytes).get
    unit = _unit(get("unit"))
    status = _status(get("status"))
    speed = _speed(get("speed"))
    at_s = _at_s(get("at"), rules, now_s)
    lat, lon = position(get("lat"), get("lon"), rules)
    return Ping(unit, at_s, lat, lon, status, speed)


def _unit(value: object) -> str:
    if value is None:
        raise InvalidEvent("missing_field", "unit is missing")
    text = _exact_str(value)
    if text is None:
        raise InvalidEvent("bad_unit", f"unit must be a string, got {_json_type(value)}")
    if not text:
        raise InvalidEvent("bad_unit", "unit is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent(
            "bad_unit", f"unit has {len(text)} characters, more than {MAX_TEXT_CHARS}"
        )
    return text


def _status(value: object) -> str | None:
    if value is None:
        return None
    text = _exact_str(value)
    if text is None:
        raise InvalidEvent("bad_type", f"status must be a string, got {_json_type(value)}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent(
            "bad_type", f"status has {len(text)} characters, more than {MAX_TEXT_CHARS}"
        )
    return text.strip().lower() or None


def _speed(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("bad_type", f"speed must be a number, got {_json_type(value)}")
    speed = float(value)  # JSON integers fit a float (orjson turns bigger ones into floats)
    if not math.isfinite(speed):
        raise InvalidEvent("not_finite", f"speed is {speed}")
    if speed < 0.0:
        raise InvalidEvent("bad_speed", f"speed {speed:g} m/s is negative")
    return speed + 0.0  # -0.0 becomes 0.0


def _at_s(value: object, rules: EventRules, now_s: float | None) -> float:
    """``at`` as POSIX seconds."""
    if value is None:
        raise InvalidEvent("missing_field", "at is missing")
    if isinstance(value, bool):
        raise InvalidEvent("bad_type", "at must be a string or a number, got a boolean")
    text = _exact_str(value)
    if text is not None:
        try:
            when = _fromisoformat(text)
            if when.tzinfo is None:
                # fold=0: an ambiguous local time (clocks going back) is the first
                # of the two, a skipped one keeps the offset from before the change
                # (as events do).
                when = when.replace(tzinfo=rules.zone)
            seconds = when.timestamp()
        except (ValueError, OverflowError):
            raise InvalidEvent("bad_time", f"at {_show(value)} is not an ISO 8601 time") from None
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        raise InvalidEvent("bad_type", f"at must be a string or a number, got {_json_type(value)}")
    if not MIN_TIME_S <= seconds < MAX_TIME_S:
        raise InvalidEvent("bad_time", "at is NaN, before 1970 or after the year 2200")
    if now_s is not None and seconds > now_s + rules.max_future_skew_s:
        raise InvalidEvent(
            "future_time",
            f"at is {seconds - now_s:.0f} s after now "
            f"(at most {rules.max_future_skew_s:g} s allowed)",
        )
    return seconds
