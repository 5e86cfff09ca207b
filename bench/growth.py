"""Benchmark: how each cost grows with 10x more events or cells (the cost curve).

    .venv/bin/python -m bench.growth [--scales 1,10] [--runs 3] [--kernel-events 300000]
                                     [--calls 1000] [--skip-kernel]

Side by side in one run, at each scale S of ``--scales``:

(a) kernel: ``bench.kernel``'s work (``core.batching.prepare``, with the
    compiled parser when it is built, then ``Store.plan`` at known
    landmarks, batches of 10,000, no I/O) on S x ``--kernel-events`` real
    events (``bench.pipeline.load_values``: the bundled sample, repeated with
    new ids past its 148 k; the larger scales pass over the same events S
    times, as a stream S times longer: materialising 3 M payloads took
    ~4 KB of memory each, through allocator fragmentation): µs per event. 1x runs ``--runs``
    times before the larger scales and as many after (the median of all:
    the machine's load drifts, so 1x brackets them); a larger scale runs
    once and is also timed per ``--kernel-events`` slice (the median
    slice, and the last one: a cost that rises along the stream shows).
(b) store: a city S times Philadelphia's size: S copies of the bundled 2025
    sample, copy j moved j x 0.5 degrees east (the city is 0.32 degrees
    wide, so no two copies share a cell; ids made new per copy), so S x the
    events and S x the cells, with the real data's density and repetition.
    Each is backfilled into a fresh namespace (the bulk path, as
    ``hotspots backfill``); then probe batches of 10,000 new events (the
    sample's last week, so they are ledgered, no re-base; all in the first
    copy, so a probe touches the same cells at every scale and only the
    store's size differs) go through ``Store.apply`` (the live path): µs
    per event, the median of ``--runs`` probes. Redis bytes of the namespace (MEMORY USAGE
    over its keys) and per cell and horizon.
(c) reads on that store, ``--calls`` sequential calls each, p50/p99 ms:
    ``Store.top(week, 9, 50)`` (``/v1/hotspots``), ``Store.cells`` of a
    cell and its six neighbours (``/v1/cells/{cell}``), ``Store.positions``
    of a point's three cells (``/v1/risk``); and a fiftieth as many of the
    reads that walk a whole ranking: ``Store.blend_top`` (blended rankings)
    and ``Store.ranking`` (``/v1/hotspots`` with a box filter).
(d) backfill seconds of (b)'s files, the median of ``--runs``; and, when
    the shared ten-year file is here, the sample (one year) beside the full
    file (ten): 10x the events of one city, without 10x the cells.

Prints one table: measure, each scale, the largest over 1x, and what that
ratio would be if the cost grew linearly (for a total: the scale; for a
cost per event or per call: 1.0, flat). Writes
``bench/results/latest-growth.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import cache, partial
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import redis.asyncio as aioredis

from bench.backfill import FULL
from bench.common import drop_namespace, write_result
from bench.kernel import timed
from bench.memory import footprint
from bench.pipeline import SAMPLE, load_values
from streamer import app
from streamer.adapters import keys
from streamer.adapters.files import iter_records, load_profile
from streamer.adapters.store import Store
from streamer.core import decay, fastpath
from streamer.core.batching import Message, prepare
from streamer.core.cells import cell_from_hex, cell_hex, parent_of, ring
from streamer.core.events import EventRules
from streamer.core.fastpath import FastParser
from streamer.core.scoring import Scorer
from streamer.settings import Settings, load_settings

SHIFT_DEG = 0.5  # copy j of the city sits j x this east: further than the city is wide
PROBE_EVENTS = 10_000
BATCH = 10_000
NAMESPACE = "bench-growth"

Row = dict[str, Any]


def _settings(redis_url: str, namespace: str = NAMESPACE) -> Settings:
    return load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "grid": {"timezone": "America/New_York"},
        }
    )


# (a) ------------------------------------------------------------------ kernel


def kernel_pass(
    messages: Sequence[Message],
    rules: EventRules,
    scorer: Scorer,
    store: Store,
    fast: FastParser | None,
    every: int,
) -> list[float]:
    """``bench.kernel``'s kernel over ``messages``; seconds per ``every`` events."""
    now_s = time.time()
    slices: list[float] = []
    started = time.perf_counter()
    for i in range(0, len(messages), BATCH):
        prepared = prepare(messages[i : i + BATCH], rules, scorer, now_s=now_s, fast=fast)
        plan = store.plan(
            prepared.ops, now_s=now_s, rows=prepared.rows, positions=prepared.positions
        )
        assert plan.args is not None  # packed: the script's arguments are ready
        if (i + BATCH) % every == 0 or i + BATCH >= len(messages):
            slices.append(time.perf_counter() - started)
            started = time.perf_counter()
    return slices


