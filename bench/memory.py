"""Benchmark: ten years of Philadelphia replayed in time order; Redis memory year by year.

    .venv/bin/python -m bench.memory [--path FILE] [--chunk month|quarter] [--compare]

Feeds the full shared file (1.5 M incidents, 2016-2025) into a fresh
namespace one calendar month (UTC) at a time, in time order, and after each
chunk runs what the live leader's maintenance timer runs (``Maintainer.tick``
in ``streamer/adapters/publisher.py``) with the clock at the chunk's end:
re-base the landmarks to the watermark if due, prune cells below
``store.prune_below``, forget ledger days older than
``store.ledger_retention``. At the end of each year it prints and records
the namespace's own bytes (MEMORY USAGE summed over its keys, by kind), its
keys, the cells tracked per resolution (the longest horizon's rankings:
leaving them deletes a cell), the entries of all rankings, the ledger's
entries, and the change of Redis ``used_memory`` (the whole server, which
is shared: a rough figure).

How a chunk goes in, and why: the events older than the ledger retention
at the chunk's end go by the backfill's bulk path (per-cell sums merged, as
``streamer/services/backfill.py`` does), the rest (its last 7 days) through
``Store.apply``, the live path, which writes the ledger; batches of
``store.batch_max_events``, each applied with ``now_s`` = its newest event
(the ledger day). Merged and applied events add the same exact terms, so
after the chunk's maintenance the store holds what a live engine would:
the same cells, scores and rankings, and a ledger of the last retention
(the chunk ends at midnight UTC, so the trim's whole days and the cut
agree). Only the per-day id lists differ (one per batch, not per day).
Everything through the live path in day batches costs ~80-250 µs an event
(a day's events share few cells, the script's cost is per cell touched,
and each call has a fixed cost): minutes of Redis for the same end state.
Last month's ledgered week is forgotten by this month's trim, so the
retention is exercised.

A pass takes about 3.5 minutes on this machine while shared (most of it
the day horizon's re-base every 64 days, which rewrites every cell, as it
does live). ``--compare`` adds a second pass, about as long: every event
through ``Store.apply`` in batches of ``store.batch_max_events`` (so all
are ledgered), with no prune and no ledger trim (re-bases still happen:
they keep the numbers finite), which shows what maintenance saves.
Without the full file it says so and exits 0 (the bundled sample is one
year).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from bench.backfill import FULL
from bench.common import drop_namespace, write_result
from streamer import app
from streamer.adapters import keys
from streamer.adapters.files import concat_columns, load_profile, read_columns, standing
from streamer.adapters.store import ApplyResult, Store, StoreOp
from streamer.core.aggregate import Batch, encode_cells, hours_of_week
from streamer.core.cells import cells_of_many
from streamer.core.scoring import Contribution, clean_label
from streamer.services.backfill import pair_codes
from streamer.settings import Settings, load_settings

KINDS = ("rank", "cell", "how", "ledger", "other")


@dataclass(frozen=True, slots=True)
class Events:
    """The file's standing, counted events in time order, as columns."""

    ids: list[str]
    t_s: npt.NDArray[np.float64]
    weight: npt.NDArray[np.float64]
    family: npt.NDArray[np.int64]  # index into families
    category: npt.NDArray[np.int64]  # index into categories
    hour_of_week: npt.NDArray[np.int64]
    cells: npt.NDArray[np.uint64]  # (events, resolutions)
    families: list[str]
    categories: list[str]

    def ops(self, lo: int, hi: int) -> list[StoreOp]:
        """Rows ``lo:hi`` as store upserts (what the live path applies)."""
        fams, cats = self.families, self.categories
        return [
            StoreOp.upsert(Contribution(i, t, w, fams[f], cats[c], h, tuple(cells)))
            for i, t, w, f, c, h, cells in zip(
                self.ids[lo:hi],
                self.t_s[lo:hi].tolist(),
                self.weight[lo:hi].tolist(),
                self.family[lo:hi].tolist(),
                self.category[lo:hi].tolist(),
                self.hour_of_week[lo:hi].tolist(),
                self.cells[lo:hi].tolist(),
                strict=True,
            )
        ]

    def batch(self, lo: int, hi: int) -> Batch:
        """Rows ``lo:hi`` as the bulk path's columns."""
        return Batch(
            self.t_s[lo:hi],
            self.weight[lo:hi],
            self.family[lo:hi],
            self.category[lo:hi],
            self.hour_of_week[lo:hi],
            self.cells[lo:hi],
            self.families,
            self.categories,
        )


