"""Backfill: a historical file straight into the store, no Kafka.

The same core code as the live path decides validity, weight, cells and
terms. Events older than the ledger window (``store.ledger_retention``
before the file's newest event) are settled history: they are summed per
cell in one vectorised pass and merged. The newest events go through the
live path's apply script, so they are ledgered: a later duplicate, cancel or
correction of them (from Kafka or another file) is exact.

A file is read as changes applied in order to what the store held before it
(see :func:`streamer.adapters.files.standing`). Cancels of events the file
does not upsert first are sent to the store before anything else: the store
takes each out by id while its ledger holds the event, else by the fields the
cancel carries (an adjustment row), else counts it as an unknown cancel. An
upsert of an id the ledger holds (a correction: moved, reclassified) goes
through the apply script, which takes the old version out, wherever the
upsert falls in time. See docs/corrections.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from streamer.adapters import keys
from streamer.adapters.files import (
    Columns,
    ObjectArray,
    Paths,
    SourceProfile,
    Standing,
    concat_columns,
    expand_paths,
    read_columns,
    standing,
)
from streamer.adapters.store import ApplyResult, Store, StoreOp
from streamer.core.aggregate import Batch, hours_of_week
from streamer.core.batching import cancel_op
from streamer.core.cells import cells_of_many
from streamer.core.events import Cancel, Event, EventRules
from streamer.core.fastpath import encode_cells
from streamer.core.row_report import RowReport
from streamer.core.scoring import UNCOUNT, Contribution, Scorer, clean_label


@dataclass
class BackfillReport:
    """What a backfill did."""

    read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    superseded: int = 0
    cancelled: int = 0  # ids upserted in this file whose last row cancels them
    store_cancels: int = 0  # cancel rows aimed at what the store held before the file
    cancels_by_id: int = 0  # applied to the store: the ledger held the event
    cancels_by_fields: int = 0  # applied to the store: by the fields the row carried
    cancels_repeated: int = 0  # of events already cancelled (nothing changed)
    unknown_cancel: int = 0  # the store could not place them: nothing changed
    cancels_uncounted: int = 0  # of events whose category does not count: nothing to take out
    replaced_by_id: int = 0  # corrections: stored versions an upsert replaced by id
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

    def rows(self) -> RowReport:
        """What became of the file's rows (:mod:`streamer.core.row_report`)."""
        return RowReport(
            read=self.read,
            accepted=self.accepted + self.excluded,
            rejected=dict(self.rejected),
            superseded=self.superseded,
            cancelled=self.cancelled,
            on_default=sum(self.unknown_categories.values()),
        )

    def summary(self) -> dict[str, object]:
        """The report as the command line prints it."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "superseded_by_later_row": self.superseded,
            "cancelled_within_file": self.cancelled,
            "cancels_applied_to_store": {
                "by_id": self.cancels_by_id,
                "by_fields": self.cancels_by_fields,
            },
            "cancels_already_applied": self.cancels_repeated,
            "cancels_of_events_that_do_not_count": self.cancels_uncounted,
            "unknown_cancel": self.unknown_cancel,
            "corrections_by_id": self.replaced_by_id,
            "excluded_by_weight": self.excluded,
            "unknown_categories": dict(self.unknown_categories),
            "settled": self.settled,
            "ledgered": self.ledgered,
            "cells_written": self.cells,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s),
        }

    def add_cancels(self, result: ApplyResult, uncounted: int) -> None:
        """Count what the store did with a batch of cancels, ``uncounted`` of
        them of a category that does not count (``x`` ops: by id, if held)."""
        self.cancels_by_id += result.cancelled + result.retracted
        self.cancels_uncounted += uncounted - result.retracted
        self.cancels_by_fields += result.cancelled_by_fields
        self.cancels_repeated += result.cancel_repeated
        self.unknown_cancel += result.unknown_cancel


Progress = Callable[[str, int, int], None]


def pair_codes(
    categories: ObjectArray, origins: ObjectArray
) -> tuple[npt.NDArray[np.int64], list[tuple[str, str]]]:
    """Each row's code for its (category, origin) pair, and the pairs by code
    (in order of first appearance): weigh each pair once, then index.

    >>> codes, pairs = pair_codes(np.array(["a", "b", "a"], object), np.array(["r"] * 3, object))
    >>> codes.tolist(), pairs
    ([0, 1, 0], [('a', 'r'), ('b', 'r')])
    """
    code_of: dict[tuple[str, str], int] = {}
    codes = np.fromiter(
        (
            code_of.setdefault(p, len(code_of))
            for p in zip(categories.tolist(), origins.tolist(), strict=True)
        ),
        dtype=np.int64,
        count=len(categories),
    )
    return codes, list(code_of)


def file_digest(path: Paths) -> str:
    """SHA-256 of a file, to notice a file loaded twice; of several files
    (a list or a glob, read as one), the SHA-256 of their digests in order."""
    files = expand_paths(path)
    digests = []
    for one in files:
        h = hashlib.sha256()
        with open(one, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
        digests.append(h.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


async def backfill(
    path: Paths,
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
    loaded_name = ",".join(p.name for p in expand_paths(path))  # what {NS}:backfills records
    loaded_key = keys.backfills(store.prefix)
    if not force and await store.client.hexists(loaded_key, digest):
        report.skipped_file = True
        return report

    step("read", 0, 1)
    cols = concat_columns(read_columns(path, profile))
    report.read = len(cols)
    step("read", 1, 1)

    # Upsert semantics within the file: the last row of an id wins; a last
    # row that cancels removes the id. Cancels before an id's first upsert
    # withdraw what the store held before this file: they go first.
    stand = standing(cols, rules, now_s=now_s)
    report.rejected.update(stand.rejected)
    report.superseded = stand.superseded
    report.cancelled = stand.cancelled
    report.store_cancels = int(stand.store_cancels.size)
    ledger_in_use = await _apply_cancels(
        cols,
        stand,
        store=store,
        scorer=scorer,
        report=report,
        step=step,
        batch_max_events=batch_max_events,
        now_s=now_s,
    )
    batch, rows, held = await _weigh(
        cols,
        stand.rows,
        store=store,
        scorer=scorer,
        report=report,
        step=step,
        ledger_in_use=ledger_in_use,
        batch_max_events=batch_max_events,
        now_s=now_s,
    )
    if len(batch) == 0:
        await store.client.hset(loaded_key, digest, f"{loaded_name} {int(now_s)}")
        report.seconds = time.monotonic() - started
        return report

    t_s = batch.t_s
    newest, oldest = float(t_s.max()), float(t_s.min())
    recent = (t_s >= newest - ledger_window_s) | held
    settled = batch.take(~recent)
    report.settled, report.ledgered = len(settled), int(recent.sum())
    await _merge_settled(
        settled, store=store, scorer=scorer, report=report, step=step, newest=newest, oldest=oldest
    )
    await _ledger_recent(
        cols.ids[rows[recent]].tolist(),
        batch.take(recent),
        store=store,
        report=report,
        step=step,
        batch_max_events=batch_max_events,
        now_s=now_s,
    )

    await store.client.hset(loaded_key, digest, f"{loaded_name} {int(now_s)}")
    report.seconds = time.monotonic() - started
    return report


async def _apply_cancels(
    cols: Columns,
    stand: Standing,
    *,
    store: Store,
    scorer: Scorer,
    report: BackfillReport,
    step: Progress,
    batch_max_events: int,
    now_s: float,
) -> bool:
    """Send the cancels aimed at what the store held before the file, then
    take out by id the held versions of ids this file upserts and cancels.
    Whether the store's ledger holds anything."""
    cancel_ops = [
        cancel_op(_cancel_of(cols, int(i), bool(f)), scorer)
        for i, f in zip(stand.store_cancels.tolist(), stand.with_fields.tolist(), strict=True)
    ]
    for start in range(0, len(cancel_ops), batch_max_events):
        part = cancel_ops[start : start + batch_max_events]
        uncounted = sum(1 for o in part if o.op == UNCOUNT)
        report.add_cancels(await store.apply(part, now_s=now_s), uncounted)
        step("cancels", min(start + batch_max_events, len(cancel_ops)), len(cancel_ops))
    ledger_in_use = await store.client.hlen(keys.ledger(store.prefix)) > 0
    if ledger_in_use and stand.cancelled_rows.size:
        # upserted and cancelled in this file: an earlier version the ledger
        # holds goes too (if none, the event lived in this file only)
        quiet = [StoreOp.cancel(str(i)) for i in cols.ids[stand.cancelled_rows].tolist()]
        for start in range(0, len(quiet), batch_max_events):
            result = await store.apply(quiet[start : start + batch_max_events], now_s=now_s)
            report.cancels_by_id += result.cancelled
    return ledger_in_use