def kernel_curve(scales: Sequence[int], events: int, runs: int) -> dict[int, Row]:
    """bench.kernel's kernel at each scale: µs per event."""
    settings = _settings("redis://127.0.0.1:1/0")
    rules, scorer = app.event_rules(settings), app.scorer(settings)
    store = app.store(settings, aioredis.Redis(port=1))  # planning only: nothing is sent
    values = [value for _, value in load_values(events)]
    newest = max(datetime.fromisoformat(orjson.loads(v)["occurred_at"]) for v in values)
    store._known_landmarks = {  # the landmarks a running worker knows
        n: decay.landmark_for(newest.timestamp(), h) for n, h in settings.horizons.items()
    }
    # the compiled parser when built, as the worker (and bench.kernel) runs it
    fast = FastParser(rules, scorer) if fastpath.AVAILABLE else None
    out: dict[int, Row] = {}
    later: list[Callable[[], list[float]]] = []
    for scale in scales:
        n = scale * events
        messages = [Message("hotspots.incidents", 0, i, v) for i, v in enumerate(values)] * scale
        slices: list[list[float]] = []
        work = partial(kernel_pass, messages, rules, scorer, store, fast, events)
        seconds = timed(lambda: slices.append(work()), runs if scale == 1 else 1)  # noqa: B023
        if scale == 1 and len(scales) > 1:
            # 1x again after the larger scales (below): the machine's load
            # drifts, so 1x brackets them
            later.append(partial(timed, work, runs))
        us = [1e6 * s / n for s in seconds]
        per_slice = [1e6 * s / events for s in slices[-1]]
        out[scale] = {
            "events": n,
            "parser": "compiled" if fast is not None else "python",
            "runs_us_per_event": [round(u, 2) for u in us],
            "us_per_event": round(statistics.median(us), 2),
            "slice_us_per_event_median": round(statistics.median(per_slice), 2),
            "slice_us_per_event_last": round(per_slice[-1], 2),
        }
        print(
            f"  kernel {scale}x ({n:,} events): {out[scale]['us_per_event']} µs/event "
            f"(slices of {events:,}: median {out[scale]['slice_us_per_event_median']}, "
            f"last {out[scale]['slice_us_per_event_last']})",
            flush=True,
        )
    for again in later:
        us = [1e6 * s / events for s in again()]
        first = out[1]["runs_us_per_event"]
        out[1]["runs_us_per_event"] = first + [round(u, 2) for u in us]
        out[1]["us_per_event"] = round(statistics.median(first + us), 2)
        print(
            f"  kernel 1x again: {statistics.median(us):.2f} µs/event; 1x over all its "
            f"{len(first) + len(us)} runs: {out[1]['us_per_event']}",
            flush=True,
        )
    return out


# (b), (c), (d) ---------------------------------------------------------- store


