"""Hours of the week: the rule a time-of-week window follows, for the API
and the command line alike (hour 0 = Monday 00:00-01:00, local time)."""

from __future__ import annotations

import re

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOUR_PATTERN = "^(?:[01][0-9]|2[0-3]):00$"
_WHOLE_HOUR = re.compile(HOUR_PATTERN)


class WindowError(ValueError):
    """A window the rule refuses: ``field`` (``day``, ``from`` or ``to``),
    the ``rule`` it breaks, and the ``value`` given (callers quote it their
    own way)."""

    def __init__(self, field: str, rule: str, value: str) -> None:
        super().__init__(f"{rule}, got {value!r}")
        self.field = field
        self.rule = rule
        self.value = value


def window_hours(day: str, start: str, end: str) -> list[int]:
    """Hours of the week from ``day`` ``start`` to ``end``, whole hours
    ``HH:00`` (00:00 to 23:00); an end at or before the start runs into the
    next day (an end equal to the start: the whole 24 hours).

    >>> window_hours("fri", "22:00", "02:00")
    [118, 119, 120, 121]
    >>> window_hours("sun", "23:00", "01:00")
    [167, 0]
    >>> try:
    ...     window_hours("fri", "22:30", "02:00")
    ... except WindowError as exc:
    ...     print(exc.field, exc.value)
    from 22:30
    """
    if day not in DAYS:
        raise WindowError("day", f"day must be one of {', '.join(DAYS)}", day)
    first = _hour(start, "from")
    last = _hour(end, "to")
    span = (last - first) % 24 or 24
    base = DAYS.index(day) * 24 + first
    return [(base + h) % 168 for h in range(span)]


def _hour(text: str, name: str) -> int:
    if _WHOLE_HOUR.fullmatch(text) is None:
        raise WindowError(name, f"{name} must be a whole hour HH:00, 00:00 to 23:00", text)
    return int(text[:2])
