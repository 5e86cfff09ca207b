"""The statistics of emerging hot spots (pure maths, doctested).

The gamma-Poisson tail that tests a region (:func:`gamma_poisson_sf`, on the
regularized incomplete beta function), the exposure of a decayed count
(:func:`exposure_s`), the Mann-Kendall trend test and the daily-bin patterns
(:func:`pattern_of`). :mod:`streamer.core.emerging` states the model they
serve and runs the detector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LN2 = math.log(2.0)
_EPS = 1e-15
_TINY = 1e-300


# statistics ------------------------------------------------------------
def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``.

    >>> round(beta_inc(1.0, 1.0, 0.3), 12), round(beta_inc(2.0, 3.0, 0.4), 12)
    (0.3, 0.5248)
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, front * _beta_cf(a, b, x) / a)
    return max(0.0, 1.0 - front * _beta_cf(b, a, 1.0 - x) / b)


def gamma_poisson_sf(observed: float, shape: float, rate_s: float, exposure: float) -> float:
    """``P(X >= observed)`` when ``X ~ Poisson(lambda * exposure)`` and the
    rate is uncertain, ``lambda ~ Gamma(shape, rate_s)``: the negative
    binomial predictive of the empirical-Bayes posterior, continuous in
    ``observed`` (``I_q(observed, shape)``, ``q = exposure / (rate_s +
    exposure)``). Heavier-tailed than the Poisson of the same mean when the
    baseline rests on few events; the Poisson as ``shape`` grows.

    >>> # one event, Gamma(1, 1) rate, unit exposure: P(X >= 1) = 1 - 1/2
    >>> round(gamma_poisson_sf(1, 1.0, 1.0, 1.0), 12)
    0.5
    """
    if observed <= 0:
        return 1.0
    if shape <= 0 or exposure <= 0:
        return 0.0
    return beta_inc(observed, shape, exposure / (rate_s + exposure))


def exposure_s(half_life_s: float, age_s: float) -> float:
    """Expected decayed count per unit rate after ``age_s`` of history:
    ``h / ln 2 * (1 - 2^(-age / h))``.

    >>> round(exposure_s(86400.0, math.inf) / 86400.0, 4)
    1.4427
    >>> round(exposure_s(86400.0, 86400.0) / 86400.0, 4)
    0.7213
    """
    full = half_life_s / LN2
    if math.isinf(age_s):
        return full
    return full * -math.expm1(-LN2 * max(age_s, 0.0) / half_life_s)


@dataclass(frozen=True, slots=True)
class Trend:
    """Mann-Kendall trend test of a series."""

    s: int
    z: float
    p: float  # two-sided

    @property
    def direction(self) -> int:
        return 0 if self.s == 0 else (1 if self.s > 0 else -1)


def mann_kendall(values: Iterable[float]) -> Trend:
    """Mann-Kendall S, its normal z (continuity-corrected, variance
    corrected for ties) and the two-sided p-value.

    >>> mann_kendall([1, 2, 3, 4]).s
    6
    >>> mann_kendall([3, 3, 3]).p
    1.0
    """
    x = list(values)
    n = len(x)
    s = sum((x[j] > x[i]) - (x[j] < x[i]) for i in range(n) for j in range(i + 1, n))
    ties: dict[float, int] = {}
    for v in x:
        ties[v] = ties.get(v, 0) + 1
    var = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties.values())) / 18
    if var <= 0 or s == 0:
        return Trend(s, 0.0, 1.0)
    z = (s - (1 if s > 0 else -1)) / math.sqrt(var)
    return Trend(s, z, math.erfc(abs(z) / math.sqrt(2.0)))


# patterns ----------------------------------------------------------------
PATTERNS = ("new", "consecutive", "intensifying", "persistent", "diminishing", "sporadic")


def pattern_of(hot: list[bool], counts: list[float], trend_p: float) -> str | None:
    """The emerging-hot-spot pattern of daily bins (oldest first, the last
    being today), in the spirit of ArcGIS Emerging Hot Spot Analysis:

    - persistent / intensifying / diminishing: hot on at least 90% of the
      days, today included; intensifying (diminishing) when the daily counts
      rise (fall) by a Mann-Kendall test at ``trend_p``, else persistent;
    - historical: at least 90% of the earlier days hot, but not today;
    - new: hot today and on no earlier day;
    - consecutive: hot today, on the days just before, and never before that run;
    - sporadic: hot today, and on some earlier days with gaps between;
    - None: not hot today and not historical.

    >>> pattern_of([False, False, True], [0, 0, 3], 0.05)
    'new'
    >>> pattern_of([True, False, True], [2, 0, 3], 0.05)
    'sporadic'
    """
    n = len(hot)
    if n == 0:
        return None
    today = hot[-1]
    if today and sum(hot) >= 0.9 * n:
        trend = mann_kendall(counts)
        if trend.p < trend_p:
            return "intensifying" if trend.direction > 0 else "diminishing"
        return "persistent"
    if not today:
        return "historical" if n > 1 and sum(hot[:-1]) >= 0.9 * (n - 1) else None
    if not any(hot[:-1]):
        return "new"
    run = 0
    for flag in reversed(hot):
        if not flag:
            break
        run += 1
    if not any(hot[: n - run]):
        return "consecutive"
    return "sporadic"
