"""Benchmark: patrol pings into the store, and how the cost grows with the
history each unit keeps.

    .venv/bin/python -m bench.pings [--units 200] [--interval 10] [--hours 0,6,24,72] [--rounds 5]

For each history length, fresh namespace: every unit gets that many hours of
pings (one every ``--interval`` s, walking between a few cells) stored
directly, then ``--rounds`` batches of one new ping per unit go through what
the ping consumer does per batch (store the pings, recompute the units'
visits). Prints the median batch time, pings/s, and Redis bytes per stored
ping (MEMORY USAGE over the units' ping keys). Kafka is left out: its cost
per ping is the same as per event (``bench.pipeline``'s raw ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

from bench.common import drop_namespace, write_result
from streamer import app
from streamer.adapters.patrols import Dosage
from streamer.core.dosage import Ping
from streamer.settings import load_settings

START_S = 1_764_547_200.0  # 2025-12-01 00:00 UTC
CENTRE = (39.9526, -75.1652)  # Philadelphia City Hall
STEP_DEG = 0.0012  # about 130 m: a few res-10 cells per beat


def walk(unit: int, t0: float, t1: float, interval: float) -> Iterator[Ping]:
    """A unit's pings from t0 to t1: ten minutes on each of four corners of its beat."""
    lat0 = CENTRE[0] + 0.01 * (unit % 20)
    lon0 = CENTRE[1] + 0.01 * (unit // 20)
    t = t0
    while t < t1:
        corner = int(t // 600) % 4
        lat = lat0 + STEP_DEG * (corner & 1)
        lon = lon0 + STEP_DEG * (corner >> 1)
        yield Ping(f"U{unit:04d}", t, lat, lon, "patrol", 0.5)
        t += interval


async def _bytes(client: aioredis.Redis, pattern: str) -> int:
    total = 0
    async for key in client.scan_iter(match=pattern, count=5000):
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


async def one(args: argparse.Namespace, hours: float) -> dict[str, Any]:
    namespace = f"bench-pings-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": args.redis_url},
            "grid": {"timezone": "America/New_York"},
            "dosage": {"retention": f"{max(hours, 1.0) + 1}h"},
        }
    )
    client = app.redis_client(settings)
    store = app.store(settings, client)
    dosage = Dosage(store, settings)
    now = START_S + hours * 3600
    try:
        history = [p for u in range(args.units) for p in walk(u, START_S, now, args.interval)]
        for i in range(0, len(history), 20_000):
            await dosage.add_pings(history[i : i + 20_000])
        await dosage.recompute({f"U{u:04d}" for u in range(args.units)})
        times = []
        for r in range(args.rounds):
            at = now + r * args.interval
            batch = [next(walk(u, at, at + 1, args.interval)) for u in range(args.units)]
            t0 = time.perf_counter()
            units = await dosage.add_pings(batch)
            await dosage.recompute(units)
            times.append(time.perf_counter() - t0)
        stored = len(history) + args.units * args.rounds
        ping_bytes = await _bytes(client, f"{{{namespace}}}:patrol:pings:*")
        median = statistics.median(times)
        return {
            "hours": hours,
            "pings_per_unit": math.ceil(hours * 3600 / args.interval),
            "batch_s": median,
            "pings_per_s": args.units / median,
            "bytes_per_ping": ping_bytes / stored,
        }
    finally:
        await drop_namespace(client, namespace)
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.pings", description=__doc__)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between pings")
    parser.add_argument("--hours", default="0,6,24,72", help="history per unit, hours")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    rows = [asyncio.run(one(args, float(h))) for h in args.hours.split(",")]
    print(
        f"{args.units} units, a ping every {args.interval:g} s; each batch = one new ping per "
        "unit, stored and the units' visits recomputed (median of "
        f"{args.rounds} batches)"
    )
    print(f"{'history':>8} {'pings/unit':>10} {'batch':>9} {'pings/s':>9} {'bytes/ping':>10}")
    for row in rows:
        print(
            f"{row['hours']:>7g}h {row['pings_per_unit']:>10} {row['batch_s'] * 1000:>7.1f}ms "
            f"{row['pings_per_s']:>9.0f} {row['bytes_per_ping']:>10.0f}"
        )
    write_result("pings", {"units": args.units, "interval_s": args.interval, "rows": rows})


if __name__ == "__main__":
    main()
