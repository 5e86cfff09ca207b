"""Assessing an operation: gross and net effects, displacement, feedback loops.

Areas are sets of H3 cells (ints): the targeted cells R, a displacement
buffer D of the rings around them, and a control area C. With counts per
area and period (b = before, a = after):

* net effect of an area X against the control: ``X_b * (C_a / C_b) - X_a``,
  the events the control's trend predicted minus those that happened
  (positive = events prevented);
* Weighted Displacement Quotient (Bowers & Johnson 2003):
  ``WDQ = (D_a/C_a - D_b/C_b) / (R_a/C_a - R_b/C_b)``;
* total net effect = net effect in R + net effect in D.

A feedback-loop check compares the flagged cells of a decayed,
harm-weighted ranking with and without the events that measure where police
already are (proactive origin, enforcement-driven categories).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.core.cells import U64, ring

DAY_S = 86400.0
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- areas


def disk(cells: Iterable[int], k: int) -> frozenset[int]:
    """Every cell within ``k`` rings of any of ``cells`` (the cells included)."""
    out: set[int] = set()
    for cell in cells:
        out.update(ring(cell, k))
    return frozenset(out)


def buffer_cells(targets: Iterable[int], rings: int) -> frozenset[int]:
    """The displacement buffer D: cells within ``rings`` rings of a target,
    minus the targets."""
    chosen = frozenset(targets)
    return disk(chosen, rings) - chosen


def control_band(targets: Iterable[int], inner_rings: int, outer_rings: int) -> frozenset[int]:
    """Cells more than ``inner_rings`` and at most ``outer_rings`` rings from
    the nearest target (the default control, outside target and buffer)."""
    if outer_rings <= inner_rings:
        raise ValueError(
            f"the control band needs outer rings > inner rings ({outer_rings} <= {inner_rings})"
        )
    chosen = frozenset(targets)
    return disk(chosen, outer_rings) - disk(chosen, inner_rings)


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open span of POSIX seconds."""

    from_s: float
    to_s: float

    @property
    def days(self) -> float:
        """Its length in days."""
        return (self.to_s - self.from_s) / DAY_S


@dataclass(frozen=True, slots=True)
class AreaCounts:
    """Counting events and their harm in one area, before and after."""

    cells: int
    before: int
    after: int
    harm_before: float
    harm_after: float


def count_area(
    event_cells: U64,
    t_s: Floats,
    harm: Floats,
    area: frozenset[int],
    before: Period,
    after: Period,
) -> AreaCounts:
    """Events (and harm) of ``area`` in each period; ``harm`` > 0 for every
    event passed (the caller drops events that do not count).

    >>> import numpy as np
    >>> cells = np.array([1, 1, 2, 3], dtype=np.uint64)
    >>> t = np.array([0.0, 10.0, 10.0, 10.0])
    >>> count_area(cells, t, np.array([1.0, 2.0, 4.0, 8.0]), frozenset({1, 2}),
    ...            Period(0, 5), Period(5, 15))
    AreaCounts(cells=2, before=1, after=2, harm_before=1.0, harm_after=6.0)
    """
    members = np.fromiter(area, dtype=np.uint64, count=len(area))
    inside = np.isin(event_cells, members)
    in_b = inside & (t_s >= before.from_s) & (t_s < before.to_s)
    in_a = inside & (t_s >= after.from_s) & (t_s < after.to_s)
    return AreaCounts(
        cells=len(area),
        before=int(in_b.sum()),
        after=int(in_a.sum()),
        harm_before=float(harm[in_b].sum()),
        harm_after=float(harm[in_a].sum()),
    )


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Quotient:
    """A WDQ, or why there is none; ``reading`` says what it means."""

    value: float | None
    buffer_measure: float | None  # D_a/C_a - D_b/C_b
    success_measure: float | None  # R_a/C_a - R_b/C_b
    reading: str


def net_effect(x_before: float, x_after: float, c_before: float, c_after: float) -> float | None:
    """Events prevented in an area, against the control's trend:
    ``X_b * (C_a / C_b) - X_a`` (None without control events before).

    >>> net_effect(100, 70, 200, 180)   # control fell 10%: 90 expected, 70 seen
    20.0
    >>> net_effect(10, 12, 0, 5) is None
    True
    """
    if c_before == 0:
        return None
    return float(x_before * (c_after / c_before) - x_after)


def wdq(
    r_before: float,
    r_after: float,
    d_before: float,
    d_after: float,
    c_before: float,
    c_after: float,
) -> Quotient:
    """The Weighted Displacement Quotient (Bowers & Johnson 2003).

    >>> q = wdq(100, 60, 50, 60, 100, 100)   # target -40%, buffer +20%
    >>> round(q.value, 9), round(q.success_measure, 9), round(q.buffer_measure, 9)
    (-0.25, -0.4, 0.1)
    >>> wdq(100, 100, 50, 40, 100, 100).value is None   # no change in R vs C
    True
    """
    if c_before == 0 or c_after == 0:
        which = "before" if c_before == 0 else "after"
        return Quotient(
            None,
            None,
            None,
            f"undefined: the control area has no events {which} "
            "(its rate is the denominator of every ratio); choose a larger control",
        )
    buffer_measure = d_after / c_after - d_before / c_before
    success = r_after / c_after - r_before / c_before
    if success == 0:
        return Quotient(
            None,
            buffer_measure,
            success,
            "undefined: the target area did not change relative to the control "
            "(success measure R_a/C_a - R_b/C_b = 0), so there is no effect to weigh "
            "displacement against",
        )
    value = buffer_measure / success
    return Quotient(value, buffer_measure, success, wdq_reading(value, success))


