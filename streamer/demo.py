"""``hotspots demo``: the whole pipeline on one machine, with nothing to set up.

1. use the Redis at ``store.redis_url`` if it answers, else an embedded Valkey;
2. claim the demo's namespace (``--namespace``, default ``demo``): an empty
   one gets a marker key (``{NS}:demo``) saying the demo wrote it, a marked
   one (an earlier run's) is emptied so every run starts clean, and any other
   is refused, with nothing deleted: the demo never deletes data it did not
   write;
3. start the bundled Kafka-compatible broker (Tansu) on a free loopback port;
4. backfill the bundled Philadelphia sample up to 2025-12-01 (local time);
5. start a worker (``hotspots run``, a subprocess) and replay December
   through Kafka at ``--speed`` times real time, while the live view
   (:mod:`streamer.live`) shows the rankings move.

Ctrl-C, SIGTERM or ``--duration`` stop everything the demo started (replay,
worker, broker, embedded Valkey) and remove its temporary files. The
namespace stays, for queries afterwards; ``hotspots demo --clean`` deletes it
(again only when it holds the marker). The clock is the event clock (scores
decay to the newest event time), since the data is historical.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import orjson
import redis
from rich.console import Console

from streamer import app
from streamer.settings import DATA_DIR, ConfigError, Settings, load_settings

SAMPLE = DATA_DIR / "philadelphia_2025.csv.gz"
PROFILE = "philadelphia"
SPLIT_AT_LOCAL = "2025-12-01 00:00:00"  # the sample's times are local wall times
TIMEZONE = "America/New_York"
DEFAULT_SPEED = 3600.0
DEFAULT_NAMESPACE = "demo"
OWNER_FIELD = "demo"  # {NS}:demo, the marker of a namespace the demo created
WORKER_READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 10.0
REDIS_PING_TIMEOUT_S = 3.0  # a busy Redis is not a dead one (a dead one refuses at once)
# Tansu answers a JoinGroup after about half the session timeout
# (docs/tansu.md): a 2 s session makes the worker's join take about 1 s.
PATROL_UNITS = 4  # simulated patrol units ...
PATROL_CELLS = 12  # ... on the top hot spots (a list plan)
WORKER_TIMEOUTS = {"session_timeout": "2s", "heartbeat_interval": "0.3s", "rebalance_timeout": "2s"}


class Interrupted(Exception):
    """SIGINT or SIGTERM during set-up: stop and clean up."""


@dataclass
class DemoOptions:
    """The demo's flags."""

    speed: float = DEFAULT_SPEED
    duration_s: float | None = None
    live: bool = True
    stale_after_s: float = 10.0
    namespace: str = DEFAULT_NAMESPACE
    config: str | None = None
    clean: bool = False  # delete the demo's namespace instead of running


@dataclass
class ReplayState:
    """What the replay thread has done so far (read by the main thread)."""

    sent: int = 0
    last_event: str | None = None  # occurred_at of the newest record handed to Kafka
    finished: bool = False
    error: BaseException | None = None
    by_topic: dict[str, int] = field(default_factory=dict)


class _Signals:
    """SIGINT/SIGTERM set :attr:`stop`; while :attr:`abortable` they also
    raise :class:`Interrupted` (to leave a blocking set-up step)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abortable = True
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.stop.is_set()
        self.stop.set()
        self.received = signal.Signals(signum).name
        if first and self.abortable:
            raise Interrupted(self.received)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT while starting a child that cannot be put in its own
    session: the child inherits the mask, so a Ctrl-C at the terminal (sent
    to the whole foreground process group) does not kill it under the
    worker; the demo stops it in order instead. Our own SIGINT is delivered
    when the block is lifted."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _toml_string(value: str) -> str:
    """An env value read as a TOML string (settings parse env values as TOML)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


