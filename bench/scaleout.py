"""Benchmark: scale-out, K `hotspots run` workers in one consumer group
draining a backlog.

    .venv/bin/python -m bench.scaleout [--events N] [--workers 1,2,3] [--runs R]
        [--partitions P] [--max-seconds T]

On one local Tansu broker (``LocalBroker``, in-memory, 127.0.0.1) and the
local Redis: N real events (``streamer/data/philadelphia_2025.csv.gz`` as native JSON,
keyed by id; the sample's 148 k events repeated with new ids when N is
larger) are published once, before anything is timed, to an incidents topic
of P partitions (6: an even share for 1, 2 and 3 workers). Then, for each K
in ``--workers`` (the Ks alternate within a run, so drift in the machine's
load spreads over all of them), K worker processes are started at once
(``python -m streamer.cli run``, default settings but for their own
namespace, group and topics) and read the backlog from the beginning.

Measured per run: ``{NS}:offsets`` polled every 50 ms (records applied =
sum of offset + 1 over the partitions), each worker's ``/healthz`` (the
partitions it holds) every 100 ms until all hold some, every 500 ms after.

* **events/s**: N over the time from the first ``/healthz`` listing
  partitions (the group formed: the join, ~12 s from spawn with the default
  10 s session on Tansu, is left out) to the poll showing all N applied.
  Tansu answers a JoinGroup only after half the session timeout, so workers
  started together join one generation and drain from the same moment.
* **after 1st write**: records applied after the first store write, over the
  time from it to the end (the definition in issue 8). It leaves out the
  other workers' first batches, prepared before that write, and so flatters
  K > 1 a little; reported beside the first.
* **rebalances**: assignment changes after every worker first held
  partitions; when there were any, ``steady_events_per_s`` is the rate after
  the last one (``None`` with less than 10 % of the backlog left then), and
  the workers' logs are kept.
* **cores busy**: CPU seconds over the drain of the workers (``/proc``),
  Redis (``INFO cpu``) and the broker, over its wall time: the machine has
  two cores, and the workers share them with Redis and Tansu.
* per worker, from its ``/metrics``: records, batches, batch and store-write
  seconds (in the JSON).

Medians over ``--runs`` per K, and their ratio to K=1 (when 1 is among the
Ks). Writes ``bench/results/latest-scaleout.json``. Every Redis key written
lives under ``{bench-scaleout-...}`` namespaces and is deleted (SCAN +
UNLINK); every process started (broker, workers) is stopped on the way out,
also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.common import ROOT, drop_namespace, stop_child, tail
from bench.pipeline import load_values, machine, publish_backlog

RESULTS = ROOT / "bench" / "results" / "latest-scaleout.json"
REDIS_URL = "redis://127.0.0.1:6379/0"
TOPICS = {
    "incidents_topic": "bench.scaleout.incidents",
    "calls_topic": "bench.scaleout.calls",
    "dead_letter_topic": "bench.scaleout.dead-letter",
}
POLL_S = 0.05
HEALTH_POLL_S = 0.1  # /healthz polls until every worker holds partitions
REBALANCE_POLL_S = 0.5  # ... and after
STEADY_MIN_SHARE = 0.10  # "steady" needs at least this share of the backlog left


def log(message: str) -> None:
    print(f"[scaleout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workers


def worker_env(
    namespace: str, bootstrap: str, redis_url: str, partitions: int, state_dir: Path
) -> dict[str, str]:
    """The environment of a worker: default settings but for these keys
    (nothing from the caller's own ``HOTSPOTS_*`` variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}
    env.update(
        {
            "HOTSPOTS_STORE__NAMESPACE": namespace,
            "HOTSPOTS_STORE__REDIS_URL": redis_url,
            "HOTSPOTS_KAFKA__BOOTSTRAP": bootstrap,
            "HOTSPOTS_KAFKA__GROUP": namespace,
            "HOTSPOTS_WORKER__PARTITIONS": str(partitions),
            "HOTSPOTS_WORKER__STATE_DIR": str(state_dir),
            **{f"HOTSPOTS_KAFKA__{k.upper()}": v for k, v in TOPICS.items()},
        }
    )
    return env


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    held_since: float | None = None  # monotonic: first /healthz listing partitions


class Fleet:
    """The worker processes of the benchmark, stopped however it ends."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    async def start(self, env: dict[str, str], log_path: Path, loglevel: str) -> Worker:
        from streamer.local.broker import free_port

        port = free_port()
        with open(log_path, "ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamer.cli",
                "run",
                "--web-port",
                str(port),
                "--loglevel",
                loglevel,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                # a session of its own: a Ctrl-C reaches the benchmark, which
                # stops its children in order
                start_new_session=True,
            )
        worker = Worker(proc, port, log_path)
        self.workers.append(worker)
        return worker

    async def stop(self) -> list[int]:
        """SIGTERM every worker (SIGKILL after 15 s); their exit codes."""
        workers, self.workers = self.workers, []
        return list(await asyncio.gather(*(stop_child(w.proc) for w in workers)))

    def kill_now(self) -> None:
        """Last resort, synchronous: SIGKILL what is still running."""
        for w in self.workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        body: bytes = r.read()
        return body


async def held_partitions(port: int) -> list[str] | None:
    """The partitions a worker holds, or None while it does not answer."""
    try:
        body = orjson.loads(await asyncio.to_thread(_get, port, "/healthz"))
    except (OSError, ValueError):
        return None
    return [str(p) for p in body.get("partitions", [])]


PRIMARY = ("upsert", "cancel", "excluded", "invalid")  # one per record; the rest overlap


async def worker_metrics(port: int) -> dict[str, Any]:
    """From the worker's /metrics: ``hotspots_events_total`` by outcome,
    its batches, their mean size, and the seconds spent in batches and in
    store writes (sums)."""
    text = (await asyncio.to_thread(_get, port, "/metrics")).decode()
    events: dict[str, int] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hotspots_events_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            events[outcome] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(("hotspots_batch_", "hotspots_store_seconds_")) and (
            "_sum " in line or "_count " in line
        ):
            name, value = line.rsplit(" ", 1)
            sums[name] = float(value)
    batches = int(sums.get("hotspots_batch_size_count", 0))
    return {
        "events": events,
        "records": sum(events.get(o, 0) for o in PRIMARY),
        "batches": batches,
        "batch_size_mean": round(sums.get("hotspots_batch_size_sum", 0) / max(batches, 1)),
        "batch_seconds": round(sums.get("hotspots_batch_seconds_sum", 0), 2),
        "store_seconds": round(sums.get("hotspots_store_seconds_sum", 0), 2),
    }


async def settled_metrics(workers: list[Worker], total: int) -> list[dict[str, Any]]:
    """Every worker's metrics once they count all ``total`` records (a
    batch's counters move just after its store write), or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        found = list(await asyncio.gather(*(worker_metrics(w.port) for w in workers)))
        if sum(m["records"] for m in found) >= total or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU seconds of a process (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(client: aioredis.Redis) -> float:
    info: dict[str, Any] = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --------------------------------------------------------------------------- one run


@dataclass
class Trace:
    """What the pollers saw during one run (monotonic times)."""

    applied: list[tuple[float, int]] = field(default_factory=list)  # (t, records applied)
    assignments: list[tuple[float, tuple[tuple[str, ...], ...]]] = field(default_factory=list)
    held_at: float | None = None  # first /healthz of any worker listing partitions
    all_held_at: float | None = None  # ... of every worker
    cpu_at_held: dict[str, float] = field(default_factory=dict)

    def applied_at(self, t: float) -> int:
        """Records applied by the last poll at or before ``t``."""
        seen = 0
        for when, n in self.applied:
            if when > t:
                break
            seen = n
        return seen


async def cpu_now(
    workers: list[Worker], client: aioredis.Redis, broker_pid: int | None
) -> dict[str, float]:
    return {
        "workers": sum(cpu_seconds(w.proc.pid) for w in workers),
        "redis": await redis_cpu_seconds(client),
        "broker": cpu_seconds(broker_pid),
    }


async def measure(
    k: int,
    run: int,
    *,
    bootstrap: str,
    broker_pid: int | None,
    targets: dict[str, int],
    redis_url: str,
    partitions: int,
    workdir: Path,
    fleet: Fleet,
    max_seconds: float,
    loglevel: str,
) -> dict[str, Any]:
    """K workers, a new group and namespace, until they applied the backlog."""
    namespace = f"bench-scaleout-{k}w-{run}-{uuid.uuid4().hex[:6]}"
    client = aioredis.Redis.from_url(redis_url)
    offsets_key = f"{{{namespace}}}:offsets"
    total = sum(o + 1 for o in targets.values())
    trace = Trace()
    try:
        env = worker_env(namespace, bootstrap, redis_url, partitions, workdir / namespace)
        t_spawn = time.monotonic()
        workers = [
            await fleet.start(env, workdir / f"{namespace}-worker-{i}.log", loglevel)
            for i in range(k)
        ]
        done = asyncio.Event()

        async def watch_assignment() -> None:
            while not done.is_set():
                held = await asyncio.gather(*(held_partitions(w.port) for w in workers))
                now = time.monotonic()
                if trace.held_at is None and any(held):
                    trace.held_at = now
                    trace.cpu_at_held = await cpu_now(workers, client, broker_pid)
                if trace.all_held_at is None and all(held):
                    trace.all_held_at = now
                # a worker too busy to answer in time is no change of assignment
                snapshot = tuple(tuple(h) for h in held if h is not None)
                changed = not trace.assignments or trace.assignments[-1][1] != snapshot
                if len(snapshot) == len(workers) and changed:
                    trace.assignments.append((now, snapshot))
                # often until the group is formed (the start of the clock),
                # then seldom: the requests cost the workers CPU
                pause = HEALTH_POLL_S if trace.all_held_at is None else REBALANCE_POLL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), pause)

        watcher = asyncio.create_task(watch_assignment())
        deadline = t_spawn + max_seconds
        try:
            while True:
                raw = await client.hgetall(offsets_key)
                now = time.monotonic()
                have = {
                    (key.decode() if isinstance(key, bytes) else key): int(v)
                    for key, v in raw.items()
                }
                trace.applied.append((now, sum(v + 1 for v in have.values())))
                if all(have.get(s, -1) >= o for s, o in targets.items()):
                    break
                for w in workers:
                    if w.proc.returncode is not None:
                        raise RuntimeError(
                            f"worker exited {w.proc.returncode}; log:\n{tail(w.log_path)}"
                        )
                if now > deadline:
                    raise RuntimeError(
                        f"{k} workers applied {trace.applied[-1][1]:,} of {total:,} in "
                        f"{max_seconds:g} s; log:\n{tail(workers[0].log_path)}"
                    )
                await asyncio.sleep(POLL_S)
        finally:
            done.set()
            await watcher
        cpu_end = await cpu_now(workers, client, broker_pid)
        found = await settled_metrics(workers, total)
    finally:
        codes = await fleet.stop()  # before the keys go: a worker still writes until then
        await drop_namespace(client, namespace)
        await client.aclose()
    return summarise(k, trace, t_spawn, total, cpu_end, found, codes)


