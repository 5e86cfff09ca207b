"""Backfill: a historical file straight into the store, no Kafka.

The same core code as the live path decides validity, weight, cells and
terms. Events older than the ledger window (``store.ledger_retention``
before the file's newest event) are settled history: they are summed per
cell in one vectorised pass and merged. The newest events go through the
live path's apply script, so they are ledgered: a later duplicate, cancel or
correction of them (from Kafka) is exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.adapters.files import Columns, SourceProfile, read_columns
from streamer.adapters.store import Store, StoreOp
from streamer.core.aggregate import Batch, aggregate_resolution, hours_of_week
from streamer.core.cells import cells_of_many
from streamer.core.events import EventRules, validate_columns
from streamer.core.scoring import Contribution, Scorer, clean_label


@dataclass
class BackfillReport:
    """What a backfill did."""

    read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    superseded: int = 0
    cancelled: int = 0
    excluded: int = 0
    unknown_categories: Counter[str] = field(default_factory=Counter)
    settled: int = 0
    ledgered: int = 0
    cells: int = 0
    seconds: float = 0.0
    skipped_file: bool = False

    @property
    def events_per_s(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[str, int, int], None]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, to notice a file loaded twice."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _concat(chunks: Iterator[Columns]) -> Columns:
    parts = list(chunks)
    if len(parts) == 1:
        return parts[0]
    names = (
        "ids",
        "occurred_at_s",
        "lat_deg",
        "lon_deg",
        "categories",
        "kinds",
        "origins",
        "ops",
        "priorities",
    )
    return Columns(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


async def backfill(
    path: str | Path,
    profile: SourceProfile | None,
    *,
    store: Store,
    rules: EventRules,
    scorer: Scorer,
    ledger_window_s: float,
    batch_max_events: int,
    now_s: float,
    force: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """Load ``path`` into ``store``; see the module docstring."""
    started = time.monotonic()
    report = BackfillReport()
    step = progress or (lambda stage, done, total: None)
    digest = file_digest(path)
    loaded_key = store.key("backfills")
    if not force and await store.client.hexists(loaded_key, digest):
        report.skipped_file = True
        return report

    step("read", 0, 1)
    cols = _concat(read_columns(path, profile))
    report.read = len(cols)
    step("read", 1, 1)

    keep, reasons = validate_columns(
        cols.ids,
        cols.occurred_at_s,
        cols.lat_deg,
        cols.lon_deg,
        cols.categories,
        rules,
        now_s=now_s,
    )
    report.rejected.update(r for r in reasons if r is not None)

    # Upsert semantics within the file: the last row of an id wins; a last
    # row that cancels removes the id.
    last_row: dict[str, int] = {}
    ids = cols.ids.tolist()
    ops = cols.ops.tolist()
    for i in np.flatnonzero(keep | (cols.ops == "cancel")).tolist():
        if ops[i] != "cancel" and not keep[i]:
            continue
        if ids[i] in last_row:
            report.superseded += 1
        last_row[ids[i]] = i
    rows = np.array(sorted(i for i in last_row.values() if ops[i] != "cancel"), dtype=np.int64)
    report.cancelled = len(last_row) - rows.size

    # Weights, per distinct (category, origin).
    table = scorer.weights
    cats = cols.categories[rows].tolist()
    origins = cols.origins[rows].tolist()
    weighed = {key: table.weigh(*key) for key in set(zip(cats, origins, strict=True))}
    per_category = Counter(cats)
    for (cat, _), w in weighed.items():
        if not w.known:
            report.unknown_categories[cat] = per_category[cat]
    weight = np.array([weighed[(c, o)].weight for c, o in zip(cats, origins, strict=True)])
    counted = weight > 0
    report.excluded = int((~counted).sum())
    rows, weight = rows[counted], weight[counted]
    cats = [c for c, k in zip(cats, counted.tolist(), strict=True) if k]
    origins = [o for o, k in zip(origins, counted.tolist(), strict=True) if k]
    families = sorted({weighed[(c, o)].family for c, o in zip(cats, origins, strict=True)})
    categories = sorted(set(cats))
    fam_idx = {f: i for i, f in enumerate(families)}
    cat_idx = {c: i for i, c in enumerate(categories)}
    report.accepted = int(rows.size)

    step("cells", 0, 1)
    t_s = cols.occurred_at_s[rows]
    batch = Batch(
        t_s=t_s,
        weight=weight,
        family=np.array(
            [fam_idx[weighed[(c, o)].family] for c, o in zip(cats, origins, strict=True)],
            dtype=np.int64,
        ),
        category=np.array([cat_idx[c] for c in cats], dtype=np.int64),
        hour_of_week=hours_of_week(t_s, scorer.zone),
        cells=cells_of_many(cols.lat_deg[rows], cols.lon_deg[rows], scorer.resolutions),
        families=[clean_label(f) for f in families],
        categories=[clean_label(c) for c in categories],
    )
    step("cells", 1, 1)
    if len(batch) == 0:
        report.seconds = time.monotonic() - started
        return report

    newest = float(t_s.max())
    recent = t_s >= newest - ledger_window_s
    settled = batch.take(~recent)
    report.settled, report.ledgered = len(settled), int(recent.sum())

    landmarks = await store.ensure_landmarks(newest)
    # Aggregate one resolution (in a thread) while Redis merges the previous
    # one: the two run on different cores. Merges commute, so order is free.
    chunk = 1000
    writes: list[asyncio.Task[int]] = []
    n_res = len(scorer.resolutions)
    for j in range(n_res):
        merged = await asyncio.to_thread(
            aggregate_resolution,
            settled,
            j,
            horizons=store.horizons,
            landmarks=landmarks,
            profile_horizon=store.profile_horizon,
        )
        report.cells += len(merged)
        writes += [
            asyncio.create_task(store.merge(merged[s : s + chunk], landmarks, newest))
            for s in range(0, len(merged), chunk)
        ]
        step("merge", j + 1, n_res)
    await asyncio.gather(*writes)

    recent_rows = rows[recent]
    recent_ids = cols.ids[recent_rows].tolist()
    ops_out: list[StoreOp] = []
    b = batch.take(recent)
    for j, event_id in enumerate(recent_ids):
        cells = tuple(int(c) for c in b.cells[j])
        ops_out.append(
            StoreOp.upsert(
                Contribution(
                    id=str(event_id),
                    t_s=float(b.t_s[j]),
                    weight=float(b.weight[j]),
                    family=b.families[int(b.family[j])],
                    category=b.categories[int(b.category[j])],
                    hour_of_week=int(b.hour_of_week[j]),
                    cells=cells,
                )
            )
        )
    for start in range(0, len(ops_out), batch_max_events):
        await store.apply(ops_out[start : start + batch_max_events], now_s=now_s)
        step("ledger", min(start + batch_max_events, len(ops_out)), len(ops_out))

    await store.client.hset(loaded_key, digest, f"{Path(path).name} {int(now_s)}")
    report.seconds = time.monotonic() - started
    return report
