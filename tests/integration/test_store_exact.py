"""The store against the batch oracle, on real Philadelphia records.

Exactness (relative error 1e-9) whatever the arrival order, with late
events, duplicates, cancels and corrections, across landmark re-bases.
"""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from streamer.adapters.store import Store, StoreOp
from streamer.core.events import Event
from streamer.core.scoring import Scorer
from streamer.core.weights import CategoryWeight, WeightTable
from tests import oracle

HORIZONS = {"day": 86400.0, "week": 7 * 86400.0, "month": 28 * 86400.0, "year": 365 * 86400.0}
RESOLUTIONS = [8, 9, 10]
REL = 1e-9


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=12_000)


def make_store(client: aioredis.Redis, namespace: str) -> Store:
    return Store(
        client,
        namespace=namespace,
        horizons=HORIZONS,
        resolutions=RESOLUTIONS,
        profile_horizon="year",
    )


def make_scorer(table: tuple[dict[str, float], float]) -> Scorer:
    rules = {name: CategoryWeight(weight=w, include=w > 0) for name, w in table[0].items()}
    return Scorer(
        WeightTable(rules, CategoryWeight(table[1])), RESOLUTIONS, ZoneInfo("America/New_York")
    )


def to_op(scorer: Scorer, op: str, row: oracle.Row) -> StoreOp:
    if op == "cancel":
        return StoreOp.cancel(row.id)
    from datetime import UTC, datetime

    event = Event(
        row.id,
        "incident",
        datetime.fromtimestamp(row.t_s, UTC),
        row.t_s,
        row.lat,
        row.lon,
        row.category,
    )
    c = scorer.contribution(event)
    return StoreOp.upsert(c) if c is not None else StoreOp.exclude(row.id)


def shuffled_keeping_id_order(
    ops: list[tuple[str, oracle.Row]], rng: random.Random
) -> list[tuple[str, oracle.Row]]:
    """A random arrival order in which each id's versions keep their order
    (Kafka keys by id, so corrections of one event stay in order)."""
    slots = list(range(len(ops)))
    rng.shuffle(slots)
    by_id: dict[str, list[int]] = {}
    for i, (_, row) in enumerate(ops):
        by_id.setdefault(row.id, []).append(i)
    out: list[tuple[str, oracle.Row] | None] = [None] * len(ops)
    for members in by_id.values():
        for position, original in zip(sorted(slots[i] for i in members), members, strict=True):
            out[position] = ops[original]
    return [o for o in out if o is not None]


async def apply_in_batches(
    store: Store,
    scorer: Scorer,
    ops: list[tuple[str, oracle.Row]],
    rng: random.Random,
    now_s: float,
) -> None:
    i = 0
    while i < len(ops):
        size = rng.choice([1, 7, 50, 333, 1000])
        await store.apply([to_op(scorer, op, row) for op, row in ops[i : i + size]], now_s=now_s)
        i += size


async def assert_matches_oracle(
    store: Store, alive: dict[str, oracle.Row], at_s: float, table: tuple[dict[str, float], float]
) -> int:
    checked = 0
    for name, half_life in HORIZONS.items():
        for res in RESOLUTIONS:
            want = oracle.scores(alive.values(), res, half_life, at_s, *table)
            # Below prune_below a score is noise: a retraction can leave
            # ~1e-32 of what it removed (double-double sums), and top()
            # does not list such cells.
            want = {c: s for c, s in want.items() if s >= store.prune_below}
            got = {r.cell: r.score for r in await store.top(name, res, 10**7, at_s)}
            assert set(got) == set(want), (name, res, set(got) ^ set(want))
            for cell, expected in want.items():
                assert got[cell] == pytest.approx(expected, rel=REL, abs=0), (name, res, cell)
            checked += len(want)
            ranked = [c for c, _ in sorted(want.items(), key=lambda kv: -kv[1])[:20]]
            top = [r.cell for r in await store.top(name, res, 20, at_s)]
            assert [want[c] for c in top] == pytest.approx([want[c] for c in ranked], rel=REL)
    return checked


