"""One consumed batch of raw messages to store operations and dead letters.

Pure: the Kafka adapter hands in raw values with their source position; what
comes out is what to write to the store (in partition order) and what to
send to the dead-letter topic, with the reason.

With a :class:`~streamer.core.fastpath.FastParser` (the compiled kernel),
the common records (valid upserts) come out as columns (:class:`Rows`)
instead of one object each; every other record goes through
:func:`~streamer.core.events.parse_record` as without it, and the outcome
is the same either way (tests check it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streamer.core.aggregate import Batch, concat_batches
from streamer.core.events import Cancel, EventRules, InvalidEvent, parse_record
from streamer.core.scoring import (
    CANCEL,
    CANCEL_WITH_FIELDS,
    OFFSET_ONLY,
    UNCOUNT,
    UPSERT,
    Contribution,
    Scorer,
    StoreOp,
)

if TYPE_CHECKING:
    from streamer.core.fastpath import FastParser

I64 = npt.NDArray[np.int64]


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


@dataclass(frozen=True, slots=True)
class Rows:
    """Upserts in columns, one row per event, in message order: what the
    compiled kernel makes of the common records.

    ``position`` is each row's place among the batch's messages (ops and
    rows interleave by it); ``packed`` is :meth:`Contribution.packed` of
    each; ``sources`` are ``"topic:partition"`` and ``offsets`` the Kafka
    offsets."""

    position: I64
    ids: list[str]
    packed: list[str]
    sources: list[str]
    offsets: I64
    batch: Batch

    def __len__(self) -> int:
        return len(self.ids)

    def contribution(self, k: int) -> Contribution:
        """Row ``k`` as a :class:`Contribution` (for the per-event path)."""
        b = self.batch
        return Contribution(
            id=self.ids[k],
            t_s=float(b.t_s[k]),
            weight=float(b.weight[k]),
            family=b.families[int(b.family[k])],
            category=b.categories[int(b.category[k])],
            hour_of_week=int(b.hour_of_week[k]),
            cells=tuple(int(c) for c in b.cells[k].tolist()),
        )

    def op(self, k: int) -> StoreOp:
        """Row ``k`` as an upsert op."""
        return StoreOp(
            UPSERT, self.ids[k], self.contribution(k), self.sources[k], int(self.offsets[k])
        )

    def take(self, mask: npt.NDArray[np.bool_]) -> Rows:
        """The rows where ``mask`` is true."""
        keep = np.flatnonzero(mask).tolist()
        return Rows(
            self.position[mask],
            [self.ids[k] for k in keep],
            [self.packed[k] for k in keep],
            [self.sources[k] for k in keep],
            self.offsets[mask],
            self.batch.take(mask),
        )


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """Rows of consecutive parts of one stream, as one."""
    if len(parts) == 1:
        return parts[0]
    return Rows(
        np.concatenate([p.position for p in parts]),
        [x for p in parts for x in p.ids],
        [x for p in parts for x in p.packed],
        [x for p in parts for x in p.sources],
        np.concatenate([p.offsets for p in parts]),
        concat_batches([p.batch for p in parts]),
    )


@dataclass
class Prepared:
    """The outcome of :func:`prepare`: ``ops`` (each at message position
    ``positions[i]``) and, from the compiled kernel, ``rows``."""

    ops: list[StoreOp] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rows: Rows | None = None
    dead: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    unknown_categories: Counter[str] = field(default_factory=Counter)
    newest_event_s: float | None = None
    size: int = 0  # messages

    def extend(self, later: Prepared) -> None:
        """Append a later part of the same stream (its ops come after these)."""
        self.ops += later.ops
        self.positions += [p + self.size for p in later.positions]
        if later.rows is not None:
            moved = Rows(
                later.rows.position + self.size,
                later.rows.ids,
                later.rows.packed,
                later.rows.sources,
                later.rows.offsets,
                later.rows.batch,
            )
            self.rows = moved if self.rows is None else concat_rows([self.rows, moved])
        self.size += later.size
        self.dead += later.dead
        self.outcomes.update(later.outcomes)
        self.unknown_categories.update(later.unknown_categories)
        self._newest(later.newest_event_s)

    def _newest(self, t: float | None) -> None:
        if t is not None and (self.newest_event_s is None or t > self.newest_event_s):
            self.newest_event_s = t


def prepare(
    messages: Sequence[Message],
    rules: EventRules,
    scorer: Scorer,
    *,
    now_s: float,
    fast: FastParser | None = None,
) -> Prepared:
    """Parse, validate and weigh a batch. Never raises for bad input."""
    return prepare_values(
        [m.value for m in messages],
        [f"{m.topic}:{m.partition}" for m in messages],
        [m.offset for m in messages],
        messages.__getitem__,
        rules,
        scorer,
        now_s=now_s,
        fast=fast,
    )


def prepare_values(
    values: Sequence[bytes | None],
    sources: Sequence[str],
    offsets: Sequence[int],
    message_at: Callable[[int], Message],
    rules: EventRules,
    scorer: Scorer,
    *,
    now_s: float,
    fast: FastParser | None = None,
) -> Prepared:
    """:func:`prepare` on columns of a batch: each message's value, source
    (``"topic:partition"``) and offset; ``message_at(i)`` gives the whole
    message (dead letters carry it). Never raises for bad input."""
    out = Prepared(size=len(values))
    if fast is None:
        _prepare_each(
            range(len(values)), values, sources, offsets, message_at, rules, scorer, now_s, out
        )
        return out
    parsed = fast.parse(values, now_s)
    n = len(parsed.ids)
    if n:
        out.rows = Rows(
            parsed.index,
            parsed.ids,
            parsed.packed,
            [sources[i] for i in parsed.index.tolist()],
            np.asarray(offsets, dtype=np.int64)[parsed.index],
            parsed.batch,
        )
        out.outcomes["upsert"] += n
        out._newest(parsed.newest_event_s)
    out.unknown_categories.update(parsed.unknown_categories)
    excluded = iter(parsed.excluded)
    next_excluded = next(excluded, None)
    # the others in message order: excluded upserts and what Python decides
    for i in sorted(parsed.rest):
        while next_excluded is not None and next_excluded[0] < i:
            _exclude(next_excluded, sources, offsets, out)
            next_excluded = next(excluded, None)
        _prepare_each((i,), values, sources, offsets, message_at, rules, scorer, now_s, out)
    while next_excluded is not None:
        _exclude(next_excluded, sources, offsets, out)
        next_excluded = next(excluded, None)
    return out


def cancel_op(cancel: Cancel, scorer: Scorer, source: str = "", offset: int = -1) -> StoreOp:
    """The store op of a cancel: by id (``c``), or, when it carries the
    event's fields, with the contribution they make (``r``: the store takes
    that out if its ledger no longer holds the id). Fields of a category that
    does not count make an ``x``: by id if the ledger holds it, else nothing
    (such an event never added anything, so it is not an unknown cancel)."""
    if cancel.event is None:
        return StoreOp(CANCEL, cancel.id, None, source, offset)
    contribution = scorer.contribution(cancel.event)
    if contribution is None:
        return StoreOp(UNCOUNT, cancel.id, None, source, offset)
    return StoreOp(CANCEL_WITH_FIELDS, cancel.id, contribution, source, offset)


def _exclude(
    excluded: tuple[int, str], sources: Sequence[str], offsets: Sequence[int], out: Prepared
) -> None:
    i, event_id = excluded
    out.ops.append(StoreOp(UNCOUNT, event_id, None, sources[i], offsets[i]))
    out.positions.append(i)
    out.outcomes["excluded"] += 1


def _prepare_each(
    indexes: Iterable[int],
    values: Sequence[bytes | None],
    sources: Sequence[str],
    offsets: Sequence[int],
    message_at: Callable[[int], Message],
    rules: EventRules,
    scorer: Scorer,
    now_s: float,
    out: Prepared,
) -> None:
    known = scorer.weights.rules
    ops, positions, outcomes = out.ops, out.positions, out.outcomes
    for i in indexes:
        value, source, offset = values[i], sources[i], offsets[i]
        positions.append(i)
        try:
            if value is None:
                raise InvalidEvent("bad_json", "empty message (tombstone)")
            record = parse_record(value, rules, now_s=now_s)
        except InvalidEvent as exc:
            out.dead.append(DeadLetter(message_at(i), exc.reason, exc.detail))
            ops.append(StoreOp(OFFSET_ONLY, "", None, source, offset))
            outcomes["invalid"] += 1
            continue
        if isinstance(record, Cancel):
            ops.append(cancel_op(record, scorer, source, offset))
            outcomes["cancel"] += 1
            continue
        if record.category not in known:
            out.unknown_categories[record.category] += 1
        contribution = scorer.contribution(record)
        if contribution is None:
            ops.append(StoreOp(UNCOUNT, record.id, None, source, offset))
            outcomes["excluded"] += 1
            continue
        ops.append(StoreOp(UPSERT, record.id, contribution, source, offset))
        outcomes["upsert"] += 1
        out._newest(record.occurred_at_s)
