"""Shared fixtures: a real Kafka-compatible broker and a real Redis.

Integration tests talk to real servers, never fakes. The broker is a Tansu
process started once per session on a free 127.0.0.1 port. Redis is the one at
127.0.0.1:6379 db 0 (override with ``HOTSPOTS_TEST_REDIS_URL``); when it does not
answer the tests that need it fail, they do not skip. Each test gets its own key
namespace, which is deleted afterwards. Unit tests request none of these.

A few tests read the shared data set that sits beside a checkout
(``../shared/data``, not part of the repository); they ask for it through
``shared_data``, which skips them where it is missing, or fails them under
``CI=true``, where it must be there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from streamer.local.broker import LocalBroker
from streamer.local.redis_server import redis_answers
from tests import oracle
from tests.worker_support import Workers

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def in_ci(environ: dict[str, str] | None = None) -> bool:
    """True when ``CI`` says so (``true``, ``1`` or ``yes``, any case)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"true", "1", "yes"}


def shared_file(
    *parts: str, root: Path = SHARED_DATA, environ: dict[str, str] | None = None
) -> Path:
    """``root/parts...``, a file of the shared data set beside the checkout.

    Where it is missing the calling test skips, with a reason that names the
    path; under ``CI=true`` it fails instead, since CI has the data beside
    its clone and a skip there would hide a test that never ran.
    """
    path = root.joinpath(*parts)
    if path.is_file():
        return path
    message = f"shared data not found at {path} (the data set beside the checkout)"
    if in_ci(environ):
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """:func:`shared_file`: ``shared_data("philadelphia", "x.csv.gz")`` is the
    path of that file, or the test skips (fails under ``CI=true``)."""
    return shared_file


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A Tansu broker (in-memory storage) shared by the whole test session."""
    local = LocalBroker(log_dir=tmp_path_factory.mktemp("tansu"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis the tests use; fails the test when it is not up."""
    url = os.environ.get("HOTSPOTS_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    if not redis_answers(url, timeout_s=5.0):
        pytest.fail(
            f"Redis at {url} does not answer PING. Integration tests need a real Redis: "
            "start one on 127.0.0.1:6379 (e.g. `redis-server --bind 127.0.0.1`) or point "
            "HOTSPOTS_TEST_REDIS_URL at one.",
            pytrace=False,
        )
    return url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client returning bytes, closed after the test."""
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client returning bytes (``decode_responses=False``)."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        client.close()


def _unlink_matching(client: redis.Redis, pattern: str) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key namespace unique to this test (``t-<8 hex>``), emptied afterwards.

    Both hash-tagged keys (``{t-...}...``) and plain ones (``t-...``) are removed.
    """
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        for pattern in (f"{{{name}}}*", f"{name}*"):
            _unlink_matching(client, pattern)
    finally:
        client.close()


@pytest.fixture(scope="session")
def table() -> tuple[dict[str, float], float]:
    """The oracle's category weights (included ones) and default weight."""
    return oracle.weights()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """`hotspots run` processes for the test (config at ``tmp_path/worker.toml``),
    every one still running killed at the end."""
    with Workers(tmp_path / "worker.toml", tmp_path) as holder:
        yield holder
