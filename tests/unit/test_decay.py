"""Forward-decay terms: the vectorised form against the scalar one, bit for bit.

The store's Lua scripts compute a term as ``ldexp(w * pow(2, phi), n - k)``
with C's ``pow``; a retraction subtracts exactly what an addition added only if
every writer (Lua, :func:`decay.term`, :func:`decay.terms`) gets the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core import decay

DAY_S = 86400.0
HALF_LIVES_S = [DAY_S, 7 * DAY_S, 28 * DAY_S, 365 * DAY_S, 3600.0, 1234.5]


def reference(weight: float, t_s: float, half_life_s: float, landmark: int) -> float:
    """The Lua formula, written out."""
    x = t_s / half_life_s
    n = math.floor(x)
    return math.ldexp(weight * math.pow(2.0, x - n), n - landmark)


def random_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """Event times as they come: mostly whole minutes (some shared), some
    whole seconds, some fractional, over ten years."""
    minutes = rng.integers(1_450_000_000 // 60, 1_770_000_000 // 60, size) * 60.0
    seconds = np.floor(rng.uniform(1.45e9, 1.77e9, size))
    fractional = rng.uniform(1.45e9, 1.77e9, size)
    kind = rng.integers(0, 3, size)
    return np.where(kind == 0, minutes, np.where(kind == 1, seconds, fractional))


@pytest.mark.parametrize("half_life_s", HALF_LIVES_S)
@pytest.mark.parametrize("time_ordered", [False, True])
def test_terms_equal_term_bit_for_bit(half_life_s: float, time_ordered: bool) -> None:
    rng = np.random.default_rng(int(half_life_s) + time_ordered)
    t_s = random_times(rng, 20_000)
    if time_ordered:  # runs of equal times share one pow call
        t_s = np.sort(np.concatenate((t_s, t_s[:5000])))
    weights = rng.choice([0.25, 1.0, 3.0, 365.0, 0.1], t_s.size)
    landmark = decay.landmark_for(float(t_s.max()), half_life_s)
    got = decay.terms(weights, t_s, half_life_s, landmark).tolist()
    pairs = zip(weights.tolist(), t_s.tolist(), strict=True)
    assert got == [decay.term(w, t, half_life_s, landmark) for w, t in pairs]
    pairs = zip(weights.tolist(), t_s.tolist(), strict=True)
    assert got == [reference(w, t, half_life_s, landmark) for w, t in pairs]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(1e-3, 1e3, allow_nan=False),
            st.floats(0.0, 4e9, allow_nan=False) | st.integers(0, 4_000_000_000).map(float),
        ),
        max_size=40,
    ),
    st.sampled_from(HALF_LIVES_S),
    st.integers(-5, 5),
)
def test_terms_property(
    rows: list[tuple[float, float]], half_life_s: float, landmark_shift: int
) -> None:
    weights = np.array([w for w, _ in rows], dtype=np.float64)
    t_s = np.array([t for _, t in rows], dtype=np.float64)
    newest = float(t_s.max()) if rows else 0.0
    landmark = decay.landmark_for(newest, half_life_s) + landmark_shift
    got = decay.terms(weights, t_s, half_life_s, landmark).tolist()
    assert got == [reference(w, t, half_life_s, landmark) for w, t in rows]


def test_terms_of_nothing() -> None:
    empty = np.zeros(0)
    assert decay.terms(empty, empty, DAY_S, 0).shape == (0,)


def test_rebase_stays_exact() -> None:
    """Moving the landmark scales every term by an exact power of two."""
    rng = np.random.default_rng(3)
    t_s = random_times(rng, 5000)
    w = rng.uniform(0.1, 10.0, t_s.size)
    k = decay.landmark_for(float(t_s.max()), 7 * DAY_S)
    a = decay.terms(w, t_s, 7 * DAY_S, k)
    b = decay.terms(w, t_s, 7 * DAY_S, k + 3)
    assert (a == b * 8.0).all()
