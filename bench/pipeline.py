"""Benchmark: the live pipeline, Kafka in, Redis out, side by side in one run.

    .venv/bin/python -m bench.pipeline [--events N] [--runs R] [--agent-events M]
        [--max-seconds T] [--latency-seconds S] [--rate E] [--diag-fetch-wait-ms W]
        [--profile]

On one local Tansu broker (``LocalBroker``, in-memory, 127.0.0.1) and the
local Redis, with real events (``data/philadelphia_2025.csv.gz`` as native
JSON, orjson, keyed by id; the sample's 148 k events repeated with new ids
when N is larger), published once before anything is timed:

1. **raw ceiling**: a plain aiokafka ``getmany`` loop reading the N events
   (no group, same fetch settings and ``max_records`` as the engine), no
   processing; msgs/s from the first batch to the last.
2. **engine**: one ``BatchConsumer`` built by ``streamer.services.worker.build()``
   (default settings, fresh group and namespace) reading the same topic from
   the beginning until the store holds all N, or ``--max-seconds`` (40)
   after its first batch if it is slower than that (so the whole run stays
   near 5 minutes on 2 cores); events/s Kafka to Redis from the start of the
   first batch to the end of the last, Redis writes included. The group join
   (``start()`` to first batch; Tansu answers a JoinGroup after about half
   the session timeout, 10 s by default) is reported apart.
3. **per-event faust agent**: what most people would write, a faust worker
   (subprocess) with ``async for value in stream`` that parses, scores and
   writes each event with ``store.apply([op])`` (one store call per event);
   M events (default 20 k) or ``--max-seconds``, first to last event inside
   the agent.
4. **latency**: a paced producer (``--rate`` events/s for ``--latency-seconds``;
   each event stamped with the time it is sent, as a live feed's are: with
   ``--latency-times replayed`` the sample's own times, two months of event
   time in 15 s, so that re-bases, once in 64 days live, happen during the run)
   while an engine worker (subprocess: ``BatchConsumer`` plus
   ``Publisher.tick()`` every 100 ms, one event loop like the real worker)
   consumes. "publish to visible" = from the producer's ``send`` to the first
   poll (every ~2 ms) of ``{ns}:offsets`` showing the event's offset applied.
   "publish to pub/sub" = from ``send`` to the first message on the updates
   channel whose ``seq`` covers the batch that applied it. A second,
   diagnostic run sets aiokafka's ``fetch_max_wait_ms`` (``--diag-fetch-wait-ms``,
   20; 0 skips it): Tansu holds a fetch for up to that long (500 ms by
   default) even while records arrive, which dominates the latency.

Medians over ``--runs`` for 1 and 2 (run alternately), one run of 3 and 4.
Writes ``bench/results/latest-pipeline.json``. Every Redis key written lives
under ``{bench-pipe-...}`` namespaces and is deleted (SCAN + UNLINK).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.common import ROOT, drop_namespace, read_marker, spawn, stop_child, tail
from streamer.adapters import keys

SAMPLE = ROOT / "streamer" / "data" / "philadelphia_2025.csv.gz"
RESULTS = ROOT / "bench" / "results" / "latest-pipeline.json"
REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 4
TOPICS = {
    "incidents_topic": "bench.incidents",
    "calls_topic": "bench.calls",
    "dead_letter_topic": "bench.dead-letter",
}
LATENCY_TOPICS = {
    "incidents_topic": "bench.latency.incidents",
    "calls_topic": "bench.latency.calls",
    "dead_letter_topic": "bench.latency.dead-letter",
}
TARGETS = {
    "engine_events_per_s": 100_000,
    "engine_over_raw": 0.25,
    "engine_over_agent": 7.0,
    "p99_visible_ms": 250.0,
}


def log(message: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def load_values(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) pairs of real events; ids made unique past the sample."""
    from streamer.adapters.files import iter_records, load_profile

    base = list(iter_records(SAMPLE, load_profile("philadelphia")))
    out: list[tuple[bytes, bytes]] = []
    for i in range(n):
        lap, j = divmod(i, len(base))
        rec = base[j]
        if lap:
            rec = {**rec, "id": f"{rec['id']}-r{lap}"}
        out.append((str(rec["id"]).encode(), orjson.dumps(rec)))
    return out


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key)."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def publish_all(bootstrap: str, topic: str, items: Sequence[tuple[bytes, bytes]]) -> float:
    """Publish ``items`` keyed by id in big batches; returns seconds taken."""
    _, seconds = await publish_backlog(bootstrap, topic, items, PARTITIONS)
    return seconds


