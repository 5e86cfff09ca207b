"""When the day's patrol plan is fixed, and which windows the engine may
judge, on a real Redis with the leader's dosage tick driven by a given clock:

- reading a summary never fixes a plan; the day's first tick does, from the
  ranking of that moment, and later events do not change the day's cells;
- an engine started in the evening raises no "unvisited" alert for that day
  (it did not observe the day's window), and alerts on the next day it
  watched from midnight;
- no alert while the ping consumer has not read up to now, and no "unvisited
  for N days" when the days since the last visit were not all observed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.patrol_worker import DosageTicker
from streamer.adapters.patrols import Dosage
from streamer.adapters.store import Store, StoreOp
from streamer.core.cells import cell_hex, cell_of, center_hex
from streamer.core.dosage import LATE_REASON, Ping
from streamer.core.events import Event
from streamer.settings import Settings, load_settings
from tests.pipeline_support import redis_key

ZONE = "America/New_York"
TZ = ZoneInfo(ZONE)
RES = 10
TOP_N = 20


def local(day: int, hour: int, minute: int = 0) -> float:
    """POSIX seconds of 2026-03-DAY HOUR:MINUTE in New York."""
    return datetime(2026, 3, day, hour, minute, tzinfo=TZ).timestamp()


def settings_of(namespace: str, redis_url: str) -> Settings:
    return load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "grid": {"timezone": ZONE},
            "dosage": {
                "plan_top_n": TOP_N,
                "late_after_hour": 18,
                "peak_hours": False,
                "interval": "1m",
            },
        }
    )


def cells(n: int, first: int = 0) -> list[str]:
    """``n`` distinct resolution-10 cells along a line through Philadelphia."""
    return [cell_hex(cell_of(39.90 + 0.004 * i, -75.20, RES)) for i in range(first, first + n)]


async def record(store: Store, settings: Settings, counts: dict[str, int], at_s: float) -> None:
    """``counts[cell]`` burglaries in each cell at ``at_s`` (incidents)."""
    scorer = app.scorer(settings)
    ops = []
    for cell, count in counts.items():
        lat, lon = center_hex(cell)
        for i in range(count):
            event = Event(
                f"{cell}-{at_s}-{i}",
                "incident",
                datetime.fromtimestamp(at_s, UTC),
                at_s,
                lat,
                lon,
                "Burglary Residential",
            )
            contribution = scorer.contribution(event)
            assert contribution is not None
            ops.append(StoreOp.upsert(contribution))
    await store.apply(ops, now_s=at_s)


def ticker(dosage: Dosage, settings: Settings, clock: list[float]) -> DosageTicker:
    return DosageTicker(dosage, settings, lambda: clock[0])


async def opened(client: aioredis.Redis, dosage: Dosage) -> list[dict[str, Any]]:
    raw = await client.hgetall(redis_key(dosage.store, "alerts", "open"))
    return sorted((orjson.loads(v) for v in raw.values()), key=lambda a: a["cells"][0])


async def test_the_plan_is_fixed_at_the_days_first_tick_and_judged_only_when_observed(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_of(namespace, redis_url)
    store = app.store(settings, client)
    dosage = Dosage(store, settings)
    early = cells(30)  # busy before the engine starts, 30 down to 1 events
    await record(store, settings, {c: 30 - i for i, c in enumerate(early)}, local(9, 12))
    clock = [local(10, 19)]
    tick = ticker(dosage, settings, clock)

    # an engine started at 19:00 on the 10th: reading the day does not fix it
    summary = await dosage.summary("2026-03-10", clock[0])
    assert summary["plan_fixed"] is False and summary["plan_fixed_at"] is None
    assert not await dosage.plan_recorded("2026-03-10")
    assert [r["cell"] for r in summary["cells"]] == early[:TOP_N]  # the plan as it stands

    # its consumer starts reading pings; the first tick fixes the day's plan,
    # but the day began before the engine watched: no alert, though every
    # planned cell is unvisited late in its window
    await dosage.watched(clock[0], caught_up=True)
    clock[0] = local(10, 19, 1)
    assert await tick.tick() == []
    assert await dosage.plan_fixed_at("2026-03-10") == clock[0]
    day = orjson_loads(await client.get(redis_key(dosage.store, "dosage", "day", "2026-03-10")))
    assert day["observation"]["observed"] is False
    assert "after the day began" in day["observation"]["reason"]
    assert await opened(client, dosage) == []

    # the 11th: the tick just after midnight fixes the plan from the ranking then
    await dosage.watched(local(11, 0), caught_up=True)
    clock[0] = local(11, 0, 1)
    assert await tick.tick() == []  # not late yet
    midnight_top = [r.cell for r in await store.top("week", RES, TOP_N, clock[0])]
    assert midnight_top == early[:TOP_N]

    # new hot spots at 10:00 top the ranking; the day's plan stays as fixed
    late_comers = cells(5, first=40)
    await record(store, settings, {c: 100 for c in late_comers}, local(11, 10))
    now_top = [r.cell for r in await store.top("week", RES, TOP_N, local(11, 18, 30))]
    assert set(late_comers) <= set(now_top)
    assert [e["cell"] for e in await dosage.planned("2026-03-11", local(11, 18, 30))] == (
        midnight_top
    )

    # 18:30, pings read up to now: each planned cell unvisited is late
    await dosage.watched(local(11, 18, 30), caught_up=True)
    clock[0] = local(11, 18, 30)
    notices = await tick.tick()
    assert sorted(n.alert["cells"][0] for n in notices) == sorted(midnight_top)
    assert {n.kind for n in notices} == {"opened"}
    assert {n.alert["reason"] for n in notices} == {LATE_REASON}
    assert all(n.alert["id"].startswith("U-20260311-") for n in notices)


async def test_no_alert_while_the_consumer_lags_nor_for_days_it_did_not_watch(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = settings_of(namespace, redis_url)
    store = app.store(settings, client)
    dosage = Dosage(store, settings)
    planned = cells(3)
    await dosage.set_plan({"mode": "list", "cells": planned}, local(8, 23))

    # cell 0 was last visited on the 5th, in pings the engine read later
    # (replayed from Kafka when it first started, on the 8th at 23:00)
    lat, lon = center_hex(planned[0])
    start_s = local(5, 10)
    visit = [Ping("car-7", start_s + 10.0 * i, lat, lon, "patrol") for i in range(97)]
    await dosage.watched(local(8, 23), caught_up=True)
    await dosage.recompute(await dosage.add_pings(visit))

    # the 10th at 10:00, pings read up to now: the day was observed, but the
    # five days since cell 0's visit were not, so no "unvisited for 5 days"
    clock = [local(10, 10)]
    tick = ticker(dosage, settings, clock)
    await dosage.watched(clock[0], caught_up=True)
    summary = await dosage.summary("2026-03-10", clock[0])
    assert summary["observation"]["observed"] is True
    assert summary["cells"][0]["days_since_last_visit"] > 4.9
    assert await tick.tick() == []

    # 19:00, the consumer stopped reading at 12:00 (behind or down): the
    # window is not observed up to now, so no "late" alert
    clock[0] = local(10, 19)
    assert await tick.tick() == []
    day = orjson_loads(await client.get(redis_key(dosage.store, "dosage", "day", "2026-03-10")))
    assert "consumer behind or stopped" in day["observation"]["reason"]

    # it catches up: every planned cell is late today (cell 0 included)
    await dosage.watched(clock[0], caught_up=True)
    clock[0] = local(10, 19, 1)
    notices = await tick.tick()
    assert sorted(n.alert["cells"][0] for n in notices) == sorted(planned)
    assert {n.alert["reason"] for n in notices} == {LATE_REASON}

    # the consumer falls behind again: the open alerts neither clear nor grow
    clock[0] = local(10, 23)
    assert await tick.tick() == []
    assert [a["cells"] for a in await opened(client, dosage)] == [[c] for c in sorted(planned)]


def orjson_loads(raw: object) -> dict[str, Any]:
    assert isinstance(raw, bytes | str), raw
    loaded: dict[str, Any] = orjson.loads(raw)
    return loaded
