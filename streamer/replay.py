"""Replay a historical file onto Kafka (kafka-python), keyed by event id,
at a multiple of real time or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from streamer.adapters.files import SourceProfile, iter_records

Progress = Callable[[int], None]


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


@dataclass
class ReplayReport:
    sent: int = 0
    bad: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] = field(default_factory=dict)


def replay(
    records: Iterable[dict[str, Any]],
    *,
    bootstrap: str,
    topics: dict[str, str],
    speed: float | None,
    inject_bad: int = 0,
    bad_topic: str | None = None,
    progress: Progress | None = None,
    client_options: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayReport:
    """Publish ``records`` (native event dicts) keyed by id; ``topics`` maps
    kind to topic. ``speed`` = multiple of real time, ``None`` = as fast as
    possible. Bad records, if any, are spread through the stream."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        compression_type=None,
        **(client_options or {}),
    )
    report = ReplayReport()
    started = time.monotonic()
    first_event: float | None = None
    bad = list(bad_records(inject_bad))
    try:
        for i, rec in enumerate(records):
            if speed is not None and rec.get("occurred_at"):
                t = datetime.fromisoformat(rec["occurred_at"]).timestamp()
                if first_event is None:
                    first_event = t
                due = (t - first_event) / speed - (time.monotonic() - started)
                if due > 0:
                    sleep(due)
            topic = topics.get(str(rec.get("kind")), topics["incident"])
            producer.send(topic, key=str(rec["id"]).encode(), value=orjson.dumps(rec))
            report.sent += 1
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            if bad and i % 97 == 13:
                key, value, _ = bad.pop()
                producer.send(bad_topic or topics["incident"], key=key, value=value)
                report.bad += 1
            if progress is not None and i % 1000 == 0:
                progress(report.sent)
        for key, value, _ in bad:
            producer.send(bad_topic or topics["incident"], key=key, value=value)
            report.bad += 1
        producer.flush()
    finally:
        producer.close()
    report.seconds = time.monotonic() - started
    if progress is not None:
        progress(report.sent)
    return report


def replay_file(path: str | Path, profile: SourceProfile | None, **kwargs: Any) -> ReplayReport:
    """:func:`replay` of a file read with a source profile."""
    return replay(iter_records(path, profile), **kwargs)
