"""Benchmark: the full Philadelphia file into Redis, and memory per cell.

    .venv/bin/python -m bench.backfill [--runs 3] [--path FILE]

Prints the median wall time of `backfill` (read, validate, weigh, index,
aggregate, write) over fresh namespaces, events/s, Redis memory per tracked
cell and horizon, and the ledger's bytes per event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.common import drop_namespace, write_result
from streamer import app
from streamer.adapters import keys
from streamer.adapters.files import load_profile
from streamer.adapters.store import StoreOp
from streamer.core.scoring import Contribution
from streamer.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT.parent / "shared" / "data" / "philadelphia" / "incidents_2016_2025.csv.gz"


async def _bytes(client: aioredis.Redis, namespace: str) -> int:
    """MEMORY USAGE summed over every key of the namespace."""
    total = 0
    async for key in client.scan_iter(match=f"{{{namespace}}}*", count=5000):
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


async def run(path: Path, runs: int, redis_url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    profile = load_profile("philadelphia")
    seconds: list[float] = []
    redis_s: list[float] = []
    last = None
    mem_per_cell_horizon = 0.0
    cells = 0
    for i in range(runs):
        namespace = f"bench-backfill-{i}"
        await drop_namespace(client, namespace)
        settings = load_settings(
            overrides={"store": {"namespace": namespace, "redis_url": redis_url}}
        )
        store = app.store(settings, client)
        await client.config_resetstat()
        report = await app.backfill(settings, store, path, profile, now_s=time.time(), force=True)
        stats = await client.info("commandstats")
        script_s = (
            sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
            / 1e6
        )
        seconds.append(report.seconds)
        redis_s.append(script_s)
        last = report
        cells = report.cells
        mem_per_cell_horizon = (
            await _bytes(client, namespace) / max(cells, 1) / len(settings.horizons)
        )
        await drop_namespace(client, namespace)
    assert last is not None
    ledger = await _ledger_bytes(client, redis_url)
    await client.aclose()
    median = statistics.median(seconds)
    return {
        "events_read": last.read,
        "events_accepted": last.accepted,
        "runs_s": [round(s, 2) for s in seconds],
        "median_s": round(median, 2),
        "redis_script_s_median": round(statistics.median(redis_s), 2),
        "events_per_s": round(last.read / median),
        "cells_tracked": cells,
        "redis_bytes_per_cell_and_horizon": round(mem_per_cell_horizon, 1),
        "ledger_bytes_per_event": round(ledger, 1),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}",
    }


async def _ledger_bytes(client: aioredis.Redis, redis_url: str) -> float:
    """Memory the ledger takes per event: 20 k events through the apply path."""
    namespace = "bench-ledger"
    await drop_namespace(client, namespace)
    settings = load_settings(overrides={"store": {"namespace": namespace, "redis_url": redis_url}})
    store = app.store(settings, client)
    now = time.time()
    n = 20_000
    ops = [
        StoreOp.upsert(
            Contribution(
                f"2025{i:08d}",
                now - i * 30.0,
                365.0,
                "violence",
                "Aggravated Assault No Firearm",
                42,
                (0x882A134D45FFFFF, 0x892A134D457FFFF, 0x8A2A134D458FFFF),
            )
        )
        for i in range(n)
    ]
    for start in range(0, n, 5000):
        await store.apply(ops[start : start + 5000], now_s=now)
    ledger = int(await client.memory_usage(keys.ledger(store.prefix)) or 0)
    days = 0
    async for key in client.scan_iter(match=f"{{{namespace}}}:ledger:day:*"):
        days += int(await client.memory_usage(key) or 0)
    await drop_namespace(client, namespace)
    return (ledger + days) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, default=FULL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    result = asyncio.run(run(args.path, args.runs, args.redis_url))
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    write_result("backfill", result)


if __name__ == "__main__":
    main()
