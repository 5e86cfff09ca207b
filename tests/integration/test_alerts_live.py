"""An injected cluster, published to Kafka, through a real worker process:
exactly one alert on the stream, the Kafka topic and the push channel, and
it clears when the cluster stops."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import h3
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer import app
from streamer.local.broker import LocalBroker
from tests import oracle
from tests.pipeline_support import publish, redis_key, settings_for, wait_applied
from tests.worker_support import Workers, write_config

RES = 9


def quiet_cell(rows: list[oracle.Row]) -> str:
    """A cell inside the city (it has an event) with the fewest events
    within two steps: the cluster goes there."""
    counts = Counter(h3.latlng_to_cell(r.lat, r.lon, RES) for r in rows)

    def around(cell: str) -> int:
        return sum(counts.get(c, 0) for c in h3.grid_disk(cell, 2))

    return min(sorted(counts), key=around)


def near(alert: dict[str, Any], cell: str) -> bool:
    return any(h3.grid_distance(c, cell) <= 2 for c in alert["cells"])


async def topic_notices(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Everything on the alerts topic so far (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out += [orjson.loads(r.value or b"{}") for r in records]
            if await consumer.position(tp) >= end:
                break
        return out
    finally:
        await consumer.stop()


async def stream_notices(client: aioredis.Redis, key: str) -> list[dict[str, Any]]:
    entries = await client.xrange(key)
    return [
        {"kind": f[b"kind"].decode(), "id": f[b"id"].decode(), "alert": orjson.loads(f[b"alert"])}
        for _, f in entries
    ]


async def wait_for(
    client: aioredis.Redis, key: str, kind: str, cell: str, timeout_s: float = 90
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        notices = [n for n in await stream_notices(client, key) if near(n["alert"], cell)]
        if any(n["kind"] == kind for n in notices):
            return notices
        await asyncio.sleep(0.3)
    raise AssertionError(f"no {kind} notice near {cell} on {key}")


async def test_injected_cluster_alerts_once_everywhere_and_clears(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    workers: Workers,
) -> None:
    rows = oracle.read_rows(oracle.SAMPLE, limit=12_000)
    background, later = rows[:9000], rows[9000:]
    settings = settings_for(namespace, broker.bootstrap, redis_url)
    topic = f"{namespace}.alerts"
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"topic": topic})}
    )
    app.ensure_topics(settings)
    config = write_config(settings, workers.config)
    config.write_text(
        config.read_text()
        + f'[alerts]\ninterval = "0.3s"\narea_refresh = "1s"\ntopic = "{topic}"\n'
    )
    store = app.store(settings, client)
    k = settings.kafka
    workers.start()
    sent = publish(k.bootstrap, k.incidents_topic, [("upsert", r) for r in background])
    await wait_applied(store, sent.last_offsets)

    target = quiet_cell(background)
    lat, lon = h3.cell_to_latlng(target)
    t = background[-1].t_s
    cluster = [
        replace(background[0], id=f"cluster-{i}", t_s=t + 600 * i, lat=lat, lon=lon)
        for i in range(4)
    ]
    pubsub = client.pubsub()
    await pubsub.subscribe(redis_key(store, "alerts", "live"))
    sent = publish(k.bootstrap, k.incidents_topic, [("upsert", r) for r in cluster])
    await wait_applied(store, sent.last_offsets)
    opened = await wait_for(client, redis_key(store, "alerts"), "opened", target)
    alert_id = next(n["id"] for n in opened if n["kind"] == "opened")
    alert = next(n["alert"] for n in opened if n["kind"] == "opened")
    assert alert["observed"] >= 3.5 and alert["expected"] < 1.0, alert
    assert alert["p_value"] < 1e-4 and alert["pattern"] == "new"
    assert alert["top_categories"][0][0] == background[0].category
    open_now = await client.hgetall(redis_key(store, "alerts", "open"))
    assert alert_id.encode() in open_now

    # the cluster stops; the city goes on for another day and a half
    tail = [r for r in later if r.t_s > cluster[-1].t_s][:3000]
    assert tail[-1].t_s - cluster[-1].t_s > 13 * 3600
    sent = publish(k.bootstrap, k.incidents_topic, [("upsert", r) for r in tail])
    await wait_applied(store, sent.last_offsets)
    notices = await wait_for(client, redis_key(store, "alerts"), "cleared", target)

    # one alert for the cluster: opened once, cleared once, on every channel
    ours = [n for n in notices if n["id"] == alert_id]
    assert next(n["kind"] for n in ours) == "opened" and [n["kind"] for n in ours][-1] == "cleared"
    assert Counter(n["kind"] for n in ours)["opened"] == 1
    assert {n["id"] for n in notices} == {alert_id}, "another alert near the cluster"
    assert alert_id.encode() not in await client.hgetall(redis_key(store, "alerts", "open"))

    pushed: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(m.get("kind") == "cleared" for m in pushed):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg is not None:
            body = orjson.loads(msg["data"])
            if near(body["alert"], target):
                pushed.append(body)
    await pubsub.aclose()
    assert [m["kind"] for m in pushed] == [n["kind"] for n in ours]
    assert {m["alert"]["id"] for m in pushed} == {alert_id}

    deadline = time.monotonic() + 30
    on_topic: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        on_topic = [
            m for m in await topic_notices(k.bootstrap, topic) if m["alert"]["id"] == alert_id
        ]
        if any(m["kind"] == "cleared" for m in on_topic):
            break
        await asyncio.sleep(0.5)
    assert [m["kind"] for m in on_topic] == [n["kind"] for n in ours]
    assert len({m["stream_id"] for m in on_topic}) == len(on_topic)
