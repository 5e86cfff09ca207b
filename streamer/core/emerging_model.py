"""The emerging-hot-spot detector's records (pure): its configuration, the
cells and daily bins it reads, its tests, alerts and notices.
:class:`streamer.core.emerging.Detector` works on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamer.core.emerging_stats import gamma_poisson_sf

DAY_S = 86400.0


# cells and their daily bins -----------------------------------------------
@dataclass(slots=True)
class CellCounts:
    """What the detector knows of one cell: decayed counts at ``at_s``."""

    at_s: float
    short: float
    long: float
    last_event_s: float | None = None
    total: int = 0  # live events (not decayed): new events show as its growth
    categories: dict[str, float] = field(default_factory=dict)  # short-horizon counts


@dataclass(slots=True)
class DayBins:
    """A cell's event counts per local day, the newest ``len(counts)`` days
    ending at ``day`` (a proleptic ordinal), and the total last seen."""

    day: int
    seen: int
    counts: list[int]

    def shift_to(self, day: int) -> None:
        gap = day - self.day
        if gap <= 0:
            return
        n = len(self.counts)
        self.counts = (self.counts + [0] * min(gap, n))[-n:]
        self.day = day

    def encode(self) -> str:
        return f"{self.day} {self.seen} " + ",".join(map(str, self.counts))

    @classmethod
    def decode(cls, text: str, days: int) -> DayBins:
        day, seen, counts = text.split(" ")
        values = [int(v) for v in counts.split(",")] if counts else []
        values = ([0] * days + values)[-days:]
        return cls(int(day), int(seen), values)


# the detector -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """The ``[alerts]`` settings the maths needs (durations in seconds)."""

    short_s: float
    long_s: float
    false_alerts_per_day: float = 1.0
    min_events: float = 2.5
    prior_s: float = 30 * DAY_S
    area_weight: float = 1.0
    keep_ratio: float = 100.0
    escalate_ratio: float = 100.0
    clear_quiet_s: float = 12 * 3600.0
    pattern_days: int = 14
    pattern_p: float = 0.05
    timezone: str = "UTC"
    short_name: str = "day"
    baseline_name: str = "year"
    resolution: int = 9


@dataclass(frozen=True, slots=True)
class Test:
    """A region's test: decayed count against what its baseline predicts."""

    observed: float
    expected: float
    p: float
    rate_per_s: float  # the shrunk baseline rate of the whole region
    shape: float  # its gamma posterior: shape (pseudo-events) ...
    rate_s: float  # ... and rate (exposure time, s)

    def sf(self, observed: float, exposure: float) -> float:
        """``P(X >= observed)`` over ``exposure`` seconds under this posterior."""
        return gamma_poisson_sf(observed, self.shape, self.rate_s, exposure)


@dataclass(slots=True)
class Alert:
    """An open alert (the detector's own record of it)."""

    id: str
    cells: list[str]
    opened_at: float
    updated_at: float
    first_event_at: float | None
    last_event_at: float | None
    notified_p: float
    peak_p: float
    p: float = 1.0
    observed: float = 0.0
    expected: float = 0.0
    pattern: str | None = None
    top_categories: list[tuple[str, float]] = field(default_factory=list)
    status: str = "open"
    kind: str = "opened"
    cleared_at: float | None = None
    merged_into: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AlertChange:
    """A change of an alert to deliver: ``kind`` is opened, escalated, cleared or merged."""

    kind: str
    alert: dict[str, Any]
