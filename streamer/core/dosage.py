"""Patrol dosage (pure): GPS/AVL pings -> visits to cells -> doses per cell and day.

Hot spots policing deters when each hot spot gets its visible patrol: about
15 minutes a stop (Koper: 10-16 minute stops deter best, drive-bys barely
count), with no hot spot left unvisited for days. This module measures what
was delivered:

1. :func:`parse_ping` validates one location ping (JSON) into a :class:`Ping`,
   with the reason codes of :mod:`streamer.core.events` (:data:`PING_REASONS`).
2. :func:`visits_of` turns the pings of one unit into :class:`Visit` records
   under :class:`VisitRules`: only patrol time counts, gaps and driving end a
   visit, GPS jitter at cell edges is debounced, short stays are pass-bys.
   It is a function of the *set* of pings, so pings that arrive late, out of
   order or twice give the same visits.
3. :func:`dose_by_day`, :func:`compliance`, :func:`unit_minutes_in` and
   :func:`overdue` turn visits into the figures a plan is checked against.

The walk, stated once (:func:`visits_of`):

- Pings are deduplicated and sorted by time (one ping per instant).
- A ping is *usable* when its status is a patrol status and it is not too
  fast (its ``speed`` when given, else the speed implied by the distance and
  time from the previous ping, when that is at most ``max_gap_s`` earlier).
- The interval between two consecutive pings is *counted* when both are
  usable and it lasts at most ``max_gap_s``. Maximal chains of counted
  intervals are *segments*; a visit never crosses from one to the next.
- Within a segment, each ping gets a debounced cell: a *run* (consecutive
  pings in one cell) moves the unit into its cell only when it lasts (first
  to last ping) at least ``debounce_s``; shorter runs are attributed to the
  cell the unit came from (at the start of a segment: the cell of its first
  run that lasts long enough, else the cell of its first ping).
- The interval from a ping to the next goes to the first ping's debounced
  cell. A visit is a maximal chain of intervals in one cell; its ``seconds``
  are ``end_s - start_s``. Shorter than ``min_visit_s``: a pass-by.

>>> from streamer.core.cells import cell_hex, cell_of
>>> track = [Ping("car-7", 1000.0 + 10 * i, 39.95240, -75.16360) for i in range(31)]
>>> [(v.kind, v.seconds, v.pings) for v in visits_of(track, VisitRules(resolution=10))]
[('visit', 300.0, 31)]
>>> visits_of(track, VisitRules(resolution=10))[0].cell == cell_hex(cell_of(39.9524, -75.1636, 10))
True
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Literal

from streamer.core.cells import cell_hex, cell_of
from streamer.core.pings import PING_REASONS, Ping, parse_ping

__all__ = [
    "DAY_S",
    "EARTH_RADIUS_M",
    "KOPER_VISIT_S",
    "LATE_REASON",
    "NEVER_VISITED_REASON",
    "PING_REASONS",
    "DayDose",
    "Ping",
    "Requirement",
    "Visit",
    "VisitKind",
    "VisitRules",
    "compliance",
    "days_since_last_visit",
    "debounce",
    "distance_m",
    "dose_by_day",
    "overdue",
    "parse_ping",
    "resume_at",
    "unit_minutes_in",
    "visits_by_day",
    "visits_of",
]

DAY_S = 86400.0
EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG), for distances between consecutive pings."""
KOPER_VISIT_S = 600.0
"""Shortest Koper-compliant visit: 10 minutes."""

LATE_REASON = "unvisited today late in its window"
""":func:`overdue` reason: no compliant visit yet today, and the day's window is closing."""
NEVER_VISITED_REASON = "never visited"
""":func:`overdue` reason: no visit on record at all."""

VisitKind = Literal["visit", "pass-by"]


