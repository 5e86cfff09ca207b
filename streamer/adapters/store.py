"""The Redis store: rankings, cell details, the event ledger.

Every write is one Lua script call (one atomic round trip per batch); the
scripts live in ``lua/`` and are documented key by key in the README.
All keys start with ``{namespace}:`` (the braces make the namespace a Redis
Cluster hash tag, so one engine's keys and scripts stay on one node).
"""

from __future__ import annotations

import asyncio
import math
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from itertools import chain, groupby
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from streamer.adapters import keys
from streamer.core import decay
from streamer.core.aggregate import Batch, batch_of
from streamer.core.batching import Rows
from streamer.core.fastpath import encode_cells
from streamer.core.scoring import SEP, StoreOp

PROFILE_FORMAT = "<168f"  # hour-of-week profile: float32, Monday 00h first
PROFILE_BYTES = 672  # a profile key may be shorter: missing hours are zero
_FAST_MIN = 8  # fewer new events go term by term: summing them costs more than it saves
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")  # Redis Cluster: ask the client
_TOMBSTONE_BYTES = 9  # a ledger value "YYYYMMDD" US with no contribution: a cancel's
_MAX_PLANS = 8  # plans for one batch before giving up (each retry needs a concurrent change)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch did. ``cancelled``: cancels the ledger held by id;
    ``cancelled_by_fields``: cancels the ledger did not hold, taken out by
    the fields they carry; ``cancel_repeated``: cancels of an id already
    cancelled (a tombstone in the ledger); ``unknown_cancel``: cancels the
    store could not place (nothing changed); ``retracted``: versions an
    upsert replaced by id."""

    seq: int
    applied: int
    duplicate: int
    cancelled: int
    unknown_cancel: int
    stale: int
    retracted: int
    cells: int
    cancelled_by_fields: int = 0
    cancel_repeated: int = 0


@dataclass(slots=True)
class ApplyPlan:
    """A batch's script call, prepared by :meth:`Store.plan`."""

    ops: Sequence[StoreOp]
    day: str  # ledger day
    max_t: float | None  # newest event time (None: no event adds or takes out anything)
    min_t: float | None  # oldest event added
    fast: set[int]  # indexes of the ops summed per cell before the script
    newest_added: float | None = None  # newest event time added (the watermark's)
    args: list[Any] | None = None  # None: to be built at the store's landmarks
    rows: Rows | None = None  # upserts in columns (then ``fast`` is empty)
    row_fast: npt.NDArray[np.bool_] | None = None  # which rows go the fast way
    positions: Sequence[int] | None = None  # each op's place among the messages
    # set once the script call is wholly handed to the kernel (or the write
    # ended): a caller may then block the event loop preparing the next batch
    # while Redis runs this one
    sent: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Ranked:
    """A cell in a ranking, its score decayed to the query time."""

    cell: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class CellDetails:
    """Everything the store keeps about one cell, decayed to ``at``."""

    cell: str
    count: int
    last_event_s: float | None
    scores: dict[str, float]
    family_counts: dict[str, int]
    family_scores: dict[str, dict[str, float]]
    category_counts: dict[str, int]
    category_scores: dict[str, dict[str, float]]
    hour_of_week: list[float] = field(default_factory=list)


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


