"""Kafka topics: :func:`ensure_topics` creates the engine's topics idempotently.

(The throwaway broker for tests, demos and benchmarks is
:class:`streamer.local.broker.LocalBroker`.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka.admin import KafkaAdminClient

__all__ = ["admin_client", "ensure_topics"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def admin_client(
    bootstrap: str, timeout_s: float, client_options: Mapping[str, Any] | None = None
) -> KafkaAdminClient:
    """A kafka-python admin client whose requests give up after ``timeout_s``."""
    timeout_ms = max(1, int(timeout_s * 1000))
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="hotspots-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        **(client_options or {}),
    )


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create each topic in ``topics`` (name -> partition count) unless it exists.

    Idempotent: a topic that already exists is left as it is, whatever its
    partition count, including one created concurrently by another client.
    Returns the names this call created. ``client_options``: TLS and SASL
    arguments for kafka-python (:func:`streamer.app.kafka_options`).
    """
    if not topics:
        return []
    admin = admin_client(bootstrap, timeout_s, client_options)
    try:
        existing = set(admin.list_topics())
        missing = {name: parts for name, parts in topics.items() if name not in existing}
        if not missing:
            return []
        request = {
            name: {"num_partitions": parts, "replication_factor": replication_factor}
            for name, parts in missing.items()
        }
        response: dict[str, Any] = admin.create_topics(
            request, timeout_ms=int(timeout_s * 1000), raise_errors=False
        )
    finally:
        admin.close()
    created: list[str] = []
    failures: list[str] = []
    for result in response.get("topics", []):
        code = result.get("error_code", 0)
        if code == 0:
            created.append(result["name"])
        elif code != _TOPIC_ALREADY_EXISTS:
            failures.append(f"{result['name']}: error {code} {result.get('error_message')}")
    if failures:
        raise RuntimeError(f"could not create topics on {bootstrap}: {'; '.join(failures)}")
    log.info("topics created bootstrap=%s topics=%s", bootstrap, ",".join(sorted(created)))
    return created
