"""What the benchmarks share."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


async def drop_namespace(client: aioredis.Redis, namespace: str) -> int:
    """UNLINK every key of ``namespace`` (SCAN ``{ns}*``)."""
    removed = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{{{namespace}}}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            removed += int(await client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(await client.unlink(*batch))
    return removed
