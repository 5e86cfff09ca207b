"""Composition root: settings in, running parts out. No logic lives here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from streamer.adapters.files import SourceProfile
from streamer.adapters.store import Store
from streamer.backfill import BackfillReport, Progress
from streamer.backfill import backfill as run_backfill
from streamer.core.area import Area
from streamer.core.events import EventRules
from streamer.core.scoring import Scorer
from streamer.core.weights import CategoryWeight, WeightTable
from streamer.settings import Settings


def weight_table(settings: Settings) -> WeightTable:
    """The harm table of the settings."""
    rules = {
        name: CategoryWeight(r.weight, r.family, r.include, r.enforcement)
        for name, r in settings.categories.items()
        if name != "default"
    }
    d = settings.default_category
    return WeightTable(
        rules,
        CategoryWeight(d.weight, d.family, d.include, d.enforcement),
        proactive_factor=settings.weights.proactive,
        enforcement_factor=settings.weights.enforcement,
    )


def event_rules(settings: Settings) -> EventRules:
    """Validation rules of the settings."""
    ev = settings.events
    area = None
    if ev.bbox is not None or ev.boundary is not None:
        bbox = (ev.bbox[0], ev.bbox[1], ev.bbox[2], ev.bbox[3]) if ev.bbox else None
        area = Area.from_files(bbox=bbox, boundary_path=ev.boundary)
    return EventRules(
        max_payload_bytes=ev.max_payload_bytes,
        max_future_skew_s=ev.max_future_skew,
        default_timezone=ev.default_timezone,
        area=area,
    )


def scorer(settings: Settings) -> Scorer:
    """Events to contributions, with the settings' weights and grid."""
    return Scorer(
        weight_table(settings), settings.grid.resolutions, ZoneInfo(settings.grid.timezone)
    )


def redis_client(settings: Settings, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client for the configured URL. When all its
    connections are busy a caller waits for one (up to 10 s) rather than
    failing at once, as redis-py's default pool does."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.store.redis_url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=30,
        health_check_interval=15,
    )
    return aioredis.Redis(connection_pool=pool)


def store(settings: Settings, client: aioredis.Redis | None = None) -> Store:
    """The store for the settings (a new client unless one is given)."""
    return Store(
        client if client is not None else redis_client(settings),
        namespace=settings.store.namespace,
        horizons=settings.horizons,
        resolutions=settings.grid.resolutions,
        profile_horizon=settings.grid.profile_horizon,
        ledger_retention_s=settings.store.ledger_retention,
        prune_below=settings.store.prune_below,
        touch_resolution=settings.alerts.resolution if settings.alerts.enabled else None,
    )


@dataclass(frozen=True, slots=True)
class Core:
    """The pure parts wired from settings."""

    rules: EventRules
    scorer: Scorer


def core(settings: Settings) -> Core:
    """Validation rules and scorer for the settings."""
    return Core(event_rules(settings), scorer(settings))


def ensure_topics(settings: Settings) -> None:
    """Create the engine's topics on the configured broker if missing."""
    from streamer.adapters.broker import ensure_topics as create

    k = settings.kafka
    create(
        k.bootstrap,
        {
            k.incidents_topic: settings.worker.partitions,
            k.calls_topic: settings.worker.partitions,
            k.dead_letter_topic: 1,
            **({settings.alerts.topic: 1} if settings.alerts.enabled else {}),
            **(
                {settings.dosage.topic: settings.worker.partitions}
                if settings.dosage.enabled
                else {}
            ),
        },
    )


async def backfill(
    settings: Settings,
    store: Store,
    path: str | Path,
    profile: SourceProfile | None,
    *,
    now_s: float,
    force: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """:func:`streamer.backfill.backfill` with the settings' rules, scorer,
    ledger window and batch size."""
    parts = core(settings)
    return await run_backfill(
        path,
        profile,
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=settings.store.ledger_retention,
        batch_max_events=settings.store.batch_max_events,
        now_s=now_s,
        force=force,
        progress=progress,
    )
