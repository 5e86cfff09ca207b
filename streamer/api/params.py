"""Query parameters read as the routes take them: the fast lane's readers
(values FastAPI would read the same way, else None), ``/v1/hotspots``'s
parameters, and the days, boxes and hours that answer a 422 of their own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from streamer.api.errors import cut, invalid
from streamer.core import weekhours

FIRST_YEAR, LAST_YEAR = 1970, 9998  # days the dosage routes can read (and the day after)

# values FastAPI would read the same way: plain decimals and whole numbers only
_DECIMAL = re.compile(r"-?[0-9]{1,3}(?:\.[0-9]{1,20})?")
_WHOLE = re.compile(r"0|[1-9][0-9]{0,5}")


def decimal_in(text: str | None, bound: float) -> float | None:
    """A plain decimal number within ``[-bound, bound]``, else None.

    >>> decimal_in("39.952583", 90), decimal_in("-75.2", 180), decimal_in("91", 90)
    (39.952583, -75.2, None)
    >>> decimal_in("1e1", 90), decimal_in(" 1", 90), decimal_in(None, 90)
    (None, None, None)
    """
    if text is None or _DECIMAL.fullmatch(text) is None:
        return None
    value = float(text)
    return value if -bound <= value <= bound else None


def whole(text: str | None, default: int) -> int | None:
    """A whole number written plainly (``default`` when absent), else None.

    >>> whole("9", 0), whole(None, 20), whole("09", 0), whole("-1", 0), whole("", 0)
    (9, 20, None, None, None)
    """
    if text is None:
        return default
    return int(text) if _WHOLE.fullmatch(text) is not None else None


MAX_LIMIT = 1000
RISK_PARAMS = frozenset({"lat", "lon"})
HOTSPOTS_PARAMS = frozenset({"horizon", "resolution", "limit", "family", "bbox", "format"})


@dataclass(frozen=True, slots=True)
class HotspotsQuery:
    """``/v1/hotspots``'s parameters."""

    horizon: str = "week"
    resolution: int = 9
    limit: int = 20
    family: str | None = None
    bbox: str | None = None
    format: str = "json"

    @staticmethod
    def read(query: dict[str, str]) -> HotspotsQuery | None:
        """The parameters as FastAPI reads them, or None when one is unknown
        or not plainly valid (FastAPI answers those, with its messages)."""
        if not query.keys() <= HOTSPOTS_PARAMS:
            return None
        d = HOTSPOTS_DEFAULT
        resolution = whole(query.get("resolution"), d.resolution)
        limit = whole(query.get("limit"), d.limit)
        format = query.get("format", d.format)
        if resolution is None or limit is None or not 1 <= limit <= MAX_LIMIT:
            return None
        if format not in ("json", "geojson"):
            return None
        horizon = query.get("horizon", d.horizon)
        return HotspotsQuery(
            horizon, resolution, limit, query.get("family"), query.get("bbox"), format
        )


HOTSPOTS_DEFAULT = HotspotsQuery()


def local_day(text: str | None, today: str) -> str:
    """``date=YYYY-MM-DD`` as given (``today`` when absent): a real day in
    the years ``FIRST_YEAR`` to ``LAST_YEAR`` (a day's bounds and the day
    before and after must be datable), else a 422 that says so.

    >>> local_day(None, "2025-03-14"), local_day("2024-02-29", "2025-03-14")
    ('2025-03-14', '2024-02-29')
    """
    if text is None:
        return today
    try:
        day = date.fromisoformat(text) if _DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None:
        raise invalid("query", "date", f"date must be a day YYYY-MM-DD, got {cut(text)}", text)
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        message = f"date must be in the years {FIRST_YEAR} to {LAST_YEAR}, got {cut(text)}"
        raise invalid("query", "date", message, text)
    return text


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATE_PATTERN = (  # (the document's: years FIRST_YEAR to LAST_YEAR; format "date" rules out Feb 30)
    r"^(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
)


_LON = r"-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)"
_LAT = r"-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?)"
BBOX_PATTERN = f"^{_LON},{_LAT},{_LON},{_LAT}$"
_BBOX = re.compile(BBOX_PATTERN)


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``west,south,east,north`` in degrees, four plain decimals (longitudes
    -180..180, latitudes -90..90); a 422 that says so otherwise. A west edge
    east of the east one is a box across the antimeridian (RFC 7946, 5.2);
    the two latitudes bound the box in either order.

    >>> parse_bbox("-75.2,39.9,-75.1,40.0"), parse_bbox("170,10,-170,-10")
    ((-75.2, 39.9, -75.1, 40.0), (170.0, -10.0, -170.0, 10.0))
    """
    if text is None:
        return None
    if _BBOX.fullmatch(text) is None:
        message = (
            "bbox is west,south,east,north: four plain decimals, longitudes -180..180 "
            f"and latitudes -90..90, got {cut(text)}"
        )
        raise invalid("query", "bbox", message, text)
    west, south, east, north = (float(x) for x in text.split(","))
    return west, min(south, north), east, max(south, north)


def window_hours(day: str, start: str, end: str) -> list[int]:
    """:func:`streamer.core.weekhours.window_hours`, a 422 naming the
    parameter when the window breaks its rule.

    >>> window_hours("fri", "22:00", "02:00")
    [118, 119, 120, 121]
    """
    try:
        return weekhours.window_hours(day, start, end)
    except weekhours.WindowError as exc:
        raise invalid("query", exc.field, f"{exc.rule}, got {cut(exc.value)}", exc.value) from None
