"""The store fed upserts in columns (``Rows``, the compiled kernel's output).

The same events as rows or as one op each end in the same store, equal to
the batch oracle: new ids go the fast way, ids repeated in the batch (or
also cancelled in it) go term by term in message order, and a plan the store
refuses (ids already ledgered, offsets already applied) is re-planned.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from streamer.adapters.store import Store, StoreOp
from streamer.core.aggregate import batch_of
from streamer.core.batching import Rows
from tests import oracle
from tests.integration.test_store_exact import (
    assert_matches_oracle,
    make_scorer,
    make_store,
    to_op,
)

SOURCE = "events:0"


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=3000)


def split(ops: list[StoreOp]) -> tuple[list[StoreOp], list[int], Rows | None]:
    """A batch as the compiled kernel hands it on: upserts in columns, the
    other ops with their positions. Each op's position is its index; it
    keeps its source and offset."""
    kept, positions, upserts = [], [], []
    for i, o in enumerate(ops):
        if o.op == "u" and o.contribution is not None:
            upserts.append((i, o))
        else:
            kept.append(o)
            positions.append(i)
    if not upserts:
        return kept, positions, None
    contributions = [o.contribution for _, o in upserts if o.contribution is not None]
    rows = Rows(
        np.array([i for i, _ in upserts], dtype=np.int64),
        [o.id for _, o in upserts],
        [c.packed() for c in contributions],
        [o.source for _, o in upserts],
        np.array([o.offset for _, o in upserts], dtype=np.int64),
        batch_of(contributions),
    )
    return kept, positions, rows


async def apply_as_rows(store: Store, ops: list[StoreOp], now_s: float) -> tuple[int, ...]:
    kept, positions, rows = split(ops)
    result = await store.apply_plan(store.plan(kept, now_s=now_s, rows=rows, positions=positions))
    return (result.applied, result.duplicate, result.cancelled, result.stale, result.retracted)


def sourced(ops: list[StoreOp], first_offset: int = 0) -> list[StoreOp]:
    return [
        StoreOp(o.op, o.id, o.contribution, SOURCE, first_offset + i) for i, o in enumerate(ops)
    ]


def test_a_row_is_the_op_it_stands_for(
    rows: list[oracle.Row], table: tuple[dict[str, float], float]
) -> None:
    scorer = make_scorer(table)
    ops = sourced([to_op(scorer, "upsert", r) for r in rows[:300]])
    _, _, columns = split(ops)
    assert columns is not None
    upserts = [o for o in ops if o.op == "u"]
    assert [columns.op(k) for k in range(len(columns))] == upserts
    half = np.arange(len(columns)) % 2 == 0
    assert [columns.take(half).op(k) for k in range(int(half.sum()))] == upserts[::2]


async def test_rows_and_ops_end_in_the_same_store(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    by_rows, by_ops = make_store(client, namespace), make_store(client, namespace + "-ops")
    now_s = max(r.t_s for r in rows) + 60
    try:
        # new ids, an id upserted twice, an id upserted then cancelled, an id
        # cancelled then upserted (unknown cancel first), an excluded one
        batch = [
            *(("upsert", r) for r in rows[:1500]),
            ("upsert", rows[10].moved(0.01, "Robbery Firearm")),
            ("cancel", rows[20]),
            ("cancel", rows[1600]),
            ("upsert", rows[1600]),
        ]
        ops = sourced([to_op(scorer, op, r) for op, r in batch])
        got = await apply_as_rows(by_rows, ops, now_s)
        want = await by_ops.apply(ops, now_s=now_s)
        assert got == (want.applied, want.duplicate, want.cancelled, want.stale, want.retracted)
        assert got[2] == 1 and got[4] == 1  # one cancel, one correction
        alive = oracle.live(batch)
        assert await assert_matches_oracle(by_rows, alive, now_s, table) > 0
        assert await assert_matches_oracle(by_ops, alive, now_s, table) > 0
    finally:
        async for key in client.scan_iter(match="{" + namespace + "-ops}*"):
            await client.delete(key)


async def test_rows_of_known_ids_are_replanned_term_by_term(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    now_s = max(r.t_s for r in rows[:2000]) + 60
    first = sourced([to_op(scorer, "upsert", r) for r in rows[:1000]])
    assert (await apply_as_rows(store, first, now_s))[0] == len({r.id for r in rows[:1000]})
    moved = [r.moved(0.01, "Robbery Firearm") for r in rows[:50]]
    later = sourced(
        [to_op(scorer, "upsert", r) for r in [*rows[1000:2000], *moved]], first_offset=1000
    )
    applied, _, _, _, retracted = await apply_as_rows(store, later, now_s)
    assert retracted == 50
    assert applied == len({r.id for r in rows[1000:2000]}) + 50
    alive = {r.id: r for r in rows[:2000]}
    alive.update({r.id: r for r in moved})
    assert await assert_matches_oracle(store, alive, now_s, table) > 0


async def test_redelivered_rows_are_stale(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    scorer = make_scorer(table)
    store = make_store(client, namespace)
    now_s = max(r.t_s for r in rows[:600]) + 60
    await apply_as_rows(store, sourced([to_op(scorer, "upsert", r) for r in rows[:400]]), now_s)
    # offsets 200..599: the first half was applied, the second is new
    overlap = sourced([to_op(scorer, "upsert", r) for r in rows[200:600]], first_offset=200)
    applied, _, _, stale, _ = await apply_as_rows(store, overlap, now_s)
    assert stale == 200
    assert applied == len({r.id for r in rows[400:600]})
    assert await client.hget(store.key("offsets"), SOURCE) == b"599"
    assert await assert_matches_oracle(store, {r.id: r for r in rows[:600]}, now_s, table) > 0
