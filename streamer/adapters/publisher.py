"""The leader's timers: publish ranking changes, prune, re-base, trim.

One worker of the group runs these at a time. Publication state (the top
lists last published) is kept in Redis, so a new leader carries on where
the old one stopped, and a display that sees a gap in ``seq`` fetches a
fresh snapshot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.store import Store, is_cluster, publish_each
from streamer.core import decay
from streamer.core.publication import Entry, diff

Clock = Callable[[], float]


def channel(store: Store) -> str:
    """The pub/sub channel of ranking changes."""
    return keys.updates_channel(store.prefix)


@dataclass
class Publisher:
    """Publishes what entered, left or moved in each top list, once per tick
    in which the store's sequence number moved."""

    store: Store
    top_n: int
    now: Clock
    # as of the last tick, changed or not: the sequence number, and each
    # list's cells with their scores decayed to then ("HORIZON:RES" -> [(cell, score)])
    tops_seq: int = 0
    tops: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # blended rankings published beside the horizons': name -> (long, short,
    # long share); their scores are shares of the decayed harm, timeless
    blends: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    async def tick(self) -> dict[str, Any] | None:
        """Publish the changes since the last tick; returns the message sent."""
        store = self.store
        client = store.client
        state_key = keys.published(store.prefix)
        lists_keys = [(name, res) for name in store.names for res in store.resolutions]
        # one transaction: the lists, the landmarks and seq are one snapshot
        async with client.pipeline(transaction=True) as pipe:
            pipe.hget(keys.meta(store.prefix), "seq")
            pipe.hmget(keys.meta(store.prefix), [f"k:{n}" for n in store.names])
            pipe.hgetall(state_key)
            for name, res in lists_keys:
                pipe.zrevrange(
                    keys.rank(store.prefix, name, res), 0, self.top_n - 1, withscores=True
                )
            seq_raw, k_raw, published, *tops = await pipe.execute()
        seq = int(seq_raw or 0)
        last_seq = published.get(b"seq")
        # the publisher's pulse (wall clock), changed or not: displays tell a
        # quiet city from a stopped pipeline by it
        await client.hset(state_key, "tick_at", repr(time.time()))
        at_s = self.now()
        landmarks = {
            n: int(v) if v is not None else 0 for n, v in zip(store.names, k_raw, strict=True)
        }
        self.tops_seq = seq
        # each list: (key, landmark, factor to decay its stored scores, rows)
        every: list[tuple[str, int, float, list[tuple[str, float]]]] = []
        for (name, res), raw in zip(lists_keys, tops, strict=True):
            factor = decay.decay_factor(at_s, store.horizons[name], landmarks[name])
            rows = [(text(c), float(v)) for c, v in raw]
            every.append((f"{name}:{res}", landmarks[name], factor, rows))
        for name, (long, short, share) in self.blends.items():
            for res in store.resolutions:
                # (read after the snapshot: a batch applied in between shows next tick)
                _, ranked = await store.blend_top(long, short, share, res, self.top_n)
                every.append((f"{name}:{res}", 0, 1.0, [(r.cell, r.score) for r in ranked]))
        self.tops = {key: [(c, v * factor) for c, v in rows] for key, _, factor, rows in every}
        if last_seq is not None and int(last_seq) == seq:
            return None
        lists: dict[str, Any] = {}
        state: dict[str | bytes, bytes | str] = {}
        for list_key, k, factor, rows in every:
            after = [Entry(c, i + 1, v) for i, (c, v) in enumerate(rows)]
            previous = published.get(list_key.encode())
            before: list[Entry] = []
            if previous is not None:
                old_k, rows = orjson.loads(previous)
                # exact: landmarks move by whole half-lives (powers of two)
                before = [Entry(c, r, math.ldexp(v, old_k - k)) for c, r, v in rows]
            change = diff(before, after)
            if change:
                lists[list_key] = {
                    "entered": [[e.cell, e.rank, e.score * factor] for e in change.entered],
                    "left": change.left,
                    "moved": [[e.cell, e.rank, e.score * factor] for e in change.moved],
                }
            state[list_key] = orjson.dumps([k, [[e.cell, e.rank, e.score] for e in after]])
        # `previous`: the sequence of the message before this one, so that a
        # listener can tell it missed one (and re-read the lists)
        previous = int(last_seq) if last_seq is not None else None
        message = {"seq": seq, "previous": previous, "at": at_s, "lists": lists}
        state["seq"] = str(seq)
        body = orjson.dumps(message)
        if is_cluster(client):
            # a cluster refuses PUBLISH in a transaction: the state first, so
            # a crash between them costs a message, which listeners notice by
            # `previous` and re-read the lists
            await client.hset(state_key, mapping=state)  # type: ignore[arg-type]
            await publish_each(client, channel(store), [body])
            return message
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(state_key, mapping=state)  # type: ignore[arg-type]
            pipe.publish(channel(store), body)
            await pipe.execute()
        return message


@dataclass
class Maintainer:
    """Prunes dead cells, trims the ledger, re-bases landmarks when due."""

    store: Store
    now: Clock

    async def tick(self) -> dict[str, int]:
        at_s = self.now()
        watermark = await self.store.client.hget(keys.meta(self.store.prefix), "watermark")
        if watermark is not None:
            await self.store.ensure_landmarks(float(watermark))
        removed, deleted = await self.store.prune(at_s)
        forgotten = await self.store.trim_ledger(time.time())
        return {"removed": removed, "deleted": deleted, "forgotten": forgotten}
