"""The store's cancels: by id while the ledger holds the event, by the
record's own fields after, never twice, and never for an event it does not
hold (real Redis, real records, the batch oracle)."""

from __future__ import annotations

import h3
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
from tests.pipeline_support import redis_key


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=4000)


def fielded(scorer, row: oracle.Row) -> StoreOp:  # type: ignore[no-untyped-def]
    upsert = to_op(scorer, "upsert", row)
    assert upsert.contribution is not None
    return StoreOp.retract(upsert.contribution)


async def test_cancels_by_id_then_by_fields_once_each(
    client: aioredis.Redis,
    namespace: str,
    rows: list[oracle.Row],
    table: tuple[dict[str, float], float],
) -> None:
    store = make_store(client, namespace)
    store.ledger_retention_s = 86400.0
    scorer = make_scorer(table)
    alive = oracle.live(("upsert", r) for r in rows)
    events = [r for r in alive.values() if table[0].get(r.category, table[1]) > 0]
    day0 = max(r.t_s for r in rows) + 3600
    await store.apply([to_op(scorer, "upsert", r) for r in alive.values()], now_s=day0)
    meta = await client.hmget(redis_key(store, "meta"), ["watermark", "first_t"])

    # within the ledger: by id, whether or not the record carries its fields
    by_id = await store.apply(
        [StoreOp.cancel(r.id) for r in events[:40]] + [fielded(scorer, r) for r in events[40:60]],
        now_s=day0,
    )
    assert (by_id.cancelled, by_id.cancelled_by_fields, by_id.unknown_cancel) == (60, 0, 0)

    held = await store.ledger_holds([r.id for r in events[:100]])
    assert held.tolist() == [False] * 60 + [True] * 40  # a tombstone holds nothing
    again = await store.apply(
        [fielded(scorer, r) for r in events[:40]] + [StoreOp.cancel(r.id) for r in events[40:60]],
        now_s=day0,
    )
    assert (again.cancel_repeated, again.cancelled, again.cancelled_by_fields) == (60, 0, 0)

    # the ledger forgets; a cancel carrying its fields still applies, exactly
    assert await store.trim_ledger(day0 + 5 * 86400) > 0
    assert not (await store.ledger_holds([r.id for r in events[:100]])).any()
    late = await store.apply([fielded(scorer, r) for r in events[100:400]], now_s=day0 + 5 * 86400)
    assert (late.cancelled, late.cancelled_by_fields, late.unknown_cancel) == (0, 300, 0)
    bare = await store.apply([StoreOp.cancel(r.id) for r in events[400:410]], now_s=day0)
    assert (bare.cancelled, bare.unknown_cancel) == (0, 10)

    # again: each was applied once already (tombstones, kept as long as the ledger keeps ids)
    again = await store.apply(
        [fielded(scorer, r) for r in events[100:250]]
        + [StoreOp.cancel(r.id) for r in events[250:400]],
        now_s=day0 + 5 * 86400,
    )
    assert (again.cancel_repeated, again.cancelled, again.cancelled_by_fields) == (300, 0, 0)

    # an event it never held: not taken out, even where its cells exist
    # (a category none of the finest cell's events has)
    def cell10(r: oracle.Row) -> str:
        return str(h3.latlng_to_cell(r.lat, r.lon, 10))

    present: dict[str, set[str]] = {}
    for r in alive.values():
        present.setdefault(cell10(r), set()).add(r.category)
    counting = sorted(c for c, w in table[0].items() if w > 0)
    never = [
        oracle.Row(
            "never-" + r.id,
            r.t_s,
            r.lat,
            r.lon,
            next(c for c in counting if c not in present[cell10(r)]),
        )
        for r in events[500:520]
    ]
    nowhere = oracle.Row("never-x", events[0].t_s, 40.3, -75.9, "Thefts")
    odd = await store.apply([fielded(scorer, r) for r in [*never, nowhere]], now_s=day0)
    assert (odd.cancelled_by_fields, odd.unknown_cancel) == (0, len(never) + 1)

    for r in [*events[:60], *events[100:400]]:
        del alive[r.id]
    await assert_matches_oracle(store, alive, day0, table)
    # cancels move neither the watermark nor the start of the history
    assert await client.hmget(redis_key(store, "meta"), ["watermark", "first_t"]) == meta

    # an upsert of a cancelled id counts as new
    back = await store.apply([to_op(scorer, "upsert", events[0])], now_s=day0)
    assert back.applied == 1 and back.retracted == 0
    alive[events[0].id] = events[0]
    await assert_matches_oracle(store, alive, day0, table)