class Store:
    """Async access to one engine's state in Redis."""

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

    # keys -------------------------------------------------------------
    def key(self, *parts: object) -> str:
        """A key of this namespace by its parts, e.g. ``key("rank", "week", 9)``
        (:mod:`streamer.adapters.keys` names each key family)."""
        return ":".join([self.prefix, *map(str, parts)])

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

    # writes -----------------------------------------------------------
    async def apply(self, ops: Sequence[StoreOp], *, now_s: float) -> ApplyResult:
        """Apply a batch atomically (one script call, more only when the
        store changed under the plan): :meth:`plan` then :meth:`apply_plan`."""
        return await self.apply_plan(self.plan(ops, now_s=now_s))

    def plan(
        self,
        ops: Sequence[StoreOp],
        *,
        now_s: float,
        rows: Rows | None = None,
        positions: Sequence[int] | None = None,
    ) -> ApplyPlan:
        """The script call for a batch, prepared without Redis (a consumer
        plans the next batch while Redis runs the previous one).

        New events (upserts whose id occurs once in the batch) go the fast
        way when there are enough of them: summed per cell here, added to
        each cell once. The rest (cancels, repeated ids) are added term by
        term by the script. The script checks the plan (ids not yet in the
        ledger, offsets not yet applied, the landmarks the sums used) before
        writing anything, and answers ``retry`` if it no longer holds; those
        events then go the slow way.

        ``rows`` (upserts in columns, from the compiled kernel) come with
        ``positions``, each op's place among the batch's messages; then
        only rows go the fast way, and the others interleave with the ops
        by position when they go term by term.
        """
        times = [o.contribution.t_s for o in ops if o.contribution is not None]
        # times of what is added: a cancel's own time moves neither the
        # watermark nor the start of the history (its term must still fit
        # the landmarks, so ``times`` has it)
        added = [o.contribution.t_s for o in ops if o.op == "u" and o.contribution is not None]
        uses = Counter(o.id for o in ops if o.op != "n")
        row_fast: npt.NDArray[np.bool_] | None = None
        if rows is not None and len(rows):
            if positions is None or len(positions) != len(ops):
                raise ValueError("rows need the position of every op")
            distinct = set(rows.ids)
            if len(distinct) == len(rows.ids) and distinct.isdisjoint(uses):  # no id twice
                row_fast = np.ones(len(rows), dtype=np.bool_)
            else:
                uses.update(rows.ids)
                row_fast = np.fromiter((uses[i] == 1 for i in rows.ids), np.bool_, len(rows))
            times += [float(rows.batch.t_s.min()), float(rows.batch.t_s.max())]
            added += times[-2:]
            fast: set[int] = set()
        else:
            rows = None
            fast = {
                i
                for i, o in enumerate(ops)
                if o.op == "u" and o.contribution is not None and uses[o.id] == 1
            }
        plan = ApplyPlan(
            ops,
            _day(now_s),
            max(times) if times else None,
            min(added) if added else None,
            fast if len(fast) >= _FAST_MIN else set(),
            rows=rows,
            row_fast=row_fast,
            positions=positions,
            newest_added=max(added) if added else None,
        )
        if row_fast is not None and int(row_fast.sum()) < _FAST_MIN:
            row_fast[:] = False
        landmarks = self._known_landmarks
        if landmarks is not None and not (
            plan.max_t is not None
            and any(
                decay.needs_rebase(plan.max_t, self.horizons[n], landmarks[n]) for n in self.names
            )
        ):
            plan.args = self._apply_args(plan, landmarks)
        return plan

    async def apply_plan(self, plan: ApplyPlan) -> ApplyResult:
        """Run a :meth:`plan` (re-planning when the store changed under it)."""
        if not plan.ops and plan.rows is None:
            seq = await self.seq()
            return ApplyResult(seq, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        for _ in range(_MAX_PLANS):
            if plan.args is None:
                # (the script reads the stored landmarks itself; these seed a new store)
                landmarks = await (
                    self.ensure_landmarks(plan.max_t)
                    if plan.max_t is not None
                    else self.landmarks(time.time())
                )
                plan.args = self._apply_args(plan, landmarks)
            try:
                r = await self._run(self._apply, plan.args, plan.sent)
            finally:
                plan.sent.set()
            if _text(r[0]) != "retry":
                return ApplyResult(*(int(x) for x in r))
            plan.args = None
            why, rest = _text(r[1]), [_text(x) for x in r[2:]]
            ops = plan.ops
            rows, row_fast = plan.rows, plan.row_fast
            if why == "known":
                known = set(rest)
                plan.fast = {i for i in plan.fast if ops[i].id not in known}
                if rows is not None and row_fast is not None:
                    row_fast &= np.fromiter((i not in known for i in rows.ids), np.bool_, len(rows))
            elif why == "stale":
                applied = {src: int(off) for src, off in zip(rest[::2], rest[1::2], strict=True)}
                plan.fast = {i for i in plan.fast if ops[i].offset > applied.get(ops[i].source, -1)}
                if rows is not None and row_fast is not None:
                    row_fast &= rows.offsets > np.fromiter(
                        (applied.get(src, -1) for src in rows.sources), np.int64, len(rows)
                    )
            else:  # landmarks moved (a re-base by another worker)
                self._known_landmarks = None
        raise StoreError(f"the store kept changing under one batch ({_MAX_PLANS} plans)")

    def _apply_args(self, plan: ApplyPlan, landmarks: dict[str, int]) -> list[Any]:
        if plan.rows is not None:
            return self._apply_args_rows(plan, plan.rows, landmarks)
        ops, fast, day = plan.ops, plan.fast, plan.day
        slow_args: list[Any] = []
        fast_ops: list[StoreOp] = []
        for i, o in enumerate(ops):
            if i in fast:
                fast_ops.append(o)
                continue
            slow_args += _slow_args(o)
        batch = None
        spans: dict[str, list[int]] = {}
        if fast_ops:
            batch = batch_of([o.contribution for o in fast_ops if o.contribution is not None])
            for o in fast_ops:
                if o.source:
                    span = spans.setdefault(o.source, [o.offset, o.offset])
                    span[0] = min(span[0], o.offset)
                    span[1] = max(span[1], o.offset)
        prefix = day + SEP
        return self._args(
            plan,
            landmarks,
            slow_args,
            [o.id for o in fast_ops],
            [prefix + o.contribution.packed() for o in fast_ops if o.contribution is not None],
            batch,
            spans,
        )

    def _apply_args_rows(self, plan: ApplyPlan, rows: Rows, landmarks: dict[str, int]) -> list[Any]:
        """The same, for a plan whose upserts come as rows: those not fast
        join the ops term by term, in message order."""
        fast = plan.row_fast if plan.row_fast is not None else np.zeros(len(rows), np.bool_)
        positions = plan.positions or []
        slow = [(p, o) for p, o in zip(positions, plan.ops, strict=True)]
        if not fast.all():
            slow += [(int(rows.position[k]), rows.op(k)) for k in np.flatnonzero(~fast).tolist()]
        slow.sort(key=lambda po: po[0])
        slow_args: list[Any] = []
        for _, o in slow:
            slow_args += _slow_args(o)
        picked = rows if fast.all() else rows.take(fast)
        spans: dict[str, list[int]] = {}
        start = 0
        for src, run in groupby(picked.sources):  # runs of one partition
            end = start + len(list(run))
            if src:
                lo, hi = int(picked.offsets[start:end].min()), int(picked.offsets[start:end].max())
                span = spans.setdefault(src, [lo, hi])
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
            start = end
        prefix = plan.day + SEP
        return self._args(
            plan,
            landmarks,
            slow_args,
            picked.ids,
            [prefix + p for p in picked.packed],
            picked.batch if len(picked) else None,
            spans,
        )

    def _args(
        self,
        plan: ApplyPlan,
        landmarks: dict[str, int],
        slow_args: list[Any],
        fast_ids: list[str],
        fast_values: list[str],
        batch: Batch | None,
        spans: dict[str, list[int]],
    ) -> list[Any]:
        labels: list[str] = []
        cells: list[tuple[str, bytes]] = []
        if batch is not None:
            labels, cells = encode_cells(
                batch,
                resolutions=self.resolutions,
                horizons=self.horizons,
                landmarks=landmarks,
                profile_horizon=self.profile_horizon,
            )
        header = self._header(
            landmarks,
            day=plan.day,
            max_t=plan.max_t or 0.0,
            **({"min_t": plan.min_t} if plan.min_t is not None else {}),
            **({"wm_t": plan.newest_added or 0.0} if plan.newest_added != plan.max_t else {}),
            nslow=len(slow_args) // 5,
            nfast=len(fast_ids),
            fsrc=[[src, lo, hi] for src, (lo, hi) in spans.items()],
            labels=labels,
        )
        return [header, *slow_args, *fast_ids, *fast_values, *chain.from_iterable(cells)]

    async def merge(
        self,
        labels: list[str],
        cells: list[tuple[str, bytes]],
        landmarks: dict[str, int],
        max_t: float,
        min_t: float | None = None,
    ) -> int:
        """Merge pre-aggregated cells (:func:`streamer.core.aggregate.encode_cells`)
        computed at ``landmarks`` (events from ``min_t`` to ``max_t``); returns seq."""
        extra = {"min_t": min_t} if min_t is not None else {}
        header = self._header(landmarks, max_t=max_t, labels=labels, **extra)
        r = await self._run(self._merge, [header, *(x for cell in cells for x in cell)])
        return int(r[0])

    async def ensure_landmarks(self, newest_t_s: float) -> dict[str, int]:
        """Landmarks fit for events up to ``newest_t_s`` (re-basing if needed)."""
        landmarks = await self.landmarks(newest_t_s)
        if any(decay.needs_rebase(newest_t_s, self.horizons[n], landmarks[n]) for n in self.names):
            await self.rebase(newest_t_s)
            landmarks = await self.landmarks(newest_t_s)
        return landmarks

    async def rebase(self, newest_t_s: float) -> int:
        """Move each horizon's landmark to ``newest_t_s`` (exact; rare)."""
        landmarks = await self.landmarks(newest_t_s)
        new_k = [decay.landmark_for(newest_t_s, self.horizons[n]) for n in self.names]
        header = self._header(landmarks, op="rebase", res=self.resolutions, new_k=new_k)
        r = await self._run(self._maintain, [header])
        return int(r[0])

    async def prune(self, now_s: float) -> tuple[int, int]:
        """Drop cells whose score at ``now_s`` is below ``prune_below`` from
        each ranking; delete cells that left every ranking."""
        landmarks = await self.landmarks(now_s)
        thr = [  # JSON has no infinity: the largest double stands for it
            min(
                decay.stored_threshold(self.prune_below, now_s, self.horizons[n], landmarks[n]),
                sys.float_info.max,
            )
            for n in self.names
        ]
        header = self._header(landmarks, op="prune", res=self.resolutions, thr=thr)
        r = await self._run(self._maintain, [header])
        return int(r[0]), int(r[1])

    async def trim_ledger(self, now_s: float, *, chunk: int = 5000) -> int:
        """Forget ledger entries older than the retention; returns how many."""
        days = await self.client.smembers(keys.ledger_days(self.prefix))
        cutoff = _day(now_s - self.ledger_retention_s)
        landmarks = await self.landmarks(now_s)
        forgotten = 0
        for raw in sorted(days):
            day = raw.decode() if isinstance(raw, bytes) else str(raw)
            if day >= cutoff:
                continue
            while True:
                header = self._header(
                    landmarks, op="trim", res=self.resolutions, day=day, count=chunk
                )
                r = await self._run(self._maintain, [header])
                forgotten += int(r[0])
                if int(r[1]) == 0:
                    break
                await asyncio.sleep(0)
        return forgotten

    async def ledger_holds(
        self, ids: Sequence[str], *, chunk: int = 20_000
    ) -> npt.NDArray[np.bool_]:
        """Whether the ledger holds each id's contribution (a tombstone, left
        by a cancel, holds none)."""
        out = np.zeros(len(ids), dtype=np.bool_)
        key = keys.ledger(self.prefix)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            if isinstance(self.client, RedisCluster):
                values = await self.client.hmget(key, list(part))
            else:
                values = await self._send_packed(pack_command([b"HMGET", key, *part]))
            # "YYYYMMDD" US, then the contribution: a tombstone is 9 bytes
            out[start : start + len(part)] = [
                v is not None and len(v) > _TOMBSTONE_BYTES for v in values
            ]
        return out

    # reads ------------------------------------------------------------
    async def seq(self) -> int:
        """The sequence number: moves with every change. (Its command is
        packed once: redis-py's way through a command costs more CPU than the
        rest of a kept ``/v1/hotspots`` answer.)"""
        if isinstance(self.client, RedisCluster):
            raw = await self.client.hget(keys.meta(self.prefix), "seq")
        else:
            if self._seq_command is None:
                self._seq_command = pack_command([b"HGET", keys.meta(self.prefix), b"seq"])
            raw = await self._send_packed(self._seq_command)
        return int(raw or 0)

    async def top(self, horizon: str, resolution: int, k: int, at_s: float) -> list[Ranked]:
        """The ``k`` best cells, scores decayed to ``at_s``. Cells whose score
        has decayed below ``prune_below`` are not listed (they are noise, and
        leave the ranking at the next prune)."""
        return (await self.top_page(horizon, resolution, 0, k, at_s))[1]

    async def top_page(
        self, horizon: str, resolution: int, start: int, count: int, at_s: float
    ) -> tuple[int, list[Ranked]]:
        """Ranks ``start + 1`` to ``start + count`` of :meth:`top` (fewer at
        the ranking's end, or where scores fall below ``prune_below``), and
        the sequence number they are a snapshot of (a reader paging through a
        ranking can tell whether it moved in between)."""
        self._check(horizon, resolution)
        # one transaction: the landmark and the scores it scales are a snapshot
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.meta(self.prefix), [f"k:{horizon}", "seq"])
            pipe.zrevrange(
                keys.rank(self.prefix, horizon, resolution),
                start,
                start + max(count, 1) - 1,
                withscores=True,
            )
            (landmark_raw, seq_raw), rows = await pipe.execute()
        seq = int(seq_raw or 0)
        if landmark_raw is None:
            return seq, []
        landmark = int(landmark_raw)
        half_life = self.horizons[horizon]
        floor = decay.stored_threshold(self.prune_below, at_s, half_life, landmark)
        factor = decay.decay_factor(at_s, half_life, landmark)
        # best first, so the cells below the floor are a tail
        return seq, [
            Ranked(_text(cell), start + i + 1, score * factor)
            for i, (cell, score) in enumerate(rows[:count])
            if score >= floor
        ]

    async def cell(self, cell: str, at_s: float) -> CellDetails | None:
        """One cell in full, or ``None`` if the store has nothing there."""
        return (await self.cells([cell], at_s)).get(cell)

    async def cells(self, cells: Sequence[str], at_s: float) -> dict[str, CellDetails]:
        """Several cells in full (one transaction); cells the store does not
        hold are left out."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta(self.prefix))
            pipe.hgetall(keys.labels(self.prefix))
            for c in cells:
                pipe.get(keys.cell(self.prefix, c))
                pipe.get(keys.hour_of_week(self.prefix, c))
            meta_raw, labels_raw, *rows = await pipe.execute()
        if not any(rows[0::2]):
            return {}
        meta = {_text(k): _text(v) for k, v in meta_raw.items()}
        layout = meta.get("layout", "")
        if layout != ",".join(self.names):
            raise StoreError(
                f"the store holds horizons [{layout}], the config has [{','.join(self.names)}]"
            )
        factors = [
            decay.decay_factor(at_s, self.horizons[n], int(meta[f"k:{n}"])) for n in self.names
        ]
        labels = {int(v): _text(k) for k, v in labels_raw.items()}
        out: dict[str, CellDetails] = {}
        for c, raw, packed in zip(cells, rows[0::2], rows[1::2], strict=True):
            if raw:
                out[c] = self._details(c, raw, packed, factors, labels)
        return out

    def _details(
        self,
        cell: str,
        raw: bytes,
        packed: bytes | None,
        factors: list[float],
        labels: dict[int, str],
    ) -> CellDetails:
        x = struct.unpack(f"<{len(raw) // 8}d", raw)
        nh = len(self.names)
        scores = {n: (x[2 + i] + x[2 + nh + i]) * factors[i] for i, n in enumerate(self.names)}
        counts: dict[str, dict[str, int]] = {"f": {}, "c": {}}
        sums: dict[str, dict[str, dict[str, float]]] = {"f": {}, "c": {}}
        for j in range(2 + 2 * nh, len(x), 2 + nh):
            kind, _, label = labels.get(int(x[j]), f"?:slot {int(x[j])}").partition(":")
            if kind in counts:
                counts[kind][label] = int(x[j + 1])
                sums[kind][label] = {n: x[j + 2 + i] * factors[i] for i, n in enumerate(self.names)}
        profile = [0.0] * 168
        if packed is not None:
            f = factors[self.names.index(self.profile_horizon)]
            profile = [
                v * f for v in struct.unpack(PROFILE_FORMAT, packed.ljust(PROFILE_BYTES, b"\0"))
            ]
        return CellDetails(
            cell,
            int(x[0]),
            x[1] if x[0] > 0 and x[1] > 0 else None,
            scores,
            counts["f"],
            sums["f"],
            counts["c"],
            sums["c"],
            profile,
        )

    async def positions(
        self, cells: Sequence[tuple[int, str]]
    ) -> tuple[int, dict[str, int | None], list[dict[str, tuple[int, float, int] | None]]]:
        """Where (resolution, cell) pairs stand, in one round trip: the
        sequence number, each horizon's landmark, and per pair and horizon
        ``(0-based rank from the top, stored score, ranking size)`` or None."""
        args: list[Any] = [len(self.names), *self.names]
        for res, cell in cells:
            args += [res, cell]
        raw = await self._run(self._positions, args)
        seq = int(raw[0])
        nh = len(self.names)
        landmarks = {
            n: int(v) if _text(v) != "" else None
            for n, v in zip(self.names, raw[1 : 1 + nh], strict=True)
        }
        rows: list[dict[str, tuple[int, float, int] | None]] = []
        i = 1 + nh
        for _ in cells:
            per: dict[str, tuple[int, float, int] | None] = {}
            for n in self.names:
                rank, score, size = int(raw[i]), _text(raw[i + 1]), int(raw[i + 2])
                per[n] = (rank, float(score), size) if rank >= 0 and score else None
                i += 3
            rows.append(per)
        return seq, landmarks, rows

    async def blend_top(
        self, long: str, short: str, long_share: float, resolution: int, k: int
    ) -> tuple[int, list[Ranked]]:
        """The ``k`` best cells of ``long_share * long / total(long) + (1 -
        long_share) * short / total(short)``, each horizon's ranking divided
        by its total over all cells (so a score is a share of the decayed
        harm, the same at any time until the store changes); with the
        store's sequence number. One read-only script: O(cells) in Redis."""
        self._check(long, resolution)
        self._check(short, resolution)
        raw = await self._run(self._blend, [long, short, resolution, repr(long_share), k])
        rows = raw[1:]
        ranked = [
            Ranked(_text(rows[i]), i // 2 + 1, float(rows[i + 1])) for i in range(0, len(rows), 2)
        ]
        return int(raw[0]), ranked

    async def ranking(self, horizon: str, resolution: int, at_s: float) -> list[Ranked]:
        """The whole ranking, best first, scores decayed to ``at_s`` (cells
        below ``prune_below`` left out, as in :meth:`top`)."""
        return await self.top(horizon, resolution, 10**9, at_s)

    async def window(
        self, resolution: int, hours: Sequence[int], k: int, at_s: float
    ) -> list[Ranked]:
        """Top cells for a set of hours of the week (0 = Monday 00:00), by
        their hour-of-week profile (decayed with the profile horizon)."""
        self._check(self.profile_horizon, resolution)
        landmark_raw = await self.client.hget(keys.meta(self.prefix), f"k:{self.profile_horizon}")
        if landmark_raw is None:
            return []
        factor = decay.decay_factor(at_s, self.horizons[self.profile_horizon], int(landmark_raw))
        ranking = keys.rank(self.prefix, self.profile_horizon, resolution)
        cells = await self.client.zrange(ranking, 0, -1)
        wanted = sorted(set(hours))
        totals: list[tuple[float, str]] = []
        for start in range(0, len(cells), 2000):
            chunk = cells[start : start + 2000]
            async with self.client.pipeline(transaction=False) as pipe:
                for c in chunk:
                    pipe.get(keys.hour_of_week(self.prefix, _text(c)))
                rows = await pipe.execute()
            for c, packed in zip(chunk, rows, strict=True):
                if packed is None:
                    continue
                values = struct.unpack(PROFILE_FORMAT, packed.ljust(PROFILE_BYTES, b"\0"))
                total = math.fsum(values[h] for h in wanted)
                if total > 0:
                    totals.append((total, _text(c)))
        totals.sort(key=lambda x: (-x[0], x[1]))
        return [Ranked(c, i + 1, s * factor) for i, (s, c) in enumerate(totals[:k])]

    def _check(self, horizon: str, resolution: int) -> None:
        if horizon not in self.horizons:
            raise KeyError(f"unknown horizon {horizon!r}; configured: {self.names}")
        if resolution not in self.resolutions:
            raise KeyError(
                f"resolution {resolution} is not configured; configured: {self.resolutions}"
            )


def _slow_args(o: StoreOp) -> list[Any]:
    """An op's five arguments for the script's term-by-term part."""
    packed = o.contribution.packed() if o.contribution is not None else ""
    return [o.op, o.id, packed, o.source, o.offset if o.source else ""]


def _day(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y%m%d")


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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "ApplyPlan",
    "ApplyResult",
    "CellDetails",
    "EngineClock",
    "Ranked",
    "Store",
    "StoreError",
    "StoreOp",
]


class EngineClock:
    """``now`` for decay and pruning: the wall clock (``mode = "wall"``), or
    the newest event time the store applied (``"event"``, for replays of old
    data). Calling it is cheap; :meth:`refresh` reads the store."""

    def __init__(self, store: Store, mode: str) -> None:
        self.store = store
        self.mode = mode
        self._t = time.time()

    def __call__(self) -> float:
        return time.time() if self.mode == "wall" else self._t

    async def refresh(self) -> float:
        """Re-read the watermark (event mode) and return ``now``."""
        if self.mode == "event":
            raw = await self.store.client.hget(keys.meta(self.store.prefix), "watermark")
            if raw is not None:
                self._t = float(raw)
        return self()