def load_events(path: Path, settings: Settings) -> tuple[Events, int]:
    """The file's events as the scorer would make them (and rows read)."""
    cols = concat_columns(read_columns(path, load_profile("philadelphia")))
    rules, scorer = app.event_rules(settings), app.scorer(settings)
    rows = standing(cols, rules, now_s=time.time()).rows
    code, pairs = pair_codes(cols.categories[rows], cols.origins[rows])
    weighed = [scorer.weights.weigh(cat, origin) for cat, origin in pairs]
    weight = np.array([w.weight for w in weighed], dtype=np.float64)[code]
    counted = weight > 0  # excluded categories add nothing
    rows, weight, code = rows[counted], weight[counted], code[counted]
    order = np.argsort(cols.occurred_at_s[rows], kind="stable")
    rows, weight, code = rows[order], weight[order], code[order]
    t_s = cols.occurred_at_s[rows]
    families = sorted({clean_label(w.family) for w in weighed})
    categories = sorted({clean_label(cat) for cat, _ in pairs})
    family_of = np.array([families.index(clean_label(w.family)) for w in weighed], np.int64)
    category_of = np.array([categories.index(clean_label(c)) for c, _ in pairs], np.int64)
    events = Events(
        ids=[str(i) for i in cols.ids[rows].tolist()],
        t_s=t_s,
        weight=weight,
        family=family_of[code],
        category=category_of[code],
        hour_of_week=hours_of_week(t_s, scorer.zone),
        cells=cells_of_many(cols.lat_deg[rows], cols.lon_deg[rows], scorer.resolutions),
        families=families,
        categories=categories,
    )
    return events, len(cols)


def chunks(t_s: npt.NDArray[np.float64], chunk: str) -> list[tuple[int, int, float, int]]:
    """(first row, end row, end of the chunk in POSIX s, year) per calendar
    month or quarter (UTC) of the time-ordered ``t_s``."""
    months = t_s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    per = 3 if chunk == "quarter" else 1
    keys = months // per
    starts = np.flatnonzero(np.diff(keys, prepend=keys[0] - 1))
    ends = np.append(starts[1:], t_s.size)
    out = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        k = int(keys[lo])
        end = np.datetime64((k + 1) * per, "M").astype("datetime64[s]").astype(np.int64)
        year = 1970 + (k * per) // 12
        out.append((lo, hi, float(end), year))
    return out


async def merge(store: Store, settled: Batch) -> None:
    """Settled events into the store by the backfill's bulk path
    (``streamer/services/backfill.py``): per-cell sums, one resolution at a time."""
    if len(settled) == 0:
        return
    newest, oldest = float(settled.t_s.max()), float(settled.t_s.min())
    landmarks = await store.ensure_landmarks(newest)
    for j, res in enumerate(store.resolutions):
        labels, cells = encode_cells(
            replace(settled, cells=settled.cells[:, j : j + 1]),
            resolutions=[res],
            horizons=store.horizons,
            landmarks=landmarks,
            profile_horizon=store.profile_horizon,
        )
        for s in range(0, len(cells), 1000):
            await store.merge(labels, cells[s : s + 1000], landmarks, newest, oldest)


async def footprint(client: aioredis.Redis, store: Store) -> dict[str, Any]:
    """The namespace's bytes by kind of key, its keys, cells and ledger."""
    by_kind = dict.fromkeys(KINDS, 0)
    keys = 0
    batch: list[bytes] = []

    async def flush() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            kind = key.decode().split(":", 2)[1]
            by_kind[kind if kind in by_kind else "other"] += int(size or 0)
        batch.clear()

    async for key in client.scan_iter(match=f"{store.prefix}*", count=5000):
        batch.append(key)
        keys += 1
        if len(batch) >= 2000:
            await flush()
    if batch:
        await flush()
    longest = max(store.names, key=lambda n: store.horizons[n])
    async with client.pipeline(transaction=False) as pipe:
        for name in store.names:
            for res in store.resolutions:
                pipe.zcard(keys.rank(store.prefix, name, res))
        pipe.hlen(keys.ledger(store.prefix))
        pipe.info("memory")
        *sizes, ledger, info = await pipe.execute()
    ranked = {
        f"{name}:{res}": int(sizes[i * len(store.resolutions) + j])
        for i, name in enumerate(store.names)
        for j, res in enumerate(store.resolutions)
    }
    cells = {str(res): ranked[f"{longest}:{res}"] for res in store.resolutions}
    return {
        "namespace_bytes": sum(by_kind.values()),
        "bytes_by_kind": by_kind,
        "keys": keys,
        "cells": cells,
        "cells_total": sum(cells.values()),
        "ranking_entries": ranked,
        "ledger_entries": int(ledger),
        "used_memory": int(info["used_memory"]),
    }