class NamespaceNotOwned(Exception):
    """The namespace holds keys and no demo marker: the demo did not write
    them, so it deletes nothing and stops."""

    def __init__(self, namespace: str, redis_url: str, example_key: str) -> None:
        self.namespace = namespace
        self.redis_url = redis_url
        self.example_key = example_key
        super().__init__(
            f"namespace {namespace!r} in the Redis at {redis_url} holds data the demo did not "
            f"write (e.g. key {example_key}, and no marker key {owner_key(namespace)}): nothing "
            "deleted, nothing started. Choose another namespace with `hotspots demo --namespace "
            'NAME` (`make demo DEMO_ARGS="--namespace NAME"`), or point store.redis_url at '
            "another Redis."
        )


def owner_key(namespace: str) -> str:
    """The key that marks ``namespace`` as the demo's (``{NS}:demo``)."""
    return "{" + namespace + "}:" + OWNER_FIELD


def _keys(client: redis.Redis, namespace: str) -> Iterator[bytes]:
    yield from client.scan_iter(match="{" + namespace + "}*", count=1000)


def _unlink_all(client: redis.Redis, keys: Iterator[bytes]) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed


def _foreign_key(client: redis.Redis, namespace: str) -> str | None:
    """A key of an unmarked ``namespace``, or ``None`` when it is empty or marked."""
    if client.exists(owner_key(namespace)):
        return None
    for key in _keys(client, namespace):
        return _text(key)
    return None


def claim_namespace(url: str, namespace: str, *, now_s: float) -> int:
    """Make ``namespace`` the demo's, empty but for its marker; returns how
    many keys of an earlier demo run were deleted.

    An empty namespace gets the marker (``{NS}:demo``, with the time it was
    first written); one holding the marker is the demo's and loses every
    other key (the marker stays, so an interrupted wipe leaves it marked);
    any other raises :class:`NamespaceNotOwned` and nothing is deleted.
    """
    client = redis.Redis.from_url(url)
    marker = owner_key(namespace)
    try:
        example = _foreign_key(client, namespace)
        if example is not None:
            raise NamespaceNotOwned(namespace, url, example)
        removed = _unlink_all(client, (k for k in _keys(client, namespace) if _text(k) != marker))
        stamp = datetime.fromtimestamp(now_s, UTC).isoformat(timespec="seconds")
        client.set(
            marker, orjson.dumps({"written_by": "hotspots demo", "created_at": stamp}), nx=True
        )
    finally:
        client.close()
    return removed


def remove_namespace(url: str, namespace: str) -> int:
    """Delete a namespace the demo wrote (marker included); returns how many
    keys. An unmarked one that holds keys raises :class:`NamespaceNotOwned`."""
    client = redis.Redis.from_url(url)
    try:
        example = _foreign_key(client, namespace)
        if example is not None:
            raise NamespaceNotOwned(namespace, url, example)
        return _unlink_all(client, _keys(client, namespace))
    finally:
        client.close()


def _worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    s = settings
    values = {
        "HOTSPOTS_KAFKA__BOOTSTRAP": s.kafka.bootstrap,
        "HOTSPOTS_KAFKA__GROUP": s.kafka.group,
        "HOTSPOTS_STORE__NAMESPACE": s.store.namespace,
        "HOTSPOTS_STORE__REDIS_URL": s.store.redis_url,
        "HOTSPOTS_TIME__CLOCK": s.time.clock,
        "HOTSPOTS_GRID__TIMEZONE": s.grid.timezone,
        # the replay runs an hour of data a second: detect every data hour
        "HOTSPOTS_ALERTS__INTERVAL": "1s",
        "HOTSPOTS_DOSAGE__INTERVAL": "2s",
        **{f"HOTSPOTS_WORKER__{k.upper()}": v for k, v in WORKER_TIMEOUTS.items()},
    }
    env.update({k: _toml_string(v) for k, v in values.items()})
    # The worker runs in a temporary directory (faust writes <app>-data there);
    # make sure it imports this very package.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(path: Path, max_bytes: int = 3000) -> str:
    try:
        return path.read_bytes()[-max_bytes:].decode(errors="replace")
    except OSError:
        return ""


def _worker_ready(port: int) -> bool:
    return _ready(f"http://127.0.0.1:{port}/readyz")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, wait, SIGKILL after ``timeout_s``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    return process.returncode


