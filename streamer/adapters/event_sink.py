"""The event topics' batch step: records to store operations, one atomic
store script per batch.

Each batch's script records, with the data, the last offset applied for
every partition (``{NS}:offsets``), so a redelivered record changes nothing:
the store skips it, and :class:`~streamer.adapters.consumer.BatchConsumer`
seeks past it on assignment. Preparation (decoding, scoring, planning the
script's arguments) needs no I/O, so the consumer overlaps it with the
previous batch's write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamer.adapters.consumer import Records, message_of
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import ApplyPlan, Store
from streamer.core.batching import DeadLetter, Prepared, prepare_values
from streamer.core.events import EventRules
from streamer.core.fastpath import FastParser
from streamer.core.scoring import Scorer


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A batch of event records, prepared, and its store script."""

    prepared: Prepared
    plan: ApplyPlan

    @property
    def dead(self) -> list[DeadLetter]:
        return self.prepared.dead

    @property
    def sent(self) -> asyncio.Event:
        return self.plan.sent


class EventSink:
    """Events in, rankings and the ledger out (:meth:`Store.apply_plan`)."""

    holds_offsets = True
    overlaps = True

    def __init__(
        self,
        store: Store,
        rules: EventRules,
        scorer: Scorer,
        metrics: WorkerMetrics,
        *,
        clock: Callable[[], float] = time.time,
        fast: FastParser | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.scorer = scorer
        self.metrics = metrics
        self.clock = clock
        self.fast = fast

    def prepare(self, records: Records) -> Prepared:
        # columns, not a Message per record: the compiled kernel needs only
        # the values; a dead letter builds its whole message (rare)
        flat: list[Any] = []
        sources: list[str] = []
        for tp in sorted(records, key=lambda t: (t.topic, t.partition)):
            flat += records[tp]
            sources += [f"{tp.topic}:{tp.partition}"] * len(records[tp])
        return prepare_values(
            [r.value for r in flat],
            sources,
            [r.offset for r in flat],
            lambda i: message_of(flat[i]),
            self.rules,
            self.scorer,
            now_s=self.clock(),
            fast=self.fast,
        )

    def plan(self, parts: list[Prepared]) -> EventBatch:
        prepared = parts[0]
        for later in parts[1:]:
            prepared.extend(later)
        plan = self.store.plan(
            prepared.ops, now_s=time.time(), rows=prepared.rows, positions=prepared.positions
        )
        return EventBatch(prepared, plan)

    async def write(self, step: EventBatch) -> None:
        result = await self.store.apply_plan(step.plan)
        prepared, m = step.prepared, self.metrics
        for outcome, n in prepared.outcomes.items():
            m.events.labels(outcome).inc(n)
        m.verdicts.labels("duplicate").inc(result.duplicate)
        m.verdicts.labels("stale").inc(result.stale)
        m.verdicts.labels("unknown_cancel").inc(result.unknown_cancel)
        m.cancels.labels("by_id").inc(result.cancelled)
        m.cancels.labels("by_fields").inc(result.cancelled_by_fields)
        m.cancels.labels("repeated").inc(result.cancel_repeated)
        m.cancels.labels("unknown").inc(result.unknown_cancel)
        m.unknown_categories.inc(sum(prepared.unknown_categories.values()))
        m.batch_size.observe(prepared.size)
        if prepared.newest_event_s is not None:
            m.event_lag.set(time.time() - prepared.newest_event_s)

    async def polled(self, *, caught_up: bool) -> None:
        """Nothing to mark: the store's offsets tell how far it has read."""


__all__ = ["EventBatch", "EventSink"]