# -- visits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitRules:
    """How :func:`visits_of` turns pings into visits.

    ``resolution``: the H3 resolution of the cells visited. ``max_gap_s``: a
    longer silence between pings ends a visit and is not counted.
    ``min_visit_s``: a shorter stay is a pass-by. ``max_speed_mps``: a ping
    faster than this is driving: both intervals next to it count for nothing
    and it ends a visit. ``patrol_statuses``: statuses whose time counts;
    ``None`` in the set (the default) means a ping without a status counts as
    patrol, which suits AVL feeds that send no status. ``debounce_s``: how
    long a unit must stay in a new cell (consecutive pings, first to last)
    before the move counts. ``koper_visit_s``: the shortest Koper-compliant
    visit (pass it on to :func:`dose_by_day`).
    """

    resolution: int
    max_gap_s: float = 300.0
    min_visit_s: float = 120.0
    max_speed_mps: float = 2.5
    patrol_statuses: frozenset[str | None] = field(
        default_factory=lambda: frozenset({"patrol", None})
    )
    debounce_s: float = 60.0
    koper_visit_s: float = KOPER_VISIT_S

    def __post_init__(self) -> None:
        if not 0 <= self.resolution <= 15:
            raise ValueError(f"resolution must be 0-15, got {self.resolution}")
        for name in ("max_gap_s", "min_visit_s", "max_speed_mps", "debounce_s", "koper_visit_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not isinstance(self.patrol_statuses, frozenset):
            object.__setattr__(self, "patrol_statuses", frozenset(self.patrol_statuses))


@dataclass(frozen=True, slots=True)
class Visit:
    """A stay of one unit in one cell (hex id), from ``start_s`` to ``end_s``.

    ``seconds`` is the dwell counted (``end_s - start_s``: a visit has no
    holes); ``pings`` the pings attributed to the cell during it (the ping
    that ends a visit by entering the next cell belongs to the next visit).
    ``kind`` is ``"pass-by"`` for stays shorter than ``min_visit_s``.
    """

    unit: str
    cell: str
    start_s: float
    end_s: float
    seconds: float
    pings: int
    kind: VisitKind = "visit"


def visits_of(
    pings: Iterable[Ping], rules: VisitRules, *, include_pass_bys: bool = False
) -> list[Visit]:
    """The visits of ONE unit, in time order (see the module docstring for the walk).

    A function of the set of pings: exact duplicates collapse, and of
    different pings at the same instant the smallest (by position, then
    status, then speed) is kept, so order and repetition do not matter.
    Pass-bys (``kind == "pass-by"``) are left out unless
    ``include_pass_bys``. Raises ``ValueError`` for pings of several units.
    """
    track = _track(pings)
    if len(track) < 2:
        return []
    unit = track[0].unit
    usable = _usable(track, rules)
    max_gap_s = rules.max_gap_s
    visits: list[Visit] = []
    start = 0
    n = len(track)
    # segments: maximal chains of counted intervals
    for i in range(1, n + 1):
        if i < n and usable[i - 1] and usable[i] and track[i].at_s - track[i - 1].at_s <= max_gap_s:
            continue
        if i - 1 > start:
            visits.extend(_segment_visits(unit, track[start:i], rules, include_pass_bys))
        start = i
    return visits


def resume_at(pings: Iterable[Ping], every: list[Visit], rules: VisitRules) -> float | None:
    """The latest time from which this unit's visits can be recomputed from
    its later pings alone, or None (only from all of them).

    ``every`` is ``visits_of(pings, rules, include_pass_bys=True)``. Two
    kinds of ping qualify, and the later one found is returned:

    - the first ping of the last visit or pass-by: it starts a segment or a
      lasting run, so the walk from it gets the same debounced cells;
    - the last ping that breaks a segment on its own: its status is not a
      patrol status, or it comes more than ``max_gap_s`` after the ping
      before (then no speed is inferred across the gap either).

    Visits that start before that time end at or before it, and pings after
    it cannot change them: with every new ping later than it,
    ``visits_of(all)`` equals the visits starting before it plus
    ``visits_of`` of the pings from it on. :class:`streamer.adapters.patrols.Dosage`
    keeps it per unit, so a batch reads the unit's pings since then instead
    of its whole retention.
    """
    track = _track(pings)
    found = every[-1].start_s if every else None
    for i in range(len(track) - 1, 0, -1):
        if found is not None and track[i].at_s <= found:
            break
        gap = track[i].at_s - track[i - 1].at_s
        if track[i].status not in rules.patrol_statuses or gap > rules.max_gap_s:
            return track[i].at_s
    return found


def _track(pings: Iterable[Ping]) -> list[Ping]:
    """One ping per instant (the smallest, deterministically), sorted by time."""
    best: dict[float, Ping] = {}
    units: set[str] = set()
    for ping in pings:
        units.add(ping.unit)
        kept = best.get(ping.at_s)
        if kept is None or _order_key(ping) < _order_key(kept):
            best[ping.at_s] = ping
    if len(units) > 1:
        raise ValueError(f"visits_of takes the pings of one unit, got {len(units)} units")
    return [best[t] for t in sorted(best)]


def _order_key(ping: Ping) -> tuple[float, float, bool, str, bool, float]:
    return (
        ping.lat_deg,
        ping.lon_deg,
        ping.status is not None,
        ping.status or "",
        ping.speed_mps is not None,
        ping.speed_mps or 0.0,
    )


def _usable(track: list[Ping], rules: VisitRules) -> list[bool]:
    """Per ping: a patrol status and not too fast."""
    statuses = rules.patrol_statuses
    max_speed = rules.max_speed_mps
    out: list[bool] = []
    previous: Ping | None = None
    for ping in track:
        speed = ping.speed_mps
        if speed is None and previous is not None:
            dt = ping.at_s - previous.at_s
            if dt <= rules.max_gap_s:
                speed = (
                    distance_m(previous.lat_deg, previous.lon_deg, ping.lat_deg, ping.lon_deg) / dt
                )
        out.append(ping.status in statuses and not (speed is not None and speed > max_speed))
        previous = ping
    return out


def _segment_visits(
    unit: str, segment: list[Ping], rules: VisitRules, include_pass_bys: bool
) -> Iterator[Visit]:
    """Visits of a segment (at least two pings, every interval counted)."""
    res = rules.resolution
    cells = [cell_hex(cell_of(p.lat_deg, p.lon_deg, res)) for p in segment]
    times = [p.at_s for p in segment]
    labels = debounce(times, cells, rules.debounce_s)
    last = len(segment) - 1
    first = 0
    for end in range(1, last + 1):
        # the interval from ping k to k + 1 belongs to labels[k]; a visit ends
        # at the first ping with another label, or at the end of the segment
        if end < last and labels[end] == labels[first]:
            continue
        cell = labels[first]
        start_s, end_s = times[first], times[end]
        seconds = end_s - start_s
        kind: VisitKind = "visit" if seconds >= rules.min_visit_s else "pass-by"
        if kind == "visit" or include_pass_bys:
            pings = end - first + (labels[end] == cell)
            yield Visit(unit, cell, start_s, end_s, seconds, pings, kind)
        first = end


def debounce(times: list[float], cells: list[str], debounce_s: float) -> list[str]:
    """The debounced cell of each ping of one segment (times ascending).

    A run of consecutive pings in one cell moves the unit there only when it
    lasts (first to last ping) at least ``debounce_s``; a shorter run is
    attributed to the cell the unit was in. At the start, the unit is in the
    cell of the first run that lasts long enough (else of the first ping).

    >>> debounce([0, 10, 20, 30, 40, 50], ["a", "b", "a", "a", "a", "a"], 20)
    ['a', 'a', 'a', 'a', 'a', 'a']
    >>> debounce([0, 10, 20, 30, 40, 50], ["b", "a", "a", "a", "b", "b"], 20)
    ['a', 'a', 'a', 'a', 'a', 'a']
    >>> debounce([0, 10, 20, 30, 40, 50], ["a", "a", "a", "b", "b", "b"], 20)
    ['a', 'a', 'a', 'b', 'b', 'b']
    """
    runs: list[tuple[str, int, int]] = []
    for i, cell in enumerate(cells):
        if runs and runs[-1][0] == cell:
            runs[-1] = (cell, runs[-1][1], i)
        else:
            runs.append((cell, i, i))
    lasting = [times[b] - times[a] >= debounce_s for _, a, b in runs]
    current = next((run[0] for run, ok in zip(runs, lasting, strict=True) if ok), cells[0])
    labels: list[str] = []
    for (cell, a, b), ok in zip(runs, lasting, strict=True):
        if ok:
            current = cell
        labels.extend([current] * (b - a + 1))
    return labels


def distance_m(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    """Great-circle distance in metres (haversine).

    >>> round(distance_m(0.0, 0.0, 0.0, 1.0))
    111195
    """
    p1, p2 = math.radians(lat1_deg), math.radians(lat2_deg)
    dp, dl = p2 - p1, math.radians(lon2_deg - lon1_deg)
    h = math.sin(dp / 2.0) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


# -- doses -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayDose:
    """What one cell received on one local day (``day``: ISO date).

    ``visits`` and ``koper_visits`` count visits that *started* that day;
    ``seconds`` and ``units`` (unit -> seconds) are the time spent there that
    day, a visit across midnight split by time; ``last_visit_end_s`` is the
    latest moment of a visit that day (the midnight that cut a split visit).
    """

    cell: str
    day: str
    visits: int
    seconds: float
    koper_visits: int
    last_visit_end_s: float | None
    units: dict[str, float]


def dose_by_day(
    visits: Iterable[Visit],
    cells: Collection[str],
    tz: tzinfo,
    *,
    koper_visit_s: float = KOPER_VISIT_S,
) -> dict[tuple[str, str], DayDose]:
    """Doses per ``(cell, day)`` for the cells in ``cells`` (days local to ``tz``).

    Pass-bys are ignored. A visit counts (and is Koper-compliant when it lasts
    at least ``koper_visit_s``) on the day it starts; its seconds go to each
    day by time. Only days with some time appear. The result does not depend
    on the order of ``visits``.
    """
    chosen = sorted(
        (v for v in visits if v.kind == "visit" and v.cell in cells),
        key=lambda v: (v.start_s, v.end_s, v.unit, v.cell),
    )
    counts: dict[tuple[str, str], list[int]] = {}
    seconds: dict[tuple[str, str], float] = {}
    last_end: dict[tuple[str, str], float] = {}
    units: dict[tuple[str, str], dict[str, float]] = {}
    for visit in chosen:
        for day, a, b in _split_by_day(visit.start_s, visit.end_s, tz):
            key = (visit.cell, day)
            seconds[key] = seconds.get(key, 0.0) + (b - a)
            last_end[key] = max(last_end.get(key, b), b)
            per_unit = units.setdefault(key, {})
            per_unit[visit.unit] = per_unit.get(visit.unit, 0.0) + (b - a)
        start_key = (visit.cell, _local_day(visit.start_s, tz))
        count = counts.setdefault(start_key, [0, 0])
        count[0] += 1
        count[1] += int(visit.seconds >= koper_visit_s)
    out: dict[tuple[str, str], DayDose] = {}
    for key in sorted(seconds.keys() | counts.keys()):
        n_visits, n_koper = counts.get(key, (0, 0))
        out[key] = DayDose(
            key[0],
            key[1],
            n_visits,
            seconds.get(key, 0.0),
            n_koper,
            last_end.get(key),
            dict(sorted(units.get(key, {}).items())),
        )
    return out


def visits_by_day(visits: Iterable[Visit], tz: tzinfo) -> dict[tuple[str, str], list[Visit]]:
    """Visits grouped by ``(cell, local day they start)``, each list in time order
    (what :func:`compliance` takes as ``day_visits``)."""
    out: dict[tuple[str, str], list[Visit]] = {}
    for visit in sorted(visits, key=lambda v: (v.start_s, v.end_s, v.unit, v.cell)):
        out.setdefault((visit.cell, _local_day(visit.start_s, tz)), []).append(visit)
    return out


def days_since_last_visit(last_end_s: float | None, now_s: float) -> float | None:
    """Days (of 86400 s) from the end of the last visit to ``now_s``; None if never
    visited; 0 for a visit ending after ``now_s`` (clock skew).

    >>> days_since_last_visit(0.0, 129600.0), days_since_last_visit(None, 1.0)
    (1.5, None)
    """
    if last_end_s is None:
        return None
    return max(0.0, (now_s - last_end_s) / DAY_S)


@dataclass(frozen=True, slots=True)
class Requirement:
    """The dose a planned cell needs each day: ``visits_per_day`` visits of at
    least ``min_visit_s``, each starting within ``hours`` (local hours of the
    day, e.g. the cell's peak hours; None: any time)."""

    visits_per_day: int = 1
    min_visit_s: float = 900.0
    hours: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.visits_per_day < 0:
            raise ValueError(f"visits_per_day must be >= 0, got {self.visits_per_day}")
        if not (math.isfinite(self.min_visit_s) and self.min_visit_s >= 0.0):
            raise ValueError(f"min_visit_s must be finite and >= 0, got {self.min_visit_s}")
        if self.hours is not None:
            hours = frozenset(self.hours)
            if not hours or not all(isinstance(h, int) and 0 <= h <= 23 for h in hours):
                raise ValueError(f"hours must be a non-empty set of 0-23, got {sorted(hours)}")
            object.__setattr__(self, "hours", hours)


def compliance(day_visits: Iterable[Visit], req: Requirement, tz: tzinfo) -> bool:
    """Whether one cell's visits of one day meet ``req``: at least
    ``visits_per_day`` visits (not pass-bys) of at least ``min_visit_s``, each
    starting (local time in ``tz``) within ``req.hours`` when given. Visits by
    different units count separately, even when together."""
    hours = req.hours
    good = sum(
        1
        for v in day_visits
        if v.kind == "visit"
        and v.seconds >= req.min_visit_s
        and (hours is None or datetime.fromtimestamp(v.start_s, tz).hour in hours)
    )
    return good >= req.visits_per_day


def unit_minutes_in(visits: Iterable[Visit], cells: Collection[str]) -> dict[str, float]:
    """Per unit, the *seconds* of its visits (not pass-bys) to ``cells``."""
    out: dict[str, float] = {}
    for visit in sorted(visits, key=lambda v: (v.start_s, v.end_s, v.unit, v.cell)):
        if visit.kind == "visit" and visit.cell in cells:
            out[visit.unit] = out.get(visit.unit, 0.0) + visit.seconds
    return out


def overdue(
    plan_cells: Iterable[str],
    last_visit_end_s_by_cell: Mapping[str, float],
    now_s: float,
    tz: tzinfo,
    req: Requirement,
    late_after_hour: int = 18,
    days_limit: float = 3.0,
    *,
    compliant_today: Collection[str] | None = None,
) -> list[tuple[str, str]]:
    """Planned cells to warn about, as ``(cell, reason)``, in plan order, one each.

    Reasons, the first that applies: :data:`NEVER_VISITED_REASON` (no visit
    on record); ``f"unvisited for {n} days"`` (``n`` whole days since the
    last visit ended, when at least ``days_limit``); :data:`LATE_REASON` (no
    compliant visit today while the day's window is closing: from the start
    of the last hour of ``req.hours`` when given, else from
    ``late_after_hour``, local time in ``tz``). ``compliant_today`` holds the
    cells whose dose today is already met (see :func:`compliance`); when None,
    a cell whose last visit ended today counts as covered. A requirement of
    no visits a day never makes a cell late.

    >>> from datetime import UTC
    >>> req = Requirement()
    >>> now_s = 4 * 86400.0 + 19 * 3600.0  # day 4, 19:00 UTC
    >>> last = {"a": 0.0, "b": 3 * 86400.0}
    >>> for cell, reason in overdue(["a", "b", "c"], last, now_s, UTC, req, compliant_today=()):
    ...     print(cell, reason)
    a unvisited for 4 days
    b unvisited today late in its window
    c never visited
    """
    if not 0 <= late_after_hour <= 24:
        raise ValueError(f"late_after_hour must be 0-24, got {late_after_hour}")
    local_now = datetime.fromtimestamp(now_s, tz)
    today = local_now.date()
    closing_hour = max(req.hours) if req.hours else late_after_hour
    late = req.visits_per_day > 0 and local_now.hour >= closing_hour
    out: list[tuple[str, str]] = []
    for cell in dict.fromkeys(plan_cells):
        last = last_visit_end_s_by_cell.get(cell)
        days = days_since_last_visit(last, now_s)
        if days is None:
            out.append((cell, NEVER_VISITED_REASON))
        elif days >= days_limit:
            out.append((cell, f"unvisited for {math.floor(days)} days"))
        elif late:
            if compliant_today is not None:
                covered = cell in compliant_today
            else:
                covered = last is not None and datetime.fromtimestamp(last, tz).date() == today
            if not covered:
                out.append((cell, LATE_REASON))
    return out


def _local_day(at_s: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(at_s, tz).date().isoformat()


def _split_by_day(start_s: float, end_s: float, tz: tzinfo) -> Iterator[tuple[str, float, float]]:
    """``(day, from_s, to_s)`` pieces of ``[start_s, end_s]`` cut at local midnights."""
    at = start_s
    while True:
        day = datetime.fromtimestamp(at, tz).date()
        cut = _midnight_s(day + timedelta(days=1), tz)
        # a zone falling back across midnight can put the cut behind us: keep the rest
        to = end_s if cut <= at else min(end_s, cut)
        yield day.isoformat(), at, to
        if to >= end_s:
            return
        at = to


def _midnight_s(day: date, tz: tzinfo) -> float:
    """The start of a local day (a skipped midnight: the moment clocks jump)."""
    return datetime.combine(day, time(), tzinfo=tz).timestamp()
