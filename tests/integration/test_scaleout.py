"""Scale-out: three `hotspots run` workers in one consumer group; the leader
is killed (kill -9) and a fourth worker added while events stream in on both
event topics. The final state must equal the oracle, the leader-only timers
must never run on two workers at once and must carry on after the leader
died, and every surviving worker (the newcomer too) must have done work."""

from __future__ import annotations

import asyncio
import signal
import time
import zlib

import redis.asyncio as aioredis

from streamer import app
from streamer.local.broker import LocalBroker
from tests import oracle
from tests.pipeline_support import (
    Published,
    assert_matches_oracle,
    mixed_stream,
    publish,
    redis_key,
    settings_for,
    wait_applied,
)
from tests.worker_support import (
    WorkerProcess,
    Workers,
    applied,
    assert_exclusive,
    merge_offsets,
    timer_runs,
    wait_sharing,
    write_config,
)

PARTITIONS = 6  # per event topic: 12 in all, enough for every worker to hold some
PER_S = 300.0  # per topic: the first part takes ~8 s, long enough to kill and join in


async def _held_lease(client: aioredis.Redis, key: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holder = await client.get(key)
        if holder:
            return str(holder.decode())
        await asyncio.sleep(0.1)
    raise AssertionError("no worker took the leader lease")


async def test_three_workers_leader_killed_and_one_added_mid_stream(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    workers: Workers,
) -> None:
    settings = settings_for(
        namespace,
        broker.bootstrap,
        redis_url,
        store={"batch_max_events": 200},
        worker={"partitions": PARTITIONS},
    )
    k = settings.kafka
    app.ensure_topics(settings)
    write_config(settings, workers.config)
    store = app.store(settings, client)
    rows = oracle.read_rows(oracle.SAMPLE, limit=6000)
    ops = mixed_stream(rows, seed=23)
    # an event's upsert, corrections and cancel go to one topic (so they stay
    # in order): half of the ids to each event topic
    topics = (k.incidents_topic, k.calls_topic)
    streams: dict[str, list[tuple[str, oracle.Row]]] = {t: [] for t in topics}
    for op in ops:
        streams[topics[zlib.crc32(op[1].id.encode()) % 2]].append(op)
    cut = {t: len(s) * 7 // 10 for t, s in streams.items()}

    def publishing(part: int) -> list[asyncio.Task[Published]]:
        return [
            asyncio.create_task(
                asyncio.to_thread(
                    publish,
                    k.bootstrap,
                    topic,
                    s[: cut[topic]] if part == 1 else s[cut[topic] :],
                    0,
                    PER_S,
                )
            )
            for topic, s in streams.items()
        ]

    original = [workers.start() for _ in range(3)]
    try:
        await wait_sharing(original, 2 * PARTITIONS)
        leader = await _held_lease(client, redis_key(store, "leader"))
        by_holder = {str(w.health().get("worker")): w for w in original}
        assert leader in by_holder, (leader, list(by_holder))

        # part 1, at a steady pace; the leader is killed once every worker
        # has applied events, while the stream is still coming in
        first_part = sum(cut.values())
        tasks = publishing(1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await applied(client, store) >= first_part // 10 and all(
                w.events_counted() > 0 for w in original
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the three workers did not all apply events")
        leader = await _held_lease(client, redis_key(store, "leader"))  # still the same, normally
        victim = by_holder[leader]
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.proc.wait(timeout=10)
        applied_at_kill = await applied(client, store)
        still_publishing = not all(t.done() for t in tasks)
        newcomer = workers.start()
        joined_at = time.monotonic()
        sent = [await t for t in tasks]
        # both halves of the kill and join landed mid-stream
        assert still_publishing, "part 1 was all published before the kill"
        assert 0 < applied_at_kill < first_part, (applied_at_kill, first_part)

        # the group settles: the two survivors and the newcomer share every
        # partition, the dead worker none; then the rest of the stream
        survivors: list[WorkerProcess] = [w for w in original if w is not victim] + [newcomer]
        await wait_sharing(survivors, 2 * PARTITIONS)
        settled_s = time.monotonic() - joined_at
        sent += [await t for t in publishing(2)]
        await wait_applied(store, merge_offsets(sent), timeout_s=120)

        alive = oracle.live(ops)
        await assert_matches_oracle(store, alive, max(r.t_s for r in alive.values()) + 60)
        counted = {w.port: w.events_counted() for w in survivors}
        assert all(n > 0 for n in counted.values()), counted

        # the timers moved to another worker after the leader died, and no
        # two workers ever ran them at the same time
        deadline = time.monotonic() + 60
        runs = timer_runs(workers)
        while not any(r.holder != leader and r.start_s > killed_at for r in runs):
            assert time.monotonic() < deadline, f"no timer ran after the leader died: {runs[-5:]}"
            await asyncio.sleep(0.2)
            runs = timer_runs(workers)
        await asyncio.sleep(1)  # a few more ticks on the new leader
        runs = timer_runs(workers)
        assert leader in {r.holder for r in runs if r.end_s <= killed_at}
        assert_exclusive(runs)
        handover_s = min(r.start_s for r in runs if r.start_s > killed_at) - killed_at
        print(  # shown with -s: what this run looked like
            f"applied at kill {applied_at_kill}/{first_part}; group settled {settled_s:.1f} s "
            f"after the newcomer started; first timer run {handover_s:.1f} s after the kill; "
            f"events counted per survivor {list(counted.values())}; timer runs per holder "
            f"{ {h: sum(r.holder == h for r in runs) for h in {r.holder for r in runs}} }"
        )
    except BaseException:
        print(workers.logs())
        raise
