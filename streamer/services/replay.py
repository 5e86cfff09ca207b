"""Replay a historical file onto Kafka (kafka-python), keyed by event id,
at a multiple of real time or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from streamer.adapters.files import SourceProfile, iter_records

Progress = Callable[[int], None]


@dataclass
class ReplayReport:
    sent: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] = field(default_factory=dict)


def replay(
    records: Iterable[dict[str, Any]],
    *,
    bootstrap: str,
    topics: dict[str, str],
    speed: float | None,
    progress: Progress | None = None,
    client_options: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayReport:
    """Publish ``records`` (native event dicts) keyed by id; ``topics`` maps
    kind to topic. ``speed`` = multiple of real time, ``None`` = as fast as
    possible."""
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
            if progress is not None and i % 1000 == 0:
                progress(report.sent)
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
