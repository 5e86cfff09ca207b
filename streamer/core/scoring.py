"""From a validated event to what it contributes to the store.

A :class:`Contribution` is everything the store needs to add an event to its
cells, and to take it out again exactly: time, weight, family, category,
hour of the week and the cell at each resolution. Its packed form is what the
ledger keeps, and equal packed forms mean a redelivered duplicate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar
from zoneinfo import ZoneInfo

from streamer.core.cells import cell_hex, cells_of
from streamer.core.events import Event
from streamer.core.weights import WeightTable

OpCode = Literal["u", "c", "r", "x", "n"]
# The op codes as the apply script reads them (one byte on the wire each):
UPSERT: Final = "u"  # add an event's contribution, or replace its earlier version
CANCEL: Final = "c"  # take an id out, by the ledger's record of it
CANCEL_WITH_FIELDS: Final = "r"  # take an id out; the op carries its contribution
UNCOUNT: Final = "x"  # the id's new version does not count: take the old one out
OFFSET_ONLY: Final = "n"  # nothing but the source's offset (a dead letter)
SEP = "\x1f"  # ASCII unit separator: cannot occur in a validated category

# Entries a Scorer memo holds before it starts afresh (memory stays bounded).
CACHE_MAX_ENTRIES = 250_000  # ~270 bytes per cells entry: ~65 MB at most

K = TypeVar("K")
V = TypeVar("V")


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
    """Turns events into contributions with the configured weights and grid.

    Police records repeat places (addresses snapped to hundred-blocks),
    categories and hours, so the pure look-ups behind a contribution (three H3
    cells, a time-zone conversion, a weighing) are memoised per scorer: each
    memo is emptied when it reaches ``CACHE_MAX_ENTRIES``. Results are those
    of the uncached functions, bit for bit.
    """

    weights: WeightTable
    resolutions: Sequence[int]
    zone: ZoneInfo
    _cells: dict[tuple[float, float], tuple[int, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _hours: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _labels: dict[tuple[str, str], tuple[float, str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def contribution(self, event: Event) -> Contribution | None:
        """The event's contribution, or ``None`` when its weight is zero
        (an excluded category): it then has nothing to add."""
        weight, family, category = self._weighing(event.category, event.origin)
        if weight <= 0.0:
            return None
        return Contribution(
            id=event.id,
            t_s=event.occurred_at_s,
            weight=weight,
            family=family,
            category=category,
            hour_of_week=self.hour_of_week(event.occurred_at_s),
            cells=self.cells_of(event.lat_deg, event.lon_deg),
        )

    def cells_of(self, lat_deg: float, lon_deg: float) -> tuple[int, ...]:
        """:func:`streamer.core.cells.cells_of` at the scorer's resolutions."""
        key = (lat_deg, lon_deg)
        cells = self._cells.get(key)
        if cells is None:
            cells = cells_of(lat_deg, lon_deg, self.resolutions)
            _remember(self._cells, key, cells)
        return cells

    def hour_of_week(self, t_s: float) -> int:
        """:func:`hour_of_week` in the scorer's zone.

        One zone conversion per UTC hour: within an hour whose UTC offset is
        one whole number of hours throughout, every instant has the same
        local hour. datetime rounds a timestamp to the microsecond, so
        instants within a millisecond of an hour's edge (other than the edge
        itself) are converted directly.
        """
        into_hour_s = t_s % 3600.0
        if into_hour_s == 0.0 or 1e-3 <= into_hour_s <= 3600.0 - 1e-3:
            hour = math.floor(t_s / 3600.0)
            how = self._hours.get(hour)
            if how is None:
                how = _steady_hour_of_week(hour, self.zone)
                _remember(self._hours, hour, how)
            if how >= 0:
                return how
        return hour_of_week(t_s, self.zone)

    def _weighing(self, category: str, origin: str) -> tuple[float, str, str]:
        key = (category, origin)
        found = self._labels.get(key)
        if found is None:
            weighing = self.weights.weigh(category, origin)
            found = (weighing.weight, clean_label(weighing.family), clean_label(category))
            _remember(self._labels, key, found)
        return found


def _remember(memo: dict[K, V], key: K, value: V) -> None:
    if len(memo) >= CACHE_MAX_ENTRIES:
        memo.clear()
    memo[key] = value


def _steady_hour_of_week(hour: int, zone: ZoneInfo) -> int:
    """The hour of the week shared by every instant of UTC hour ``hour``,
    or -1 when the local hour changes within it (an offset that is not whole
    hours, or a transition inside the hour; tzdata transitions fall on whole
    seconds, so comparing the offsets at its first and last second finds one)."""
    start = datetime.fromtimestamp(hour * 3600.0, UTC).astimezone(zone)
    offset = start.utcoffset()
    end = datetime.fromtimestamp(hour * 3600.0 + 3599.0, UTC).astimezone(zone)
    if offset is None or offset != end.utcoffset() or offset.total_seconds() % 3600 != 0:
        return -1
    return start.weekday() * 24 + start.hour


@dataclass(frozen=True, slots=True)
class StoreOp:
    """One change for the store: ``op`` is one of :data:`UPSERT` (a
    contribution), :data:`CANCEL` (an id), :data:`CANCEL_WITH_FIELDS` (an id
    whose record carries the event's own fields, its contribution: taken out
    even when the ledger no longer holds the id), :data:`UNCOUNT` (an id
    whose new version no longer counts) and :data:`OFFSET_ONLY` (nothing but
    the offset: a dead letter). ``source``/``offset``
    (``"topic:partition"``, Kafka offset) make redelivery harmless: an op at
    or below the offset the store recorded for its source is skipped."""

    op: OpCode
    id: str
    contribution: Contribution | None = None
    source: str = ""
    offset: int = -1

    @staticmethod
    def upsert(c: Contribution, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp(UPSERT, c.id, c, source, offset)

    @staticmethod
    def cancel(event_id: str, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp(CANCEL, event_id, None, source, offset)

    @staticmethod
    def retract(c: Contribution, source: str = "", offset: int = -1) -> StoreOp:
        """A cancel of ``c.id`` that can take out ``c`` itself (see the class)."""
        return StoreOp(CANCEL_WITH_FIELDS, c.id, c, source, offset)

    @staticmethod
    def exclude(event_id: str, source: str = "", offset: int = -1) -> StoreOp:
        return StoreOp(UNCOUNT, event_id, None, source, offset)
