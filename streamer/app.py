"""Composition root: settings in, running parts out. No logic lives here."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streamer.adapters import keys
from streamer.adapters.alert_delivery import AlertDelivery, Webhook
from streamer.adapters.files import Paths, SourceProfile
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.store import Store
from streamer.core import fastpath
from streamer.core.area import Area
from streamer.core.events import EventRules
from streamer.core.fastpath import FastParser
from streamer.core.scoring import Scorer
from streamer.core.weights import CategoryWeight, WeightTable
from streamer.services.backfill import BackfillReport, Progress
from streamer.services.backfill import backfill as run_backfill
from streamer.settings import AUTO, ConfigError, Settings


def weight_table(settings: Settings) -> WeightTable:
    """The harm table of the settings."""
    harm = settings.weights.harm  # else plain counts: each counted event weighs 1
    rules = {
        name: CategoryWeight(r.weight if harm else 1.0, r.family, r.include, r.enforcement)
        for name, r in settings.categories.items()
        if name != "default"
    }
    d = settings.default_category
    return WeightTable(
        rules,
        CategoryWeight(d.weight if harm else 1.0, d.family, d.include, d.enforcement),
        proactive_factor=settings.weights.proactive,
        enforcement_factor=settings.weights.enforcement,
    )


def event_rules(settings: Settings) -> EventRules:
    """Validation rules of the settings."""
    ev = settings.events
    area = None
    # "auto" derives a study area for the commands that measure one; the
    # live engine has no file to derive it from and filters by nothing
    boundary = ev.boundary if ev.boundary != AUTO else None
    if ev.bbox is not None or boundary is not None:
        bbox = (ev.bbox[0], ev.bbox[1], ev.bbox[2], ev.bbox[3]) if ev.bbox else None
        area = Area.from_files(bbox=bbox, boundary_path=boundary)
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


def _secret(key: str, name: str) -> str | None:
    """The value of the env var that config key ``key`` names (None if none is named)."""
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"key '{key}': the environment variable {name} is not set; set it to the secret"
        )
    return value


def redis_options(settings: Settings) -> dict[str, Any]:
    """ACL user, password and TLS files of the settings, as redis-py arguments
    (they add to, and win over, what the URL says)."""
    s = settings.store
    return _given(
        username=s.redis_username,
        password=_secret("store.redis_password_env", s.redis_password_env),
        ssl_ca_certs=s.redis_tls_ca,
        ssl_certfile=s.redis_tls_cert,
        ssl_keyfile=s.redis_tls_key,
    )


def _given(**values: str | None) -> dict[str, Any]:
    """The arguments that are set (not None or empty)."""
    return {key: value for key, value in values.items() if value}


def redis_client(settings: Settings, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client for the configured URL. When all its
    connections are busy a caller waits for one (up to 10 s) rather than
    failing at once, as redis-py's default pool does.

    With ``store.cluster`` it is a Redis Cluster client. Every key and
    script of one engine shares the ``{namespace}`` hash tag, so each
    transaction and script goes to the one node that owns that slot; the
    cluster client offers the same commands, and is typed as the plain
    client here so the rest of the code need not know which it has."""
    options = redis_options(settings)
    if settings.store.cluster:
        cluster = RedisCluster.from_url(
            settings.store.redis_url,
            max_connections=max_connections,
            socket_timeout=30,
            health_check_interval=15,
            **options,
        )
        return cast(aioredis.Redis, cluster)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.store.redis_url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=30,
        health_check_interval=15,
        **options,
    )
    return aioredis.Redis(connection_pool=pool)


