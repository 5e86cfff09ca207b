"""The demo's Redis namespace: claimed only when empty or marked as the
demo's (``{NS}:demo``), so the demo never deletes data it did not write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import redis

from streamer.adapters import keys
from streamer.adapters.decode import text


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
    return keys.demo_marker(keys.namespace_prefix(namespace))


def _keys(client: redis.Redis, namespace: str) -> Iterator[bytes]:
    pattern = keys.every_key(keys.namespace_prefix(namespace))
    yield from client.scan_iter(match=pattern, count=1000)


def _unlink_all(client: redis.Redis, names: Iterator[bytes]) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in names:
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
        return text(key)
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
        removed = _unlink_all(client, (k for k in _keys(client, namespace) if text(k) != marker))
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
