"""Alerts of emerging hot spots as the detector keeps them in Redis
(docs/alerts.md): the open set and the stream of their notices."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

import orjson

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.store import Store

log = logging.getLogger("hotspots.api")

ALERT_PAGE = 500  # notices read per XREVRANGE when listing closed alerts


async def read_alerts(
    store: Store, recent: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The open alerts (newest ``updated_at`` first) and the ``recent`` most
    recently closed ones (newest notice first, one per alert id), as
    docs/alerts.md keeps them. The open set and the newest notices are read
    in one transaction, so an alert is never listed as both or neither."""
    stream = keys.alert_notices(store.prefix)
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.open_alerts(store.prefix))
        if recent > 0:
            pipe.xrevrange(stream, count=ALERT_PAGE)
        replies: list[Any] = await pipe.execute()
    opened = [a for a in map(_alert_of, replies[0].values()) if a is not None]
    opened.sort(key=lambda a: (-_updated_s(a), str(a.get("id"))))
    if recent <= 0:
        return opened, []
    seen = {text(k) for k in replies[0]}
    closed: list[dict[str, Any]] = []
    page: list[Any] = replies[1]
    while page:
        for _, raw_fields in page:
            fields = {text(k): v for k, v in raw_fields.items()}
            alert_id = text(fields.get("id", ""))
            if alert_id in seen:
                continue
            seen.add(alert_id)
            alert = _alert_of(fields.get("alert"))
            # (an "open" last notice for an id not in the open set is torn
            # state, not a closed alert)
            if alert is not None and alert.get("status") != "open":
                closed.append(alert)
                if len(closed) >= recent:
                    return opened, closed
        if len(page) < ALERT_PAGE:
            break
        older = f"({text(page[-1][0])}"  # exclusive: the page's last entry is read
        page = list(await store.client.xrevrange(stream, max=older, count=ALERT_PAGE) or [])
    return opened, closed


def _alert_of(raw: object) -> dict[str, Any] | None:
    """An alert's JSON as stored; None (logged) when it is not an object."""
    try:
        value = orjson.loads(raw) if isinstance(raw, bytes | str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        log.warning("alert_unreadable type=%s", type(raw).__name__)
        return None
    return value


def _updated_s(alert: dict[str, Any]) -> float:
    """``updated_at`` as POSIX seconds (-inf when missing or malformed)."""
    try:
        return datetime.fromisoformat(str(alert.get("updated_at"))).timestamp()
    except ValueError:
        return -math.inf
