"""The store's fast path: new events summed per cell before the script.

Its plan (ids not yet ledgered, offsets not yet applied, landmarks unmoved)
is checked by the script before any write; when it no longer holds the
events concerned go term by term, with the same outcome as always. Each
test runs with the batch as ops and as rows (the compiled kernel's output).
"""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis

from streamer.adapters.store import StoreOp
from tests import oracle
from tests.integration.test_store_exact import (
    assert_matches_oracle,
    make_scorer,
    make_store,
    to_op,
)
from tests.integration.test_store_rows import apply_batch
from tests.pipeline_support import redis_key


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=3000)


def sourced(op: StoreOp, source: str, offset: int) -> StoreOp:
    return dataclasses.replace(op, source=source, offset=offset)


@pytest.mark.parametrize("as_rows", [False, True], ids=["ops", "rows"])
async def test_a_correction_of_a_known_event_goes_term_by_term(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
    as_rows: bool,
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    first, later = rows[:1000], rows[1000:2000]
    now_s = max(r.t_s for r in rows[:2000]) + 60
    done = await apply_batch(
        store, [to_op(scorer, "upsert", r) for r in first], now_s, as_rows=as_rows
    )
    assert done.applied == len({r.id for r in first})
    # a batch of new events plus corrections of 50 known ones, each id once:
    # the plan sends all of them the fast way; the script finds the 50 in the
    # ledger and the store re-plans them term by term.
    moved = [r.moved(0.01, "Robbery Firearm") for r in first[:50]]
    result = await apply_batch(
        store, [to_op(scorer, "upsert", r) for r in [*later, *moved]], now_s, as_rows=as_rows
    )
    assert result.retracted == 50
    assert result.applied == len({r.id for r in later}) + 50
    alive = {r.id: r for r in [*first, *later]}
    alive.update({r.id: r for r in moved})
    assert await assert_matches_oracle(store, alive, now_s, table) > 0


@pytest.mark.parametrize("as_rows", [False, True], ids=["ops", "rows"])
async def test_a_redelivered_batch_is_stale_and_changes_nothing(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
    as_rows: bool,
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    batch = [sourced(to_op(scorer, "upsert", r), "events:0", i) for i, r in enumerate(rows[:400])]
    now_s = max(r.t_s for r in rows[:400]) + 60
    first = await apply_batch(store, batch, now_s, as_rows=as_rows)
    again = await apply_batch(store, batch, now_s, as_rows=as_rows)
    assert again.stale == len(batch) and again.applied == 0
    assert again.seq == first.seq
    # half redelivered, half new: the old half is stale, the new half counts
    overlap = [
        sourced(to_op(scorer, "upsert", r), "events:0", 200 + i)
        for i, r in enumerate(rows[200:600])
    ]
    # (offsets 200..399 now carry other ids: only the offset decides)
    result = await apply_batch(store, overlap, now_s, as_rows=as_rows)
    assert result.stale == 200
    assert result.applied == len({r.id for r in rows[400:600]})
    assert await client.hget(redis_key(store, "offsets"), "events:0") == b"599"
    alive = {r.id: r for r in rows[:600]}
    assert await assert_matches_oracle(store, alive, now_s, table) > 0


async def test_sums_computed_at_other_landmarks_are_refused_before_any_write(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    now_s = max(r.t_s for r in rows[:200]) + 60
    await store.apply([to_op(scorer, "upsert", r) for r in rows[:100]], now_s=now_s)
    seq = await store.seq()
    keys = await client.dbsize()
    ops = [to_op(scorer, "upsert", r) for r in rows[100:200]]
    stale_landmarks = {n: k - 1 for n, k in (await store.landmarks()).items()}
    plan = store.plan(ops, now_s=now_s)
    assert plan.fast == set(range(len(ops)))
    answer = await store._run(store._apply, store._apply_args(plan, stale_landmarks))
    assert [x.decode() for x in answer] == ["retry", "landmarks"]
    assert await store.seq() == seq and await client.dbsize() == keys
    # through the public call the plan is rebuilt at the stored landmarks
    result = await store.apply(ops, now_s=now_s)
    assert result.applied == len({r.id for r in rows[100:200]})
    assert await assert_matches_oracle(store, {r.id: r for r in rows[:200]}, now_s, table) > 0