async def replay(
    client: aioredis.Redis,
    settings: Settings,
    events: Events,
    namespace: str,
    *,
    chunk: str,
    maintain: bool,
) -> dict[str, Any]:
    """One pass over the events into ``namespace``; rows per year."""
    await drop_namespace(client, namespace)
    settings = load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": settings.store.redis_url},
            "grid": {"timezone": settings.grid.timezone},
        }
    )
    store = app.store(settings, client)
    batch = settings.store.batch_max_events
    baseline = int((await client.info("memory"))["used_memory"])
    years: list[dict[str, Any]] = []
    apply_s = maintain_s = 0.0
    upkeep = {"removed": 0, "deleted": 0, "forgotten": 0}
    counts = {"merged": 0, "applied": 0}
    plan = chunks(events.t_s, chunk)
    retention = settings.store.ledger_retention
    for n, (lo, hi, end_s, year) in enumerate(plan):
        started = time.perf_counter()
        ledgered = lo
        if maintain:
            # settled history: older than the retention at the chunk's end
            ledgered = lo + int(np.searchsorted(events.t_s[lo:hi], end_s - retention))
            await merge(store, events.batch(lo, ledgered))
        cuts = [(s, min(s + batch, hi)) for s in range(ledgered, hi, batch)]
        pending: asyncio.Task[ApplyResult] | None = None
        for start, stop in cuts:
            # planned while Redis runs the previous batch, as the consumer does
            step = store.plan(events.ops(start, stop), now_s=float(events.t_s[stop - 1]))
            if pending is not None:
                await pending
            pending = asyncio.create_task(store.apply_plan(step))
            await step.sent.wait()
        if pending is not None:
            await pending
        counts["merged"] += ledgered - lo
        counts["applied"] += hi - ledgered
        apply_s += time.perf_counter() - started
        if maintain:  # what Maintainer.tick does, the clock at the chunk's end
            started = time.perf_counter()
            watermark = await client.hget(keys.meta(store.prefix), "watermark")
            if watermark is not None:
                await store.ensure_landmarks(float(watermark))
            removed, deleted = await store.prune(end_s)
            upkeep["removed"] += removed
            upkeep["deleted"] += deleted
            upkeep["forgotten"] += await store.trim_ledger(end_s)
            maintain_s += time.perf_counter() - started
        if n + 1 == len(plan) or plan[n + 1][3] != year:
            row = {"year": year, "events": hi, **await footprint(client, store)}
            row["used_memory_change"] = row.pop("used_memory") - baseline
            years.append(row)
            print(
                f"  {'pruned' if maintain else 'no upkeep'} {year}: {hi:,} events, "
                f"{row['cells_total']:,} cells, {row['namespace_bytes'] / 1e6:.1f} MB, "
                f"ledger {row['ledger_entries']:,}",
                flush=True,
            )
    await drop_namespace(client, namespace)
    return {
        "maintained": maintain,
        **counts,
        "write_s": round(apply_s, 2),
        "maintain_s": round(maintain_s, 2),
        "upkeep": upkeep,
        "years": years,
    }


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def print_table(runs: Sequence[dict[str, Any]], resolutions: Sequence[int]) -> None:
    """Year by year: the maintained run, and beside it the one without upkeep."""
    pruned = runs[0]["years"]
    bare = runs[1]["years"] if len(runs) > 1 else []
    res = "/".join(map(str, resolutions))
    head = [
        "year",
        "events",
        f"cells {res}",
        "rank entries",
        "ledger",
        "keys",
        "ns MB",
        "B/cell/hz",
        "used_memory +MB",
    ]
    if bare:
        head += ["no upkeep: cells", "rank entries", "ledger", "ns MB"]
    table = [head]
    for i, row in enumerate(pruned):
        horizons = len(row["ranking_entries"]) // len(resolutions)
        cells = "/".join(f"{row['cells'][str(r)]:,}" for r in resolutions)
        line = [
            str(row["year"]),
            f"{row['events']:,}",
            cells,
            f"{sum(row['ranking_entries'].values()):,}",
            f"{row['ledger_entries']:,}",
            f"{row['keys']:,}",
            _mb(row["namespace_bytes"]),
            f"{row['namespace_bytes'] / max(row['cells_total'], 1) / horizons:,.0f}",
            _mb(row["used_memory_change"]),
        ]
        if i < len(bare):
            b = bare[i]
            line += [
                f"{b['cells_total']:,}",
                f"{sum(b['ranking_entries'].values()):,}",
                f"{b['ledger_entries']:,}",
                _mb(b["namespace_bytes"]),
            ]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for line in table:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    path: Path = args.path
    if not path.exists():
        return None
    settings = load_settings(
        overrides={
            "store": {"redis_url": args.redis_url},
            "grid": {"timezone": "America/New_York"},
        }
    )
    started = time.perf_counter()
    events, read = load_events(path, settings)
    load_s = time.perf_counter() - started
    print(
        f"{read:,} rows read, {events.t_s.size:,} counted events in time order "
        f"({load_s:.1f} s); {args.chunk}ly chunks: the last "
        f"{settings.store.ledger_retention / 86400:g} days of each through Store.apply "
        f"(batches of at most {settings.store.batch_max_events:,}), the rest merged",
        flush=True,
    )
    client = aioredis.Redis.from_url(args.redis_url)
    runs: list[dict[str, Any]] = []
    try:
        runs.append(
            await replay(
                client, settings, events, "bench-mem-pruned", chunk=args.chunk, maintain=True
            )
        )
        if args.compare:
            runs.append(
                await replay(
                    client, settings, events, "bench-mem-bare", chunk=args.chunk, maintain=False
                )
            )
    finally:
        for namespace in ("bench-mem-pruned", "bench-mem-bare"):
            await drop_namespace(client, namespace)
        await client.aclose()
    print_table(runs, settings.grid.resolutions)
    last, first = runs[0]["years"][-1], runs[0]["years"][0]
    horizons = len(settings.horizons)
    out: dict[str, Any] = {
        "path": str(path),
        "rows_read": read,
        "events": int(events.t_s.size),
        "chunk": args.chunk,
        "horizons": list(settings.horizons),
        "resolutions": settings.grid.resolutions,
        "ledger_retention_s": settings.store.ledger_retention,
        "prune_below": settings.store.prune_below,
        "first_year": first["year"],
        "last_year": last["year"],
        "bytes_per_cell_and_horizon_first_year": round(
            first["namespace_bytes"] / max(first["cells_total"], 1) / horizons, 1
        ),
        "bytes_per_cell_and_horizon_last_year": round(
            last["namespace_bytes"] / max(last["cells_total"], 1) / horizons, 1
        ),
        "namespace_bytes_first_year": first["namespace_bytes"],
        "namespace_bytes_last_year": last["namespace_bytes"],
        "cells_first_year": first["cells_total"],
        "cells_last_year": last["cells_total"],
        "ledger_entries_last_year": last["ledger_entries"],
        "runs": runs,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}",
    }
    if len(runs) > 1:
        bare = runs[1]["years"][-1]
        out |= {
            "no_upkeep_namespace_bytes_last_year": bare["namespace_bytes"],
            "no_upkeep_cells_last_year": bare["cells_total"],
            "no_upkeep_ledger_entries_last_year": bare["ledger_entries"],
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.memory", description=__doc__)
    parser.add_argument("--path", type=Path, default=FULL)
    parser.add_argument("--chunk", choices=("month", "quarter"), default="month")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also replay with no prune and no ledger trim (every event applied: minutes more)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if result is None:
        print(
            f"bench.memory: {args.path} is not here (the shared ten-year Philadelphia file); "
            "nothing to replay. The bundled sample is one year: see bench.backfill."
        )
        return
    print(
        f"after {result['last_year'] - result['first_year'] + 1} years: "
        f"{result['cells_last_year']:,} cells, "
        f"{result['bytes_per_cell_and_horizon_last_year']} B per cell and horizon "
        f"(first year {result['bytes_per_cell_and_horizon_first_year']}), "
        f"ledger {result['ledger_entries_last_year']:,} entries"
    )
    write_result("memory", result)


if __name__ == "__main__":
    main()
