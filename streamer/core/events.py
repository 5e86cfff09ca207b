"""The event model: one shape for recorded incidents and calls for service.

Everything that crosses into the engine becomes an :class:`Event` (an upsert)
or a :class:`Cancel`, or raises :class:`InvalidEvent` with a short, stable
``reason`` code that metrics and the dead-letter topic use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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
    a call found to be a duplicate, a record deleted at source."""

    id: str
    kind: Kind = "incident"


Record = Event | Cancel
