"""Benchmark: the core kernel on one core, beside its ceiling.

    .venv/bin/python -m bench.kernel [--events 300000] [--batch 10000] [--runs 5]

The kernel is everything a worker does to a batch between Kafka and the
Redis call: JSON bytes to validated, time-parsed, weighed events with their
cells at every resolution (``core.batching.prepare_values`` with the compiled
``FastParser``, as the worker runs it), then the per-cell sums and the packed
script arguments (``Store.plan`` at known landmarks). No I/O. The same work
without the compiled kernel (Python alone) is timed beside it.
The ceiling beside it, on the same events: orjson parsing plus
``h3.latlng_to_cell`` at one resolution, and nothing else (a list
comprehension). Prints medians over ``--runs`` (the kernel and the ceiling alternating run
by run) and their ratio.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import h3
import orjson
import redis.asyncio as aioredis

from bench.common import write_result
from bench.pipeline import load_values
from streamer import app
from streamer.core import decay, fastpath
from streamer.core.batching import Message, prepare_values
from streamer.core.fastpath import FastParser
from streamer.settings import load_settings


def timed(work: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        work()
        out.append(time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.kernel", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=10_000, help="events per batch")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings(overrides={"grid": {"timezone": "America/New_York"}})
    values = [value for _, value in load_values(args.events)]
    messages = [Message("hotspots.incidents", 0, i, v) for i, v in enumerate(values)]
    source = "hotspots.incidents:0"
    rules, scorer = app.event_rules(settings), app.scorer(settings)
    # a store object for its planning only: nothing is sent
    store = app.store(settings, aioredis.Redis(port=1))
    newest = max(datetime.fromisoformat(orjson.loads(v)["occurred_at"]) for v in values)
    at_s = newest.timestamp()
    store._known_landmarks = {  # the landmarks a running worker knows
        n: decay.landmark_for(at_s, h) for n, h in settings.horizons.items()
    }
    now_s = time.time()

    fast = FastParser(rules, scorer) if fastpath.AVAILABLE else None

    def run(parser: FastParser | None) -> None:
        for i in range(0, len(messages), args.batch):
            # the columns the consumer takes from a poll's records (one partition here)
            records = messages[i : i + args.batch]
            prepared = prepare_values(
                [r.value for r in records],
                [source] * len(records),
                [r.offset for r in records],
                records.__getitem__,
                rules,
                scorer,
                now_s=now_s,
                fast=parser,
            )
            plan = store.plan(
                prepared.ops, now_s=now_s, rows=prepared.rows, positions=prepared.positions
            )
            assert plan.args is not None  # packed: the script's arguments are ready

    def kernel() -> None:
        run(fast)

    def python_kernel() -> None:
        run(None)

    def ceiling() -> None:
        res = 9
        [h3.latlng_to_cell((d := orjson.loads(v))["lat"], d["lon"], res) for v in values]

    if fast is None:
        raise SystemExit("the compiled kernel is not built: pip install -e . with a C compiler")
    # The inputs stay alive for the whole run, as a worker's never do: out
    # of the collector's way (its full passes would walk 300 k messages)
    gc.freeze()
    # alternated run by run, so that a drift in the machine's load touches both
    kernel_s, ceiling_s = [], []
    for _ in range(args.runs):
        kernel_s += timed(kernel, 1)
        ceiling_s += timed(ceiling, 1)
    python_s = timed(python_kernel, max(1, args.runs // 2))
    n = len(values)
    k, c = n / statistics.median(kernel_s), n / statistics.median(ceiling_s)
    py = n / statistics.median(python_s)
    resolutions = ", ".join(map(str, settings.grid.resolutions))
    print(f"{n:,} real events (the bundled 2025 sample), batches of {args.batch:,}, one core")
    print(
        f"kernel (validate, parse times, weigh, cells at {resolutions}, per-cell sums, pack): "
        f"{k:,.0f} events/s (runs {', '.join(f'{n / s:,.0f}' for s in kernel_s)})"
    )
    print(
        f"ceiling (orjson.loads + h3.latlng_to_cell at 9): {c:,.0f} events/s "
        f"(runs {', '.join(f'{n / s:,.0f}' for s in ceiling_s)})"
    )
    print(
        f"the same in Python alone (no compiled kernel): {py:,.0f} events/s "
        f"(runs {', '.join(f'{n / s:,.0f}' for s in python_s)}); compiled / Python {k / py:.1f}x"
    )
    print(f"kernel / ceiling: {100 * k / c:.1f} % (target >= 50 %)")
    write_result(
        "kernel",
        {
            "events": n,
            "batch": args.batch,
            "kernel_events_per_s": round(k),
            "ceiling_events_per_s": round(c),
            "kernel_over_ceiling": round(k / c, 4),
            "python_kernel_events_per_s": round(py),
            "python_runs_s": python_s,
            "kernel_runs_s": kernel_s,
            "ceiling_runs_s": ceiling_s,
        },
    )


if __name__ == "__main__":
    main()