def write_city(source: Path, copies: int, path: Path) -> int:
    """``copies`` copies of the ``source`` CSV, copy j moved j x SHIFT_DEG east
    with ids suffixed ``-cJ``; returns the rows written."""
    table = pacsv.read_csv(
        source,
        convert_options=pacsv.ConvertOptions(
            column_types={"dc_key": pa.string(), "t_local": pa.string(), "lon": pa.float64()}
        ),
    )
    parts = []
    for j in range(copies):
        part = table
        if j:
            part = part.set_column(
                part.schema.get_field_index("dc_key"),
                "dc_key",
                pc.binary_join_element_wise(part["dc_key"], pa.scalar(f"c{j}"), "-"),
            )
            part = part.set_column(
                part.schema.get_field_index("lon"),
                "lon",
                pc.add(part["lon"], pa.scalar(j * SHIFT_DEG)),
            )
        parts.append(part)
    city = pa.concat_tables(parts)
    pacsv.write_csv(city, path)
    return int(city.num_rows)


@cache
def _last_week() -> list[dict[str, Any]]:
    """The bundled sample's records of its last week."""
    records = list(iter_records(SAMPLE, load_profile("philadelphia")))
    newest = max(datetime.fromisoformat(r["occurred_at"]).timestamp() for r in records)
    return [
        r
        for r in records
        if datetime.fromisoformat(r["occurred_at"]).timestamp() >= newest - 7 * 86400
    ]


def probe_messages(round_no: int, offset: int) -> list[Message]:
    """PROBE_EVENTS new events: the sample's last week, in the first copy, so
    that a probe touches the same cells at every scale and only the store's
    size differs (spread over the copies, a batch would share fewer cells,
    and the script's cost is per cell touched)."""
    recent = _last_week()
    out = []
    for i in range(PROBE_EVENTS):
        rec = {**recent[i % len(recent)], "id": f"probe-{round_no}-{i}"}
        out.append(Message("bench.growth", 0, offset + i, orjson.dumps(rec)))
    return out


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1e3 * s for s in seconds)
    return {
        "p50": round(statistics.median(ms), 3),
        "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
        "calls": len(ms),
    }


async def _latencies(call: Callable[[int], Awaitable[object]], n: int) -> dict[str, float]:
    for i in range(min(20, n)):  # warm the connection and the script cache
        await call(i)
    out = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - started)
    return _quantiles(out)


