"""All benchmarks: ``.venv/bin/python -m bench``.

Runs ``bench.backfill`` (the full Philadelphia file into Redis), then
``bench.pipeline`` (Kafka to Redis: raw ceiling, engine, per-event faust
agent, latency), each with its default arguments, and prints both.
"""

from __future__ import annotations

import sys

from bench import backfill, pipeline


def main() -> None:
    argv, sys.argv = sys.argv, [sys.argv[0]]  # each bench parses its own (default) flags
    try:
        print("== bench.backfill ==", flush=True)
        backfill.main()
        print("\n== bench.pipeline ==", flush=True)
        pipeline.main([])
    finally:
        sys.argv = argv


if __name__ == "__main__":
    main()