def wdq_reading(value: float, success_measure: float) -> str:
    """The standard reading of a WDQ (Bowers & Johnson 2003; Ratcliffe 2005).

    >>> wdq_reading(0.4, -0.1)
    'diffusion of benefits (0 < WDQ <= 1): the buffer improved too, by less than the target'
    """
    if success_measure > 0:
        return (
            "no success to weigh: the target area got worse relative to the control "
            "(success measure > 0), so the WDQ does not measure displacement"
        )
    if value > 1:
        return (
            "diffusion of benefits (WDQ > 1): the buffer improved relative to the control "
            "by more than the target did"
        )
    if value > 0:
        return (
            "diffusion of benefits (0 < WDQ <= 1): the buffer improved too, by less than the target"
        )
    if value == 0:
        return "no displacement or diffusion (WDQ = 0): the buffer moved with the control"
    if value >= -1:
        return (
            "displacement (-1 <= WDQ < 0): events moved into the buffer, but fewer than "
            "were prevented in the target: a net benefit"
        )
    return (
        "displacement exceeds the direct effect (WDQ < -1): more events moved into the "
        "buffer than were prevented in the target: counterproductive"
    )


@dataclass(frozen=True, slots=True)
class Effects:
    """Gross and net effects of one measure (counts, or harm)."""

    gross_change: float  # R_a - R_b (events, or their harm)
    gross_change_per_day: float  # R_a/days_a - R_b/days_b
    gross_change_pct: float | None  # of the daily rate; None when R_b = 0
    net_target: float | None  # R_b * C_a/C_b - R_a, in after-period units
    net_buffer: float | None  # D_b * C_a/C_b - D_a
    total_net: float | None
    quotient: Quotient

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "gross_change": self.gross_change,
            "gross_change_per_day": self.gross_change_per_day,
            "gross_change_pct": self.gross_change_pct,
            "net_effect_target": self.net_target,
            "net_effect_buffer": self.net_buffer,
            "total_net_effect": self.total_net,
            "wdq": self.quotient.value,
            "wdq_buffer_measure": self.quotient.buffer_measure,
            "wdq_success_measure": self.quotient.success_measure,
            "wdq_reading": self.quotient.reading,
        }


def effects(
    r: tuple[float, float],
    d: tuple[float, float],
    c: tuple[float, float],
    before_days: float,
    after_days: float,
) -> Effects:
    """Effects from (before, after) values of target ``r``, buffer ``d`` and
    control ``c``.

    The WDQ and net effects only use within-period ratios to the control,
    so periods of unequal length need no correction there (the net effects
    are in events of the after period); the gross change compares daily
    rates.

    >>> e = effects((100, 60), (50, 60), (100, 100), 90, 90)
    >>> e.net_target, e.net_buffer, e.total_net, e.gross_change_pct
    (40.0, -10.0, 30.0, -40.0)
    """
    rate_b, rate_a = r[0] / before_days, r[1] / after_days
    net_r = net_effect(r[0], r[1], c[0], c[1])
    net_d = net_effect(d[0], d[1], c[0], c[1])
    return Effects(
        gross_change=float(r[1] - r[0]),
        gross_change_per_day=rate_a - rate_b,
        gross_change_pct=None if rate_b == 0 else 100.0 * (rate_a - rate_b) / rate_b,
        net_target=net_r,
        net_buffer=net_d,
        total_net=None if net_r is None or net_d is None else net_r + net_d,
        quotient=wdq(r[0], r[1], d[0], d[1], c[0], c[1]),
    )


@dataclass(frozen=True, slots=True)
class Assessment:
    """Counts per area and period, and the effects on counts and on harm."""

    before: Period
    after: Period
    target: AreaCounts
    buffer: AreaCounts
    control: AreaCounts
    counts: Effects
    harm: Effects

    @property
    def equal_periods(self) -> bool:
        """Whether both periods are (within an hour) the same length."""
        return abs(self.before.days - self.after.days) < 1 / 24 + 1e-9

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        areas = {}
        for name, a in (
            ("target", self.target),
            ("buffer", self.buffer),
            ("control", self.control),
        ):
            areas[name] = {
                "cells": a.cells,
                "before": a.before,
                "after": a.after,
                "before_per_day": a.before / self.before.days,
                "after_per_day": a.after / self.after.days,
                "harm_before": a.harm_before,
                "harm_after": a.harm_after,
            }
        return {
            "before_days": self.before.days,
            "after_days": self.after.days,
            "areas": areas,
            "counts": self.counts.as_json(),
            "harm": self.harm.as_json(),
        }


