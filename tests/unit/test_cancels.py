"""Cancels that carry their event's fields, and how a file's rows split into
what stands, what the file cancels itself and what it withdraws from the store."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from streamer.adapters.files import concat_columns, read_columns, standing
from streamer.core.batching import cancel_op
from streamer.core.events import Cancel, EventRules, parse_record
from streamer.core.scoring import Scorer
from streamer.core.weights import CategoryWeight, WeightTable

NOW = 1.8e9
RULES = EventRules()
FIELDS = {"occurred_at": "2024-05-01T12:00:00Z", "lat": 39.95, "lon": -75.16}


def scorer() -> Scorer:
    table = WeightTable(
        {"Thefts": CategoryWeight(2.0), "Lost Property": CategoryWeight(1.0, include=False)},
        CategoryWeight(1.0),
    )
    return Scorer(table, [8, 9], ZoneInfo("UTC"))


def test_a_cancel_carrying_its_fields_holds_the_event_it_withdraws() -> None:
    record = {"op": "cancel", "id": "a-1", "category": "Thefts", **FIELDS}
    cancel = parse_record(orjson.dumps(record), RULES, now_s=NOW)
    assert isinstance(cancel, Cancel) and cancel.event is not None
    upsert = parse_record(orjson.dumps({**record, "op": "upsert"}), RULES, now_s=NOW)
    assert cancel.event == upsert
    op = cancel_op(cancel, scorer(), "t:0", 5)
    assert not isinstance(upsert, Cancel)
    want = scorer().contribution(upsert)
    assert (op.op, op.id, op.contribution, op.source, op.offset) == ("r", "a-1", want, "t:0", 5)


def test_a_cancel_with_missing_or_bad_fields_is_a_cancel_by_id() -> None:
    for record in (
        {"op": "cancel", "id": "a-1", **FIELDS},  # no category
        {"op": "cancel", "id": "a-1", "category": "Thefts", **FIELDS, "lat": 95.0},
        {"op": "cancel", "id": "a-1", "category": "Thefts", **FIELDS, "occurred_at": "soon"},
    ):
        cancel = parse_record(orjson.dumps(record), RULES, now_s=NOW)
        assert isinstance(cancel, Cancel) and cancel == Cancel("a-1")
        assert cancel_op(cancel, scorer()).op == "c"


def test_a_cancel_of_a_category_that_does_not_count_takes_out_by_id_only() -> None:
    record = {"op": "cancel", "id": "a-1", "category": "Lost Property", **FIELDS}
    cancel = parse_record(orjson.dumps(record), RULES, now_s=NOW)
    assert isinstance(cancel, Cancel) and cancel.event is not None
    assert cancel_op(cancel, scorer()).op == "x"


def test_rows_split_into_standing_file_cancels_and_store_cancels(tmp_path: Path) -> None:
    def up(i: str, t: str = "2024-05-01T12:00:00Z") -> dict[str, object]:
        return {"id": i, "category": "Thefts", **FIELDS, "occurred_at": t}

    rows = [
        {"op": "cancel", "id": "old-1"},  # 0: withdraws a stored event
        {**up("old-2"), "op": "cancel"},  # 1: the same, carrying its fields
        up("new-1"),  # 2: superseded by 3
        up("new-1", "2024-05-01T13:00:00Z"),  # 3: stands
        up("gone"),  # 4: cancelled within the file by 5
        {"op": "cancel", "id": "gone"},  # 5
        {**up("moved"), "op": "cancel"},  # 6: the old version's adjustment row
        up("moved", "2024-05-02T09:00:00Z"),  # 7: its new version stands
        {"op": "cancel", "id": "old-1"},  # 8: again, before any upsert of old-1
        {"id": "bad", "category": "Thefts", "lat": 95.0, "lon": 0.0, "occurred_at": 1.0},  # 9
    ]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    stand = standing(concat_columns(read_columns(path, None)), RULES, now_s=NOW)
    assert stand.rows.tolist() == [3, 7]
    assert stand.store_cancels.tolist() == [0, 1, 6, 8]
    assert stand.with_fields.tolist() == [False, True, True, False]
    assert stand.cancelled == 1 and stand.cancelled_rows.tolist() == [5]
    assert stand.superseded == 2  # row 2 (by 3) and row 4 (by 5)
    assert stand.rejected == {"lat_out_of_range": 1}