async def reads(store: Store, calls: int, at_s: float) -> dict[str, dict[str, float]]:
    """p50/p99 of the API's store reads."""
    finest = store.resolutions[-1]
    members = await store.client.zrange(keys.rank(store.prefix, "year", finest), 0, -1)
    rng = random.Random(9)
    names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    picked = rng.sample(names, min(500, len(names)))
    # a point's cells at every resolution: the cell's centre, by its parents
    points = [
        [(r, cell_hex(parent_of(cell_from_hex(c), r))) for r in store.resolutions] for c in picked
    ]
    near = [
        [c, *(cell_hex(n) for n in ring(cell_from_hex(c), 1) if cell_hex(n) != c)] for c in picked
    ]
    slow = max(calls // 50, 10)
    return {
        "top_week_9_50": await _latencies(lambda i: store.top("week", 9, 50, at_s), calls),
        "cells_ring": await _latencies(lambda i: store.cells(near[i % len(near)], at_s), calls),
        "positions": await _latencies(lambda i: store.positions(points[i % len(points)]), calls),
        "blend_top_9_50": await _latencies(
            lambda i: store.blend_top("year", "week", 0.5, 9, 50), slow
        ),
        "ranking_week_9": await _latencies(lambda i: store.ranking("week", 9, at_s), slow),
    }


async def store_curve(
    scales: Sequence[int], runs: int, calls: int, redis_url: str, workdir: Path
) -> dict[int, Row]:
    """(b), (c), (d) at each scale."""
    # the engine's own client: a blocking pool (a backfill of 10x the cells
    # sends more merges at once than a plain pool allows)
    client = app.redis_client(_settings(redis_url))
    profile = load_profile("philadelphia")
    out: dict[int, Row] = {}
    offset = 0
    try:
        for scale in scales:
            path = workdir / f"city-{scale}.csv"
            rows = write_city(SAMPLE, scale, path)
            settings = _settings(redis_url)
            backfill_s: list[float] = []
            store = app.store(settings, client)
            for _ in range(runs):
                await drop_namespace(client, NAMESPACE)
                store = app.store(settings, client)
                gc.collect()
                report = await app.backfill(
                    settings, store, path, profile, now_s=time.time(), force=True
                )
                backfill_s.append(report.seconds)
            path.unlink()
            size = await footprint(client, store)
            now_s = time.time()
            apply_us: list[float] = []
            for r in range(runs):
                ops = prepare(
                    probe_messages(r, offset),
                    app.event_rules(settings),
                    app.scorer(settings),
                    now_s=now_s,
                ).ops
                offset += PROBE_EVENTS
                gc.collect()
                started = time.perf_counter()
                result = await store.apply(ops, now_s=now_s)
                apply_us.append(1e6 * (time.perf_counter() - started) / len(ops))
                assert result.applied == len(ops), result
                touched = result.cells / len(ops)
            watermark = float(await client.hget(keys.meta(store.prefix), "watermark") or now_s)
            latency = await reads(store, calls, watermark)
            horizons = len(store.names)
            out[scale] = {
                "events": rows,
                "cells": size["cells_total"],
                "cells_by_resolution": size["cells"],
                "backfill_runs_s": [round(s, 3) for s in backfill_s],
                "backfill_s": round(statistics.median(backfill_s), 3),
                "apply_runs_us_per_event": [round(u, 2) for u in apply_us],
                "apply_us_per_event": round(statistics.median(apply_us), 2),
                "apply_cells_touched_per_event": round(touched, 3),
                "namespace_bytes": size["namespace_bytes"],
                "bytes_per_cell_and_horizon": round(
                    size["namespace_bytes"] / max(size["cells_total"], 1) / horizons, 1
                ),
                "reads_ms": latency,
            }
            print(
                f"  store {scale}x: {rows:,} events, {size['cells_total']:,} cells, backfill "
                f"{out[scale]['backfill_s']} s, apply {out[scale]['apply_us_per_event']} µs/event, "
                f"{size['namespace_bytes'] / 1e6:.1f} MB, top p99 "
                f"{latency['top_week_9_50']['p99']} ms, ranking p50 "
                f"{latency['ranking_week_9']['p50']} ms",
                flush=True,
            )
            await drop_namespace(client, NAMESPACE)
    finally:
        await drop_namespace(client, NAMESPACE)
        await client.aclose()
    return out


async def same_city(runs: int, redis_url: str) -> dict[str, Row] | None:
    """Backfill of one year (the sample) beside ten (the shared file)."""
    if not FULL.exists():
        return None
    client = app.redis_client(_settings(redis_url))
    profile = load_profile("philadelphia")
    out: dict[str, Row] = {}
    try:
        for name, path in (("one year", SAMPLE), ("ten years", FULL)):
            settings = _settings(redis_url, f"{NAMESPACE}-city")
            seconds: list[float] = []
            for _ in range(runs):
                await drop_namespace(client, settings.store.namespace)
                gc.collect()
                report = await app.backfill(
                    settings,
                    app.store(settings, client),
                    path,
                    profile,
                    now_s=time.time(),
                    force=True,
                )
                seconds.append(report.seconds)
            out[name] = {
                "events": report.read,
                "cells": report.cells,
                "backfill_runs_s": [round(s, 3) for s in seconds],
                "backfill_s": round(statistics.median(seconds), 3),
            }
            print(
                f"  backfill {name}: {report.read:,} events, {report.cells:,} cells, "
                f"{out[name]['backfill_s']} s",
                flush=True,
            )
    finally:
        await drop_namespace(client, f"{NAMESPACE}-city")
        await client.aclose()
    return out


# table ---------------------------------------------------------------------


def table_rows(
    scales: Sequence[int],
    kernel: dict[int, Row],
    store: dict[int, Row],
    city: dict[str, Row] | None,
) -> list[Row]:
    """One row per measure: its value at each scale, top/1x, linear."""
    top = max(scales)
    rows: list[Row] = []

    def add(measure: str, unit: str, per: bool, values: dict[int, float]) -> None:
        if 1 not in values or top not in values or not values[1]:
            return
        rows.append(
            {
                "measure": measure,
                "unit": unit,
                "values": {str(s): values[s] for s in scales if s in values},
                "ratio": round(values[top] / values[1], 2),
                "linear": 1.0 if per else float(top),
            }
        )

    if kernel:
        add("kernel", "µs/event", True, {s: r["us_per_event"] for s, r in kernel.items()})
        add(
            "kernel, median slice",
            "µs/event",
            True,
            {s: r["slice_us_per_event_median"] for s, r in kernel.items()},
        )
    if store:
        add("city events", "", False, {s: r["events"] for s, r in store.items()})
        add("city cells (res 8-10)", "", False, {s: r["cells"] for s, r in store.items()})
        add("backfill", "s", False, {s: r["backfill_s"] for s, r in store.items()})
        add("Store.apply", "µs/event", True, {s: r["apply_us_per_event"] for s, r in store.items()})
        add(
            "Redis, namespace",
            "MB",
            False,
            {s: round(r["namespace_bytes"] / 1e6, 1) for s, r in store.items()},
        )
        add(
            "Redis per cell and horizon",
            "B",
            True,
            {s: r["bytes_per_cell_and_horizon"] for s, r in store.items()},
        )
        names = {
            "top_week_9_50": ("Store.top(week, 9, 50)", True),
            "cells_ring": ("Store.cells(cell + 6 neighbours)", True),
            "positions": ("Store.positions(3 cells) /v1/risk", True),
            "blend_top_9_50": ("Store.blend_top (whole ranking)", False),
            "ranking_week_9": ("Store.ranking(week, 9) (whole)", False),
        }
        for key, (label, flat) in names.items():
            for q in ("p50", "p99"):
                add(
                    f"{label} {q}",
                    "ms",
                    flat,
                    {s: r["reads_ms"][key][q] for s, r in store.items()},
                )
    if city is not None:
        one, ten = city["one year"], city["ten years"]
        ratio = ten["events"] / one["events"]
        for key, label in (
            ("events", "same city: events"),
            ("cells", "same city: cells"),
            ("backfill_s", "same city: backfill s"),
        ):
            rows.append(
                {
                    "measure": f"{label} (1 year vs 10)",
                    "unit": "",
                    "values": {"1": one[key], str(top): ten[key]},
                    "ratio": round(ten[key] / one[key], 2),
                    "linear": round(ratio, 2),
                }
            )
    return rows


def print_table(scales: Sequence[int], rows: Sequence[Row]) -> None:
    top = max(scales)
    head = ["measure", *(f"{s}x" for s in scales), f"{top}x/1x", "linear"]
    lines = [head]
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        lines.append(
            [
                f"{r['measure']}{unit}",
                *(_fmt(r["values"].get(str(s))) for s in scales),
                f"{r['ratio']:.2f}",
                f"{r['linear']:g}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.growth", description=__doc__)
    parser.add_argument("--scales", default="1,10", help="comma-separated, must include 1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel-events", type=int, default=300_000)
    parser.add_argument("--calls", type=int, default=1000, help="calls per fast read")
    parser.add_argument("--skip-kernel", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    scales = sorted({int(s) for s in args.scales.split(",")})
    if scales[0] != 1:
        parser.error("--scales must include 1")
    started = time.perf_counter()
    kernel = {} if args.skip_kernel else kernel_curve(scales, args.kernel_events, args.runs)
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as workdir:
        store = asyncio.run(
            store_curve(scales, args.runs, args.calls, args.redis_url, Path(workdir))
        )
    city = asyncio.run(same_city(args.runs, args.redis_url))
    rows = table_rows(scales, kernel, store, city)
    print()
    print_table(scales, rows)
    print(
        "linear: the ratio if the cost grew in proportion (a total: the scale; "
        "per event or per call: 1, flat)"
    )
    write_result(
        "growth",
        {
            "scales": scales,
            "rows": rows,
            "kernel": {str(k): v for k, v in kernel.items()},
            "store": {str(k): v for k, v in store.items()},
            "same_city": city,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}",
        },
    )


if __name__ == "__main__":
    main()
