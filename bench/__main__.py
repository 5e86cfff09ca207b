"""All benchmarks: ``.venv/bin/python -m bench``.

Runs ``bench.kernel`` (the batch kernel beside orjson + h3 alone), then
``bench.backfill`` (the full Philadelphia file into Redis), then
``bench.pipeline`` (Kafka to Redis: raw ceiling, engine, per-event faust
agent, latency), then ``bench.api`` (HTTP latency under load, push
delivery), then ``bench.scaleout`` (1, 2, 3 workers in one group draining a
backlog), then ``bench.pings`` (patrol pings as history grows), then
``bench.memory`` (ten years replayed month by month: Redis memory year by
year), then ``bench.growth`` (each cost at 1x and 10x the events or
cells), each with its default arguments, and prints them; then
``bench.summary``: one table of every figure beside its ceiling or
alternative and its target, also written to ``bench/results/latest.json``.
"""

from __future__ import annotations

import sys

from bench import api, backfill, growth, kernel, memory, pings, pipeline, scaleout, summary


def main() -> None:
    argv, sys.argv = sys.argv, [sys.argv[0]]  # each bench parses its own (default) flags
    try:
        print("== bench.kernel ==", flush=True)
        kernel.main([])
        print("\n== bench.backfill ==", flush=True)
        backfill.main()
        print("\n== bench.pipeline ==", flush=True)
        pipeline.main([])
        print("\n== bench.api ==", flush=True)
        api.main([])
        print("\n== bench.scaleout ==", flush=True)
        scaleout.main([])
        print("\n== bench.pings ==", flush=True)
        pings.main([])
        print("\n== bench.memory ==", flush=True)
        memory.main([])
        print("\n== bench.growth ==", flush=True)
        growth.main([])
        print("\n== summary (bench/results/latest.json) ==", flush=True)
        summary.main()
    finally:
        sys.argv = argv


if __name__ == "__main__":
    main()
