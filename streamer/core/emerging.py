"""Emerging hot spots: detection, patterns and the alert lifecycle (pure).

The model, stated once (docs/alerts.md repeats it for analysts):

- Each cell of the alert resolution has two decayed event counts: ``S``
  over the short horizon and ``L`` over the baseline horizon (each event
  counts 1, times the proactive-origin factor; harm weights rank cells but
  do not make one event many). ``B = L - S`` is never negative (an event's
  long-horizon term is never below its short one): it is the baseline with
  the recent span taken out, so a burst does not raise its own expectation.
- Under the null hypothesis events arrive as a Poisson process of constant
  rate ``lambda``; then ``E[S] = lambda * T_S`` and ``E[B] = lambda * T_B``,
  with exposures ``T(h) = h / ln 2 * (1 - 2^(-age / h))`` (``age``: how long
  the store has history) and ``T_B = T_L - T_S``.
- A region ``R`` (a cell and its ring-1 neighbours: a *disk*) is tested.
  Its rate is shrunk (empirical Bayes, gamma-Poisson) towards a prior mean
  taken from the ring around it and the area-wide rate:
  ``m = (sum_A B + k * mean B) / ((|A| + k) * T_B)`` per cell (``A`` the
  cells around ``R``, ``k`` = ``area_weight``), then
  ``lambda_R = (B_R + |R| * m * P) / (T_B + P)`` (``P`` = ``prior``, the
  weight of the prior as exposure time). Expected ``mu = lambda_R * T_S``.
- Surprise: ``p = P(X >= S_R)`` under the empirical-Bayes predictive: the
  rate is gamma-distributed (shape ``B_R + |R| * m * P``, rate ``T_B + P``),
  so ``X`` is negative binomial with mean ``mu`` (continuous in the observed
  count: the regularized incomplete beta function). A decayed sum varies
  less than a count of the same mean, so this p-value is conservative.
- False alarms: each new event can trigger the tests of the seven disks that
  hold it, so at most ``N = 7 * events per day`` tests can open an alert in
  a day; a disk opens one when ``p <= F / N`` (``F`` =
  ``false_alerts_per_day``, a Bonferroni bound: at most F chance alerts a
  day if the model holds) and its count reaches ``min_events``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from streamer.core.cells import center_hex, neighbours_hex
from streamer.core.emerging_model import (
    DAY_S,
    Alert,
    AlertChange,
    CellCounts,
    DayBins,
    DetectorConfig,
    Test,
)
from streamer.core.emerging_stats import (
    LN2,
    PATTERNS,
    Trend,
    beta_inc,
    exposure_s,
    gamma_poisson_sf,
    mann_kendall,
    pattern_of,
)

__all__ = [
    "DAY_S",
    "LN2",
    "PATTERNS",
    "Alert",
    "AlertChange",
    "CellCounts",
    "DayBins",
    "Detector",
    "DetectorConfig",
    "Test",
    "Trend",
    "beta_inc",
    "exposure_s",
    "gamma_poisson_sf",
    "mann_kendall",
    "pattern_of",
]


class Detector:
    """Tests the disks around changed cells each tick and keeps the alerts.

    Feed it with :meth:`update` (cells read from the store, decayed counts),
    then call :meth:`step` with the cells that changed. It holds every cell
    it has seen (counts decay exactly, so an untouched cell need not be read
    again) and the open alerts; :meth:`state` / :meth:`restore` carry the
    alerts and counters across restarts, :attr:`bins` the daily counts.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.cells: dict[str, CellCounts] = {}
        self.bins: dict[str, DayBins] = {}
        self.alerts: dict[str, Alert] = {}
        self.history_from_s: float | None = None
        self.area_mean_b = 0.0  # mean B per cell with history
        self.events_per_day = 0.0
        self.area_at_s: float | None = None
        self.next_id = 1
        self.fresh: set[str] = set()  # cells with new events since the last step
        self.tested = 0  # disks tested by the last step
        # cells of alerts cleared for quiet -> (when, their disk's count then):
        # for ``clear_quiet`` after, opening again there takes ``min_events``
        # new events (a stale flare-up is still "surprising", and one more
        # event must not page anyone again)
        self.quiet_cleared: dict[str, tuple[float, float]] = {}
        self._zone = ZoneInfo(config.timezone)

    # decayed values ------------------------------------------------------
    def _counts(self, cell: str, at_s: float) -> tuple[float, float]:
        c = self.cells.get(cell)
        if c is None:
            return 0.0, 0.0
        dt = at_s - c.at_s
        short = c.short * 2.0 ** (-dt / self.config.short_s) if dt else c.short
        long = c.long * 2.0 ** (-dt / self.config.long_s) if dt else c.long
        return short, max(long, short)

    def _age_s(self, at_s: float) -> float:
        if self.history_from_s is None:
            return math.inf
        return max(at_s - self.history_from_s, 1.0)

    def exposures(self, at_s: float) -> tuple[float, float]:
        """(T_S, T_B) in seconds at ``at_s``."""
        age = self._age_s(at_s)
        t_s = exposure_s(self.config.short_s, age)
        t_l = exposure_s(self.config.long_s, age)
        return t_s, max(t_l - t_s, 1.0)

    def day_of(self, t_s: float) -> int:
        return datetime.fromtimestamp(t_s, UTC).astimezone(self._zone).date().toordinal()

    # input ---------------------------------------------------------------
    def update(
        self, observed: Mapping[str, CellCounts | None], at_s: float, *, initial: bool = False
    ) -> None:
        """Take fresh counts of cells (``None``: the store no longer has it).
        A cell's growth in ``total`` goes to today's daily bin; on the
        ``initial`` read a cell without bins starts them (its past is not
        binned: the detector did not see it arrive)."""
        today = self.day_of(at_s)
        days = self.config.pattern_days
        for cell, counts in observed.items():
            if counts is None:
                self.cells.pop(cell, None)
                continue
            self.cells[cell] = counts
            bins = self.bins.get(cell)
            if bins is None:
                bins = DayBins(today, counts.total if initial else 0, [0] * days)
                self.bins[cell] = bins
            bins.shift_to(today)
            grown = counts.total - bins.seen
            if grown:
                bins.counts[-1] = max(bins.counts[-1] + grown, 0)
                bins.seen = counts.total
                if grown > 0:
                    self.fresh.add(cell)

    def refresh_area(self, at_s: float) -> None:
        """Area-wide figures from every cell held (run every few minutes)."""
        t_s = self.exposures(at_s)[0]
        total_b = total_s = 0.0
        n = 0
        for cell in list(self.cells):
            short, long = self._counts(cell, at_s)
            if long <= 0:
                continue
            n += 1
            total_b += long - short
            total_s += short
        self.area_mean_b = total_b / n if n else 0.0
        self.events_per_day = total_s / t_s * DAY_S
        self.area_at_s = at_s

    def needed(self, changed: Iterable[str]) -> set[str]:
        """Cells the next :meth:`step` reads that the detector has not seen:
        everything within three steps of a changed cell (disks around the
        changed cells, and the rings around those disks)."""
        out: set[str] = set()
        for cell in changed:
            out |= _disk(cell, 3)
        for alert in self.alerts.values():
            for cell in alert.cells:
                out |= _disk(cell, 2)
        return {c for c in out if c not in self.cells}

    # the test --------------------------------------------------------------
    def threshold(self) -> float:
        """The p-value that opens an alert: ``F / (7 * events per day)``."""
        tests = max(7.0 * self.events_per_day, 1.0)
        return min(self.config.false_alerts_per_day / tests, 1.0)

    def test(self, region: Iterable[str], at_s: float) -> Test:
        """Test a set of cells (see the module docstring for the model)."""
        cfg = self.config
        cells = set(region)
        around: set[str] = set()
        for cell in cells:
            around |= neighbours_hex(cell)
        around -= cells
        t_s, t_b = self.exposures(at_s)
        s_r = b_r = b_a = 0.0
        for cell in cells:
            short, long = self._counts(cell, at_s)
            s_r += short
            b_r += long - short
        for cell in around:
            short, long = self._counts(cell, at_s)
            b_a += long - short
        k = cfg.area_weight
        denominator = (len(around) + k) * t_b
        prior_rate = (b_a + k * self.area_mean_b) / denominator if denominator > 0 else 0.0
        shape = b_r + len(cells) * prior_rate * cfg.prior_s
        rate_s = t_b + cfg.prior_s
        rate = shape / rate_s
        return Test(s_r, rate * t_s, gamma_poisson_sf(s_r, shape, rate_s, t_s), rate, shape, rate_s)

    # one tick ------------------------------------------------------------
    def step(self, at_s: float) -> list[AlertChange]:
        """Test the disks around cells with new events (and those of open
        alerts), then open, grow, merge, escalate or clear alerts."""
        cfg = self.config
        fresh, self.fresh = self.fresh, set()
        p_open = self.threshold()
        p_keep = min(p_open * cfg.keep_ratio, 1.0)
        triggered: set[str] = set()
        for cell in fresh:
            triggered |= _disk(cell, 1)
        held = {c for a in self.alerts.values() for c in a.cells}
        tests = {c: self.test(_disk(c, 1), at_s) for c in triggered | held}
        self.tested = len(tests)
        active = {
            c
            for c, t in tests.items()
            if (c in triggered and t.p <= p_open and t.observed >= cfg.min_events)
            or (c in held and t.p <= p_keep)
        }
        notices: list[AlertChange] = []
        groups = _components(active, list(self.alerts.values()))
        survivors: set[str] = set()
        self.quiet_cleared = {
            c: v for c, v in self.quiet_cleared.items() if at_s - v[0] < cfg.clear_quiet_s
        }
        for cells, alerts in groups:
            if not alerts:
                if not self._new_flare(cells, tests, at_s):
                    continue
                alert = self._open(cells, at_s)
                self._refresh(alert, tests, at_s)
                alert.notified_p = alert.p
                notices.append(AlertChange("opened", self.as_dict(alert)))
                survivors.add(alert.id)
                continue
            alerts.sort(key=lambda a: (a.opened_at, a.id))
            alert, merged = alerts[0], alerts[1:]
            alert.cells = sorted(cells)
            for other in merged:
                other.status, other.kind = "merged", "merged"
                other.merged_into, other.cleared_at = alert.id, at_s
                other.reason = f"merged into {alert.id}"
                notices.append(AlertChange("merged", self.as_dict(other)))
                del self.alerts[other.id]
            self._refresh(alert, tests, at_s)
            survivors.add(alert.id)
            if alert.p <= alert.notified_p / cfg.escalate_ratio:
                alert.notified_p = alert.p
                alert.kind = "escalated"
                notices.append(AlertChange("escalated", self.as_dict(alert)))
        for alert in list(self.alerts.values()):
            quiet = (
                alert.last_event_at is not None and at_s - alert.last_event_at >= cfg.clear_quiet_s
            )
            if alert.id in survivors and not quiet:
                continue
            alert.status, alert.kind, alert.cleared_at = "cleared", "cleared", at_s
            alert.updated_at = at_s
            alert.reason = (
                f"no new event for {cfg.clear_quiet_s / 3600:g} h"
                if quiet
                else "back within its baseline"
            )
            notices.append(AlertChange("cleared", self.as_dict(alert)))
            del self.alerts[alert.id]
            if quiet:
                for cell in alert.cells:
                    observed = tests[cell].observed if cell in tests else alert.observed
                    self.quiet_cleared[cell] = (at_s, observed)
        return notices

    def _new_flare(self, cells: set[str], tests: Mapping[str, Test], at_s: float) -> bool:
        """Whether alerting cells may open an alert: always, unless they were
        cleared for quiet lately; then only with ``min_events`` new events
        (beyond what their count then has decayed to)."""
        recent = [(c, self.quiet_cleared[c]) for c in cells if c in self.quiet_cleared]
        if not recent:
            return True
        grown = max(
            tests[c].observed - then * 2.0 ** (-(at_s - t) / self.config.short_s)
            for c, (t, then) in recent
        )
        return bool(grown >= self.config.min_events)

    def _open(self, cells: set[str], at_s: float) -> Alert:
        stamp = datetime.fromtimestamp(at_s, UTC).astimezone(self._zone).strftime("%Y%m%d")
        alert = Alert(
            id=f"A-{stamp}-{self.next_id:04d}",
            cells=sorted(cells),
            opened_at=at_s,
            updated_at=at_s,
            first_event_at=None,
            last_event_at=None,
            notified_p=1.0,
            peak_p=1.0,
        )
        self.next_id += 1
        self.alerts[alert.id] = alert
        return alert

    def _refresh(self, alert: Alert, tests: Mapping[str, Test], at_s: float) -> None:
        """The alert's figures over the union of its cells' disks."""
        region: set[str] = set()
        for cell in alert.cells:
            region |= _disk(cell, 1)
        union = self.test(region, at_s)
        alert.observed, alert.expected = union.observed, union.expected
        alert.p = min(tests[c].p for c in alert.cells if c in tests)
        alert.peak_p = min(alert.peak_p, alert.p)
        alert.updated_at = at_s
        lasts = [c.last_event_s for r in region if (c := self.cells.get(r)) and c.last_event_s]
        today = self.day_of(at_s)
        recent = [
            c.last_event_s
            for r in region
            if (c := self.cells.get(r))
            and c.last_event_s
            and (b := self.bins.get(r))
            and b.day == today
            and b.counts[-1] > 0
        ]
        if lasts:
            newest = max(lasts)
            if alert.last_event_at is None or newest > alert.last_event_at:
                alert.last_event_at = newest
        if alert.first_event_at is None:
            alert.first_event_at = min(recent) if recent else alert.last_event_at
        categories: dict[str, float] = {}
        for r in region:
            c = self.cells.get(r)
            if c is None:
                continue
            factor = 2.0 ** (-(at_s - c.at_s) / self.config.short_s)
            for name, value in c.categories.items():
                categories[name] = categories.get(name, 0.0) + value * factor
        top = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        alert.top_categories = [(name, value) for name, value in top if value > 0.05]
        if alert.pattern is None or alert.p <= alert.notified_p / self.config.escalate_ratio:
            # as of the notice (opened, escalated): a quiet alert's pattern
            # would otherwise drift as its days pass
            alert.pattern = self.pattern(region, union, at_s, hot_today=True)

    def pattern(
        self, region: Iterable[str], baseline: Test, at_s: float, *, hot_today: bool
    ) -> str | None:
        """The pattern of a region's daily counts (see :func:`pattern_of`):
        a day is hot when its count is at least as surprising as
        ``pattern_p`` against the region's baseline rate."""
        days = self.config.pattern_days
        today = self.day_of(at_s)
        totals = [0] * days
        for cell in region:
            bins = self.bins.get(cell)
            if bins is None:
                continue
            offset = today - bins.day
            for i, v in enumerate(bins.counts):
                j = i - offset
                if 0 <= j < days:
                    totals[j] += v
        hot = [baseline.sf(v, DAY_S) <= self.config.pattern_p for v in totals]
        hot[-1] = hot[-1] or hot_today
        return pattern_of(hot, [float(v) for v in totals], self.config.pattern_p)

    # output ----------------------------------------------------------------
    def tests_per_day(self) -> float:
        return max(7.0 * self.events_per_day, 1.0)

    def as_dict(self, alert: Alert) -> dict[str, Any]:
        """The alert as delivered (docs/alerts.md)."""
        cfg = self.config
        recurrence = 1.0 / max(alert.p * self.tests_per_day(), 1e-300)
        peak = 1.0 / max(alert.peak_p * self.tests_per_day(), 1e-300)
        severity = "high" if peak >= 365 else ("medium" if peak >= 30 else "low")
        lats, lons = zip(*(center_hex(c) for c in alert.cells), strict=True)
        cats = ", ".join(f"{name} {max(round(value), 1)}" for name, value in alert.top_categories)
        title = f"{alert.observed:.0f} events vs {alert.expected:.2g} expected"
        return {
            "id": alert.id,
            "status": alert.status,
            "kind": alert.kind,
            "title": f"{title} ({cats})" if cats else title,
            "severity": severity,
            "pattern": alert.pattern,
            "resolution": cfg.resolution,
            "cells": list(alert.cells),
            "center": [sum(lats) / len(lats), sum(lons) / len(lons)],
            "observed": alert.observed,
            "expected": alert.expected,
            "p_value": alert.p,
            "peak_p_value": alert.peak_p,
            "recurrence_days": min(recurrence, 1e9),
            "top_categories": [[n, v] for n, v in alert.top_categories],
            "first_event_at": _iso(alert.first_event_at),
            "last_event_at": _iso(alert.last_event_at),
            "opened_at": _iso(alert.opened_at),
            "updated_at": _iso(alert.updated_at),
            "cleared_at": _iso(alert.cleared_at),
            "merged_into": alert.merged_into,
            "reason": alert.reason,
            "horizon": cfg.short_name,
            "baseline": cfg.baseline_name,
        }

    def state(self) -> dict[str, Any]:
        """What survives a restart (the cells are read again from the store)."""
        return {
            "next_id": self.next_id,
            "quiet_cleared": self.quiet_cleared,
            "alerts": [
                {
                    "id": a.id,
                    "cells": a.cells,
                    "opened_at": a.opened_at,
                    "updated_at": a.updated_at,
                    "first_event_at": a.first_event_at,
                    "last_event_at": a.last_event_at,
                    "notified_p": a.notified_p,
                    "peak_p": a.peak_p,
                    "kind": a.kind,
                    "pattern": a.pattern,
                }
                for a in self.alerts.values()
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.next_id = int(state.get("next_id", 1))
        self.quiet_cleared = {
            str(c): (float(t), float(o)) for c, (t, o) in state.get("quiet_cleared", {}).items()
        }
        self.alerts = {}
        for a in state.get("alerts", []):
            alert = Alert(
                id=a["id"],
                cells=list(a["cells"]),
                opened_at=a["opened_at"],
                updated_at=a["updated_at"],
                first_event_at=a["first_event_at"],
                last_event_at=a["last_event_at"],
                notified_p=a["notified_p"],
                peak_p=a["peak_p"],
                kind=a.get("kind", "opened"),
                pattern=a.get("pattern"),
            )
            self.alerts[alert.id] = alert


def _disk(cell: str, k: int) -> set[str]:
    out = {cell}
    edge = {cell}
    for _ in range(k):
        edge = {n for c in edge for n in neighbours_hex(c)} - out
        out |= edge
    return out


def _components(active: set[str], alerts: list[Alert]) -> list[tuple[set[str], list[Alert]]]:
    """Active cells grouped by adjacency, each group with the open alerts it
    touches (an alert touching two groups joins them)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for cell in active:
        parent[cell] = cell
    for cell in active:
        for n in neighbours_hex(cell):
            if n in parent:
                union(cell, n)
    owner: dict[str, str] = {}  # alert id -> an active cell it touches
    for alert in alerts:
        touched = {c for c in alert.cells if c in parent}
        for c in alert.cells:
            touched |= neighbours_hex(c) & parent.keys()
        if touched:
            first, *rest = sorted(touched)
            for other in rest:
                union(first, other)
            owner[alert.id] = first
    groups: dict[str, tuple[set[str], list[Alert]]] = {}
    for cell in active:
        groups.setdefault(find(cell), (set(), []))[0].add(cell)
    for alert in alerts:
        if alert.id in owner:
            groups[find(owner[alert.id])][1].append(alert)
    return list(groups.values())


def _iso(t_s: float | None) -> str | None:
    return None if t_s is None else datetime.fromtimestamp(t_s, UTC).isoformat()
