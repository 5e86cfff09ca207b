"""What the demo feeds the engine: the bundled sample split at a date (the
part before is backfilled), the part after replayed through Kafka, and
simulated patrol units pinging in step with the replay (there is no public
GPS data)."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from streamer import app
from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.settings import Settings

PATROL_UNITS = 4  # simulated patrol units ...
PATROL_CELLS = 12  # ... on the top hot spots (a list plan)


@dataclass
class ReplayState:
    """What the replay thread has done so far (read by the main thread)."""

    sent: int = 0
    last_event: str | None = None  # occurred_at of the newest record handed to Kafka
    finished: bool = False
    error: BaseException | None = None
    by_topic: dict[str, int] = field(default_factory=dict)


def split_sample(source: Path, before: Path, after: Path, split_at: str) -> tuple[int, int]:
    """Write the rows of ``source`` (the Philadelphia export) whose local time
    is before ``split_at`` to ``before`` and the others to ``after``, both
    gzip CSVs with the same header. Returns the two row counts."""
    counts = [0, 0]
    cut = split_at.encode()
    with (
        gzip.open(source, "rb") as src,
        gzip.open(before, "wb", compresslevel=1) as early,
        gzip.open(after, "wb", compresslevel=1) as late,
    ):
        header = src.readline()
        columns = header.decode().strip().split(",")
        at = columns.index("t_local")
        early.write(header)
        late.write(header)
        for line in src:
            if not line.strip():
                continue
            stamp = line.split(b",", at + 1)[at].strip(b'"')
            if stamp < cut:
                early.write(line)
                counts[0] += 1
            else:
                late.write(line)
                counts[1] += 1
    return counts[0], counts[1]


def start_replay(
    settings: Settings,
    path: Path,
    profile_name: str,
    speed: float,
    stop: threading.Event,
    state: ReplayState,
) -> threading.Thread:
    """A thread replaying ``path`` to the event topics at ``speed`` times
    real time until it ends or ``stop`` is set; it reports into ``state``."""
    from streamer.adapters.files import iter_records, load_profile
    from streamer.services.replay import replay

    k = settings.kafka
    profile = load_profile(profile_name)

    def records() -> Iterator[dict[str, Any]]:
        for record in iter_records(path, profile):
            if stop.is_set():
                return
            state.last_event = record.get("occurred_at")
            yield record
            state.sent += 1

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    def work() -> None:
        try:
            report = replay(
                records(),
                bootstrap=k.bootstrap,
                topics={"incident": k.incidents_topic, "call": k.calls_topic},
                speed=speed,
                sleep=sleep,
            )
            state.sent = report.sent
            state.by_topic = dict(report.by_topic)
        except BaseException as exc:  # reported by the main thread
            state.error = exc
        finally:
            state.finished = True

    thread = threading.Thread(target=work, name="demo-replay", daemon=True)
    thread.start()
    return thread


def start_patrols(
    settings: Settings, stop: threading.Event, state: ReplayState, say: Callable[[str], None]
) -> threading.Thread | None:
    """Simulated units patrolling the top hot spots: a list plan of them,
    then a thread of pings in step with the replay (``None`` when there is
    no hot spot yet)."""
    from kafka import KafkaProducer

    from streamer.adapters.patrols import Dosage
    from streamer.local.patrol_sim import PatrolSimulator

    client = redis.Redis.from_url(settings.store.redis_url)
    try:
        prefix = keys.namespace_prefix(settings.store.namespace)
        top = keys.rank(prefix, settings.dosage.plan_horizon, settings.dosage.resolution)
        cells = [text(c) for c in client.zrevrange(top, 0, PATROL_CELLS - 1)]
    finally:
        client.close()
    if not cells:
        return None
    units = [f"P-{101 + i}" for i in range(PATROL_UNITS)]
    plan = [{"cell": c, "units": [units[i % len(units)]]} for i, c in enumerate(cells)]

    async def set_plan() -> None:
        store = app.store(settings)
        try:
            await Dosage(store, settings).set_plan({"mode": "list", "cells": plan}, time.time())
        finally:
            await store.client.aclose()

    asyncio.run(set_plan())
    topic = settings.dosage.topic

    def work() -> None:
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, linger_ms=20)
        sim: PatrolSimulator | None = None
        try:
            while not stop.is_set() and not state.finished:
                if state.last_event is not None:
                    now = datetime.fromisoformat(state.last_event).timestamp()
                    sim = sim or PatrolSimulator(units, cells, now)
                    for ping in sim.advance(now):
                        producer.send(topic, key=ping["unit"].encode(), value=orjson.dumps(ping))
                stop.wait(0.2)
            producer.flush()
        except Exception as exc:  # the demo goes on without patrols
            say(f"patrol simulation stopped: {exc!r}")
        finally:
            producer.close()

    thread = threading.Thread(target=work, name="demo-patrols", daemon=True)
    thread.start()
    say(
        f"patrols: {len(units)} simulated units on the top {len(cells)} hot spots "
        f"(a list plan; officer's view: /officer?unit={units[0]}&token=...)"
    )
    return thread