def assess(
    target: AreaCounts, buffer: AreaCounts, control: AreaCounts, before: Period, after: Period
) -> Assessment:
    """Effects on event counts and on harm for the three areas."""
    if before.days <= 0 or after.days <= 0:
        raise ValueError("both periods need a positive length")
    days = (before.days, after.days)
    return Assessment(
        before,
        after,
        target,
        buffer,
        control,
        effects(
            (target.before, target.after),
            (buffer.before, buffer.after),
            (control.before, control.after),
            *days,
        ),
        effects(
            (target.harm_before, target.harm_after),
            (buffer.harm_before, buffer.harm_after),
            (control.harm_before, control.harm_after),
            *days,
        ),
    )


# --------------------------------------------------------------------------- feedback loops


def decayed_scores(
    event_cells: U64, t_s: Floats, weight: Floats, at_s: float, half_life_s: float
) -> dict[int, float]:
    """Each cell's score at ``at_s``: sum of ``w * 2^(-(at - t)/h)`` over its
    events before ``at_s`` (cells without weight left out).

    >>> import numpy as np
    >>> decayed_scores(np.array([5, 5, 6], dtype=np.uint64), np.array([0.0, 10.0, 10.0]),
    ...                np.array([4.0, 1.0, 0.0]), at_s=10.0, half_life_s=10.0)
    {5: 3.0}
    """
    keep = (t_s <= at_s) & (weight > 0)
    if not np.any(keep):
        return {}
    unique, inverse = np.unique(event_cells[keep], return_inverse=True)
    terms = weight[keep] * np.exp2(-(at_s - t_s[keep]) / half_life_s)
    sums = np.bincount(inverse.reshape(-1), weights=terms, minlength=len(unique))
    return {int(c): float(s) for c, s in zip(unique.tolist(), sums.tolist(), strict=True)}


def top_cells(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` highest-scoring cells (ties: the smaller cell id first)."""
    return sorted(scores, key=lambda c: (-scores[c], c))[:k]


@dataclass(frozen=True, slots=True)
class DroppedCell:
    """A flagged cell that is not flagged without the feedback-prone events."""

    cell: int
    score: float
    driven_share: float  # of its score, from proactive/enforcement events


@dataclass(frozen=True, slots=True)
class FeedbackCheck:
    """Flagged cells with every event against those without the events that
    measure police presence."""

    cells_with_events: int
    flagged: int  # cells flagged in each ranking
    driven_share: float  # of the flagged cells' score (all events), from driven events
    driven_share_everywhere: float  # of every cell's score
    stay_flagged: int
    dropped: tuple[DroppedCell, ...]
    added: tuple[int, ...]  # flagged only without the driven events

    @property
    def overlap_pct(self) -> float:
        """Share of the flagged cells that stay flagged, in percent."""
        return 100.0 * self.stay_flagged / self.flagged if self.flagged else 100.0


def feedback_check(
    event_cells: U64,
    t_s: Floats,
    weight: Floats,
    driven: Bools,
    *,
    at_s: float,
    half_life_s: float,
    coverage: float,
) -> FeedbackCheck:
    """Flag the top ``coverage`` share of the cells with events by decayed
    score at ``at_s``, once with every event and once with ``driven`` events
    (proactive origin, enforcement categories) weighted 0.

    >>> import numpy as np
    >>> cells = np.array([1, 1, 2, 3], dtype=np.uint64)
    >>> r = feedback_check(cells, np.zeros(4), np.array([1.0, 5.0, 3.0, 2.0]),
    ...                    np.array([False, True, False, False]),
    ...                    at_s=0.0, half_life_s=1.0, coverage=0.34)
    >>> r.flagged, r.stay_flagged, r.dropped[0].cell, r.added, round(r.driven_share, 3)
    (1, 0, 1, (2,), 0.833)
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    every = decayed_scores(event_cells, t_s, weight, at_s, half_life_s)
    driven_only = decayed_scores(event_cells, t_s, np.where(driven, weight, 0.0), at_s, half_life_s)
    without = decayed_scores(event_cells, t_s, np.where(driven, 0.0, weight), at_s, half_life_s)
    n = len(every)
    k = max(1, round(coverage * n)) if n else 0
    flagged_all = top_cells(every, k)
    flagged_without = set(top_cells(without, k))
    flagged_score = sum(every[c] for c in flagged_all)
    driven_flagged = sum(driven_only.get(c, 0.0) for c in flagged_all)
    total = sum(every.values())
    dropped = tuple(
        DroppedCell(c, every[c], driven_only.get(c, 0.0) / every[c])
        for c in flagged_all
        if c not in flagged_without
    )
    kept = set(flagged_all)
    return FeedbackCheck(
        cells_with_events=n,
        flagged=k,
        driven_share=driven_flagged / flagged_score if flagged_score else 0.0,
        driven_share_everywhere=sum(driven_only.values()) / total if total else 0.0,
        stay_flagged=k - len(dropped),
        dropped=dropped,
        added=tuple(c for c in top_cells(without, k) if c not in kept),
    )
