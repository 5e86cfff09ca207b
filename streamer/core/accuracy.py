"""Measured accuracy of hot spot rankings, rolled forward through history (pure).

For each period ``[t, t')`` a method ranks the study area's cells using only
events before ``t``; the top ``a`` cells cover a share ``p`` of the ``A``
study cells (``a = ceil(p*A)``). On the period's ``N`` counting events:

* hit rate ``n/N`` (``n`` = events in the flagged cells),
* PAI ``(n/N)/(a/A)``: how many times better than flagging cells at random,
* PEI ``n/n*`` (``n*`` = events in the period's busiest ``a`` cells): the
  share of the best possible hit rate reached.

Periods without events are skipped. Ties in a score are broken by cell id
(the study cells are sorted by id, and ranking is a stable sort), so every
run is reproducible.

Methods: the engine's harm-weighted exponentially decayed sums
``sum_i w_i 2**(-(t - t_i)/h)`` (kept incrementally: decay the per-cell
vector by ``2**(-dt/h)`` and add the new period's events), the baselines
analysts use (counts over a trailing window, counts of the previous period),
and for tuning blends ``w*long/sum(long) + (1-w)*short/sum(short)`` of two
decayed sums, optionally smoothed over H3 ring 1
(``score + s*mean(ring-1 neighbours)``, cells outside the study area count 0).

>>> counts = np.array([5.0, 3.0, 0.0, 2.0])  # a period's events per cell
>>> m = measure(np.array([[0.0, 9.0, 1.0, 2.0]]), counts, np.array([1, 2]))
>>> m.captured.tolist(), m.best.tolist()
([[3.0, 5.0]], [[5.0, 8.0]])
>>> m.hit_rate.tolist(), m.pai.tolist(), m.pei.tolist()
([[0.3, 0.5]], [[1.2, 1.0]], [[0.6, 0.625]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.core.cells import neighbours_of_many

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]
Progress = Callable[[int, int], None]

DAY_S = 86400.0
COVERAGES = (0.01, 0.02, 0.05, 0.10)


def cells_for_coverage(share: float, study_cells: int) -> int:
    """``a = ceil(share * A)``, at least one cell and at most all of them.

    Float products such as ``0.07 * 100 = 7.000000000000001`` are not rounded up.

    >>> cells_for_coverage(0.01, 3500), cells_for_coverage(0.01, 3501)
    (35, 36)
    >>> cells_for_coverage(0.07, 100), cells_for_coverage(0.001, 50), cells_for_coverage(1.0, 9)
    (7, 1, 9)
    """
    if not 0 < share <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {share}")
    if study_cells < 1:
        raise ValueError("the study area has no cells")
    a = math.ceil(round(share * study_cells, 9))
    return min(max(a, 1), study_cells)


# measures ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measures:
    """One period's measures: rows are methods, columns coverages."""

    captured: F64  # n
    best: F64  # n*
    hit_rate: F64
    pai: F64
    pei: F64


def rank(scores: F64) -> I64:
    """Cell indices from the highest score down, ties by index (= cell id);
    along the last axis.

    >>> rank(np.array([1.0, 3.0, 1.0, 3.0])).tolist()
    [1, 3, 0, 2]
    """
    order: I64 = np.argsort(-scores, axis=-1, kind="stable")
    return order


def measure(scores: F64, counts: F64, sizes: I64) -> Measures:
    """Hit rate, PAI and PEI of each row of ``scores`` (methods x cells) on one
    period's event ``counts`` per cell, flagging the top ``sizes`` cells.
    The period must hold events."""
    scores2 = np.atleast_2d(scores)
    cells = counts.size
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("a period without events has no hit rate")
    if scores2.shape[1] != cells:
        raise ValueError("scores and counts must cover the same cells")
    idx = np.asarray(sizes, dtype=np.int64) - 1
    captured = np.cumsum(counts[rank(scores2)], axis=1)[:, idx]
    best = np.cumsum(np.sort(counts)[::-1])[idx]
    hit = captured / total
    return Measures(
        captured=captured,
        best=np.broadcast_to(best, captured.shape).copy(),
        hit_rate=hit,
        pai=hit * (cells / np.asarray(sizes, dtype=np.float64)),
        pei=captured / best,
    )