async def _weigh(
    cols: Columns,
    rows: npt.NDArray[np.int64],
    *,
    store: Store,
    scorer: Scorer,
    report: BackfillReport,
    step: Progress,
    ledger_in_use: bool,
    batch_max_events: int,
    now_s: float,
) -> tuple[Batch, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The standing ``rows`` that count, as a batch with their cells; those
    rows, and which of them the ledger holds. A held id that no longer
    counts is taken out of the store by id."""
    # Weights, per distinct (category, origin): factorise once, then index.
    table = scorer.weights
    codes, pairs = pair_codes(cols.categories[rows], cols.origins[rows])
    weighed = [table.weigh(cat, origin) for cat, origin in pairs]
    per_code = np.bincount(codes, minlength=len(pairs))
    for (cat, _), w, n in zip(pairs, weighed, per_code.tolist(), strict=True):
        if not w.known:
            report.unknown_categories[cat] += n
    weight = np.array([w.weight for w in weighed], dtype=np.float64)[codes]
    counted = weight > 0
    report.excluded = int((~counted).sum())
    # ids the ledger holds: a new version of one is a correction, applied by
    # id through the apply script (one that no longer counts takes it out)
    held = (
        await store.ledger_holds([str(i) for i in cols.ids[rows].tolist()])
        if ledger_in_use
        else np.zeros(rows.size, dtype=np.bool_)
    )
    excluded_held = [StoreOp.exclude(str(i)) for i in cols.ids[rows[~counted & held]].tolist()]
    for start in range(0, len(excluded_held), batch_max_events):
        result = await store.apply(excluded_held[start : start + batch_max_events], now_s=now_s)
        report.replaced_by_id += result.retracted
    rows, weight, codes, held = rows[counted], weight[counted], codes[counted], held[counted]
    present = sorted(set(np.unique(codes).tolist()))
    families = sorted({weighed[c].family for c in present})
    categories = sorted({pairs[c][0] for c in present})
    fam_of_code = np.array(
        [families.index(w.family) if w.family in families else -1 for w in weighed], dtype=np.int64
    )
    cat_of_code = np.array(
        [categories.index(cat) if cat in categories else -1 for cat, _ in pairs], dtype=np.int64
    )
    report.accepted = int(rows.size)

    step("cells", 0, 1)
    t_s = cols.occurred_at_s[rows]
    batch = Batch(
        t_s=t_s,
        weight=weight,
        family=fam_of_code[codes],
        category=cat_of_code[codes],
        hour_of_week=hours_of_week(t_s, scorer.zone),
        cells=cells_of_many(cols.lat_deg[rows], cols.lon_deg[rows], scorer.resolutions),
        families=[clean_label(f) for f in families],
        categories=[clean_label(c) for c in categories],
    )
    step("cells", 1, 1)
    return batch, rows, held


async def _merge_settled(
    settled: Batch,
    *,
    store: Store,
    scorer: Scorer,
    report: BackfillReport,
    step: Progress,
    newest: float,
    oldest: float,
) -> None:
    """Sum the settled events per cell, one resolution at a time, and merge
    the sums into the store."""
    landmarks = await store.ensure_landmarks(newest)
    # Aggregate one resolution (in a thread) while Redis merges the previous
    # one: the two run on different cores. Merges commute, so order is free.
    chunk = 1000
    writes: list[asyncio.Task[int]] = []
    n_res = len(scorer.resolutions)
    for j in range(n_res):
        labels, merged = await asyncio.to_thread(
            encode_cells,
            replace(settled, cells=settled.cells[:, j : j + 1]),
            resolutions=[scorer.resolutions[j]],
            horizons=store.horizons,
            landmarks=landmarks,
            profile_horizon=store.profile_horizon,
        )
        report.cells += len(merged)
        writes += [
            asyncio.create_task(
                store.merge(labels, merged[s : s + chunk], landmarks, newest, oldest)
            )
            for s in range(0, len(merged), chunk)
        ]
        step("merge", j + 1, n_res)
    await asyncio.gather(*writes)


async def _ledger_recent(
    recent_ids: list[object],
    b: Batch,
    *,
    store: Store,
    report: BackfillReport,
    step: Progress,
    batch_max_events: int,
    now_s: float,
) -> None:
    """Upsert the recent events (``b``, ids ``recent_ids``) through the apply
    script, so that the ledger holds them."""
    ops_out: list[StoreOp] = []
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
        result = await store.apply(ops_out[start : start + batch_max_events], now_s=now_s)
        report.replaced_by_id += result.retracted
        step("ledger", min(start + batch_max_events, len(ops_out)), len(ops_out))


def _cancel_of(cols: Columns, i: int, with_fields: bool) -> Cancel:
    """Row ``i`` (a cancel) as the live path's :class:`Cancel`: with its
    event's fields when the row carries them (valid)."""
    event_id = str(cols.ids[i])
    if not with_fields:
        return Cancel(event_id)
    t_s = float(cols.occurred_at_s[i])
    origin = str(cols.origins[i])
    event = Event(
        id=event_id,
        kind="call" if cols.kinds[i] == "call" else "incident",
        occurred_at=datetime.fromtimestamp(t_s, UTC),
        occurred_at_s=t_s,
        lat_deg=float(cols.lat_deg[i]),
        lon_deg=float(cols.lon_deg[i]),
        category=str(cols.categories[i]),
        origin="proactive" if origin == "proactive" else "reported",
    )
    return Cancel(event_id, event.kind, event)