def summarise(
    k: int,
    trace: Trace,
    t_spawn: float,
    total: int,
    cpu_end: dict[str, float],
    found: list[dict[str, Any]],
    codes: list[int],
) -> dict[str, Any]:
    """The figures of one run (see the module doc)."""
    t_done = trace.applied[-1][0]
    t_held = trace.held_at if trace.held_at is not None else t_spawn
    t_first = next(t for t, n in trace.applied if n)
    seconds = t_done - t_held
    # rebalances: changes after every worker first held partitions (one
    # generation's assignments reach the workers up to ~0.5 s apart)
    t_all = trace.all_held_at if trace.all_held_at is not None else t_held
    changes = sum(1 for t, _ in trace.assignments if t > t_all)
    t_final = max([t_held] + [t for t, _ in trace.assignments if t > t_all])
    steady: float | None = None
    left = total - trace.applied_at(t_final)
    if t_final > t_held and left >= STEADY_MIN_SHARE * total and t_done > t_final:
        steady = left / (t_done - t_final)
    cpu = {name: round(cpu_end[name] - trace.cpu_at_held[name], 2) for name in cpu_end}
    outcomes: list[dict[str, int]] = [m["events"] for m in found]
    return {
        "workers": k,
        "events": total,
        "events_per_s": round(total / seconds),
        "seconds": round(seconds, 2),
        "after_first_write_events_per_s": round(
            (total - trace.applied_at(t_first)) / (t_done - t_first)
        ),
        "steady_events_per_s": None if steady is None else round(steady),
        "spawn_to_assigned_s": round(t_held - t_spawn, 2),
        "assigned_to_first_write_s": round(t_first - t_held, 2),
        "all_assigned_after_s": (
            None if trace.all_held_at is None else round(trace.all_held_at - t_held, 2)
        ),
        "assignment_changes_during_drain": changes,
        "events_per_worker": [m["records"] for m in found],
        "batches": sum(m["batches"] for m in found),
        "batch_size_mean": round(
            sum(m["batch_size_mean"] * m["batches"] for m in found)
            / max(sum(m["batches"] for m in found), 1)
        ),
        # summed over the workers: with K > 1 the writes wait on each other in Redis
        "batch_seconds": round(sum(m["batch_seconds"] for m in found), 2),
        "store_write_seconds": round(sum(m["store_seconds"] for m in found), 2),
        "outcomes": {
            name: sum(o.get(name, 0) for o in outcomes) for name in sorted(set().union(*outcomes))
        },
        "cpu_seconds": cpu,
        "cores_busy": {name: round(v / seconds, 2) for name, v in cpu.items()},
        "exit_codes": codes,
    }


