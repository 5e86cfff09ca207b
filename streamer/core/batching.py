"""One consumed batch of raw messages to store operations and dead letters.

Pure: the Kafka adapter hands in raw values with their source position; what
comes out is what to write to the store (in partition order) and what to
send to the dead-letter topic, with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamer.core.events import Cancel, EventRules, InvalidEvent, parse_record
from streamer.core.scoring import Scorer, StoreOp


@dataclass(frozen=True, slots=True)
class Message:
    """A raw record as consumed."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not become an event, and why."""

    message: Message
    reason: str
    detail: str


@dataclass
class Prepared:
    """The outcome of :func:`prepare`."""

    ops: list[StoreOp] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    unknown_categories: Counter[str] = field(default_factory=Counter)
    newest_event_s: float | None = None

    def extend(self, later: Prepared) -> None:
        """Append a later part of the same stream (its ops come after these)."""
        self.ops += later.ops
        self.dead += later.dead
        self.outcomes.update(later.outcomes)
        self.unknown_categories.update(later.unknown_categories)
        if later.newest_event_s is not None and (
            self.newest_event_s is None or later.newest_event_s > self.newest_event_s
        ):
            self.newest_event_s = later.newest_event_s


def prepare(
    messages: Iterable[Message], rules: EventRules, scorer: Scorer, *, now_s: float
) -> Prepared:
    """Parse, validate and weigh a batch. Never raises for bad input."""
    out = Prepared()
    known = scorer.weights.rules
    for m in messages:
        source = f"{m.topic}:{m.partition}"
        try:
            if m.value is None:
                raise InvalidEvent("bad_json", "empty message (tombstone)")
            record = parse_record(m.value, rules, now_s=now_s)
        except InvalidEvent as exc:
            out.dead.append(DeadLetter(m, exc.reason, exc.detail))
            out.ops.append(StoreOp("n", "", None, source, m.offset))
            out.outcomes["invalid"] += 1
            continue
        if isinstance(record, Cancel):
            out.ops.append(StoreOp("c", record.id, None, source, m.offset))
            out.outcomes["cancel"] += 1
            continue
        if record.category not in known:
            out.unknown_categories[record.category] += 1
        contribution = scorer.contribution(record)
        if contribution is None:
            out.ops.append(StoreOp("x", record.id, None, source, m.offset))
            out.outcomes["excluded"] += 1
            continue
        out.ops.append(StoreOp("u", record.id, contribution, source, m.offset))
        out.outcomes["upsert"] += 1
        t = record.occurred_at_s
        if out.newest_event_s is None or t > out.newest_event_s:
            out.newest_event_s = t
    return out
