"""One engine's namespace on a Redis client, as the store reaches it: its
keys, its landmarks, and its Lua scripts called with EVALSHA commands packed
here (on a pooled connection, or on the node of a Redis Cluster that owns
the namespace's hash tag).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from streamer.adapters import keys
from streamer.core import decay

_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")  # Redis Cluster: ask the client


def _script(name: str) -> str:
    """``common.lua`` then the named script's body, run with Lua's garbage
    collector paused: a batch allocates many small tables, and collecting
    while they are all alive tripled the script's time. The collector
    resumes when the body returns (and Redis steps it after every script)."""
    base = resources.files("streamer.adapters") / "lua"
    return "\n".join(
        [
            (base / "common.lua").read_text(),
            "local function body()",
            (base / name).read_text(),
            "end",
            "collectgarbage('stop')",
            "local result = body()",
            "collectgarbage('restart')",
            "return result",
        ]
    )


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return isinstance(client, RedisCluster)


async def publish_each(client: aioredis.Redis, channel: str, messages: Sequence[bytes]) -> None:
    """PUBLISH the messages in order, pipelined; a Redis Cluster client
    refuses PUBLISH in a pipeline, so there they go one call each (the
    cluster relays a message to subscribers on every node)."""
    if is_cluster(client):
        for message in messages:
            await client.publish(channel, message)
        return
    async with client.pipeline(transaction=False) as pipe:
        for message in messages:
            pipe.publish(channel, message)
        await pipe.execute()


class StoreError(RuntimeError):
    """The store refused a write (e.g. the config's half-lives differ from
    the ones the store was built with)."""


class StoreConnection:
    """Keys, landmarks and script calls of one engine's namespace; the
    store's reads and writes build on it (:class:`~streamer.adapters.store.Store`)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str,
        horizons: dict[str, float],
        resolutions: Sequence[int],
        profile_horizon: str,
        ledger_retention_s: float = 365 * 86400.0,
        prune_below: float = 1e-3,
        touch_resolution: int | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.prefix = keys.namespace_prefix(namespace)
        self.horizons = dict(horizons)
        self.names = list(horizons)
        self.resolutions = list(resolutions)
        self.profile_horizon = profile_horizon
        self.ledger_retention_s = ledger_retention_s
        self.prune_below = prune_below
        # cells of this resolution that a write changes join {P}:touched
        self.touch_resolution = touch_resolution
        self._known_landmarks: dict[str, int] | None = None  # as last read
        self._seq_command: bytes | None = None  # HGET {P}:meta seq, packed
        self._apply = client.register_script(_script("apply.lua"))
        self._merge = client.register_script(_script("merge.lua"))
        self._maintain = client.register_script(_script("maintain.lua"))
        self._positions = client.register_script(
            (resources.files("streamer.adapters") / "lua" / "positions.lua").read_text()
        )
        self._blend = client.register_script(
            (resources.files("streamer.adapters") / "lua" / "blend.lua").read_text()
        )

    def _header(self, landmarks: dict[str, int], **extra: object) -> bytes:
        hz = [[n, self.horizons[n], landmarks[n]] for n in self.names]
        body: dict[str, object] = {
            "hz": hz,
            "prof": self.names.index(self.profile_horizon) + 1,
            **extra,
        }
        if self.touch_resolution is not None:
            body["tr"] = self.touch_resolution
        return orjson.dumps(body)

    async def landmarks(self, default_t_s: float | None = None) -> dict[str, int]:
        """The stored landmark of each horizon (or the one to start with)."""
        raw = await self.client.hmget(keys.meta(self.prefix), [f"k:{n}" for n in self.names])
        out = {}
        for name, value in zip(self.names, raw, strict=True):
            if value is not None:
                out[name] = int(value)
            else:
                t = default_t_s if default_t_s is not None else 0.0
                out[name] = decay.landmark_for(t, self.horizons[name])
        if all(value is not None for value in raw):
            self._known_landmarks = out
        return out

    async def _run(self, script: Any, args: list[Any], sent: asyncio.Event | None = None) -> Any:
        try:
            try:
                return await self._evalsha(script.sha, args, sent)
            except NoScriptError:
                await self.client.script_load(script.script)
                return await self._evalsha(script.sha, args, sent)
        except ResponseError as exc:
            raise StoreError(str(exc)) from None

    async def _evalsha(self, sha: str, args: list[Any], sent: asyncio.Event | None = None) -> Any:
        """EVALSHA, with the command packed here: redis-py packs each argument
        with several Python calls, and a batch has tens of thousands.

        A batch's call is megabytes; asyncio's stream hands the kernel what it
        takes and keeps the rest until the loop runs again, so a caller that
        then prepares the next batch (seconds of CPU, no await) would keep
        Redis waiting for the end of the command. The connection's write
        buffer limit is therefore 0: the send returns only once every byte
        is out, and ``sent`` tells the caller it may go on."""
        command = pack_command([b"EVALSHA", sha, 1, self.prefix, *args])
        if isinstance(self.client, RedisCluster):
            return await self._evalsha_cluster(self.client, command, sha, args)
        return await self._send_packed(command, sent)

    async def _send_packed(self, command: bytes, sent: asyncio.Event | None = None) -> Any:
        """One command already in the Redis protocol, on a pooled connection
        (not a cluster's); its reply."""
        assert not isinstance(self.client, RedisCluster)
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(command)
            writer = getattr(conn, "_writer", None)
            if writer is not None and writer.transport.get_write_buffer_size():
                writer.transport.set_write_buffer_limits(high=0)
                await writer.drain()
            if sent is not None:
                sent.set()
            return await conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()  # a reply may still be on its way
            raise
        finally:
            await pool.release(conn)

    async def _evalsha_cluster(
        self, client: RedisCluster, command: bytes, sha: str, args: list[Any]
    ) -> Any:
        """The same on a Redis Cluster: sent to the node owning the namespace's
        hash tag. If the slot has moved (resharding, failover), the cluster
        client takes the call, follows the redirect and refreshes its map."""
        await client.initialize()  # a no-op once the slot map is known
        node = client.get_node_from_key(self.prefix)
        if node is None:  # the slot is not covered (cluster down): let the client wait
            return await client.execute_command("EVALSHA", sha, 1, self.prefix, *args)
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(command)
            return await conn.read_response()
        except ResponseError as exc:
            if not str(exc).startswith(_REDIRECTS):
                raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)
        return await client.execute_command("EVALSHA", sha, 1, self.prefix, *args)


def _resp(args: Sequence[object]) -> bytes:
    """A command in the Redis protocol (RESP2 arrays of bulk strings); the
    compiled :func:`pack_command` does the same ~20x faster."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        else:
            b = repr(a).encode()
        parts += (b"$%d\r\n" % len(b), b, b"\r\n")
    return b"".join(parts)


try:  # the compiled packer (setup.py); the same in Python without a compiler
    from streamer.adapters._resp import pack_command
except ImportError:
    pack_command = _resp


__all__ = [
    "StoreConnection",
    "StoreError",
    "is_cluster",
    "pack_command",
    "publish_each",
]