def kafka_options(settings: Settings, flavour: str = "kafka-python") -> dict[str, Any]:
    """TLS and SASL settings as client arguments: ``flavour`` "kafka-python"
    (replay, topic administration) or "aiokafka" (the workers), which takes
    an SSL context instead of file names."""
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol.startswith("SASL"):
        out["sasl_mechanism"] = k.sasl_mechanism
        out["sasl_plain_username"] = k.sasl_username
        out["sasl_plain_password"] = _secret("kafka.sasl_password_env", k.sasl_password_env)
    if k.security_protocol.endswith("SSL"):
        if flavour == "aiokafka":
            out["ssl_context"] = kafka_ssl_context(settings)
        else:
            out["ssl_check_hostname"] = k.ssl_check_hostname
            out |= _given(
                ssl_cafile=k.ssl_cafile, ssl_certfile=k.ssl_certfile, ssl_keyfile=k.ssl_keyfile
            )
    return out


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for Kafka: the configured CA (else the system's), the
    client certificate if one is configured."""
    k = settings.kafka
    context = ssl.create_default_context(cafile=k.ssl_cafile or None)
    context.check_hostname = k.ssl_check_hostname
    if k.ssl_certfile:
        context.load_cert_chain(k.ssl_certfile, k.ssl_keyfile or None)
    return context


def faust_credentials(settings: Settings) -> Any:
    """The faust app's broker credentials (None for PLAINTEXT)."""
    import faust

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if k.security_protocol.endswith("SSL") else None
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=_secret("kafka.sasl_password_env", k.sasl_password_env),
            ssl_context=context,
            mechanism=k.sasl_mechanism,
        )
    return faust.SSLCredentials(context)


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


def blends(settings: Settings) -> dict[str, tuple[str, str, float]]:
    """The configured blends: name -> (long horizon, short horizon, long share)."""
    return {n: (b.long, b.short, b.long_share) for n, b in settings.blends.items()}


@dataclass(frozen=True, slots=True)
class Core:
    """The pure parts wired from settings."""

    rules: EventRules
    scorer: Scorer
    fast: FastParser | None = None  # the compiled kernel, when it was built


def core(settings: Settings) -> Core:
    """Validation rules, scorer and (when built) compiled kernel for the settings."""
    rules, scoring = event_rules(settings), scorer(settings)
    return Core(rules, scoring, FastParser(rules, scoring) if fastpath.AVAILABLE else None)


def alert_delivery(
    settings: Settings,
    store: Store,
    metrics: WorkerMetrics,
    *,
    environ: Mapping[str, str] | None = None,
) -> AlertDelivery:
    """The alert delivery of the settings, reading each webhook's secret from
    ``environ`` (default ``os.environ``). Raises :class:`ConfigError` naming
    the webhook and the variable when a secret is missing."""
    env = os.environ if environ is None else environ
    webhooks = []
    for name, hook in settings.alerts.webhooks.items():
        secret = env.get(hook.secret_env)
        if not secret:
            raise ConfigError(
                f"key 'alerts.webhooks.{name}.secret_env': the environment variable "
                f"{hook.secret_env} (the HMAC secret of webhook {name!r}) is not set or empty; "
                f"set it, or remove [alerts.webhooks.{name}]"
            )
        webhooks.append(
            Webhook(
                name=name,
                url=hook.url,
                secret=secret.encode(),
                kinds=frozenset(hook.kinds),
                timeout_s=hook.timeout,
                max_attempts=hook.max_attempts,
                backoff_s=hook.backoff,
            )
        )
    return AlertDelivery(
        store.client,
        stream_key=keys.alert_notices(store.prefix),
        topic=settings.alerts.topic,
        bootstrap=settings.kafka.bootstrap,
        webhooks=webhooks,
        metrics=metrics,
        kafka_options=kafka_options(settings, "aiokafka"),
        admin_options=kafka_options(settings),
    )


def ensure_topics(settings: Settings) -> list[str]:
    """Create the engine's topics on the configured broker if missing;
    returns the names created."""
    from streamer.adapters.broker import ensure_topics as create

    k = settings.kafka
    return create(
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
        replication_factor=k.replication_factor,
        client_options=kafka_options(settings),
    )


async def backfill(
    settings: Settings,
    store: Store,
    path: Paths,
    profile: SourceProfile | None,
    *,
    now_s: float,
    force: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """:func:`streamer.services.backfill.backfill` with the settings' rules, scorer,
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
