"""Malformed records of every kind the engine dead-letters, for the tests of
validation and of the dead-letter path."""

from __future__ import annotations

from collections.abc import Iterator

import orjson


def bad_records(n: int) -> Iterator[tuple[bytes, bytes, str]]:
    """``n`` malformed records of assorted kinds: (key, value, expected reason)."""
    good = {
        "id": "bad",
        "kind": "incident",
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "lat": 39.95,
        "lon": -75.16,
        "category": "Thefts",
    }
    kinds: list[tuple[bytes, str]] = [
        (b"this is not json", "bad_json"),
        (orjson.dumps({k: v for k, v in good.items() if k != "lat"}), "missing_field"),
        (orjson.dumps({**good, "lat": "39.95"}), "bad_type"),
        (orjson.dumps({**good, "lat": 0.0, "lon": 0.0}), "null_island"),
        (orjson.dumps({**good, "lat": 123.0}), "lat_out_of_range"),
        (orjson.dumps({**good, "occurred_at": "yesterday"}), "bad_time"),
        (orjson.dumps({**good, "occurred_at": "2199-01-01T00:00:00+00:00"}), "future_time"),
        (orjson.dumps({**good, "op": "delete"}), "unknown_op"),
        (orjson.dumps({**good, "category": "x" * 20_000}), "too_large"),
        (b'{"id": "nan", "lat": NaN}', "bad_json"),
    ]
    for i in range(n):
        value, reason = kinds[i % len(kinds)]
        yield f"bad-{i}".encode(), value, reason
