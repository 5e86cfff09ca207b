"""From a validated event to what it contributes to the store.

A :class:`Contribution` is everything the store needs to add an event to its
cells, and to take it out again exactly: time, weight, family, category,
hour of the week and the cell at each resolution. Its packed form is what the
ledger keeps, and equal packed forms mean a redelivered duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from streamer.core.cells import cell_hex, cells_of
from streamer.core.events import Event
from streamer.core.weights import WeightTable

OpCode = Literal["u", "c", "x", "n"]
SEP = "\x1f"  # ASCII unit separator: cannot occur in a validated category


@dataclass(frozen=True, slots=True)
class Contribution:
    """One event as the store sees it."""

    id: str
    t_s: float
    weight: float
    family: str
    category: str
    hour_of_week: int
    cells: tuple[int, ...]

    def packed(self) -> str:
        """The ledger form: ``t w family category how cell...`` joined by US.

        ``repr`` of a float round-trips exactly, so the store re-computes
        bit-identical terms when it retracts.
        """
        parts = [
            repr(self.t_s),
            repr(self.weight),
            self.family,
            self.category,
            str(self.hour_of_week),
            *(cell_hex(c) for c in self.cells),
        ]
        return SEP.join(parts)


def hour_of_week(t_s: float, zone: ZoneInfo) -> int:
    """Hour of the week in ``zone``, Monday 00:00-00:59 = 0 ... Sunday 23:00 = 167.

    >>> hour_of_week(0.0, ZoneInfo("UTC"))  # Thursday 1 Jan 1970, 00:00
    72
    """
    local = datetime.fromtimestamp(t_s, UTC).astimezone(zone)
    return local.weekday() * 24 + local.hour


def clean_label(text: str) -> str:
    """A category or family safe for Redis field names and the ledger."""
    return text.replace(SEP, " ").replace(":", " ").strip() or "unknown"


@dataclass(frozen=True, slots=True)
class Scorer:
    """Turns events into contributions with the configured weights and grid."""

    weights: WeightTable
    resolutions: Sequence[int]
    zone: ZoneInfo

    def contribution(self, event: Event) -> Contribution | None:
        """The event's contribution, or ``None`` when its weight is zero
        (an excluded category): it then has nothing to add."""
        weighing = self.weights.weigh(event.category, event.origin)
        if weighing.weight <= 0.0:
            return None
        return Contribution(
            id=event.id,
            t_s=event.occurred_at_s,
            weight=weighing.weight,
            family=clean_label(weighing.family),
            category=clean_label(event.category),
            hour_of_week=hour_of_week(event.occurred_at_s, self.zone),
            cells=cells_of(event.lat_deg, event.lon_deg, self.resolutions),
        )


@dataclass(frozen=True, slots=True)
class StoreOp:
    """One change for the store: ``u`` upsert a contribution, ``c`` cancel
    an id, ``x`` take out an id whose new version no longer counts, ``n``
    nothing but the offset (a dead letter). ``source``/``offset``
    (``"topic:partition"``, Kafka offset) make redelivery harmless: an op at
    or below the offset the store recorded for its source is skipped."""

    op: OpCode
    id: str
    contribution: Contribution | None = None
    source: str = ""
    offset: int = -1

    @staticmethod
    def upsert(c: Contribution, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp("u", c.id, c, source, offset)

    @staticmethod
    def cancel(event_id: str, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp("c", event_id, None, source, offset)

    @staticmethod
    def exclude(event_id: str, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp("x", event_id, None, source, offset)
