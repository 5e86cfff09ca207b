"""The event model: one shape for recorded incidents and calls for service.

Everything that crosses into the engine becomes an :class:`Event` (an upsert)
or a :class:`Cancel`, or raises :class:`InvalidEvent` with a short, stable
``reason`` code that metrics and the dead-letter topic use.

:func:`parse_record` turns one payload (JSON bytes or text, or a decoded
mapping) into a record; :func:`validate_columns` applies the same rules, with
the same reason codes, to whole columns of a bulk file.

The JSON fields: ``id`` (string of 1-128 characters, or an integer), ``kind``
(``incident``/``call``, default ``incident``), ``occurred_at`` (ISO 8601, with
or without offset, or POSIX seconds), ``lat``, ``lon`` (numbers, degrees),
``category`` (string of 1-128 characters), ``priority`` (integer or null),
``origin`` (``reported``/``proactive``, default ``reported``) and ``op``
(``upsert``/``cancel``, default ``upsert``). A null field counts as absent. A
cancel needs only ``id`` (and ``kind``). A cancel may also carry the event's
own fields (``occurred_at``, ``lat``, ``lon``, ``category``, ``origin``), as
the adjustment rows of police exports do: when they are all there and valid
they are its :attr:`Cancel.event` (what the store takes out when its ledger
no longer knows the id); otherwise they are ignored.

>>> rules = EventRules()
>>> e = parse_record(
...     b'{"id": 7, "occurred_at": "2024-05-01T12:00:00Z", "lat": 39.95, "lon": -75.16,'
...     b' "category": "Robbery Firearm"}', rules, now_s=1.8e9)
>>> e.id, e.kind, e.occurred_at_s, e.origin
('7', 'incident', 1714564800.0, 'reported')
>>> parse_record(b'{"op": "cancel", "id": "7"}', rules, now_s=1.8e9)
Cancel(id='7', kind='incident', event=None)
>>> c = parse_record(
...     b'{"op": "cancel", "id": 7, "occurred_at": "2024-05-01T12:00:00Z", "lat": 39.95,'
...     b' "lon": -75.16, "category": "Robbery Firearm"}', rules, now_s=1.8e9)
>>> c.event.category, c.event.occurred_at_s
('Robbery Firearm', 1714564800.0)
>>> try:
...     parse_record(b'{"id": "7", "lat": 91}', rules, now_s=1.8e9)
... except InvalidEvent as exc:
...     print(exc.reason)
missing_field
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import orjson

from streamer.core.event_columns import validate_columns
from streamer.core.event_model import (
    KINDS,
    MAX_TEXT_CHARS,
    MAX_TIME_S,
    MIN_TIME_S,
    NULL_ISLAND_DEG,
    ORIGINS,
    REASONS,
    Cancel,
    Event,
    EventRules,
    InvalidEvent,
    Kind,
    Origin,
    Record,
    _coarse,
    _exact_str,
    _json_type,
    _show,
    normalize_category,
    normalize_id,
)

__all__ = [
    "KINDS",
    "MAX_TEXT_CHARS",
    "MAX_TIME_S",
    "MIN_TIME_S",
    "NULL_ISLAND_DEG",
    "ORIGINS",
    "REASONS",
    "Cancel",
    "Event",
    "EventRules",
    "InvalidEvent",
    "Kind",
    "Origin",
    "Record",
    "decode_object",
    "normalize_category",
    "normalize_id",
    "parse_record",
    "position",
    "validate_columns",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Stand-in for integer coordinates too big for a float: keeps them finite, so
# they are reported as out of range rather than as not finite.
_HUGE_DEG = 1e300
_KIND_BY_NAME: dict[str, Kind] = {k: k for k in KINDS}
_ORIGIN_BY_NAME: dict[str, Origin] = {o: o for o in ORIGINS}
_loads = orjson.loads
_fromisoformat = datetime.fromisoformat
_fromtimestamp = datetime.fromtimestamp
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)


def parse_record(
    raw: bytes | bytearray | memoryview | str | Mapping[str, object],
    rules: EventRules,
    *,
    now_s: float,
) -> Record:
    """Decode and validate one payload into an :class:`Event` or a :class:`Cancel`.

    ``raw`` is UTF-8 JSON (bytes or text) holding an object, or an already
    decoded mapping. ``now_s`` (POSIX seconds) bounds how far in the future
    ``occurred_at`` may be. Whatever ``raw`` is, the only exception raised is
    :class:`InvalidEvent`; its ``reason`` is one of :data:`REASONS`.
    """
    return _record_from(decode_object(raw, rules.max_payload_bytes), rules, now_s)


def position(lat_raw: object, lon_raw: object, rules: EventRules) -> tuple[float, float]:
    """A payload's ``lat`` and ``lon``, checked: numbers, on the globe, not
    the (0, 0) "no location" marker, inside ``rules.area`` when set."""
    lat = lat_raw if type(lat_raw) is float else _coordinate("lat", lat_raw)
    lon = lon_raw if type(lon_raw) is float else _coordinate("lon", lon_raw)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or (
        -NULL_ISLAND_DEG < lat < NULL_ISLAND_DEG and -NULL_ISLAND_DEG < lon < NULL_ISLAND_DEG
    ):
        raise _position_error(lat, lon)
    area = rules.area
    if area is not None and not area.contains(lat, lon):
        raise InvalidEvent(
            "outside_area", f"point near ({lat:.2f}, {lon:.2f}) is outside the configured area"
        )
    return lat, lon


def decode_object(
    raw: bytes | bytearray | memoryview | str | Mapping[str, object], max_bytes: int
) -> dict[str, object]:
    """A payload as a JSON object; :class:`InvalidEvent` (``too_large``,
    ``bad_json``) otherwise."""
    if type(raw) is bytes:
        if len(raw) > max_bytes:
            raise _too_large(len(raw), max_bytes)
        try:
            obj = _loads(raw)
        except ValueError as exc:
            raise _bad_json(exc) from None
    else:
        obj = _decode_other(raw, max_bytes)
    if type(obj) is not dict:
        raise InvalidEvent("bad_json", f"payload is {_json_type(obj)}, not a JSON object")
    return obj


def _record_from(obj: dict[str, object], rules: EventRules, now_s: float) -> Record:
    get = obj.get
    op = get("op")
    if op is not None:
        op = _exact_str(op)
        if op == "cancel":
            return _cancel_from(obj, rules, now_s)
        if op != "upsert":
            raise InvalidEvent(
                "unknown_op", f"op must be 'upsert' or 'cancel', got {_show(get('op'))}"
            )

    event_id = get("id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_TEXT_CHARS:
        event_id = normalize_id(event_id)
    kind_value = get("kind")
    kind: Kind = "incident" if kind_value is None else _kind(kind_value)
    origin_value = get("origin")
    origin: Origin = "reported" if origin_value is None else _origin(origin_value)
    category = get("category")
    if type(category) is not str or not 0 < len(category) <= MAX_TEXT_CHARS:
        category = normalize_category(category)
    priority = get("priority")
    if priority is not None and not (
        type(priority) is int and _INT64_MIN <= priority <= _INT64_MAX
    ):
        priority = _priority(priority)

    occurred_at, occurred_at_s = _occurred_at(get("occurred_at"), rules, now_s)

    lat, lon = position(get("lat"), get("lon"), rules)
    return Event(event_id, kind, occurred_at, occurred_at_s, lat, lon, category, origin, priority)


_EVENT_FIELDS = ("occurred_at", "lat", "lon", "category")


def _cancel_from(obj: dict[str, object], rules: EventRules, now_s: float) -> Cancel:
    event_id = normalize_id(obj.get("id"))
    kind_value = obj.get("kind")
    kind: Kind = "incident" if kind_value is None else _kind(kind_value)
    event = None
    if all(obj.get(name) is not None for name in _EVENT_FIELDS):
        try:
            record = _record_from({**obj, "op": None, "kind": kind}, rules, now_s)
        except InvalidEvent:  # fields it cannot use: a cancel by id alone
            record = None
        if isinstance(record, Event):
            event = record
    return Cancel(event_id, kind, event)


def _kind(value: object) -> Kind:
    kind = _KIND_BY_NAME.get(_exact_str(value) or "")
    if kind is None:
        raise InvalidEvent(
            "bad_kind", f"kind must be one of {', '.join(KINDS)}; got {_show(value)}"
        )
    return kind


def _origin(value: object) -> Origin:
    origin = _ORIGIN_BY_NAME.get(_exact_str(value) or "")
    if origin is None:
        raise InvalidEvent(
            "bad_origin", f"origin must be one of {', '.join(ORIGINS)}; got {_show(value)}"
        )
    return origin


def _priority(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64_MIN <= value <= _INT64_MAX:
            return int.__index__(value)
        raise InvalidEvent("bad_type", "priority does not fit in a signed 64-bit integer")
    raise InvalidEvent("bad_type", f"priority must be an integer or null, got {_json_type(value)}")


def _coordinate(name: str, value: object) -> float:
    """A latitude or longitude as a float (type checks only; ranges come later)."""
    if value is None:
        raise InvalidEvent("missing_field", f"{name} is missing")
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if -_HUGE_DEG < value < _HUGE_DEG:
            return float(int.__index__(value))
        return _HUGE_DEG if value > 0 else -_HUGE_DEG
    # Never echo the value: a string here may be a victim's exact coordinate.
    raise InvalidEvent("bad_type", f"{name} must be a number, got {_json_type(value)}")


def _position_error(lat: float, lon: float) -> InvalidEvent:
    """The reason a (lat, lon) pair that failed the fast range test is bad."""
    if not math.isfinite(lat):
        return InvalidEvent("not_finite", f"lat is {lat}")
    if not math.isfinite(lon):
        return InvalidEvent("not_finite", f"lon is {lon}")
    if not -90.0 <= lat <= 90.0:
        return InvalidEvent("lat_out_of_range", f"lat {_coarse(lat)} is outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        return InvalidEvent("lon_out_of_range", f"lon {_coarse(lon)} is outside [-180, 180]")
    return InvalidEvent("null_island", "lat and lon are both 0 (the 'no location' marker)")


def _occurred_at(value: object, rules: EventRules, now_s: float) -> tuple[datetime, float]:
    """``occurred_at`` as an aware UTC datetime and as POSIX seconds."""
    if type(value) is str:
        try:
            when = _fromisoformat(value)
            zone = when.tzinfo
            if zone is None:
                # Offsets by timedelta arithmetic: datetime.replace(tzinfo=...) costs
                # more than everything else here. A naive time has fold=0, so an
                # ambiguous local time (clocks going back) is the first of the two
                # and a skipped one (clocks going forward) keeps the offset from
                # before the change, as replace(tzinfo=zone) would.
                since_epoch = when - _EPOCH_NAIVE
                zone = rules._zone
                if zone is not UTC:
                    offset = zone.utcoffset(when)
                    if offset is None:
                        raise ValueError("zone without offset")
                    since_epoch -= offset
                seconds = since_epoch / _ONE_SECOND
                _check_time(seconds, rules, now_s)
                return _EPOCH_UTC + since_epoch, seconds
            if zone is not UTC:
                when = when.astimezone(UTC)
            seconds = when.timestamp()
        except (ValueError, OverflowError):
            raise InvalidEvent(
                "bad_time", f"occurred_at {_show(value)} is not an ISO 8601 time"
            ) from None
        _check_time(seconds, rules, now_s)
        return when, seconds
    if type(value) is float or type(value) is int:
        if not MIN_TIME_S <= value < MAX_TIME_S:
            raise _time_out_of_range(value)
        seconds = float(value)
        _check_time(seconds, rules, now_s)
        return _fromtimestamp(seconds, UTC), seconds
    if value is None:
        raise InvalidEvent("missing_field", "occurred_at is missing")
    if isinstance(value, bool):
        raise InvalidEvent("bad_type", "occurred_at must be a string or a number, got a boolean")
    if isinstance(value, str):
        return _occurred_at(str.__str__(value), rules, now_s)
    if isinstance(value, float):
        return _occurred_at(float.__float__(value), rules, now_s)
    if isinstance(value, int):
        return _occurred_at(int.__index__(value), rules, now_s)
    raise InvalidEvent(
        "bad_type", f"occurred_at must be a string or a number, got {_json_type(value)}"
    )


def _check_time(seconds: float, rules: EventRules, now_s: float) -> None:
    # The same comparisons as validate_columns, so both agree at the edges.
    if not MIN_TIME_S <= seconds < MAX_TIME_S:
        raise _time_out_of_range(seconds)
    if seconds > now_s + rules.max_future_skew_s:
        raise InvalidEvent(
            "future_time",
            f"occurred_at is {seconds - now_s:.0f} s after now "
            f"(at most {rules.max_future_skew_s:g} s allowed)",
        )


def _time_out_of_range(seconds: float) -> InvalidEvent:
    if seconds != seconds:
        return InvalidEvent("bad_time", "occurred_at is NaN")
    return InvalidEvent("bad_time", "occurred_at is before 1970 or after the year 2200")


# -- decoding ------------------------------------------------------------------


def _decode_other(raw: object, limit: int) -> object:
    """Everything but plain ``bytes`` (the hot path handles those inline)."""
    if type(raw) is dict:
        return raw
    if isinstance(raw, str):
        text = str.__str__(raw)
        # A character is 1-4 UTF-8 bytes: only encode when the length is in doubt.
        if len(text) * 4 > limit:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise _too_large(size, limit)
        return _loads_guarded(text)
    if isinstance(raw, bytes | bytearray | memoryview):
        size = raw.nbytes if isinstance(raw, memoryview) else len(raw)
        if size > limit:
            raise _too_large(size, limit)
        # orjson refuses subclasses of bytes; a memoryview reads the same buffer.
        return _loads_guarded(memoryview(raw) if isinstance(raw, bytes) else raw)
    if isinstance(raw, Mapping):
        try:
            return dict(raw)
        except Exception as exc:  # a foreign mapping may fail in any way
            raise InvalidEvent(
                "bad_json", f"the mapping could not be read ({type(exc).__name__})"
            ) from None
    raise InvalidEvent(
        "bad_json", f"payload must be JSON bytes, text or a mapping, not {type(raw).__name__}"
    )


def _loads_guarded(data: str | bytes | bytearray | memoryview) -> object:
    try:
        return _loads(data)
    except (ValueError, TypeError) as exc:
        raise _bad_json(exc) from None


def _bad_json(exc: Exception) -> InvalidEvent:
    if isinstance(exc, orjson.JSONDecodeError):
        return InvalidEvent("bad_json", f"not valid JSON: {exc.msg} at position {exc.pos}")
    return InvalidEvent("bad_json", f"not valid JSON ({type(exc).__name__})")


def _too_large(size: int, limit: int) -> InvalidEvent:
    return InvalidEvent("too_large", f"payload is {size} bytes, more than {limit}")