# history -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class History:
    """The counting events inside the study area, sorted by time.

    ``cell`` indexes the study cells, ``weight`` is the harm weight (> 0).
    """

    t_s: F64
    cell: I64
    weight: F64
    cells: int

    @classmethod
    def build(
        cls, t_s: npt.ArrayLike, cell: npt.ArrayLike, weight: npt.ArrayLike, cells: int
    ) -> History:
        """Events in any order; ``cell`` values must lie in ``[0, cells)``."""
        t = np.asarray(t_s, dtype=np.float64)
        c = np.asarray(cell, dtype=np.int64)
        w = np.asarray(weight, dtype=np.float64)
        if not t.shape == c.shape == w.shape == (t.size,):
            raise ValueError("every column of the history must have the same length")
        if c.size and (c.min() < 0 or c.max() >= cells):
            raise ValueError("an event's cell is outside the study area")
        order = np.argsort(t, kind="stable")
        return cls(t[order], c[order], w[order], cells)

    def rows(self, from_s: float, to_s: float) -> slice:
        """The events in ``[from_s, to_s)``."""
        lo, hi = np.searchsorted(self.t_s, [from_s, to_s], side="left")
        return slice(int(lo), int(hi))

    def counts(self, from_s: float, to_s: float, *, weighted: bool = False) -> F64:
        """Events (or their summed weights) per cell in ``[from_s, to_s)``."""
        r = self.rows(from_s, to_s)
        w = self.weight[r] if weighted else None
        return np.bincount(self.cell[r], weights=w, minlength=self.cells).astype(np.float64)


class DecayedSum:
    """``sum_i w_i 2**(-(t - t_i)/h)`` per cell over events before ``t``, kept
    incrementally as ``t`` moves forward (``weighted=False``: ``w_i = 1``).

    >>> h = History.build([0.0, 10.0, 10.0], [0, 1, 1], [2.0, 1.0, 1.0], 2)
    >>> d = DecayedSum(h, half_life_s=10.0)
    >>> d.at(10.0).tolist(), d.at(20.0).tolist()
    ([1.0, 0.0], [0.5, 1.0])
    """

    __slots__ = ("_half_life_s", "_history", "_state", "_t_s", "_weighted")

    def __init__(self, history: History, half_life_s: float, *, weighted: bool = True) -> None:
        if half_life_s <= 0:
            raise ValueError("a half-life must be positive")
        self._history = history
        self._half_life_s = half_life_s
        self._weighted = weighted
        self._state = np.zeros(history.cells)
        self._t_s = -math.inf

    def at(self, t_s: float) -> F64:
        """The scores at ``t_s`` (not before the previous call's time); a view
        of the state: copy it to keep it."""
        if t_s < self._t_s:
            raise ValueError("a decayed sum only moves forward in time")
        h = self._history
        r = h.rows(self._t_s, t_s)
        if self._t_s > -math.inf:
            self._state *= 2.0 ** (-(t_s - self._t_s) / self._half_life_s)
        if r.stop > r.start:
            w = h.weight[r] if self._weighted else 1.0
            terms = w * np.exp2(-(t_s - h.t_s[r]) / self._half_life_s)
            self._state += np.bincount(h.cell[r], weights=terms, minlength=h.cells)
        self._t_s = t_s
        return self._state


# methods -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decayed:
    """The engine's score for one horizon (``weighted``: the harm table)."""

    name: str
    half_life_s: float
    weighted: bool = True


@dataclass(frozen=True, slots=True)
class Window:
    """Unweighted counts over the trailing ``window_s``."""

    name: str
    window_s: float


@dataclass(frozen=True, slots=True)
class PreviousPeriod:
    """Unweighted counts of the period before."""

    name: str


@dataclass(frozen=True, slots=True)
class Blend:
    """``long_share*long/sum(long) + (1-long_share)*short/sum(short)`` of two
    decayed sums, then ``+ smoothing * mean(ring-1 neighbours)``."""

    name: str
    long_s: float
    short_s: float
    long_share: float
    smoothing: float
    weighted: bool