async def publish_backlog(
    bootstrap: str, topic: str, items: Sequence[tuple[bytes, bytes]], partitions: int
) -> tuple[dict[str, int], float]:
    """Publish ``items`` keyed by id in big batches, each to the partition
    Kafka's default partitioner picks; returns the last offset per
    ``topic:partition`` and the seconds taken."""
    from aiokafka import AIOKafkaProducer

    by_part: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for key, value in items:
        by_part[partition_of(key, partitions)].append((key, value))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    last: dict[str, int] = {}
    try:
        sent: list[tuple[asyncio.Future[Any], int]] = []
        for part, rows in enumerate(by_part):
            batch = producer.create_batch()
            for key, value in rows:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    count = batch.record_count()
                    sent.append((await producer.send_batch(batch, topic, partition=part), count))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            if batch.record_count():
                count = batch.record_count()
                sent.append((await producer.send_batch(batch, topic, partition=part), count))
        for future, count in sent:
            meta = await future  # offset: the batch's first record
            source = f"{meta.topic}:{meta.partition}"
            last[source] = max(last.get(source, -1), int(meta.offset) + count - 1)
    finally:
        await producer.stop()
    return last, time.monotonic() - started


# --------------------------------------------------------------------------- redis


def engine_settings(
    namespace: str, bootstrap: str, group: str, topics: dict[str, str], redis_url: str
) -> Any:
    from streamer.settings import load_settings

    return load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "kafka": {"bootstrap": bootstrap, "group": group, **topics},
        }
    )


# --------------------------------------------------------------------------- 1. raw


