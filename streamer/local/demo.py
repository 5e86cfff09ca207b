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
   (:mod:`streamer.services.live`) shows the rankings move.

Ctrl-C, SIGTERM or ``--duration`` stop everything the demo started (replay,
worker, broker, embedded Valkey) and remove its temporary files. The
namespace stays, for queries afterwards; ``hotspots demo --clean`` deletes it
(again only when it holds the marker). The clock is the event clock (scores
decay to the newest event time), since the data is historical.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from rich.console import Console

from streamer import app
from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.local.feeds import ReplayState, split_sample, start_patrols, start_replay
from streamer.local.namespace import (
    NamespaceNotOwned,
    claim_namespace,
    owner_key,
    remove_namespace,
)
from streamer.local.processes import (
    Interrupted,
    Signals,
    child_env,
    ready,
    sigint_blocked,
    stop_process,
    tail,
)
from streamer.settings import CONFIG_DIR, DATA_DIR, ConfigError, Settings, load_settings

SAMPLE = DATA_DIR / "philadelphia_2025.csv.gz"
PROFILE = "philadelphia"
FORCE_CONFIG = CONFIG_DIR / "forces" / "philadelphia.toml"  # the sample's force
SPLIT_AT_LOCAL = "2025-12-01 00:00:00"  # the sample's times are local wall times
TIMEZONE = "America/New_York"
DEFAULT_SPEED = 3600.0
DEFAULT_NAMESPACE = "demo"
WORKER_READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 10.0
REDIS_PING_TIMEOUT_S = 3.0  # a busy Redis is not a dead one (a dead one refuses at once)


@dataclass
class DemoOptions:
    """The demo's flags."""

    speed: float = DEFAULT_SPEED
    duration_s: float | None = None
    live: bool = True
    stale_after_s: float = 10.0
    namespace: str = DEFAULT_NAMESPACE
    config: str | None = None  # None: the sample's force, FORCE_CONFIG
    clean: bool = False  # delete the demo's namespace instead of running

    @property
    def config_path(self) -> str:
        """The config the demo and its children run on."""
        return str(Path(self.config).resolve()) if self.config else str(FORCE_CONFIG)


class Demo:
    """One run of the demo; :meth:`run` returns the exit code."""

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(highlight=False)
        self.signals = Signals()
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
        from streamer.local.broker import LocalBroker, free_port
        from streamer.local.redis_server import EmbeddedRedis, redis_answers

        opts = self.options
        base = load_settings(opts.config_path, overrides={"store": {"namespace": opts.namespace}})
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
            with sigint_blocked():
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
        with sigint_blocked():
            self.broker.start()
        self.say(f"broker (tansu) pid {self.broker.pid} at {self.broker.bootstrap}")

        settings = load_settings(
            opts.config_path,
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
        stop = self.signals.stop
        self.replay_thread = start_replay(settings, late, PROFILE, opts.speed, stop, self.replay)
        if settings.dosage.enabled:
            self.patrol_thread = start_patrols(settings, stop, self.replay, self.say)
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
            child_env(settings),
        )
        self.say(f"worker pid {self.worker.pid} starting (log {self.worker_log})")

    def _cli(
        self, args: list[str], log_path: Path, cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """``hotspots ARGS`` (with this demo's --config) logging to ``log_path``,
        in a session of its own: a terminal Ctrl-C reaches the demo, which
        stops its children in order."""
        command = [sys.executable, "-m", "streamer.cli"]
        command += ["--config", self.options.config_path]
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

        from streamer.api import token_digest
        from streamer.local.broker import free_port

        assert self.tmp is not None
        token = secrets.token_urlsafe(16)
        port = free_port()
        env = child_env(settings)
        env["HOTSPOTS_API__TOKENS"] = (
            f'{{demo = {{token_sha256 = "{token_digest(token)}", role = "admin"}}}}'
        )
        self.server_log = self.tmp / "serve.log"
        self.server = self._cli(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], self.server_log, self.tmp, env
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not ready(f"http://127.0.0.1:{port}/readyz"):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.say(f"the API server did not start:\n{tail(self.server_log)}")
                return
            time.sleep(0.1)
        self.say(f"wall display: http://127.0.0.1:{port}/?token={token}")
        self.say(f"API: http://127.0.0.1:{port}/v1/hotspots (Authorization: Bearer {token})")

    def _wait_for_worker(self) -> None:
        assert self.worker is not None and self.worker_port is not None
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not ready(f"http://127.0.0.1:{self.worker_port}/readyz"):
            if self.worker.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.worker.returncode}:\n"
                    f"{tail(self.worker_log) if self.worker_log else ''}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the worker was not ready after {WORKER_READY_TIMEOUT_S:.0f} s:\n"
                    f"{tail(self.worker_log) if self.worker_log else ''}"
                )
            time.sleep(0.1)

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
        from streamer.services.live import LiveView

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
                self.console.print(tail(self.worker_log) if self.worker_log else "", markup=False)
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
            offsets = await store.client.hgetall(keys.offsets(store.prefix))
            self._summary(last, {text(a): int(b) for a, b in offsets.items()})
        finally:
            watcher.cancel()
            await store.client.aclose()
        return code

    async def _watch_first_update(self, store: Any) -> None:
        """Notes when the worker first applies a replayed event (offsets appear)."""
        while not await store.client.hlen(keys.offsets(store.prefix)):
            await asyncio.sleep(0.1)
        self.first_update_s = self.elapsed()

    async def _drain(self, store: Any) -> None:
        """Wait (a little) until the worker has applied what the replay sent."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            applied = sum(int(v) + 1 for v in await store.client.hvals(keys.offsets(store.prefix)))
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
            code = stop_process(self.server, WORKER_STOP_TIMEOUT_S)
            self.say(f"API server pid {self.server.pid} stopped (exit code {code})")
        if self.worker is not None:
            code = stop_process(self.worker, WORKER_STOP_TIMEOUT_S)
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


def clean(options: DemoOptions, console: Console) -> int:
    """``hotspots demo --clean``: delete the namespace an earlier run left in
    the Redis at ``store.redis_url``, if the demo's marker is there."""
    from streamer.local.redis_server import redis_answers

    def say(text: str) -> None:
        console.print(f"demo: {text}", highlight=False, soft_wrap=True)

    try:
        settings = load_settings(
            options.config_path, overrides={"store": {"namespace": options.namespace}}
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


__all__ = ["Demo", "DemoOptions", "main"]