Method = Decayed | Window | PreviousPeriod | Blend


def duration_label(seconds: float) -> str:
    """``604800.0`` -> ``"7d"``; ``28800.0`` -> ``"8h"``.

    >>> duration_label(7 * 86400.0), duration_label(28800.0), duration_label(90.0)
    ('7d', '8h', '90s')
    """
    for unit, size in (("d", DAY_S), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def grid_methods(
    half_lives_s: Sequence[float],
    long_shares: Sequence[float] = (0.25, 0.5, 0.75),
    smoothings: Sequence[float] = (0.0, 0.5),
) -> list[Blend]:
    """The tuning grid: each half-life alone and each (long, short) pair of
    them blended at each share, each smoothed or not, with harm weights or
    unweighted counts.

    >>> len(grid_methods([3 * DAY_S, 7 * DAY_S, 28 * DAY_S]))
    48
    """
    hs = sorted(set(half_lives_s))
    shapes: list[tuple[float, float, float]] = [(h, h, 1.0) for h in hs]
    shapes += [(hl, hs_, w) for i, hs_ in enumerate(hs) for hl in hs[i + 1 :] for w in long_shares]
    out: list[Blend] = []
    for weighted in (True, False):
        for long_s, short_s, w in shapes:
            for s in smoothings:
                if w == 1.0:
                    head = f"{duration_label(long_s)}"
                else:
                    head = f"{w:g}*{duration_label(long_s)}+{1 - w:g}*{duration_label(short_s)}"
                name = f"{head} s={s:g} {'harm' if weighted else 'count'}"
                out.append(Blend(name, long_s, short_s, w, s, weighted))
    return out


def neighbour_index(study_cells: U64) -> I64:
    """Each study cell's ring-1 neighbours as indices into the (sorted) study
    cells, ``len(study_cells)`` standing for a cell outside the area."""
    nbr = neighbours_of_many(study_cells)
    pos = np.searchsorted(study_cells, nbr)
    pos = np.minimum(pos, study_cells.size - 1)
    inside = study_cells[pos] == nbr
    out: I64 = np.where(inside, pos, study_cells.size).astype(np.int64)
    return out


def smooth(scores: F64, neighbours: I64, share: float) -> F64:
    """``scores + share * mean of the six neighbours' scores`` (0 outside).

    >>> nb = np.array([[1, 2, 2, 2, 2, 2], [0, 2, 2, 2, 2, 2]])
    >>> smooth(np.array([6.0, 0.0]), nb, 0.5).tolist()
    [6.0, 0.5]
    """
    if share == 0:
        return scores
    padded = np.append(scores, 0.0)
    result: F64 = scores + share * padded[neighbours].mean(axis=1)
    return result


def _normalised(v: F64) -> F64:
    total = float(v.sum())
    return v / total if total > 0 else v


# the roll-forward ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Backtest:
    """Per method, evaluated period and coverage: arrays ``(M, P, S)``."""

    methods: tuple[str, ...]
    coverages: tuple[float, ...]
    sizes: tuple[int, ...]  # a per coverage
    study_cells: int
    period_start_s: F64  # the evaluated periods (those with events)
    period_end_s: F64
    events: I64  # N per evaluated period
    skipped: int  # periods without events
    captured: F64
    best: F64
    hit_rate: F64
    pai: F64
    pei: F64

    def means(self, periods: Bools | None = None) -> dict[str, dict[float, dict[str, float]]]:
        """Mean hit rate, PAI and PEI per method and coverage (over ``periods``,
        a mask of the evaluated periods; default all)."""
        keep = np.ones(self.events.size, bool) if periods is None else periods
        if not np.any(keep):
            raise ValueError("no evaluated period selected")
        out: dict[str, dict[float, dict[str, float]]] = {}
        for m, name in enumerate(self.methods):
            out[name] = {
                p: {
                    "hit_rate": float(self.hit_rate[m, keep, s].mean()),
                    "pai": float(self.pai[m, keep, s].mean()),
                    "pei": float(self.pei[m, keep, s].mean()),
                }
                for s, p in enumerate(self.coverages)
            }
        return out

    def mean_pai(self, coverage: float, periods: Bools | None = None) -> F64:
        """Mean PAI of every method at one of the coverages."""
        s = self.coverages.index(coverage)
        keep = np.ones(self.events.size, bool) if periods is None else periods
        result: F64 = self.pai[:, keep, s].mean(axis=1)
        return result


def backtest(
    history: History,
    edges_s: Sequence[float] | F64,
    methods: Sequence[Method],
    *,
    coverages: Iterable[float] = COVERAGES,
    neighbours: I64 | None = None,
    progress: Progress | None = None,
) -> Backtest:
    """Roll forward through the periods ``[edges[k], edges[k+1])``: rank by
    each method with the events before ``edges[k]``, measure on the period.

    The period before the first (for :class:`PreviousPeriod`) is as long as
    the first. ``neighbours`` (:func:`neighbour_index`) is needed by blends
    that smooth.
    """
    edges = np.asarray(edges_s, dtype=np.float64)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("period edges must be at least two increasing times")
    if any(isinstance(m, Blend) and m.smoothing > 0 for m in methods) and neighbours is None:
        raise ValueError("smoothing needs the neighbour index")
    cov = tuple(sorted(set(coverages)))
    A = history.cells
    sizes = np.array([cells_for_coverage(p, A) for p in cov], dtype=np.int64)
    sums: dict[tuple[float, bool], DecayedSum] = {}
    for m in methods:
        if isinstance(m, Decayed):
            keys = [(m.half_life_s, m.weighted)]
        elif isinstance(m, Blend):
            keys = [(m.long_s, m.weighted), (m.short_s, m.weighted)]
        else:
            keys = []
        for key in keys:
            if key not in sums:
                sums[key] = DecayedSum(history, key[0], weighted=key[1])

    periods = edges.size - 1
    results: list[Measures] = []
    kept: list[int] = []
    counts_of: list[int] = []
    for k in range(periods):
        t, end = float(edges[k]), float(edges[k + 1])
        decayed = {key: d.at(t) for key, d in sums.items()}
        counts = history.counts(t, end)
        if progress is not None:
            progress(k + 1, periods)
        total = float(counts.sum())
        if total == 0:
            continue
        previous = float(edges[k - 1]) if k > 0 else t - (end - t)
        scores = np.empty((len(methods), A))
        normalised: dict[tuple[float, bool], F64] = {}
        for i, m in enumerate(methods):
            if isinstance(m, Decayed):
                scores[i] = decayed[(m.half_life_s, m.weighted)]
            elif isinstance(m, Window):
                scores[i] = history.counts(t - m.window_s, t)
            elif isinstance(m, PreviousPeriod):
                scores[i] = history.counts(previous, t)
            else:
                long_key, short_key = (m.long_s, m.weighted), (m.short_s, m.weighted)
                for key in (long_key, short_key):
                    if key not in normalised:
                        normalised[key] = _normalised(decayed[key])
                blended = m.long_share * normalised[long_key]
                if m.long_share < 1:
                    blended = blended + (1 - m.long_share) * normalised[short_key]
                if m.smoothing > 0:
                    assert neighbours is not None
                    blended = smooth(blended, neighbours, m.smoothing)
                scores[i] = blended
        results.append(measure(scores, counts, sizes))
        kept.append(k)
        counts_of.append(round(total))

    def stack(name: str) -> F64:
        if not results:
            return np.zeros((len(methods), 0, len(cov)))
        return np.stack([getattr(r, name) for r in results], axis=1)

    idx = np.array(kept, dtype=np.int64)
    return Backtest(
        methods=tuple(m.name for m in methods),
        coverages=cov,
        sizes=tuple(int(a) for a in sizes),
        study_cells=A,
        period_start_s=edges[:-1][idx],
        period_end_s=edges[1:][idx],
        events=np.array(counts_of, dtype=np.int64),
        skipped=periods - len(kept),
        captured=stack("captured"),
        best=stack("best"),
        hit_rate=stack("hit_rate"),
        pai=stack("pai"),
        pei=stack("pei"),
    )