# --------------------------------------------------------------------------- report


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _fmt(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def table(result: dict[str, Any]) -> str:
    """The summary as a text table."""
    summary = result["summary"]
    base = summary.get("1", {})
    heads = (
        "workers",
        "events/s",
        "vs 1",
        "runs",
        "after 1st write",
        "vs 1",
        "join s",
        "cores busy: workers+redis+broker",
        "events per worker",
    )
    rows: list[tuple[str, ...]] = []
    for k, s in summary.items():
        runs = [r for r in result["runs"] if str(r["workers"]) == k]
        busy = s["cores_busy"]
        rows.append(
            (
                k,
                _fmt(s["events_per_s"]),
                _ratio(s["events_per_s"], base.get("events_per_s")),
                ", ".join(_fmt(r["events_per_s"]) for r in runs),
                _fmt(s["after_first_write_events_per_s"]),
                _ratio(
                    s["after_first_write_events_per_s"], base.get("after_first_write_events_per_s")
                ),
                f"{s['spawn_to_assigned_s']:.1f}",
                f"{busy['workers']:.2f} + {busy['redis']:.2f} + {busy['broker']:.2f}"
                f" = {busy['workers'] + busy['redis'] + busy['broker']:.2f}",
                " / ".join(f"{n / 1000:.1f}k" for n in runs[-1]["events_per_worker"]),
            )
        )
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    m, c = result["machine"], result["config"]
    changes = [r["assignment_changes_during_drain"] for r in result["runs"]]
    steady = [r["steady_events_per_s"] for r in result["runs"] if r["steady_events_per_s"]]
    lines += [
        "events/s: N / (group formed -> all N applied), median of the runs; after 1st write: "
        "records applied after the first store write / the time from it (issue 8's definition)",
        "join s: spawn -> partitions held (not in the rates); cores busy: CPU s over the drain"
        f" / its wall time; rebalances during the drains: {changes}"
        + (f" (rates after the last: {steady})" if steady else ""),
        f"machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}, "
        f"load {m['loadavg_at_start']} -> {m.get('loadavg_at_end')}; "
        f"N={c['events']:,}, partitions={c['partitions']}, runs={c['runs']}, "
        f"wall {result['wall_s']:.0f} s",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, fleet: Fleet) -> dict[str, Any]:
    from streamer.adapters.broker import ensure_topics
    from streamer.local.broker import LocalBroker

    t_all = time.monotonic()
    log(f"loading {args.events:,} events")
    items = load_values(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="hotspots-bench-scaleout-"))
    broker = LocalBroker(log_dir=workdir / "tansu")
    result: dict[str, Any] = {
        "config": {
            "events": args.events,
            "workers": args.workers,
            "runs": args.runs,
            "partitions": args.partitions,
            "max_seconds": args.max_seconds,
            "worker_settings": "defaults (streamer/config/default.toml) but namespace, group, "
            "topics, worker.partitions",
        },
        "machine": machine(),
        "runs": [],
    }
    broker.start()
    failed = True
    try:
        ensure_topics(
            broker.bootstrap,
            {
                TOPICS["incidents_topic"]: args.partitions,
                TOPICS["calls_topic"]: args.partitions,
                TOPICS["dead_letter_topic"]: 1,
            },
        )
        targets, publish_s = await publish_backlog(
            broker.bootstrap, TOPICS["incidents_topic"], items, args.partitions
        )
        published = sum(o + 1 for o in targets.values())
        if published != len(items):
            raise RuntimeError(f"published {len(items):,} but the offsets say {published:,}")
        result["preload"] = {"seconds": round(publish_s, 2), "targets": targets}
        log(f"published {len(items):,} events in {publish_s:.1f} s on {broker.bootstrap}")
        for i in range(args.runs):
            for k in args.workers:
                r = await measure(
                    k,
                    i,
                    bootstrap=broker.bootstrap,
                    broker_pid=broker.pid,
                    targets=targets,
                    redis_url=args.redis_url,
                    partitions=args.partitions,
                    workdir=workdir,
                    fleet=fleet,
                    max_seconds=args.max_seconds,
                    loglevel=args.worker_loglevel,
                )
                result["runs"].append(r)
                log(
                    f"run {i}, {k} workers: {r['events_per_s']:,} ev/s (after 1st write "
                    f"{r['after_first_write_events_per_s']:,}), join {r['spawn_to_assigned_s']} s, "
                    f"rebalances {r['assignment_changes_during_drain']}, "
                    f"split {r['events_per_worker']}, cores {r['cores_busy']}"
                )
        failed = False
    finally:
        await fleet.stop()
        broker.stop()
        rebalanced = [r for r in result["runs"] if r["assignment_changes_during_drain"]]
        if failed or rebalanced:
            log(f"logs kept in {workdir}")
            result["logs"] = str(workdir)
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {}
    for k in args.workers:
        runs = [r for r in result["runs"] if r["workers"] == k]
        steady = [r["steady_events_per_s"] for r in runs if r["steady_events_per_s"] is not None]
        summary[str(k)] = {
            "events_per_s": statistics.median(r["events_per_s"] for r in runs),
            "after_first_write_events_per_s": statistics.median(
                r["after_first_write_events_per_s"] for r in runs
            ),
            "steady_events_per_s": statistics.median(steady) if steady else None,
            "spawn_to_assigned_s": statistics.median(r["spawn_to_assigned_s"] for r in runs),
            "cores_busy": {
                name: statistics.median(r["cores_busy"][name] for r in runs)
                for name in ("workers", "redis", "broker")
            },
        }
    if "1" in summary:
        base = summary["1"]
        for s in summary.values():
            s["over_1_worker"] = round(s["events_per_s"] / base["events_per_s"], 2)
            s["after_first_write_over_1_worker"] = round(
                s["after_first_write_events_per_s"] / base["after_first_write_events_per_s"], 2
            )
    result["summary"] = summary
    result["wall_s"] = round(time.monotonic() - t_all, 1)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=200_000, help="N, the backlog")
    parser.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 3],
        help="worker counts, comma-separated (default 1,2,3)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per worker count")
    parser.add_argument("--partitions", type=int, default=6, help="of the incidents topic")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="give up on a run after this long"
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--worker-loglevel", default="warning", help="of the workers' logs (kept after a rebalance)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.events < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--events, --runs and every worker count must be at least 1")
    if max(args.workers) > args.partitions:
        parser.error("more workers than partitions: some would sit idle")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the figures."""
    args = parse_args(argv)
    fleet = Fleet()
    try:
        result = asyncio.run(run(args, fleet))
    finally:
        fleet.kill_now()  # only what an interrupted stop left behind
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
