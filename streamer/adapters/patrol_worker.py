"""The worker's patrol parts: the pings' batch step and the leader's dosage tick.

The pings' consumer reads ``dosage.topic`` in batches (its own consumer group),
sends malformed pings to the dead-letter topic with a reason, stores the
rest and recomputes the visits of the units concerned, then commits. Visits
are a function of each unit's stored pings, so a redelivered batch changes
nothing; after each poll it records how far it has read (what the engine
has observed). The tick (leader only) fixes the day's plan at the day's
first tick, writes today's summary and raises or clears "unvisited" alerts
through the same delivery as emerging hot spots, only over windows the
engine observed (docs/dosage.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.alert_delivery import ensure_groups
from streamer.adapters.alerter import write_notices
from streamer.adapters.consumer import STORE_DOWN, Records, message_of
from streamer.adapters.decode import text
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.patrols import Dosage, iso
from streamer.core.batching import DeadLetter
from streamer.core.cells import center_hex
from streamer.core.dosage import Ping, parse_ping
from streamer.core.emerging import AlertChange
from streamer.core.events import EventRules, InvalidEvent
from streamer.settings import Settings

log = logging.getLogger("hotspots.patrols")


@dataclass(frozen=True, slots=True)
class PingBatch:
    """A batch of ping records: the pings, and the malformed ones."""

    pings: list[Ping]
    dead: list[DeadLetter]
    sent: asyncio.Event = field(default_factory=asyncio.Event)


class PingSink:
    """Pings in, visits out: the batch step of the pings' consumer
    (:class:`~streamer.adapters.consumer.BatchConsumer`, a group of its own).

    It holds no offsets: visits are a function of each unit's stored pings,
    so a redelivered batch changes nothing. It does not overlap: each poll's
    mark of what the engine observed follows the write of its batch."""

    holds_offsets = False
    overlaps = False

    def __init__(
        self,
        dosage: Dosage,
        rules: EventRules,
        metrics: WorkerMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dosage = dosage
        self.rules = rules
        self.metrics = metrics
        self.clock = clock

    def prepare(self, records: Records) -> PingBatch:
        pings: list[Ping] = []
        dead: list[DeadLetter] = []
        now_s = self.clock()
        for tp in sorted(records, key=lambda t: (t.topic, t.partition)):
            for r in records[tp]:
                try:
                    pings.append(parse_ping(r.value or b"", self.rules, now_s))
                except InvalidEvent as exc:
                    dead.append(DeadLetter(message_of(r), exc.reason, exc.detail))
        return PingBatch(pings, dead)

    def plan(self, parts: list[PingBatch]) -> PingBatch:
        if len(parts) == 1:
            return parts[0]
        return PingBatch([p for b in parts for p in b.pings], [d for b in parts for d in b.dead])

    async def write(self, step: PingBatch) -> None:
        step.sent.set()
        units = await self.dosage.add_pings(step.pings)
        await self.dosage.recompute(units)
        self.metrics.pings.labels("accepted").inc(len(step.pings))
        self.metrics.pings.labels("dead_letter").inc(len(step.dead))

    async def polled(self, *, caught_up: bool) -> None:
        """Record what the engine has observed (:meth:`Dosage.watched`); a
        store outage only delays the mark."""
        try:
            await self.dosage.watched(self.clock(), caught_up=caught_up)
        except STORE_DOWN as exc:
            log.warning("dosage_watch_not_recorded error=%s", exc)


class DosageTicker:
    """The leader's dosage round: today's summary, and "unvisited" alerts."""

    def __init__(self, dosage: Dosage, settings: Settings, now: Callable[[], float]) -> None:
        self.dosage = dosage
        self.settings = settings
        self.now = now
        self._groups = False

    async def tick(self) -> list[AlertChange]:
        d = self.dosage
        client = d.store.client
        if not self._groups:
            await ensure_groups(d.store, self.settings)
            self._groups = True
        now_s = self.now()
        day = d.day_of(now_s)
        await d.fix_plan(day, now_s)  # the first tick of the day fixes its plan
        summary = await d.summary(day, now_s)
        warn = dict(d.overdue(summary, now_s))
        raw = await client.hgetall(keys.unvisited_alerts(d.store.prefix))
        open_ids = {text(c): text(a) for c, a in raw.items()}
        notices: list[AlertChange] = []
        if not summary["observation"]["observed"]:
            # what was not observed cannot be judged: no alert opens or clears
            warn = {c: "" for c in open_ids}
        for cell, reason in warn.items():
            if cell in open_ids:
                continue
            alert = self._alert(cell, reason, day, now_s, "open")
            open_ids[cell] = alert["id"]
            notices.append(AlertChange("opened", alert))
        for cell, alert_id in list(open_ids.items()):
            if cell in warn:
                continue
            alert = self._alert(cell, "visited", day, now_s, "cleared", alert_id)
            notices.append(AlertChange("cleared", alert))
            del open_ids[cell]
        summary_json = orjson.dumps(summary)

        def also(pipe: Any) -> None:
            pipe.set(keys.dosage_summary(d.store.prefix, day), summary_json, ex=400 * 86400)
            pipe.delete(keys.unvisited_alerts(d.store.prefix))
            if open_ids:
                pipe.hset(keys.unvisited_alerts(d.store.prefix), mapping=open_ids)

        await write_notices(d.store, notices, self.settings.alerts.stream_max, also)
        for n in notices:
            log.info("dosage_alert_%s id=%s cell=%s", n.kind, n.alert["id"], n.alert["cells"][0])
        return notices

    def _alert(
        self,
        cell: str,
        reason: str,
        day: str,
        now_s: float,
        status: str,
        alert_id: str | None = None,
    ) -> dict[str, Any]:
        lat, lon = center_hex(cell)
        stamp = iso(now_s)
        return {
            "id": alert_id or f"U-{day.replace('-', '')}-{cell}",
            "type": "unvisited",
            "status": status,
            "kind": "opened" if status == "open" else "cleared",
            "title": f"Planned hot spot {reason}",
            "severity": "medium",
            "pattern": None,
            "resolution": self.dosage.rules.resolution,
            "cells": [cell],
            "center": [lat, lon],
            "reason": reason,
            "opened_at": stamp if status == "open" else None,
            "updated_at": stamp,
            "cleared_at": stamp if status != "open" else None,
        }