async def test_exact_under_disorder_duplicates_cancels_and_corrections(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    rng = random.Random(20251)
    events = rows[:6000]
    categories = sorted({r.category for r in rows})
    ops: list[tuple[str, oracle.Row]] = [("upsert", r) for r in events]
    for r in rng.sample(events, 600):  # redelivered duplicates
        ops.append(("upsert", r))
    for r in rng.sample(events, 300):  # corrections: moved and reclassified
        ops.append(("upsert", r.moved(rng.uniform(-0.004, 0.004), rng.choice(categories))))
    for r in rng.sample(events, 300):  # cancels
        ops.append(("cancel", r))
    ops.append(("cancel", oracle.Row("never-seen", 0, 0, 0, "")))
    arrival = shuffled_keeping_id_order(ops, rng)
    assert arrival != ops
    now_s = max(r.t_s for r in events) + 3600
    store = make_store(client, namespace)
    await apply_in_batches(store, make_scorer(table), arrival, rng, now_s)
    alive = oracle.live(ops)
    assert await assert_matches_oracle(store, alive, now_s, table) > 1000
    # Scores decay with the query time too.
    await assert_matches_oracle(store, alive, now_s + 5 * 86400, table)


async def test_arrival_order_does_not_matter(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    events = [("upsert", r) for r in rows[:3000]]
    now_s = max(r.t_s for _, r in events) + 60
    results = []
    for seed in (1, 2):
        rng = random.Random(seed)
        order = list(events)
        rng.shuffle(order)
        store = make_store(client, f"{namespace}-{seed}")
        await apply_in_batches(store, scorer, order, rng, now_s)
        results.append({res: await store.top("week", res, 10**6, now_s) for res in RESOLUTIONS})
        for key in await client.keys(f"{{{namespace}-{seed}}}*"):
            await client.delete(key)
    for res in RESOLUTIONS:
        a = {r.cell: r.score for r in results[0][res]}
        b = {r.cell: r.score for r in results[1][res]}
        assert a.keys() == b.keys()
        for cell in a:
            assert a[cell] == pytest.approx(b[cell], rel=1e-12)


async def test_duplicates_are_idempotent(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    batch = [to_op(scorer, "upsert", r) for r in rows[:500]]
    now_s = max(r.t_s for r in rows[:500])
    first = await store.apply(batch, now_s=now_s)
    before = await store.top("week", 10, 1000, now_s)
    again = await store.apply(batch, now_s=now_s)
    counted = {o.id for o in batch if o.op == "u"}
    assert first.applied == len(counted)
    assert again.applied == 0 and again.duplicate == len(counted)
    assert again.cells == 0 and again.seq == first.seq  # nothing changed, seq did not move
    assert await store.top("week", 10, 1000, now_s) == before


async def test_retraction_is_exact_when_it_removes_almost_everything(
    client: aioredis.Redis, namespace: str, table: tuple[dict[str, float], float]
) -> None:
    # One theft 90 days ago, then a homicide today in the same cell, cancelled:
    # the day score falls by a factor of ~2**90 (beyond any double's
    # precision); it must leave exactly the old theft's score.
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    t0 = 1_735_700_000.0
    old = oracle.Row("old", t0, 39.9524, -75.1636, "Thefts")
    big = oracle.Row("big", t0 + 90 * 86400, 39.9524, -75.1636, "Homicide - Criminal")
    now_s = big.t_s + 60
    await store.apply([to_op(scorer, "upsert", old), to_op(scorer, "upsert", big)], now_s=now_s)
    await store.apply([StoreOp.cancel("big")], now_s=now_s)
    await assert_matches_oracle(store, {"old": old}, now_s, table)
    # Seen from the theft's own time the homicide outweighed it ~2**100 to 1:
    # plain double sums would have lost the theft entirely.
    await assert_matches_oracle(store, {"old": old}, old.t_s + 3600, table)
    # and a correction that moves it away and back
    moved = big.moved(0.05, "Robbery Firearm")
    await store.apply([to_op(scorer, "upsert", big)], now_s=now_s)
    await store.apply([to_op(scorer, "upsert", moved)], now_s=now_s)
    await assert_matches_oracle(store, {"old": old, "big": moved}, now_s, table)
    await assert_matches_oracle(store, {"old": old, "big": moved}, old.t_s + 3600, table)
    await store.apply([StoreOp.cancel("big"), StoreOp.cancel("old")], now_s=now_s)
    for res in RESOLUTIONS:
        assert await store.top("day", res, 10, now_s) == []
    assert await client.keys(f"{{{namespace}}}:cell:*") == []


async def test_rebasing_changes_nothing(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    # A year of events in time order: the day horizon's landmark moves every
    # 64 days on its own; then a forced re-base far ahead changes no score.
    rng = random.Random(5)
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    sample = sorted(rng.sample(rows, 3000), key=lambda r: r.t_s)
    stretched = [
        oracle.Row(r.id, sample[0].t_s + (r.t_s - sample[0].t_s) * 20, r.lat, r.lon, r.category)
        for r in sample
    ]
    ops = [("upsert", r) for r in stretched]
    now_s = stretched[-1].t_s + 3600
    landmarks_before = await store.landmarks(stretched[0].t_s)
    await apply_in_batches(store, scorer, ops, rng, now_s)
    landmarks_after = await store.landmarks()
    assert landmarks_after["day"] - landmarks_before["day"] >= 128  # re-based along the way
    # cancel some after the re-bases: retraction stays exact
    cancelled = rng.sample(stretched, 200)
    await store.apply([StoreOp.cancel(r.id) for r in cancelled], now_s=now_s)
    alive = oracle.live([*ops, *(("cancel", r) for r in cancelled)])
    await assert_matches_oracle(store, alive, now_s, table)
    before = {res: await store.top("year", res, 50, now_s) for res in RESOLUTIONS}
    await store.rebase(now_s + 300 * 86400)
    assert (await store.landmarks())["day"] > landmarks_after["day"]
    for res in RESOLUTIONS:
        after = await store.top("year", res, 50, now_s)
        assert [r.cell for r in after] == [r.cell for r in before[res]]
        assert [r.score for r in after] == pytest.approx([r.score for r in before[res]], rel=1e-12)
    await assert_matches_oracle(store, alive, now_s, table)
