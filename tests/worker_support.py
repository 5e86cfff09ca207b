"""Helpers for tests of `hotspots run` worker processes: their config file,
starting and killing them, their web endpoints, and the leader timer runs they log."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson
import redis.asyncio as aioredis

from streamer.adapters.store import Store
from streamer.local.broker import free_port
from streamer.settings import Settings
from tests.pipeline_support import Published, redis_key

ROOT = Path(__file__).resolve().parents[1]


def write_config(settings: Settings, path: Path, extra: str = "") -> Path:
    """The settings a worker process needs, as TOML (``extra``: more TOML
    sections to append)."""
    k, s, w, p = settings.kafka, settings.store, settings.worker, settings.publish
    path.write_text(f"""
[store]
redis_url = "{s.redis_url}"
namespace = "{s.namespace}"
batch_max_events = {s.batch_max_events}
cluster = {str(s.cluster).lower()}
[kafka]
bootstrap = "{k.bootstrap}"
group = "{k.group}"
incidents_topic = "{k.incidents_topic}"
calls_topic = "{k.calls_topic}"
dead_letter_topic = "{k.dead_letter_topic}"
[grid]
timezone = "{settings.grid.timezone}"
[worker]
session_timeout = "{w.session_timeout}s"
heartbeat_interval = "{w.heartbeat_interval}s"
rebalance_timeout = "{w.rebalance_timeout}s"
max_poll_interval = "{w.max_poll_interval}s"
lease_ttl = "{w.lease_ttl}s"
partitions = {w.partitions}
state_dir = "{path.parent / "faust"}"
[time]
clock = "{settings.time.clock}"
[publish]
interval = "{p.interval}s"
maintain_interval = "{p.maintain_interval}s"
{extra}""")
    return path


@dataclass
class WorkerProcess:
    """One `hotspots run` process and the port of its web endpoints."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def health(self) -> dict[str, object]:
        return health(self.port)

    def partitions(self) -> list[str]:
        """The event partitions it holds ([] while joining, or when down)."""
        held = self.health().get("partitions", [])
        return [str(p) for p in held] if isinstance(held, list) else []

    def events_counted(self) -> float:
        return events_counted(self.port)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


class Workers:
    """`hotspots run` processes, each on its own web port; every one still
    running is killed on :meth:`stop_all` (or leaving the ``with`` block)."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(self) -> WorkerProcess:
        port = free_port()
        path = self.log_dir / f"worker-{len(self.started)}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamer.cli",
                    "--config",
                    str(self.config),
                    "run",
                    "--web-port",
                    str(port),
                    "--loglevel",
                    "warning",
                    "--debug",
                    "hotspots.timers",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ},
            )
        worker = WorkerProcess(proc, port, path)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        """The end of every worker's log, for a failure message."""
        return "\n".join(f"--- worker {i} ---\n{w.tail()}" for i, w in enumerate(self.started))

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait(timeout=20)

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def health(port: int) -> dict[str, object]:
    """The worker's ``/healthz`` body, or {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            body: dict[str, object] = orjson.loads(r.read())
            return body
    except OSError:
        return {}


def events_counted(port: int) -> float:
    """The sum of ``hotspots_events_total`` over its outcomes."""
    total = 0.0
    for line in scrape(port).splitlines():
        if line.startswith("hotspots_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def merge_offsets(parts: list[Published]) -> dict[str, int]:
    """The last offset per partition over several publications."""
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.last_offsets.items():
            out[k] = max(out.get(k, -1), v)
    return out


async def applied(client: aioredis.Redis, store: Store) -> int:
    """Records applied so far: sum over partitions of last offset + 1."""
    raw = await client.hgetall(redis_key(store, "offsets"))
    return sum(int(v) + 1 for v in raw.values())


async def wait_sharing(
    workers: list[WorkerProcess], partitions: int, timeout_s: float = 90.0
) -> dict[int, list[str]]:
    """Wait until every one of ``workers`` holds partitions and together
    they hold all ``partitions``, each once; returns port -> partitions."""
    deadline = time.monotonic() + timeout_s
    held: dict[int, list[str]] = {}
    while time.monotonic() < deadline:
        held = {w.port: w.partitions() for w in workers}
        every = [p for ps in held.values() for p in ps]
        if all(held.values()) and len(every) == len(set(every)) == partitions:
            return held
        await asyncio.sleep(0.3)
    raise AssertionError(f"workers did not share the {partitions} partitions: {held}")


@dataclass(frozen=True, slots=True)
class TimerRun:
    """One leader timer run, from a worker's ``timer_ran`` log line."""

    name: str
    holder: str
    start_s: float
    end_s: float


_TIMER_RAN = re.compile(r"timer_ran timer=(\S+) holder=(\S+) start=([\d.]+) end=([\d.]+)")


def timer_runs(workers: Workers) -> list[TimerRun]:
    """Every leader timer run the workers logged, oldest first."""
    runs = []
    for worker in workers.started:
        text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
        for name, holder, start, end in _TIMER_RAN.findall(text):
            runs.append(TimerRun(name, holder, float(start), float(end)))
    return sorted(runs, key=lambda r: r.start_s)


def assert_exclusive(runs: list[TimerRun]) -> None:
    """No two holders' timer runs overlap in time."""
    latest_end: dict[str, tuple[float, TimerRun]] = {}  # holder -> its run ending last
    for run in sorted(runs, key=lambda r: r.start_s):
        for holder, (end_s, other) in latest_end.items():
            assert holder == run.holder or end_s <= run.start_s, f"{other} overlaps {run}"
        if run.end_s > latest_end.get(run.holder, (float("-inf"), run))[0]:
            latest_end[run.holder] = (run.end_s, run)
