"""Reads and upkeep of the store: cell details, the time-of-week view,
pruning, ledger retention, native JSON-lines backfill."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import h3
import orjson
import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.store import Store, StoreOp
from streamer.cli import window_hours
from streamer.services.backfill import backfill
from streamer.settings import load_settings
from tests import oracle
from tests.integration.test_store_exact import make_scorer, make_store, to_op
from tests.pipeline_support import redis_key

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=15_000)


async def loaded(client: aioredis.Redis, namespace: str, rows: list[oracle.Row]) -> Store:
    store = make_store(client, namespace)
    scorer = make_scorer(oracle.weights())
    ops = [to_op(scorer, "upsert", r) for r in rows]
    for i in range(0, len(ops), 2000):
        await store.apply(ops[i : i + 2000], now_s=time.time())
    return store


async def test_cell_details_match_the_oracle(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row]
) -> None:
    store = await loaded(client, namespace, rows)
    weights, default = oracle.weights()
    at_s = max(r.t_s for r in rows)
    alive = oracle.live(("upsert", r) for r in rows)
    for ranked in await store.top("month", 9, 5, at_s):
        details = await store.cell(ranked.cell, at_s)
        assert details is not None
        mine = [r for r in alive.values() if h3.latlng_to_cell(r.lat, r.lon, 9) == ranked.cell]
        counted = [r for r in mine if weights.get(r.category, default) > 0]
        assert details.count == len(counted)
        assert details.category_counts == dict(Counter(r.category for r in counted))
        assert details.last_event_s == max(r.t_s for r in counted)
        for name, half_life in store.horizons.items():
            want = math.fsum(
                weights.get(r.category, default) * 2 ** (-(at_s - r.t_s) / half_life)
                for r in counted
            )
            assert details.scores[name] == pytest.approx(want, rel=1e-9)
        # hour-of-week profile (float32, profile horizon = year)
        profile = [0.0] * 168
        for r in counted:
            profile[oracle.hour_of_week(r.t_s, NY)] += weights.get(r.category, default) * 2 ** (
                -(at_s - r.t_s) / store.horizons["year"]
            )
        assert details.hour_of_week == pytest.approx(profile, rel=1e-6, abs=1e-12)
        assert sum(details.family_counts.values()) == details.count


async def test_time_of_week_window_matches_the_oracle(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row]
) -> None:
    store = await loaded(client, namespace, rows)
    weights, default = oracle.weights()
    at_s = max(r.t_s for r in rows)
    hours = window_hours("fri", "22:00", "02:00")
    assert hours == [118, 119, 120, 121]
    got = await store.window(10, hours, 10, at_s)
    want: dict[str, float] = Counter()
    for r in oracle.live(("upsert", r) for r in rows).values():
        w = weights.get(r.category, default)
        if w > 0 and oracle.hour_of_week(r.t_s, NY) in hours:
            cell = h3.latlng_to_cell(r.lat, r.lon, 10)
            want[cell] += w * 2 ** (-(at_s - r.t_s) / store.horizons["year"])
    best = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [g.score for g in got] == pytest.approx([s for _, s in best], rel=1e-5)
    assert {g.cell for g in got[:5]} == {c for c, _ in best[:5]}


async def test_prune_removes_only_what_decayed_to_nothing(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row]
) -> None:
    store = await loaded(client, namespace, rows[:3000])
    newest = max(r.t_s for r in rows[:3000])
    later = newest + 40 * 86400  # 40 days on: day scores are ~1e-12 of what they were
    before_year = await store.top("year", 10, 10**6, later)
    seq = await store.seq()
    removed, deleted = await store.prune(later)
    assert removed > 0 and deleted == 0  # nothing is dead over a year's half-life
    # rankings changed (sizes, ranks, totals): readers' caches keyed by seq must see it
    assert await store.seq() == seq + 1
    assert await store.prune(later) == (0, 0)
    assert await store.seq() == seq + 1  # nothing changed: seq stays
    assert await store.top("day", 10, 10, later) == []
    assert await client.zcard(redis_key(store, "rank", "day", 10)) == 0
    assert await store.top("year", 10, 10**6, later) == before_year
    # 30 years on, even the year horizon has decayed below 1e-3: all gone
    removed, deleted = await store.prune(newest + 30 * 365 * 86400)
    assert deleted > 0
    assert await client.keys(f"{{{namespace}}}:cell:*") == []
    assert await client.keys(f"{{{namespace}}}:how:*") == []


async def test_ledger_forgets_after_retention(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row]
) -> None:
    store = make_store(client, namespace)
    store.ledger_retention_s = 2 * 86400.0
    scorer = make_scorer(oracle.weights())
    day0 = 1_767_225_600.0  # 2026-01-01
    first = [to_op(scorer, "upsert", r) for r in rows[:100]]
    await store.apply(first, now_s=day0)
    dup = await store.apply(first[:10], now_s=day0 + 86400)
    assert dup.duplicate == 10
    assert await store.trim_ledger(day0 + 86400) == 0  # still within retention
    forgotten = await store.trim_ledger(day0 + 4 * 86400)
    assert forgotten == len({o.id for o in first if o.op == "u"})
    assert await client.hlen(redis_key(store, "ledger")) == 0
    late = await store.apply([StoreOp.cancel(first[0].id)], now_s=day0 + 4 * 86400)
    assert late.unknown_cancel == 1 and late.cancelled == 0
    ledger_entry = await store.apply(first[:1], now_s=day0 + 4 * 86400)
    assert ledger_entry.applied == 1  # counted again: documented behaviour


async def test_backfill_of_native_json_lines(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    lines = []
    for r in rows[:2000]:
        lines.append(
            {
                "id": r.id,
                "kind": "incident",
                "occurred_at": datetime.fromtimestamp(r.t_s, UTC).isoformat(),
                "lat": r.lat,
                "lon": r.lon,
                "category": r.category,
            }
        )
    lines.append({"id": rows[0].id, "op": "cancel"})
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    settings = load_settings(environ={}, overrides={"store": {"namespace": namespace}})
    store = app.store(settings, client)
    parts = app.core(settings)
    report = await backfill(
        path,
        None,
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=86400.0,
        batch_max_events=500,
        now_s=time.time(),
    )
    assert report.cancelled == 1 and report.read == 2001
    alive = oracle.live([("upsert", r) for r in rows[:2000]] + [("cancel", rows[0])])
    at_s = max(r.t_s for r in alive.values())
    weights, default = oracle.weights()
    want = oracle.scores(alive.values(), 9, store.horizons["week"], at_s, weights, default)
    best = sorted(want.items(), key=lambda kv: -kv[1])[:10]
    got = await store.top("week", 9, 10, at_s)
    assert [g.cell for g in got] == [c for c, _ in best]
    assert [g.score for g in got] == pytest.approx([s for _, s in best], rel=1e-9)


async def test_positions_of_ranked_and_unranked_cells(
    client: aioredis.Redis, namespace: str, rows: list[oracle.Row]
) -> None:
    store = await loaded(client, namespace, rows[:3000])
    at_s = max(r.t_s for r in rows[:3000])
    ranked = {n: await store.top(n, 9, 10**6, at_s) for n in store.names}
    some = [r.cell for r in ranked["year"][:: max(len(ranked["year"]) // 5, 1)]]
    nowhere = h3.latlng_to_cell(0.5, 0.5, 9)  # no event there
    seq, landmarks, rows_out = await store.positions([(9, c) for c in [*some, nowhere]])
    assert seq == await store.seq()
    assert landmarks == await store.landmarks()
    for cell, per in zip([*some, nowhere], rows_out, strict=True):
        for n in store.names:
            order = [r.cell for r in ranked[n]]
            size = await client.zcard(redis_key(store, "rank", n, 9))
            stored = await client.zscore(redis_key(store, "rank", n, 9), cell)
            if stored is None:
                assert per[n] is None
            else:
                rank, score, n_cells = per[n]  # type: ignore[misc]
                assert (score, n_cells) == (stored, size)
                if cell in order:  # (top leaves out what is below prune_below)
                    assert rank == order.index(cell)
    assert all(v is None for v in rows_out[-1].values())
