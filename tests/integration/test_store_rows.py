"""The store fed upserts in columns (``Rows``, the compiled kernel's output).

The same events as rows or as one op each end in the same store, equal to
the batch oracle: new ids go the fast way, ids repeated in the batch (or
also cancelled in it) go term by term in message order. A plan the store
refuses (ids already ledgered, offsets already applied) is re-planned: the
fast-path tests (``test_store_fast_path.py``) run both ways, through
:func:`apply_batch`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis.asyncio as aioredis

from streamer.adapters.store import ApplyResult, Store, StoreOp
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


async def apply_batch(
    store: Store, ops: list[StoreOp], now_s: float, *, as_rows: bool
) -> ApplyResult:
    """``store.apply(ops)``, or the same batch as the compiled kernel hands
    it on (upserts in rows)."""
    if not as_rows:
        return await store.apply(ops, now_s=now_s)
    kept, positions, rows = split(ops)
    return await store.apply_plan(store.plan(kept, now_s=now_s, rows=rows, positions=positions))


def sourced(ops: list[StoreOp]) -> list[StoreOp]:
    return [StoreOp(o.op, o.id, o.contribution, SOURCE, i) for i, o in enumerate(ops)]


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
        got = await apply_batch(by_rows, ops, now_s, as_rows=True)
        want = await by_ops.apply(ops, now_s=now_s)
        assert dataclasses.replace(got, seq=0) == dataclasses.replace(want, seq=0)
        assert got.cancelled == 1 and got.retracted == 1  # one cancel, one correction
        alive = oracle.live(batch)
        assert await assert_matches_oracle(by_rows, alive, now_s, table) > 0
        assert await assert_matches_oracle(by_ops, alive, now_s, table) > 0
    finally:
        async for key in client.scan_iter(match="{" + namespace + "-ops}*"):
            await client.delete(key)
