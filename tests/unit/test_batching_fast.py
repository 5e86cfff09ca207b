"""``prepare`` with the compiled kernel against ``prepare`` without it.

Message by message the outcome is the same: each row stands for the upsert
op Python makes of its message, the other ops keep their message positions,
and the dead letters, outcome counts, unknown categories and newest time
agree. Preparing a batch in parts and extending gives the whole.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import orjson
import pytest

from streamer import app
from streamer.adapters.files import iter_records, load_profile
from streamer.core.batching import Message, Prepared, prepare
from streamer.core.events import EventRules
from streamer.core.fastpath import FastParser
from streamer.core.scoring import Scorer, StoreOp
from streamer.settings import load_settings
from tests import oracle

NY = "America/New_York"
NOW_S = 1_800_000_000.0


@cache
def values() -> list[bytes | None]:
    records: list[dict[str, Any]] = list(
        itertools.islice(iter_records(oracle.SAMPLE, load_profile("philadelphia")), 3000)
    )
    out: list[bytes | None] = [orjson.dumps(r) for r in records]
    first = records[0]
    # what the compiled kernel leaves to Python, scattered among the rest
    odd: list[bytes | None] = [
        b"not json",
        None,
        orjson.dumps({"op": "cancel", "id": first["id"]}),
        orjson.dumps({**first, "lat": 91.0}),
        orjson.dumps({**records[9], "category": "Homicide - Justifiable"}),  # excluded
        orjson.dumps({**records[5], "id": records[7]["id"]}),  # an id twice
        orjson.dumps({**first, "occurred_at": "2025-03-09T02:30"}),  # short form
        orjson.dumps({**first, "id": "only-here", "category": "Never Heard Of"}),
    ]
    for k, value in enumerate(odd):
        out.insert(100 + 250 * k, value)
    return out


def messages(vals: list[bytes | None]) -> list[Message]:
    return [Message("hotspots.incidents", i % 3, 1000 + i, v) for i, v in enumerate(vals)]


def parts() -> tuple[EventRules, Scorer]:
    settings = load_settings(overrides={"grid": {"timezone": NY}})
    return app.event_rules(settings), app.scorer(settings)


def expanded(p: Prepared) -> list[tuple[int, StoreOp]]:
    """Every op with its message position, rows as the ops they stand for."""
    ops = list(zip(p.positions, p.ops, strict=True))
    if p.rows is not None:
        rows = p.rows
        ops += [(int(rows.position[k]), rows.op(k)) for k in range(len(rows))]
    return sorted(ops, key=lambda po: po[0])


def assert_same(fast: Prepared, slow: Prepared) -> None:
    assert expanded(fast) == list(enumerate(slow.ops))
    assert fast.dead == slow.dead
    assert fast.outcomes == slow.outcomes
    assert fast.unknown_categories == slow.unknown_categories
    assert fast.newest_event_s == slow.newest_event_s
    assert fast.size == slow.size == len(slow.ops)


def test_the_compiled_kernel_changes_nothing_but_the_speed() -> None:
    rules, scorer = parts()
    batch = messages(values())
    fast = prepare(batch, rules, scorer, now_s=NOW_S, fast=FastParser(rules, scorer))
    slow = prepare(batch, rules, scorer, now_s=NOW_S)
    assert fast.rows is not None and len(fast.rows) > 0.9 * len(batch)
    assert slow.rows is None
    assert {"invalid", "cancel", "upsert", "excluded"} <= set(slow.outcomes)
    assert_same(fast, slow)


@pytest.mark.parametrize("compiled", [True, False])
def test_parts_extended_are_the_whole(compiled: bool) -> None:
    rules, scorer = parts()
    parser = FastParser(rules, scorer) if compiled else None
    batch = messages(values())
    whole = prepare(batch, rules, scorer, now_s=NOW_S, fast=parser)
    joined = Prepared()
    for a, b in itertools.pairwise([0, 1, 700, 701, 2000, len(batch)]):
        joined.extend(prepare(batch[a:b], rules, scorer, now_s=NOW_S, fast=parser))
    assert_same(joined, prepare(batch, rules, scorer, now_s=NOW_S))
    assert expanded(joined) == expanded(whole)
    if whole.rows is not None:
        assert joined.rows is not None
        assert joined.rows.batch.families == whole.rows.batch.families
        assert joined.rows.batch.categories == whole.rows.batch.categories
