"""The ``P:alerts`` stream as one consumer group of alert delivery sees it
(:class:`GroupReader`): its own pending entries first, then entries taken
over from consumers gone idle, then new ones; acknowledged, or kept fresh
while their delivery waits to retry. Redis outages are waited out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streamer.adapters.consumer import STORE_DOWN

log = logging.getLogger("hotspots.alerts")

T = TypeVar("T")

READ_BLOCK_MS = 1000
READ_COUNT = 100
_REDIS_RETRY_S = (0.1, 5.0)


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a client turned into another error (a
    timeout racing the cancel): retrying would keep a stopped task alive."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _backoff(failures: int, first_s: float, cap_s: float) -> float:
    return float(min(first_s * 2**failures, cap_s))


class GroupReader:
    """Reads, holds and acknowledges a group's entries; waits out Redis outages."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        group: str,
        consumer: str,
        reclaim_idle_s: float,
    ) -> None:
        self.client = client
        self.key = key
        self.group = group
        self.consumer = consumer
        self.reclaim_idle_s = reclaim_idle_s
        self._cursor = "0-0"
        self._own_pending = True
        self._redis_ok = True

    async def create_group(self) -> None:
        """``XGROUP CREATE key group $ MKSTREAM``; an existing group is kept."""
        try:
            await self.client.xgroup_create(self.key, self.group, id="$", mkstream=True)
            log.info("alert_group_created key=%s group=%s", self.key, self.group)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def rewind(self) -> None:
        """Serve this consumer's own pending entries first again (when its
        task starts over, the entries it had in hand are still pending)."""
        self._own_pending = True

    async def batch(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """The next entries to deliver, oldest first: this consumer's own
        pending ones (once, after a restart), then entries idle for long on
        other consumers, then new ones (waiting up to a second for them)."""
        if self._own_pending:
            own = await self._xreadgroup("0", block_ms=None)
            if own:
                return own
            self._own_pending = False
        reclaimed = await self._reclaim()
        if reclaimed:
            return reclaimed
        return await self._xreadgroup(">", block_ms=READ_BLOCK_MS)

    async def _reclaim(self) -> list[tuple[str, dict[bytes, bytes]]]:
        response: Any = await self._redis(
            lambda: self.client.xautoclaim(
                self.key,
                self.group,
                self.consumer,
                min_idle_time=int(self.reclaim_idle_s * 1000),
                start_id=self._cursor,
                count=READ_COUNT,
            ),
            "xautoclaim",
        )
        self._cursor = _text(response[0])
        # entries trimmed from the stream come back as (None, None) on Redis < 7
        entries = [(_text(i), f) for i, f in response[1] if i is not None and f is not None]
        if entries:
            log.warning(
                "alert_entries_reclaimed group=%s count=%d first=%s",
                self.group,
                len(entries),
                entries[0][0],
            )
        return entries

    async def _xreadgroup(
        self, start: str, block_ms: int | None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        try:
            response: Any = await self._redis(
                lambda: self.client.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.key: start},
                    count=READ_COUNT,
                    block=block_ms,
                ),
                "xreadgroup",
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the stream key was deleted (and with it the group): start over
            log.warning("alert_group_missing key=%s group=%s: re-creating", self.key, self.group)
            await self._redis(self.create_group, "xgroup_create")
            return []
        entries: list[tuple[str, dict[bytes, bytes]]] = [
            (_text(i), f) for _key, found in response or [] for i, f in found
        ]
        # an own pending entry trimmed from the stream since comes back empty
        await self.ack([i for i, f in entries if not f])
        return [(i, f) for i, f in entries if f]

    async def ack(self, stream_ids: Sequence[str]) -> None:
        """XACK, retried until Redis answers."""
        if stream_ids:
            await self._redis(lambda: self.client.xack(self.key, self.group, *stream_ids), "xack")

    async def hold(self, stream_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer still works on, so no
        other consumer reclaims them. Best effort: a failure is only logged."""
        if not stream_ids:
            return
        try:
            await self.client.xclaim(
                self.key, self.group, self.consumer, 0, list(stream_ids), justid=True
            )
        except STORE_DOWN as exc:
            log.warning("alert_hold_failed group=%s error=%s", self.group, exc)

    async def pause(self, delay_s: float, held: Sequence[str]) -> None:
        """Sleep ``delay_s``, keeping ``held`` entries fresh meanwhile."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.reclaim_idle_s / 3))
            await self.hold(held)

    async def _redis(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        failures = 0
        while True:
            try:
                result = await call()
            except STORE_DOWN as exc:
                _raise_if_cancelling()
                if self._redis_ok:
                    log.warning(
                        "alert_redis_unavailable group=%s op=%s error=%s: waiting, "
                        "nothing is dropped",
                        self.group,
                        what,
                        exc,
                    )
                self._redis_ok = False
                await asyncio.sleep(_backoff(failures, *_REDIS_RETRY_S))
                failures += 1
                continue
            if not self._redis_ok:
                log.info("alert_redis_recovered group=%s after_failures=%d", self.group, failures)
                self._redis_ok = True
            return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["READ_BLOCK_MS", "READ_COUNT", "GroupReader"]
