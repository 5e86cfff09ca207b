"""Property tests of the store's invariants against a real Redis:
order independence, idempotence and exact retraction (hypothesis)."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.adapters.store import Store, StoreOp
from streamer.core.events import Event
from streamer.core.scoring import Scorer
from streamer.core.weights import CategoryWeight, WeightTable

POINTS = [(39.9524, -75.1636), (39.9530, -75.1640), (40.0000, -75.1000), (39.9100, -75.2000)]
CATEGORIES = {"A": 1.0, "B": 365.0, "C": 0.0}
HORIZONS = {"hour": 3600.0, "week": 7 * 86400.0}
T0 = 1_750_000_000.0
SCORER = Scorer(
    WeightTable({c: CategoryWeight(w, include=w > 0) for c, w in CATEGORIES.items()}),
    [9, 10],
    __import__("zoneinfo").ZoneInfo("UTC"),
)

versions = st.tuples(
    st.integers(0, len(POINTS) - 1),
    st.sampled_from(sorted(CATEGORIES)),
    st.floats(0, 30 * 86400, allow_nan=False),
)
streams = st.lists(
    st.tuples(st.integers(0, 7), st.one_of(st.none(), versions), st.booleans()),
    min_size=1,
    max_size=40,
)


def op_for(event_id: str, version: tuple[int, str, float] | None) -> StoreOp:
    if version is None:
        return StoreOp.cancel(event_id)
    p, cat, dt = version
    t = T0 + dt
    event = Event(event_id, "incident", datetime.fromtimestamp(t, UTC), t, *POINTS[p], cat)
    c = SCORER.contribution(event)
    return StoreOp.upsert(c) if c is not None else StoreOp.exclude(event_id)


def oracle(ops: list[tuple[str, tuple[int, str, float] | None]], at: float) -> dict[str, float]:
    alive: dict[str, tuple[int, str, float]] = {}
    for event_id, version in ops:
        if version is None:
            alive.pop(event_id, None)
        else:
            alive[event_id] = version
    out: dict[str, list[float]] = {}
    for p, cat, dt in alive.values():
        w = CATEGORIES[cat]
        if w > 0:
            cell = format(
                SCORER.contribution(
                    Event("x", "incident", datetime.now(UTC), T0 + dt, *POINTS[p], cat)
                ).cells[1],
                "x",
            )  # type: ignore[union-attr]
            out.setdefault(cell, []).append(w * 2 ** (-(at - T0 - dt) / HORIZONS["week"]))
    return {c: math.fsum(v) for c, v in out.items()}


async def run(url: str, ops: list[StoreOp], batch: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    ns = f"prop-{uuid.uuid4().hex[:8]}"
    store = Store(
        client, namespace=ns, horizons=HORIZONS, resolutions=[9, 10], profile_horizon="week"
    )
    try:
        for i in range(0, len(ops), batch):
            await store.apply(ops[i : i + batch], now_s=T0)
        at = T0 + 31 * 86400
        return {r.cell: r.score for r in await store.top("week", 10, 1000, at)}
    finally:
        keys = await client.keys(f"{{{ns}}}*")
        if keys:
            await client.delete(*keys)
        await client.aclose()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    stream=streams,
    batch=st.integers(1, 10),
    redeliver_from=st.integers(0, 40),
    rng=st.randoms(use_true_random=False),
)
def test_any_order_batching_and_redelivery_give_the_oracle(
    redis_url: str,
    stream: list[tuple[int, tuple[int, str, float] | None, bool]],
    batch: int,
    redeliver_from: int,
    rng: random.Random,
) -> None:
    ops = [(f"e{i}", version) for i, version, _ in stream]
    # any interleaving that keeps each id's versions in order (Kafka keys by id)
    slots = sorted(range(len(ops)), key=lambda _: rng.random())
    by_id: dict[str, list[int]] = {}
    for n, (event_id, _) in enumerate(ops):
        by_id.setdefault(event_id, []).append(n)
    arrival: list[tuple[str, tuple[int, str, float] | None]] = [("", None)] * len(ops)
    for members in by_id.values():
        for slot, n in zip(sorted(slots[m] for m in members), members, strict=True):
            arrival[slot] = ops[n]
    store_ops = [op_for(i, v) for i, v in arrival]
    # a crash before the commit: everything from some point is delivered again
    replayed = store_ops + store_ops[redeliver_from:]
    got = asyncio.run(run(redis_url, replayed, batch))
    want = {c: s for c, s in oracle(arrival, T0 + 31 * 86400).items() if s >= 1e-3}
    assert got.keys() == want.keys()
    for cell, score in want.items():
        assert math.isclose(got[cell], score, rel_tol=1e-9)
    assert oracle(arrival, T0) == oracle(ops, T0)  # the interleaving kept per-id order
