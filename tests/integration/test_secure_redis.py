"""Redis ACL and TLS settings reach the client: a real Redis started here
that speaks only TLS and knows only an ACL user limited to the engine's keys.
The store works through it with the settings, and fails without them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions

from streamer import app
from streamer.local.broker import free_port
from streamer.settings import ConfigError, Settings, load_settings
from tests import oracle
from tests.integration.test_store_exact import to_op

PASSWORD_ENV = "HOTSPOTS_TEST_REDIS_PASSWORD"
PASSWORD = "s3cret-for-the-test"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=hotspots-test-ca", cwd=folder,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=folder,
    )  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder,
    )  # fmt: skip


@pytest.fixture
def secure_redis(tmp_path: Path, namespace: str) -> Iterator[tuple[int, Path]]:
    """Redis on a TLS port only; the default user off, one ACL user that may
    touch only the engine's keys and channels, ``{namespace}*``."""
    make_certificates(tmp_path)
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian's redis-server package)"
    proc = subprocess.Popen(
        [
            binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
            "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
            "--user", "default", "off",
            "--user", "hotspots", "on", f">{PASSWORD}",
            f"~{{{namespace}}}*", f"&{{{namespace}}}*", "+@all",
        ],
        cwd=tmp_path,
        stdout=(tmp_path / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        probe = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.crt"),
            username="hotspots", password=PASSWORD, socket_timeout=2,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        probe.close()
        yield port, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def secure_settings(namespace: str, port: int, folder: Path, **store: object) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "store": {
                "namespace": namespace,
                "redis_url": f"rediss://127.0.0.1:{port}/0",
                "redis_username": "hotspots",
                "redis_password_env": PASSWORD_ENV,
                "redis_tls_ca": str(folder / "ca.crt"),
                **store,
            },
            "grid": {"timezone": "America/New_York"},
        },
    )


async def test_the_store_works_through_acl_and_tls(
    secure_redis: tuple[int, Path], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, folder = secure_redis
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    settings = secure_settings(namespace, port, folder)
    client = app.redis_client(settings)
    try:
        store = app.store(settings, client)
        rows = oracle.read_rows(oracle.SAMPLE, limit=1500)
        scorer = app.scorer(settings)
        at_s = max(r.t_s for r in rows) + 60
        await store.apply([to_op(scorer, "upsert", r) for r in rows], now_s=at_s)
        weights, default = oracle.weights()
        want = oracle.scores(rows, 9, 7 * 86400.0, at_s, weights, default)
        got = {r.cell: r.score for r in await store.top("week", 9, 10**6, at_s)}
        assert len(got) > 100
        assert got.keys() == {c for c, s in want.items() if s >= store.prune_below}
        for cell, score in got.items():
            assert score == pytest.approx(want[cell], rel=1e-9)
        # the ACL is real: the user may not read another engine's keys
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.get("{someone-else}:meta")
    finally:
        await client.aclose()


async def test_without_the_password_or_the_ca_it_is_refused(
    secure_redis: tuple[int, Path], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, folder = secure_redis
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    client = app.redis_client(secure_settings(namespace, port, folder))
    with pytest.raises(redis.exceptions.AuthenticationError):
        await client.ping()
    await client.aclose()
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    no_ca = secure_settings(namespace, port, folder, redis_tls_ca="")
    client = app.redis_client(no_ca)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        await client.ping()
    await client.aclose()
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match=rf"store\.redis_password_env.*{PASSWORD_ENV}"):
        app.redis_client(secure_settings(namespace, port, folder))
    assert PASSWORD_ENV not in os.environ
