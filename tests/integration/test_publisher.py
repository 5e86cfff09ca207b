"""Ranking-change publication: what entered, left or moved, once per change."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis.asyncio as aioredis

from streamer.adapters.publisher import Publisher, channel
from tests import oracle
from tests.integration.test_store_exact import make_scorer, make_store, to_op


async def test_publishes_changes_once_and_survives_a_rebase(
    client: aioredis.Redis, namespace: str
) -> None:
    rows = oracle.read_rows(oracle.SAMPLE, limit=3000)
    store = make_store(client, namespace)
    scorer = make_scorer(oracle.weights())
    at = max(r.t_s for r in rows)
    publisher = Publisher(store, top_n=10, now=lambda: at)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel(store))
    await store.apply([to_op(scorer, "upsert", r) for r in rows[:2000]], now_s=time.time())
    first = await publisher.tick()
    assert first is not None and first["seq"] == await store.seq()
    week10 = first["lists"]["week:10"]
    assert [e[1] for e in week10["entered"]] == list(range(1, 11))
    top = await store.top("week", 10, 10, at)
    assert [e[0] for e in week10["entered"]] == [r.cell for r in top]
    assert [e[2] for e in week10["entered"]] == pytest.approx([r.score for r in top], rel=1e-12)
    assert await publisher.tick() is None  # nothing changed, nothing sent
    # a re-base moves every stored number by a power of two: no list changes
    await store.rebase(at + 200 * 86400)
    quiet = await publisher.tick()
    assert quiet is not None and quiet["lists"] == {}
    await store.apply([to_op(scorer, "upsert", r) for r in rows[2000:]], now_s=time.time())
    second = await publisher.tick()
    assert second is not None and second["seq"] > first["seq"]
    changed = second["lists"]["month:8"]
    assert changed["entered"] or changed["moved"] or changed["left"]
    received = []
    deadline = time.monotonic() + 5
    while len(received) < 3 and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg is not None:
            received.append(orjson.loads(msg["data"]))
        await asyncio.sleep(0)
    assert [m["seq"] for m in received] == [first["seq"], quiet["seq"], second["seq"]]
    await pubsub.aclose()
