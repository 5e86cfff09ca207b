"""Patrol pings published to Kafka, through a real worker process: the
dosage figures, dead letters for bad pings, and an "unvisited" alert that
clears once the hot spot gets its patrol."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

import h3
import orjson
import redis.asyncio as aioredis
from kafka import KafkaProducer

from streamer import app
from streamer.adapters.patrols import Dosage
from streamer.local.broker import LocalBroker
from tests.pipeline_support import dead_letters, redis_key, settings_for
from tests.worker_support import Workers, write_config

RES = 10
A = h3.latlng_to_cell(39.9526, -75.1652, RES)  # City Hall
B = h3.latlng_to_cell(39.9800, -75.1500, RES)  # ~3 km north


def noon_zone() -> str:
    """A fixed-offset zone where it is about midday now, so that the test's
    hour of pings never straddles local midnight."""
    offset = 12 - datetime.now(UTC).hour  # hours east of UTC
    offset = max(min(offset, 12), -11)
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def patrol(unit: str, cell: str, start_s: float, minutes: int) -> list[dict[str, Any]]:
    """A foot patrol: a ping every 10 s within a few metres of the centre."""
    lat, lon = h3.cell_to_latlng(cell)
    rng = random.Random(unit + cell)
    return [
        {
            "unit": unit,
            "at": datetime.fromtimestamp(start_s + 10 * i, UTC).isoformat(),
            "lat": lat + rng.uniform(-3e-5, 3e-5),
            "lon": lon + rng.uniform(-3e-5, 3e-5),
            "status": "patrol",
            "speed": 0.8,
        }
        for i in range(minutes * 6 + 1)
    ]


def publish(bootstrap: str, topic: str, pings: list[dict[str, Any]], bad: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for p in pings:
            producer.send(topic, key=p["unit"].encode(), value=orjson.dumps(p))
        for value in bad:
            producer.send(topic, key=b"P-bad", value=value)
        producer.flush()
    finally:
        producer.close()


async def summary_until(
    client: aioredis.Redis, dosage: Dosage, check: Any, timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        raw = await client.get(redis_key(dosage.store, "dosage", "day", dosage.day_of(time.time())))
        if raw:
            last = orjson.loads(raw)
            if check(last):
                return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"summary never matched: {last}")


async def notices(client: aioredis.Redis, dosage: Dosage) -> list[tuple[str, dict[str, Any]]]:
    entries = await client.xrange(redis_key(dosage.store, "alerts"))
    return [(f[b"kind"].decode(), orjson.loads(f[b"alert"])) for _, f in entries]


async def test_pings_give_dosage_and_an_unvisited_alert_that_clears(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    workers: Workers,
) -> None:
    zone = noon_zone()
    settings = settings_for(
        namespace, broker.bootstrap, redis_url, time={"clock": "wall"}, grid={"timezone": zone}
    )
    topic = f"{namespace}.patrols"
    settings = settings.model_copy(
        update={
            "dosage": settings.dosage.model_copy(
                update={"topic": topic, "interval": 0.3, "late_after_hour": 0}
            )
        }
    )
    app.ensure_topics(settings)
    config = write_config(settings, workers.config)
    config.write_text(
        config.read_text()
        .replace('clock = "event"', 'clock = "wall"')
        .replace("America/New_York", zone)
        + f'[dosage]\ntopic = "{topic}"\ninterval = "0.3s"\nlate_after_hour = 0\n'
    )
    store = app.store(settings, client)
    dosage = Dosage(store, settings)
    await dosage.set_plan(
        {"mode": "list", "cells": [{"cell": A, "units": ["P-101"]}, {"cell": B}]}, time.time()
    )
    # an engine that has read pings since yesterday (the consumer's first
    # mark stays; an engine started today would not judge today's window)
    watch = redis_key(dosage.store, "dosage", "watch")
    await client.hset(watch, "since", repr(time.time() - 86400))
    workers.start()

    now = time.time()
    pings = patrol("P-101", A, now - 20 * 60, 16)  # 16 minutes in A, ending 4 min ago
    shuffled = pings + pings[:30]  # duplicates, then shuffled
    random.Random(1).shuffle(shuffled)
    bad = [b"{not json", orjson.dumps({"unit": "P-9", "at": "yesterday", "lat": 1, "lon": 2})]
    publish(broker.bootstrap, topic, shuffled, bad)

    def a_done(s: dict[str, Any]) -> bool:
        return any(r["cell"] == A and r["visits"] == 1 for r in s["cells"])

    s = await summary_until(client, dosage, a_done)
    assert s["observation"]["observed"] is True, s["observation"]
    assert float(await client.hget(watch, "through") or 0) > now  # the consumer's mark
    rows = {r["cell"]: r for r in s["cells"]}
    assert rows[A]["minutes"] == 16.0
    assert rows[A]["koper_visits"] == 1 and rows[A]["compliant"] is True
    assert rows[A]["units"] == {"P-101": 16.0}
    assert rows[B]["visits"] == 0 and rows[B]["compliant"] is False
    assert s["units"] == {"P-101": 16.0}
    assert (s["covered"], s["planned"]) == (1, 2)

    # B is planned and unvisited, late in its window: an alert for B, and
    # none left for A (it may have had one before its pings were in)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        open_now = [
            orjson.loads(v)
            for v in (await client.hgetall(redis_key(dosage.store, "alerts", "open"))).values()
        ]
        if [a["cells"] for a in open_now] == [[B]]:
            break
        await asyncio.sleep(0.3)
    assert [a["cells"] for a in open_now] == [[B]], open_now
    assert open_now[0]["type"] == "unvisited" and "late" in open_now[0]["reason"]

    # dead letters carry the reason
    letters = await dead_letters(broker.bootstrap, settings.kafka.dead_letter_topic, 2)
    reasons = sorted(h["hotspots.reason"] for h, _ in letters)
    assert reasons == ["bad_json", "bad_time"], reasons

    # P-202 patrols B for 16 minutes: covered, and the alert clears
    publish(broker.bootstrap, topic, patrol("P-202", B, now - 40 * 60, 16), [])
    s = await summary_until(client, dosage, lambda s: s["covered"] == 2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kinds = [(k, a["cells"][0]) for k, a in await notices(client, dosage)]
        if ("cleared", B) in kinds:
            break
        await asyncio.sleep(0.3)
    assert [k for k, c in kinds if c == B] == ["opened", "cleared"], kinds
    assert [k for k, c in kinds if c == A] in ([], ["opened", "cleared"]), kinds
    assert await client.hgetall(redis_key(dosage.store, "alerts", "open")) == {}
