"""The published JSON Schema agrees with the engine's own validation."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from streamer.core.events import Cancel, Event, EventRules, InvalidEvent, parse_record
from tests.malformed import bad_records

SCHEMA = json.loads((Path(__file__).parents[2] / "schema" / "event.schema.json").read_text())
NOW = 1_800_000_000.0


def schema_ok(value: object) -> bool:
    try:
        jsonschema.validate(value, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True


def test_schema_is_valid_and_its_examples_parse() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for example in SCHEMA["examples"]:
        assert schema_ok(example)
        parsed = parse_record(orjson.dumps(example), EventRules(), now_s=NOW)
        assert isinstance(parsed, Event | Cancel)
        if isinstance(parsed, Cancel):  # with the event's fields, the cancel carries it
            assert (parsed.event is not None) == ("category" in example)


@pytest.mark.parametrize(
    "value, reason",
    [
        (v, r)
        for _, v, r in bad_records(10)
        if r not in ("bad_json", "too_large", "future_time", "bad_time")
    ],
)
def test_what_the_engine_rejects_the_schema_rejects(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_record(value, EventRules(), now_s=NOW)
    assert raised.value.reason == reason
    assert not schema_ok(orjson.loads(value))