class Demo:
    """One run of the demo; :meth:`run` returns the exit code."""

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(highlight=False)
        self.signals = _Signals()
        self.started = time.monotonic()
        self.tmp: Path | None = None
        self.broker: Any = None
        self.embedded: Any = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log: Path | None = None
        self.worker_port: int | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log: Path | None = None
        self.replay_thread: threading.Thread | None = None
        self.patrol_thread: threading.Thread | None = None
        self.replay = ReplayState()
        self.settings: Settings | None = None
        self.first_update_s: float | None = None

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        self.console.print(f"demo: {text}", highlight=False, soft_wrap=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        self.signals.install()
        code = 1
        try:
            code = self._run()
        except Interrupted as exc:
            self.say(f"{exc} received: stopping")
            code = 0
        except NamespaceNotOwned as exc:
            self.say(f"refused: {exc}")
            code = 2
        except ConfigError as exc:
            self.say(f"error: {exc}")
            code = 2
        except KeyboardInterrupt:
            self.say("interrupted: stopping")
            code = 0
        except Exception as exc:  # the demo's top level: say what failed, then clean up
            import traceback

            traceback.print_exc()
            self.say(f"failed: {exc}")
            code = 1
        finally:
            self.signals.abortable = False
            self.signals.stop.set()
            try:
                self._cleanup()
            finally:
                self.signals.restore()
        return code

    def _run(self) -> int:
        from streamer.adapters.broker import LocalBroker, free_port
        from streamer.adapters.redis_server import EmbeddedRedis, redis_answers

        opts = self.options
        base = load_settings(opts.config, overrides={"store": {"namespace": opts.namespace}})
        redis_url = base.store.redis_url
        if redis_answers(redis_url, timeout_s=REDIS_PING_TIMEOUT_S):
            self.say(f"redis: using {redis_url}")
            # before anything starts: a namespace the demo may not use stops it here
            removed = claim_namespace(redis_url, opts.namespace, now_s=time.time())
            earlier = f"; {removed} keys of an earlier demo run deleted" if removed else ""
            self.say(
                f"namespace {opts.namespace!r} is the demo's "
                f"(marker key {owner_key(opts.namespace)}){earlier}"
            )
        else:
            self.embedded = EmbeddedRedis()
            with _sigint_blocked():
                self.embedded.start()
            self.say(
                f"redis: {redis_url} does not answer; embedded valkey pid "
                f"{self.embedded.pid} at {self.embedded.url} (gone when the demo stops)"
            )
            redis_url = self.embedded.url
            claim_namespace(redis_url, opts.namespace, now_s=time.time())

        self.tmp = Path(tempfile.mkdtemp(prefix="hotspots-demo-"))
        self.say(f"temporary files in {self.tmp} (removed on exit)")
        self.broker = LocalBroker(log_dir=self.tmp / "tansu")
        with _sigint_blocked():
            self.broker.start()
        self.say(f"broker (tansu) pid {self.broker.pid} at {self.broker.bootstrap}")

        settings = load_settings(
            opts.config,
            overrides={
                "kafka": {
                    "bootstrap": self.broker.bootstrap,
                    "group": f"demo-{uuid.uuid4().hex[:8]}",
                },
                "store": {"namespace": opts.namespace, "redis_url": redis_url},
                "time": {"clock": "event"},
                "grid": {"timezone": TIMEZONE},
            },
        )
        self.settings = settings

        app.ensure_topics(settings)
        # The worker starts (imports, faust, group join) while the backfill runs:
        # it has nothing to consume until the replay starts.
        self.worker_port = free_port()
        self._start_worker(settings)

        early, late = self.tmp / "until-december.csv.gz", self.tmp / "december.csv.gz"
        n_early, n_late = split_sample(SAMPLE, early, late, SPLIT_AT_LOCAL)
        self.say(
            f"sample {SAMPLE.name}: {n_early} rows before {SPLIT_AT_LOCAL[:10]} to backfill, "
            f"{n_late} to replay through Kafka"
        )
        asyncio.run(self._backfill(settings, early))
        self._wait_for_worker()
        self.say(
            f"worker ready after {self.elapsed():.1f} s "
            f"(metrics at http://127.0.0.1:{self.worker_port}/metrics)"
        )
        self._start_server(settings)
        self.say(
            f"pids: broker={self.broker.pid} worker={self.worker.pid if self.worker else '-'} "
            f"valkey={self.embedded.pid if self.embedded else '-'}"
        )

        self.signals.abortable = False  # from here on a signal just stops the loop
        self._start_replay(settings, late)
        if settings.dosage.enabled:
            self._start_patrols(settings)
        self.say(
            f"replaying December at {opts.speed:g}x real time "
            f"({opts.speed / 3600:.3g} h of data per second)"
        )
        return asyncio.run(self._show(settings))

    async def _backfill(self, settings: Settings, path: Path) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from streamer.adapters.files import load_profile

        store = app.store(settings)
        started = time.monotonic()
        try:
            with Progress(
                TextColumn("backfill {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                disable=not self.options.live,
            ) as bar:
                task = bar.add_task("read", total=None)

                def progress(stage: str, done: int, total: int) -> None:
                    bar.update(task, description=stage, completed=done, total=total)

                report = await app.backfill(
                    settings,
                    store,
                    path,
                    load_profile(PROFILE),
                    now_s=time.time(),
                    force=True,
                    progress=progress,
                )
            seq = await store.seq()
        finally:
            await store.client.aclose()
        self.say(
            f"backfilled {report.accepted} events ({report.read} read, "
            f"{sum(report.rejected.values())} rejected, {report.cells} cells) in "
            f"{time.monotonic() - started:.1f} s; store seq {seq}"
        )

    def _start_worker(self, settings: Settings) -> None:
        assert self.tmp is not None and self.worker_port is not None
        work = self.tmp / "worker"
        work.mkdir()
        self.worker_log = self.tmp / "worker.log"
        self.worker = self._cli(
            ["run", "--web-port", str(self.worker_port), "--loglevel", "warning"],
            self.worker_log,
            work,
            _worker_env(settings),
        )
        self.say(f"worker pid {self.worker.pid} starting (log {self.worker_log})")

    def _cli(
        self, args: list[str], log_path: Path, cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """``hotspots ARGS`` (with this demo's --config) logging to ``log_path``,
        in a session of its own: a terminal Ctrl-C reaches the demo, which
        stops its children in order."""
        command = [sys.executable, "-m", "streamer.cli"]
        if self.options.config:
            command += ["--config", str(Path(self.options.config).resolve())]
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [*command, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )

    def _start_server(self, settings: Settings) -> None:
        """``hotspots serve`` with a display token of this run only; prints
        the wall display's address."""
        import secrets

        from streamer.adapters.broker import free_port
        from streamer.api import token_digest

        assert self.tmp is not None
        token = secrets.token_urlsafe(16)
        port = free_port()
        env = _worker_env(settings)
        env["HOTSPOTS_API__TOKENS"] = (
            f'{{demo = {{token_sha256 = "{token_digest(token)}", role = "admin"}}}}'
        )
        self.server_log = self.tmp / "serve.log"
        self.server = self._cli(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], self.server_log, self.tmp, env
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not _ready(f"http://127.0.0.1:{port}/readyz"):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.say(f"the API server did not start:\n{_tail(self.server_log)}")
                return
            time.sleep(0.1)
        self.say(f"wall display: http://127.0.0.1:{port}/?token={token}")
        self.say(f"API: http://127.0.0.1:{port}/v1/hotspots (Authorization: Bearer {token})")

    def _wait_for_worker(self) -> None:
        assert self.worker is not None and self.worker_port is not None
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not _worker_ready(self.worker_port):
            if self.worker.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.worker.returncode}:\n"
                    f"{_tail(self.worker_log) if self.worker_log else ''}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the worker was not ready after {WORKER_READY_TIMEOUT_S:.0f} s:\n"
                    f"{_tail(self.worker_log) if self.worker_log else ''}"
                )
            time.sleep(0.1)

    def _start_replay(self, settings: Settings, path: Path) -> None:
        from streamer.adapters.files import iter_records, load_profile
        from streamer.replay import replay

        stop = self.signals.stop
        state = self.replay
        k = settings.kafka
        profile = load_profile(PROFILE)

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
                    speed=self.options.speed,
                    sleep=sleep,
                )
                state.sent = report.sent
                state.by_topic = dict(report.by_topic)
            except BaseException as exc:  # reported by the main thread
                state.error = exc
            finally:
                state.finished = True

        self.replay_thread = threading.Thread(target=work, name="demo-replay", daemon=True)
        self.replay_thread.start()

    def _start_patrols(self, settings: Settings) -> None:
        """Simulated units patrolling the top hot spots (there is no public
        GPS data): a list plan of them, then pings in step with the replay."""
        from kafka import KafkaProducer

        from streamer.adapters.patrols import Dosage
        from streamer.patrol_sim import PatrolSimulator

        client = redis.Redis.from_url(settings.store.redis_url)
        try:
            key = (
                "{"
                + settings.store.namespace
                + "}"
                + (f":rank:{settings.dosage.plan_horizon}:{settings.dosage.resolution}")
            )
            cells = [_text(c) for c in client.zrevrange(key, 0, PATROL_CELLS - 1)]
        finally:
            client.close()
        if not cells:
            return
        units = [f"P-{101 + i}" for i in range(PATROL_UNITS)]
        plan = [{"cell": c, "units": [units[i % len(units)]]} for i, c in enumerate(cells)]

        async def set_plan() -> None:
            store = app.store(settings)
            try:
                await Dosage(store, settings).set_plan({"mode": "list", "cells": plan}, time.time())
            finally:
                await store.client.aclose()

        asyncio.run(set_plan())
        stop = self.signals.stop
        state = self.replay
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
                            producer.send(
                                topic, key=ping["unit"].encode(), value=orjson.dumps(ping)
                            )
                    stop.wait(0.2)
                producer.flush()
            except Exception as exc:  # the demo goes on without patrols
                self.say(f"patrol simulation stopped: {exc!r}")
            finally:
                producer.close()

        self.patrol_thread = threading.Thread(target=work, name="demo-patrols", daemon=True)
        self.patrol_thread.start()
        self.say(
            f"patrols: {len(units)} simulated units on the top {len(cells)} hot spots "
            f"(a list plan; officer's view: /officer?unit={units[0]}&token=...)"
        )

    def _status(self) -> str:
        state = self.replay
        if state.error is not None:
            return f"replay failed: {state.error!r}"
        when = ""
        if state.last_event:
            moment = datetime.fromisoformat(state.last_event).astimezone(ZoneInfo(TIMEZONE))
            when = f" up to {moment:%Y-%m-%d %H:%M %Z}"
        what = "replay finished" if state.finished else "replaying"
        worker = ""
        if self.worker is not None and self.worker.poll() is not None:
            worker = f"; WORKER EXITED ({self.worker.returncode})"
        return f"{what}: {state.sent} events sent to Kafka{when}{worker}"

    async def _show(self, settings: Settings) -> int:
        from streamer.live import LiveView

        store = app.store(settings)
        view = LiveView(
            settings, store, stale_after_s=self.options.stale_after_s, status=self._status
        )
        opts = self.options
        remaining = None
        if opts.duration_s is not None:
            remaining = max(opts.duration_s - self.elapsed(), 0.0)
        stop = self.signals.stop
        worker = self.worker
        code = 0

        def should_stop() -> bool:
            failed = self.replay.error is not None or (
                worker is not None and worker.poll() is not None
            )
            return stop.is_set() or failed

        watcher = asyncio.ensure_future(self._watch_first_update(store))
        try:
            last = await view.run(
                should_stop=should_stop,
                duration_s=remaining,
                plain=not opts.live,
                console=self.console,
            )
            watcher.cancel()
            if self.replay.error is not None:
                self.say(f"replay failed: {self.replay.error!r}")
                code = 1
            if worker is not None and worker.poll() is not None:
                self.say(f"the worker exited with code {worker.returncode}:")
                self.console.print(_tail(self.worker_log) if self.worker_log else "", markup=False)
                code = 1
            if self.signals.received:
                self.say(f"{self.signals.received} received: stopping")
            stop.set()
            if self.replay_thread is not None:
                await asyncio.to_thread(self.replay_thread.join, 30.0)
            if code == 0 and not self.signals.received:
                await self._drain(store)
            last = await view.snapshot()
            if (not opts.live or not self.console.is_terminal) and last is not None:
                self.console.print(view.plain_rankings(last), highlight=False, soft_wrap=True)
            offsets = await store.client.hgetall(store.key("offsets"))
            self._summary(last, {_text(a): int(b) for a, b in offsets.items()})
        finally:
            watcher.cancel()
            await store.client.aclose()
        return code

    async def _watch_first_update(self, store: Any) -> None:
        """Notes when the worker first applies a replayed event (offsets appear)."""
        while not await store.client.hlen(store.key("offsets")):
            await asyncio.sleep(0.1)
        self.first_update_s = self.elapsed()

    async def _drain(self, store: Any) -> None:
        """Wait (a little) until the worker has applied what the replay sent."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            applied = sum(int(v) + 1 for v in await store.client.hvals(store.key("offsets")))
            if applied >= self.replay.sent:
                return
            await asyncio.sleep(0.2)

    def _summary(self, last: Any, offsets: dict[str, int]) -> None:
        applied = sum(v + 1 for v in offsets.values())
        detail = ", ".join(f"{k}={v}" for k, v in sorted(offsets.items()))
        first = f"{self.first_update_s:.1f} s" if self.first_update_s is not None else "none"
        self.say(
            f"summary: replayed {self.replay.sent} events through Kafka; "
            f"store seq {last.seq if last is not None else 0}; "
            f"Kafka records applied {applied} (offsets {detail or 'none'}); "
            f"first replayed event applied at {first}; ran {self.elapsed():.1f} s"
        )

    # ------------------------------------------------------------------ cleanup
    def _cleanup(self) -> None:
        self.signals.stop.set()
        if self.replay_thread is not None:
            self.replay_thread.join(timeout=30.0)
        if self.patrol_thread is not None:
            self.patrol_thread.join(timeout=30.0)
        if self.server is not None:
            code = _stop_process(self.server, WORKER_STOP_TIMEOUT_S)
            self.say(f"API server pid {self.server.pid} stopped (exit code {code})")
        if self.worker is not None:
            code = _stop_process(self.worker, WORKER_STOP_TIMEOUT_S)
            self.say(f"worker pid {self.worker.pid} stopped (exit code {code})")
        if self.broker is not None:
            pid = self.broker.pid
            self.broker.stop()
            self.say(f"broker pid {pid} stopped")
        if self.embedded is not None:
            pid = self.embedded.pid
            self.embedded.stop()
            self.say(f"embedded valkey pid {pid} stopped")
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.say(f"removed {self.tmp}")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def clean(options: DemoOptions, console: Console) -> int:
    """``hotspots demo --clean``: delete the namespace an earlier run left in
    the Redis at ``store.redis_url``, if the demo's marker is there."""
    from streamer.adapters.redis_server import redis_answers

    def say(text: str) -> None:
        console.print(f"demo: {text}", highlight=False, soft_wrap=True)

    try:
        settings = load_settings(
            options.config, overrides={"store": {"namespace": options.namespace}}
        )
    except ConfigError as exc:
        say(f"error: {exc}")
        return 2
    url, namespace = settings.store.redis_url, options.namespace
    if not redis_answers(url, timeout_s=REDIS_PING_TIMEOUT_S):
        say(f"the Redis at {url} does not answer: nothing removed")
        return 1
    try:
        removed = remove_namespace(url, namespace)
    except NamespaceNotOwned as exc:
        say(f"refused: {exc}")
        return 2
    say(f"namespace {namespace!r} removed from the Redis at {url} ({removed} keys)")
    return 0


def main(options: DemoOptions, stream: TextIO | None = None) -> int:
    """Run the demo (or with ``clean``, remove its namespace); returns the exit code."""
    console = Console(file=stream, highlight=False) if stream is not None else None
    if options.clean:
        return clean(options, console or Console(highlight=False))
    return Demo(options, console).run()


__all__ = [
    "Demo",
    "DemoOptions",
    "NamespaceNotOwned",
    "claim_namespace",
    "main",
    "owner_key",
    "remove_namespace",
    "split_sample",
]
