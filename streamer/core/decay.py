"""Forward decay with an exact, power-of-two landmark.

The score of a cell at time ``t`` over a horizon with half-life ``h`` is
``sum_i w_i * 2**(-(t - t_i)/h)``. Forward decay (Cormode et al., ICDE 2009)
stores ``sum_i w_i * 2**((t_i - L)/h)`` for a landmark ``L``: the common factor
``2**(-(t - L)/h)`` is applied only when a score is read, so the stored order is
the current order and an event touches only its own cell.

Here the landmark is a whole number ``k`` of half-lives since the Unix epoch
(``L = k*h``), and a term is computed as ``ldexp(w * 2**phi, n - k)`` where
``n + phi = t_i/h`` (``n`` integer, ``0 <= phi < 1``). The mantissa part
``w * 2**phi`` does not depend on the landmark, so moving the landmark from
``k`` to ``k'`` multiplies every stored number by exactly ``2**(k - k')``:
re-basing is exact, and a retraction after a re-base subtracts bit for bit
what the addition added.

>>> h = 86400.0
>>> a = term(2.0, 10 * h + 3600, h, 10)
>>> b = term(2.0, 10 * h + 3600, h, 8)
>>> a == b * 2.0 ** -2
True
>>> abs(score_at(a, 12 * h + 3600, h, 10) - 2.0 * 2 ** -2) < 1e-15
True
"""

from __future__ import annotations

import math
from itertools import repeat

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Re-base once the newest event is this many half-lives past the landmark:
# terms stay below 2**64, far from the 2**1024 overflow.
REBASE_AFTER_HALF_LIVES = 64


def split(t_s: float, half_life_s: float) -> tuple[int, float]:
    """``t/h`` as a whole number of half-lives and a fraction in [0, 1).

    >>> split(36.0, 24.0)
    (1, 0.5)
    """
    x = t_s / half_life_s
    n = math.floor(x)
    return n, x - n


def term(weight: float, t_s: float, half_life_s: float, landmark: int) -> float:
    """One event's stored contribution relative to landmark index ``landmark``.

    >>> term(1.0, 3 * 3600.0, 3600.0, 3)
    1.0
    """
    n, phi = split(t_s, half_life_s)
    return math.ldexp(weight * math.pow(2.0, phi), n - landmark)


def terms(weights: F64, t_s: F64, half_life_s: float, landmark: int) -> F64:
    """Vectorised :func:`term`, bit for bit.

    ``2**phi`` is libm's ``pow`` called per value: numpy's ``exp2``/``power``
    differ from it in the last bit for about one value in twenty, and the
    store's Lua scripts call ``pow`` (a retraction must subtract exactly what
    was added). Equal neighbouring values (time-ordered input) share one call.

    >>> t = np.array([3600.0, 3600.0, 5400.0])
    >>> terms(np.ones(3), t, 3600.0, 1).tolist() == [term(1.0, x, 3600.0, 1) for x in t]
    True
    """
    x = t_s / half_life_s
    n = np.floor(x)
    phi = x - n
    out: F64 = np.ldexp(weights * _pow2(phi), (n - landmark).astype(np.int64))
    return out


def _pow2(phi: F64) -> F64:
    """``math.pow(2.0, p)`` for each ``p`` (libm, not numpy's own ``exp2``)."""
    size = phi.size
    if size == 0:
        return np.ones(0)
    # Sorting to find every distinct value costs more than the calls it saves
    # (~50 ns each), so only runs of equal neighbours share a call: O(n).
    starts = np.flatnonzero(np.concatenate(([True], phi[1:] != phi[:-1])))
    if starts.size > size // 2:
        return _pow2_each(phi)
    out: F64 = np.repeat(_pow2_each(phi[starts]), np.diff(starts, append=size))
    return out


def _pow2_each(phi: F64) -> F64:
    # a memoryview yields floats one at a time: no list of them all to build
    values = np.ascontiguousarray(phi, dtype=np.float64).data
    return np.fromiter(map(math.pow, repeat(2.0), values), np.float64, count=phi.size)


def decay_factor(at_s: float, half_life_s: float, landmark: int) -> float:
    """``2**(-(at - L)/h)``: multiply a stored sum by this to get its score at ``at``.

    >>> decay_factor(7200.0, 3600.0, 0)
    0.25
    """
    return math.exp2(-((at_s - landmark * half_life_s) / half_life_s))


def score_at(stored: float, at_s: float, half_life_s: float, landmark: int) -> float:
    """The decayed score at ``at`` of a stored forward-decayed sum."""
    return stored * decay_factor(at_s, half_life_s, landmark)


def stored_threshold(score: float, at_s: float, half_life_s: float, landmark: int) -> float:
    """The stored value whose decayed score at ``at`` equals ``score``
    (``inf`` when that is beyond any double: everything is below it).

    >>> stored_threshold(1.0, 7200.0, 3600.0, 0)
    4.0
    >>> stored_threshold(1.0, 1e9, 1.0, 0)
    inf
    """
    x = (at_s - landmark * half_life_s) / half_life_s
    if x > 1000:
        return math.inf
    return score * math.exp2(x)


def landmark_for(t_s: float, half_life_s: float) -> int:
    """The landmark index for a newest event time ``t``: its whole half-lives.

    >>> landmark_for(90.0, 60.0)
    1
    """
    return math.floor(t_s / half_life_s)


def needs_rebase(newest_t_s: float, half_life_s: float, landmark: int) -> bool:
    """Whether terms of events up to ``newest_t_s`` are getting large.

    >>> needs_rebase(100 * 60.0, 60.0, 0)
    True
    >>> needs_rebase(10 * 60.0, 60.0, 0)
    False
    """
    return newest_t_s / half_life_s - landmark > REBASE_AFTER_HALF_LIVES
