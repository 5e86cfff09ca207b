"""The demo's child processes and signals: the environment a worker or API
server of the demo runs with, readiness, stopping in order, and Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from streamer.settings import Settings

# Tansu answers a JoinGroup after about half the session timeout
# (docs/tansu.md): a 2 s session makes the worker's join take about 1 s.
WORKER_TIMEOUTS = {"session_timeout": "2s", "heartbeat_interval": "0.3s", "rebalance_timeout": "2s"}


class Interrupted(Exception):
    """SIGINT or SIGTERM during set-up: stop and clean up."""


class Signals:
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
def sigint_blocked() -> Iterator[None]:
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


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the demo's worker and API server: its settings as
    ``HOTSPOTS_*`` variables, and this very package on the import path."""
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
    # make sure it imports this very package (the directory holding streamer/).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def tail(path: Path, max_bytes: int = 3000) -> str:
    """The end of a log file ("" when it cannot be read)."""
    try:
        return path.read_bytes()[-max_bytes:].decode(errors="replace")
    except OSError:
        return ""


def ready(url: str) -> bool:
    """Whether ``url`` (a ``/readyz``) answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, wait, SIGKILL after ``timeout_s``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    return process.returncode