async def measure_raw(bootstrap: str, topic: str, n: int, max_records: int) -> dict[str, Any]:
    """A plain getmany loop over the N events: msgs/s, no processing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamer.adapters.consumer import ConsumerOptions

    o = ConsumerOptions()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=o.fetch_max_bytes,
        max_partition_fetch_bytes=o.max_partition_fetch_bytes,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        seen = 0
        first = last = 0.0
        nbytes = 0
        batches = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=o.poll_timeout_ms, max_records=max_records)
            if not batch:
                continue
            if not first:
                first = time.monotonic()
            for records in batch.values():
                seen += len(records)
                for r in records:
                    nbytes += len(r.value)
            batches += 1
            last = time.monotonic()
    finally:
        await consumer.stop()
    seconds = last - first
    return {
        "events": seen,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(seen / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 1),
        "batches": batches,
    }


# --------------------------------------------------------------------------- 2. engine


async def measure_engine(
    bootstrap: str,
    n: int,
    run: int,
    redis_url: str,
    max_seconds: float = 1e9,
    profile: bool = False,
) -> dict[str, Any]:
    """One BatchConsumer, as the worker builds it, until the store holds N
    (or ``max_seconds`` after the first batch, to bound a slow engine)."""
    from streamer.services.worker import build

    namespace = f"bench-pipe-engine-{run}"
    settings = engine_settings(namespace, bootstrap, namespace, TOPICS, redis_url)
    _fapp, consumer, metrics = build(settings)  # the faust app is not started
    store = consumer.store
    await drop_namespace(store.client, namespace)
    done = asyncio.Event()
    stamps: dict[str, float] = {}
    count = {"events": 0, "batches": 0}
    batch_s: list[float] = []
    original = consumer._write  # the store write + commit of one prepared batch

    async def timed(batch: dict[Any, list[Any]], step: Any, started: float) -> None:
        t0 = started  # when the batch was polled, before its preparation
        stamps.setdefault("first", t0)
        await original(batch, step, started)
        t1 = time.monotonic()
        stamps["last"] = t1
        batch_s.append(t1 - t0)
        count["events"] += sum(len(r) for r in batch.values())
        count["batches"] += 1
        if count["events"] >= n or t1 - stamps["first"] >= max_seconds:
            done.set()
            await consumer.stop()

    consumer._write = timed  # type: ignore[method-assign]
    profiler = None
    t_start = time.monotonic()
    await consumer.start()
    t_started = time.monotonic()
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
        await task
    finally:
        if profiler is not None:
            profiler.disable()
        if not task.done():
            await consumer.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await consumer.close()
    offsets = await store.client.hgetall(keys.offsets(store.prefix))
    applied_by_offsets = sum(int(v) + 1 for v in offsets.values())
    outcome = {
        s.labels["outcome"]: s.value
        for m in metrics.events.collect()
        for s in m.samples
        if s.name == "hotspots_events_total"
    }
    seconds = stamps["last"] - stamps["first"]
    store_s = sum(
        s.value
        for m in metrics.store_seconds.collect()
        for s in m.samples
        if s.name.endswith("_sum")
    )
    await drop_namespace(store.client, namespace)
    await store.client.aclose()
    out: dict[str, Any] = {
        "events": count["events"],
        "stopped_by": "count" if count["events"] >= n else f"time cap {max_seconds:g} s",
        "events_per_s": round(count["events"] / seconds),
        "seconds": round(seconds, 3),
        "join_delay_s": round(stamps["first"] - t_start, 2),
        "start_s": round(t_started - t_start, 2),
        "batches": count["batches"],
        "batch_ms_median": round(statistics.median(batch_s) * 1000, 1),
        "store_write_share": round(store_s / sum(batch_s), 3),
        "store_offsets_applied": applied_by_offsets,
        "outcomes": {k: int(v) for k, v in outcome.items() if v},
    }
    if profiler is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(30)
        out["profile"] = buf.getvalue()
    return out


# --------------------------------------------------------------------------- 3. faust agent


def _agent_child(cfg: dict[str, Any]) -> None:
    """Subprocess: a faust worker with one per-event agent (see module doc)."""
    import faust
    from faust.worker import Worker

    from streamer import app as wiring
    from streamer.core.events import Cancel, InvalidEvent, parse_record
    from streamer.core.scoring import StoreOp

    settings = engine_settings(
        cfg["namespace"], cfg["bootstrap"], cfg["namespace"], TOPICS, cfg["redis_url"]
    )
    store = wiring.store(settings)
    parts = wiring.core(settings)
    rules, scorer = parts.rules, parts.scorer
    fapp = faust.App(
        cfg["namespace"],
        broker=f"kafka://{cfg['bootstrap']}",
        store="memory://",
        datadir=cfg["datadir"],
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=PARTITIONS,
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.3,
        broker_rebalance_timeout=2.0,
        broker_request_timeout=30.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
    )
    topic = fapp.topic(TOPICS["incidents_topic"], key_serializer="raw", value_serializer="raw")
    limit = int(cfg["events"])
    cap_s = float(cfg["max_seconds"])
    state: dict[str, Any] = {"n": 0, "first": None}
    spawned = float(cfg["spawned"])

    @fapp.agent(topic)
    async def score(stream: Any) -> None:
        async for value in stream:
            if state["n"] >= limit:
                continue
            msg = stream.current_event.message
            source = f"{msg.topic}:{msg.partition}"
            now = time.time()
            if state["first"] is None:
                state["first"] = time.monotonic()
                state["first_wall"] = now
            try:
                record = parse_record(value, rules, now_s=now)
            except InvalidEvent:
                op = StoreOp("n", "", None, source, msg.offset)
            else:
                if isinstance(record, Cancel):
                    op = StoreOp("c", record.id, None, source, msg.offset)
                else:
                    c = scorer.contribution(record)
                    if c is None:
                        op = StoreOp("x", record.id, None, source, msg.offset)
                    else:
                        op = StoreOp("u", record.id, c, source, msg.offset)
            await store.apply([op], now_s=now)
            state["n"] += 1
            seconds = time.monotonic() - state["first"]
            if state["n"] == limit or seconds >= cap_s:
                done = state["n"]
                state["n"] = limit  # ignore the rest while the worker stops
                result = {
                    "events": done,
                    "stopped_by": "count" if done == limit else f"time cap {cap_s:g} s",
                    "seconds": round(seconds, 3),
                    "events_per_s": round((done - 1) / seconds) if seconds else 0,
                    "spawn_to_first_event_s": round(state["first_wall"] - spawned, 2),
                }
                os.write(1, b"RESULT " + orjson.dumps(result) + b"\n")
                os.kill(os.getpid(), signal.SIGTERM)

    Worker(fapp, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


async def measure_agent(
    bootstrap: str, events: int, run: int, redis_url: str, workdir: Path, max_seconds: float
) -> dict[str, Any]:
    namespace = f"bench-pipe-agent-{run}"
    client = aioredis.Redis.from_url(redis_url)
    await drop_namespace(client, namespace)
    datadir = workdir / f"faust-{run}"
    log_path = workdir / f"agent-{run}.log"
    cfg = {
        "namespace": namespace,
        "bootstrap": bootstrap,
        "redis_url": redis_url,
        "events": events,
        "max_seconds": max_seconds,
        "datadir": str(datadir),
        "spawned": time.time(),
    }
    proc = await spawn("bench.pipeline", "_agent", cfg, log_path)
    try:
        raw = await read_marker(proc, b"RESULT ", timeout=240)
    finally:
        code = await stop_child(proc)
        await drop_namespace(client, namespace)
        await client.aclose()
    if raw is None:
        raise RuntimeError(f"faust agent gave no result (exit {code}); log:\n{tail(log_path)}")
    result: dict[str, Any] = orjson.loads(raw)
    result["exit_code"] = code
    return result


# --------------------------------------------------------------------------- 4. latency


async def _engine_child(cfg: dict[str, Any]) -> None:
    """Subprocess: a worker's batch consumer and a 100 ms Publisher tick,
    one event loop, until SIGTERM."""
    from streamer.adapters.publisher import Publisher
    from streamer.adapters.store import EngineClock
    from streamer.services.worker import build

    settings = engine_settings(
        cfg["namespace"], cfg["bootstrap"], cfg["namespace"], cfg["topics"], cfg["redis_url"]
    )
    _fapp, consumer, _metrics = build(settings)
    if cfg.get("fetch_max_wait_ms"):  # diagnostic only: not what build() configures
        consumer.options.extra["fetch_max_wait_ms"] = int(cfg["fetch_max_wait_ms"])
    store = consumer.store
    publisher = Publisher(store, settings.publish.top_n, EngineClock(store, settings.time.clock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    t0 = time.monotonic()
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    assert consumer.consumer is not None
    while not consumer.consumer.assignment():
        await asyncio.sleep(0.02)
    joined = time.monotonic() - t0
    os.write(1, b"READY\n")
    interval = float(cfg["tick_s"])
    ticks = published = 0
    tick_s: list[float] = []
    while not stop.is_set():
        t = time.monotonic()
        if await publisher.tick() is not None:
            published += 1
        ticks += 1
        tick_s.append(time.monotonic() - t)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - t)))
    await consumer.stop()
    await task
    await consumer.close()
    await store.client.aclose()
    stats = {
        "join_s": round(joined, 2),
        "ticks": ticks,
        "messages": published,
        "tick_ms_median": round(statistics.median(tick_s) * 1000, 1) if tick_s else None,
        "batches": consumer.batches,
    }
    os.write(1, b"STATS " + orjson.dumps(stats) + b"\n")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def measure_latency(
    bootstrap: str,
    items: Sequence[tuple[bytes, bytes]],
    rate: float,
    seconds: float,
    run: int,
    redis_url: str,
    workdir: Path,
    fetch_max_wait_ms: int | None = None,
    live_times: bool = True,
) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from streamer.adapters.broker import ensure_topics
    from streamer.adapters.publisher import channel
    from streamer.adapters.store import Store

    namespace = f"bench-pipe-latency-{run}"
    topics = {k: f"{v}.{run}" for k, v in LATENCY_TOPICS.items()}
    ensure_topics(
        bootstrap,
        {
            topics["incidents_topic"]: PARTITIONS,
            topics["calls_topic"]: PARTITIONS,
            topics["dead_letter_topic"]: 1,
        },
    )
    topic = topics["incidents_topic"]
    client = aioredis.Redis.from_url(redis_url)
    await drop_namespace(client, namespace)
    key_store = Store(
        client, namespace=namespace, horizons={"x": 1.0}, resolutions=[8], profile_horizon="x"
    )
    offsets_key, meta_key = keys.offsets(key_store.prefix), keys.meta(key_store.prefix)
    # transitions[p] = ([applied offsets...], [(t, seq)...]) in poll order
    transitions: dict[int, tuple[list[int], list[tuple[float, int]]]] = {
        p: ([], []) for p in range(PARTITIONS)
    }
    messages: list[tuple[int, float]] = []  # (seq, receive time)
    polling = asyncio.Event()
    polls = {"n": 0}

    async def poll() -> None:
        while not polling.is_set():
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(offsets_key)
                pipe.hget(meta_key, "seq")
                offs, seq_raw = await pipe.execute()
            t = time.monotonic()
            polls["n"] += 1
            seq = int(seq_raw or 0)
            for k, v in offs.items():
                p = int(k.rsplit(b":", 1)[1])
                applied = int(v)
                seen, when = transitions[p]
                if not seen or applied > seen[-1]:
                    seen.append(applied)
                    when.append((t, seq))
            await asyncio.sleep(0.002)

    pubsub = client.pubsub()
    await pubsub.subscribe(channel(key_store))

    async def listen() -> None:
        while not polling.is_set():
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None and msg["type"] == "message":
                t = time.monotonic()
                messages.append((int(orjson.loads(msg["data"])["seq"]), t))

    cfg = {
        "namespace": namespace,
        "bootstrap": bootstrap,
        "redis_url": redis_url,
        "tick_s": 0.1,
        "topics": topics,
        "fetch_max_wait_ms": fetch_max_wait_ms,
    }
    log_path = workdir / f"engine-{run}.log"
    proc = await spawn("bench.pipeline", "_engine", cfg, log_path)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    tasks: list[asyncio.Task[None]] = []
    try:
        if await read_marker(proc, b"READY", timeout=60) is None:
            raise RuntimeError(f"engine worker not ready; log:\n{tail(log_path)}")
        await producer.start()
        tasks = [asyncio.create_task(poll()), asyncio.create_task(listen())]
        await asyncio.sleep(0.5)  # the first fetch after the join
        total = int(rate * seconds)
        sent: list[tuple[float, Any]] = []
        started = time.monotonic()
        i = 0
        while i < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while i < due:
                _key, value = items[i % len(items)]
                rec = orjson.loads(value)
                rec["id"] = f"lat{run}-{i}-{rec['id']}"
                if live_times:  # as a live feed: the event happened now
                    rec["occurred_at"] = datetime.now(UTC).isoformat()
                t = time.monotonic()
                fut = await producer.send(topic, orjson.dumps(rec), key=rec["id"].encode())
                sent.append((t, fut))
                i += 1
            await asyncio.sleep(0.001)
        publish_s = time.monotonic() - started
        metas = await asyncio.gather(*(f for _, f in sent))
        last: dict[int, int] = {}
        for m in metas:
            last[m.partition] = max(last.get(m.partition, -1), m.offset)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen_all = all(
                transitions[p][0] and transitions[p][0][-1] >= o for p, o in last.items()
            )
            if seen_all:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last tick's message
    finally:
        polling.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        await producer.stop()
        code = await stop_child(proc)
        stats_raw = None
        if proc.stdout is not None:
            rest = await proc.stdout.read()
            for line in rest.splitlines():
                if b"STATS " in line:
                    stats_raw = line[line.find(b"STATS ") + 6 :]
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await drop_namespace(client, namespace)
        await client.aclose()
    visible: list[float] = []
    to_pubsub: list[float] = []
    late: list[float] = []  # events sent after the first 2 s (warm-up excluded)
    by_window: dict[int, list[float]] = {}  # 5 s windows of send time: is a queue growing?
    missing = 0
    msg_seqs = [s for s, _ in messages]
    for (t_send, _), m in zip(sent, metas, strict=True):
        seen, when = transitions[m.partition]
        j = bisect.bisect_left(seen, m.offset)
        if j == len(seen):
            missing += 1
            continue
        t_vis, seq = when[j]
        visible.append((t_vis - t_send) * 1000)
        if t_send - started >= 2.0:
            late.append(visible[-1])
        by_window.setdefault(int((t_send - started) // 5), []).append(visible[-1])
        k = bisect.bisect_left(msg_seqs, seq)
        if k < len(messages):
            to_pubsub.append((messages[k][1] - t_send) * 1000)
    stats = orjson.loads(stats_raw) if stats_raw else {}
    return {
        "fetch_max_wait_ms": fetch_max_wait_ms or "aiokafka default (500), as build() configures",
        "events": len(sent),
        "rate_target": rate,
        "rate_achieved": round(len(sent) / publish_s),
        "not_visible": missing,
        "visible_ms": {
            "p50": round(_pct(visible, 0.5), 1),
            "p99": round(_pct(visible, 0.99), 1),
            "max": round(max(visible), 1) if visible else None,
        },
        "visible_ms_after_2s": {
            "p50": round(_pct(late, 0.5), 1),
            "p99": round(_pct(late, 0.99), 1),
            "events": len(late),
        },
        "visible_p50_ms_by_5s_window": [round(_pct(v, 0.5)) for _, v in sorted(by_window.items())],
        "pubsub_ms": {
            "p50": round(_pct(to_pubsub, 0.5), 1),
            "p99": round(_pct(to_pubsub, 0.99), 1),
            "max": round(max(to_pubsub), 1) if to_pubsub else None,
            "events_matched": len(to_pubsub),
        },
        "redis_polls": polls["n"],
        "poll_interval_ms": round(publish_s * 1000 / max(polls["n"], 1), 2),
        "pubsub_messages": len(messages),
        "engine_worker": stats,
        "engine_exit_code": code,
    }


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "arch": platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    return f"{n:,.0f}{unit}"


def table(result: dict[str, Any]) -> str:
    s = result["summary"]
    t = TARGETS

    def ok(good: bool | None) -> str:
        return "-" if good is None else ("ok" if good else "MISS")

    rows: list[tuple[str, str, str, str, str]] = [
        (
            "1 raw aiokafka getmany (ceiling)",
            _fmt(s["raw_msgs_per_s"], " msg/s"),
            ", ".join(_fmt(r["msgs_per_s"]) for r in result["raw"]),
            "",
            "",
        ),
        (
            "2 engine, 1 worker, Kafka->Redis",
            _fmt(s["engine_events_per_s"], " ev/s"),
            ", ".join(_fmt(r["events_per_s"]) for r in result["engine"]),
            f">= {t['engine_events_per_s']:,}",
            ok(s["engine_events_per_s"] >= t["engine_events_per_s"]),
        ),
        (
            "  engine group join (run -> 1st batch)",
            f"{s['engine_join_delay_s']:.1f} s",
            ", ".join(f"{r['join_delay_s']:.1f}" for r in result["engine"]),
            "(not in rate)",
            "",
        ),
        (
            "3 per-event faust agent",
            _fmt(s["agent_events_per_s"], " ev/s"),
            ", ".join(_fmt(r["events_per_s"]) for r in result["agent"]),
            "",
            "",
        ),
        (
            "engine / raw ceiling",
            f"{s['engine_over_raw'] * 100:.1f} %",
            "",
            f">= {t['engine_over_raw'] * 100:.0f} %",
            ok(s["engine_over_raw"] >= t["engine_over_raw"]),
        ),
        (
            "engine / per-event agent",
            f"{s['engine_over_agent']:.1f} x",
            "",
            f">= {t['engine_over_agent']:.0f} x",
            ok(s["engine_over_agent"] >= t["engine_over_agent"]),
        ),
    ]
    rows.insert(
        3,
        (
            "  engine: Redis apply share of batch time",
            f"{s['engine_store_share'] * 100:.0f} %",
            ", ".join(f"{r['store_write_share'] * 100:.0f}" for r in result["engine"]),
            "",
            "",
        ),
    )
    for lat in result["latency"]:
        v, p = lat["visible_ms"], lat["pubsub_ms"]
        rows += [
            (
                f"4 publish -> visible in Redis ({lat['rate_achieved']:,}/s, "
                f"{result['config']['latency_times']} times)",
                f"p50 {v['p50']:.0f} / p99 {v['p99']:.0f} ms",
                f"after 2 s: p99 {lat['visible_ms_after_2s']['p99']:.0f}; max {v['max']:.0f} ms",
                f"p99 < {t['p99_visible_ms']:.0f} ms",
                ok(v["p99"] < t["p99_visible_ms"]),
            ),
            (
                "4 publish -> pub/sub msg (tick 100 ms)",
                f"p50 {p['p50']:.0f} / p99 {p['p99']:.0f} ms",
                f"max {p['max']:.0f} ms",
                "(info)",
                "",
            ),
        ]
    diag = result.get("latency_diagnostic")
    if diag:
        v, p = diag["visible_ms"], diag["pubsub_ms"]
        rows += [
            (
                f"  diag: same, fetch_max_wait_ms={diag['fetch_max_wait_ms']} (not shipped)",
                f"p50 {v['p50']:.0f} / p99 {v['p99']:.0f} ms",
                f"pub/sub p50 {p['p50']:.0f} / p99 {p['p99']:.0f} ms",
                "(diagnostic)",
                "",
            )
        ]
    heads = ("measure", "median", "runs", "target", "")
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    m = result["machine"]
    applied = ", ".join(f"{r['events']:,} ({r['stopped_by']})" for r in result["engine"])
    agent = ", ".join(f"{r['events']:,} ({r['stopped_by']})" for r in result["agent"])
    lines.append(f"events per run: engine {applied}; agent {agent}")
    lines.append(
        f"machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}, "
        f"load {m['loadavg_at_start']} -> {m.get('loadavg_at_end')}; "
        f"N={result['config']['events']:,}, runs={result['config']['runs']}, "
        f"wall {result['wall_s']:.0f} s"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.adapters.broker import ensure_topics
    from streamer.local.broker import LocalBroker
    from streamer.settings import load_settings

    max_records = load_settings().store.batch_max_events
    t_all = time.monotonic()
    log(f"loading {args.events:,} events from {SAMPLE.name}")
    items = load_values(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="hotspots-bench-pipe-"))
    broker = LocalBroker(log_dir=workdir / "tansu")
    result: dict[str, Any] = {
        "config": {
            "events": args.events,
            "runs": args.runs,
            "agent_events": args.agent_events,
            "max_seconds": args.max_seconds,
            "latency_rate": args.rate,
            "latency_times": args.latency_times,
            "latency_seconds": args.latency_seconds,
            "max_records": max_records,
            "partitions": PARTITIONS,
        },
        "machine": machine(),
        "raw": [],
        "engine": [],
        "agent": [],
        "latency": [],
    }
    broker.start()
    failed = True
    try:
        bootstrap = broker.bootstrap
        ensure_topics(
            bootstrap,
            {
                TOPICS["incidents_topic"]: PARTITIONS,
                TOPICS["calls_topic"]: PARTITIONS,
                TOPICS["dead_letter_topic"]: 1,
            },
        )
        publish_s = await publish_all(bootstrap, TOPICS["incidents_topic"], items)
        result["preload"] = {
            "seconds": round(publish_s, 2),
            "msgs_per_s": round(len(items) / publish_s),
        }
        log(f"published {len(items):,} events in {publish_s:.1f} s on {bootstrap}")
        for i in range(args.runs):
            raw = await measure_raw(bootstrap, TOPICS["incidents_topic"], len(items), max_records)
            result["raw"].append(raw)
            log(f"raw run {i}: {raw['msgs_per_s']:,} msg/s")
            eng = await measure_engine(
                bootstrap, len(items), i, args.redis_url, max_seconds=args.max_seconds
            )
            result["engine"].append(eng)
            log(
                f"engine run {i}: {eng['events_per_s']:,} events/s "
                f"(join {eng['join_delay_s']} s, store share {eng['store_write_share']})"
            )
        for i in range(args.agent_runs):
            agent = await measure_agent(
                bootstrap, args.agent_events, i, args.redis_url, workdir, args.max_seconds
            )
            result["agent"].append(agent)
            log(f"faust agent run {i}: {agent['events_per_s']:,} events/s")
        for i in range(args.latency_runs):
            lat = await measure_latency(
                bootstrap,
                items,
                args.rate,
                args.latency_seconds,
                i,
                args.redis_url,
                workdir,
                live_times=args.latency_times == "live",
            )
            result["latency"].append(lat)
            log(f"latency run {i}: visible {lat['visible_ms']}, pub/sub {lat['pubsub_ms']}")
        if args.diag_fetch_wait_ms:
            lat = await measure_latency(
                bootstrap,
                items,
                args.rate,
                args.latency_seconds,
                100,
                args.redis_url,
                workdir,
                fetch_max_wait_ms=args.diag_fetch_wait_ms,
                live_times=args.latency_times == "live",
            )
            result["latency_diagnostic"] = lat
            log(f"latency, fetch_max_wait_ms={args.diag_fetch_wait_ms}: {lat['visible_ms']}")
        if args.profile:
            log("profiled engine run (cProfile, not counted)")
            prof = await measure_engine(
                bootstrap, len(items), 99, args.redis_url, args.max_seconds, profile=True
            )
            result["profile"] = prof.pop("profile")
            result["profile_run"] = prof
        failed = False
    finally:
        broker.stop()
        if failed:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    eng_rate = statistics.median(r["events_per_s"] for r in result["engine"])
    raw_rate = statistics.median(r["msgs_per_s"] for r in result["raw"])
    agent_rate = statistics.median(r["events_per_s"] for r in result["agent"])
    result["summary"] = {
        "raw_msgs_per_s": raw_rate,
        "engine_events_per_s": eng_rate,
        "engine_join_delay_s": statistics.median(r["join_delay_s"] for r in result["engine"]),
        "engine_store_share": statistics.median(r["store_write_share"] for r in result["engine"]),
        "agent_events_per_s": agent_rate,
        "engine_over_raw": round(eng_rate / raw_rate, 3),
        "engine_over_agent": round(eng_rate / agent_rate, 2),
        "latency_visible_p99_ms": statistics.median(
            r["visible_ms"]["p99"] for r in result["latency"]
        ),
        "latency_pubsub_p99_ms": statistics.median(
            r["pubsub_ms"]["p99"] for r in result["latency"]
        ),
    }
    result["targets"] = TARGETS
    result["wall_s"] = round(time.monotonic() - t_all, 1)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=300_000, help="N for measures 1 and 2")
    parser.add_argument("--runs", type=int, default=3, help="runs of measures 1 and 2")
    parser.add_argument("--agent-events", type=int, default=20_000)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=40.0,
        help="time cap of one engine or agent run after its first event (keeps a slow "
        "engine's run bounded; the rate is taken over what it applied)",
    )
    parser.add_argument("--agent-runs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2000.0, help="latency: events/s")
    parser.add_argument(
        "--latency-times",
        choices=["live", "replayed"],
        default="live",
        help="latency: events stamped with the time they are sent (live, the default), or "
        "the sample's own times (replayed: a year of event time in minutes, so the day "
        "horizon's landmark moves every few seconds and each re-base rewrites every cell)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-runs", type=int, default=1)
    parser.add_argument(
        "--diag-fetch-wait-ms",
        type=int,
        default=20,
        help="one more latency run with this aiokafka fetch_max_wait_ms (diagnostic, "
        "not the shipped config; 0 skips it)",
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--profile", action="store_true", help="one more engine run under cProfile (not counted)"
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.agent_runs, args.latency_runs) < 1 or args.events < 1:
        parser.error("--events and the run counts must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the figures."""
    args = parse_args(argv)
    result = asyncio.run(run(args))
    text = table(result)
    print(text)
    if "profile" in result:
        print("\nengine profile (cProfile, tottime):\n" + result["profile"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


def _child(mode: str, raw: str) -> None:
    cfg = json.loads(raw)
    if mode == "_agent":
        _agent_child(cfg)
    elif mode == "_engine":
        asyncio.run(_engine_child(cfg))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("_agent", "_engine"):
        _child(sys.argv[1], sys.argv[2])
    else:
        main()
