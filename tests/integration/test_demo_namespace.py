"""``hotspots demo`` never deletes data it did not write: it claims a
namespace (a marker key), empties only a namespace it marked, refuses any
other, and ``--clean`` removes what it left."""

from __future__ import annotations

import os

import orjson
import pytest
import redis

from streamer.local.namespace import NamespaceNotOwned, claim_namespace, owner_key, remove_namespace
from tests.cli_support import hotspots


def _env(redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HOTSPOTS_STORE__REDIS_URL"] = f'"{redis_url}"'
    return env


def _keys(client: redis.Redis, namespace: str) -> set[bytes]:
    return set(client.scan_iter(match="{" + namespace + "}*", count=1000))


def test_an_empty_namespace_is_marked_as_the_demos(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    assert claim_namespace(redis_url, namespace, now_s=1_700_000_000.0) == 0
    assert _keys(redis_client, namespace) == {owner_key(namespace).encode()}
    marker = orjson.loads(redis_client.get(owner_key(namespace)) or b"{}")
    assert marker == {"written_by": "hotspots demo", "created_at": "2023-11-14T22:13:20+00:00"}


def test_a_namespace_the_demo_marked_is_emptied_but_for_its_marker(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    claim_namespace(redis_url, namespace, now_s=1_700_000_000.0)
    first = redis_client.get(owner_key(namespace))
    for i in range(1200):  # more than one UNLINK batch
        redis_client.set("{" + namespace + "}:cell:" + str(i), b"x")
    assert claim_namespace(redis_url, namespace, now_s=1_800_000_000.0) == 1200
    assert _keys(redis_client, namespace) == {owner_key(namespace).encode()}
    assert redis_client.get(owner_key(namespace)) == first  # written once, at creation


def test_a_namespace_with_data_the_demo_did_not_write_is_refused_untouched(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    theirs = {"{" + namespace + "}:meta", "{" + namespace + "}:rank:week:9"}
    for key in theirs:
        redis_client.set(key, b"someone's")
    with pytest.raises(NamespaceNotOwned) as refused:
        claim_namespace(redis_url, namespace, now_s=1_700_000_000.0)
    with pytest.raises(NamespaceNotOwned):
        remove_namespace(redis_url, namespace)
    assert _keys(redis_client, namespace) == {k.encode() for k in theirs}  # no marker either
    message = str(refused.value)
    assert repr(namespace) in message and redis_url in message
    assert "--namespace NAME" in message and "nothing deleted" in message


def test_the_demo_command_refuses_a_namespace_it_did_not_write_before_starting_anything(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    redis_client.set("{" + namespace + "}:meta", b"someone's")
    done = hotspots(
        "demo", "--namespace", namespace, "--duration", "5", "--no-live", env=_env(redis_url)
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"refused: namespace {namespace!r}" in out, out
    assert "--namespace NAME" in out, out
    assert "broker (tansu)" not in out and "temporary files" not in out, out
    assert _keys(redis_client, namespace) == {("{" + namespace + "}:meta").encode()}


def test_demo_clean_removes_the_demos_namespace_and_only_that(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    claim_namespace(redis_url, namespace, now_s=1_700_000_000.0)
    redis_client.set("{" + namespace + "}:meta", b"the demo's")
    done = hotspots("demo", "--namespace", namespace, "--clean", env=_env(redis_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"namespace {namespace!r} removed" in done.stdout and "(2 keys)" in done.stdout
    assert _keys(redis_client, namespace) == set()

    redis_client.set("{" + namespace + "}:meta", b"someone's")
    done = hotspots("demo", "--namespace", namespace, "--clean", env=_env(redis_url))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused" in done.stdout
    assert _keys(redis_client, namespace) == {("{" + namespace + "}:meta").encode()}
