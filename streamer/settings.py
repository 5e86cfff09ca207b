"""Configuration: TOML defaults, overridden by a TOML file, env vars and flags.

Every key has a default, so a partial file is fine. A wrong key or value
raises :class:`ConfigError` naming the key and saying how to fix it.
Environment variables override the file: ``HOTSPOTS_<SECTION>__<KEY>``
(for example ``HOTSPOTS_STORE__REDIS_URL``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

# The defaults and the bundled sample ship inside the package (package data in
# pyproject.toml), so a wheel installed anywhere finds them.
CONFIG_DIR = Path(__file__).resolve().parent / "config"
DATA_DIR = Path(__file__).resolve().parent / "data"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


def parse_duration_s(value: object) -> float:
    """Parse ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` (or a number of seconds).

    >>> parse_duration_s("7d")
    604800.0
    >>> parse_duration_s(30)
    30.0
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like '15m', '12h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(
            f"expected a duration like '15m', '12h' or '7d' (units s, m, h, d), got {value!r}"
        )
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


DurationS = Annotated[float, BeforeValidator(parse_duration_s)]


class _Section(BaseModel):
    # env values are read as TOML, so NAMESPACE=2024 arrives as a number
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class StoreSettings(_Section):
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field(default="hotspots", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ledger_retention: DurationS = 365 * 86400.0
    prune_below: float = Field(default=1e-3, gt=0)
    batch_max_events: int = Field(default=10_000, ge=1, le=100_000)
    # Redis ACL and TLS; secrets only by the NAME of an env var holding them
    redis_username: str = ""
    redis_password_env: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    redis_tls_ca: str = ""  # PEM files; need a rediss:// URL
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    cluster: bool = False  # redis_url names one node of a Redis Cluster


class GridSettings(_Section):
    resolutions: list[int] = Field(default_factory=lambda: [8, 9, 10], min_length=1)
    timezone: str = "UTC"
    profile_horizon: str = "year"

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, value: list[int]) -> list[int]:
        if any(r < 0 or r > 15 for r in value):
            raise ValueError("H3 resolutions run from 0 to 15")
        return sorted(set(value))


class CategoryRule(_Section):
    weight: float = Field(default=1.0, ge=0)
    family: str = "other"
    include: bool = True
    enforcement: bool = False


class WeightSettings(_Section):
    proactive: float = Field(default=1.0, ge=0, le=1)
    enforcement: float = Field(default=1.0, ge=0, le=1)
    harm: bool = True  # false: every counted category weighs 1 (an engine of plain counts)


class EventSettings(_Section):
    max_payload_bytes: int = Field(default=16_384, ge=256)
    max_future_skew: DurationS = 900.0
    default_timezone: str = "UTC"
    bbox: list[float] | None = None
    # the study area: a GeoJSON outline, or "auto" (derived from a file's points
    # by the commands that need one); None: none (no point is outside)
    boundary: str | None = None

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            if len(value) != 4:
                raise ValueError("bbox is [min_lon, min_lat, max_lon, max_lat]")
            if not (value[0] < value[2] and value[1] < value[3]):
                raise ValueError("bbox needs min_lon < max_lon and min_lat < max_lat")
        return value


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:9092"
    incidents_topic: str = "hotspots.incidents"
    calls_topic: str = "hotspots.calls"
    dead_letter_topic: str = "hotspots.dead-letter"
    group: str = "hotspots"
    replication_factor: int = Field(default=1, ge=1, le=16)  # of topics the engine creates
    security_protocol: str = Field(
        default="PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$"
    )
    sasl_mechanism: str = Field(default="PLAIN", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    sasl_username: str = ""
    sasl_password_env: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    ssl_cafile: str = ""  # PEM files, for SSL and SASL_SSL
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True


class WorkerSettings(_Section):
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    session_timeout: DurationS = 10.0
    heartbeat_interval: DurationS = 1.0
    rebalance_timeout: DurationS = 5.0
    max_poll_interval: DurationS = 60.0
    lease_ttl: DurationS = 15.0
    partitions: int = Field(default=4, ge=1, le=1024)
    # faust's data directory; "" gives each worker its own, named by the
    # consumer group and the worker's id (streamer.services.worker.state_dir)
    state_dir: str = ""


class PublishSettings(_Section):
    top_n: int = Field(default=50, ge=1, le=10_000)
    interval: DurationS = 1.0
    maintain_interval: DurationS = 60.0


class TimeSettings(_Section):
    clock: str = Field(default="wall", pattern="^(wall|event)$")


class TokenRule(_Section):
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: str = Field(pattern="^(display|dispatch|admin)$")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tokens: dict[str, TokenRule] = Field(default_factory=dict)
    cors_origins: list[str] = Field(default_factory=list)
    min_count: int = Field(default=0, ge=0)
    name: str = ""  # the force, shown on the wall display
    tile_url: str | None = None
    stale_after: DurationS = 15.0
    heartbeat: DurationS = 5.0
    client_queue: int = Field(default=256, ge=1, le=100_000)


ALERT_KINDS = ("opened", "escalated", "cleared", "merged")


class WebhookSettings(_Section):
    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # env var holding the HMAC key
    kinds: list[str] = Field(default_factory=lambda: ["opened", "escalated", "cleared"])
    timeout: DurationS = 5.0
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff: DurationS = 1.0  # first retry delay; doubles per attempt, at most 5 minutes

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"unknown alert kinds {unknown}: use some of {list(ALERT_KINDS)}")
        return value


class AlertSettings(_Section):
    enabled: bool = True
    # "" / -1: chosen from the other settings (see _check_alerts)
    resolution: int = Field(default=-1, ge=-1, le=15)
    short: str = ""  # the horizon whose count is tested
    baseline: str = ""  # the horizon that predicts it
    interval: DurationS = 30.0  # detection tick (leader only)
    false_alerts_per_day: float = Field(default=1.0, gt=0)
    min_events: float = Field(default=2.5, ge=0)
    prior: DurationS = 30 * 86400.0  # weight of the shrinkage prior, as exposure time
    area_weight: float = Field(default=1.0, ge=0)  # the area-wide rate, as pseudo-neighbours
    keep_ratio: float = Field(default=100.0, ge=1)
    escalate_ratio: float = Field(default=100.0, gt=1)
    clear_quiet: DurationS = 12 * 3600.0
    pattern_days: int = Field(default=14, ge=3, le=120)
    pattern_p: float = Field(default=0.05, gt=0, lt=1)
    area_refresh: DurationS = 300.0
    stream_max: int = Field(default=10_000, ge=100)
    recent: int = Field(default=50, ge=0, le=10_000)
    topic: str = "hotspots.alerts"
    webhooks: dict[str, WebhookSettings] = Field(default_factory=dict)


class DosageSettings(_Section):
    enabled: bool = True
    topic: str = "hotspots.patrols"  # location pings, keyed by unit
    resolution: int = Field(default=-1, ge=-1, le=15)  # -1: the grid resolution nearest 10
    max_gap: DurationS = 300.0  # a longer silence ends a visit (not counted)
    min_visit: DurationS = 120.0  # shorter stays are pass-bys
    max_speed: float = Field(default=2.5, gt=0)  # m/s; faster is driving, not patrolling
    patrol_statuses: list[str] = Field(default_factory=lambda: ["patrol"])
    debounce: DurationS = 60.0  # GPS jitter: a new cell counts after this long in it
    koper_visit: DurationS = 600.0  # a Koper-compliant visit lasts at least this
    retention: DurationS = 3 * 86400.0  # pings kept per unit
    plan_horizon: str = ""  # "": "week" if configured, else the longest horizon
    plan_top_n: int = Field(default=20, ge=1, le=1000)
    required_visits: int = Field(default=1, ge=1, le=100)  # per planned hot spot and day
    required_visit: DurationS = 900.0  # each at least this long
    peak_hours: bool = True  # count only visits starting in the cell's peak hours, when known
    late_after_hour: int = Field(default=18, ge=0, le=23)  # local hour: unvisited today -> alert
    unvisited_days: float = Field(default=3.0, gt=0)  # unvisited this long -> alert
    interval: DurationS = 60.0  # dosage summary and alert tick (leader only)


class BlendSettings(_Section):
    """A ranking blended from two horizons at read time (``hotspots evaluate
    --grid`` prints the best one for the configured horizons)."""

    long: str
    short: str
    long_share: float = Field(gt=0, lt=1)


def _default_horizons() -> dict[str, float]:
    return {"day": 86400.0, "week": 7 * 86400.0, "month": 28 * 86400.0, "year": 365 * 86400.0}


class DisplaySettings(_Section):
    districts: str | None = None  # GeoJSON of the force's districts: the display's outline
    district_label: str | None = None  # the feature property that labels each district


class Settings(_Section):
    store: StoreSettings = Field(default_factory=StoreSettings)
    grid: GridSettings = Field(default_factory=GridSettings)
    horizons: dict[str, DurationS] = Field(default_factory=_default_horizons)
    categories: dict[str, CategoryRule] = Field(default_factory=dict)
    weights: WeightSettings = Field(default_factory=WeightSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    time: TimeSettings = Field(default_factory=TimeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    display: DisplaySettings = Field(default_factory=DisplaySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    dosage: DosageSettings = Field(default_factory=DosageSettings)
    blends: dict[str, BlendSettings] = Field(default_factory=dict)

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError('at least one horizon is needed, e.g. week = "7d"')
        for name in value:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise ValueError(f"horizon name {name!r}: use lower-case letters, digits, _")
        return value

    def category(self, name: str) -> CategoryRule:
        """The rule for a category, or ``[categories.default]`` when unknown."""
        return self.categories.get(name) or self.default_category

    @property
    def default_category(self) -> CategoryRule:
        return self.categories.get("default", CategoryRule())


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("HOTSPOTS_") or "__" not in name or name == "HOTSPOTS_CONFIG":
            continue
        path = name.removeprefix("HOTSPOTS_").lower().split("__")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


# keys renamed since a release: a config using the old name is told the new one
RENAMED = {"dosage.koper_min": "dosage.koper_visit", "api.boundary": "display.districts"}


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden" and key in RENAMED:
            lines.append(f"{source}: key '{key}' is now '{RENAMED[key]}': rename it")
        elif error["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}': remove it or check its spelling")
        else:
            lines.append(f"{source}: key '{key}': {error['msg']} (got {error.get('input')!r})")
    return ConfigError("\n".join(lines))


# keys that name files: a relative path in a config file is relative to that file
PATH_KEYS = (("events", "boundary"), ("display", "districts"))
AUTO = "auto"  # events.boundary: derive the study area from the file's points


def _relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for section, key in PATH_KEYS:
        table = data.get(section)
        if not isinstance(table, dict):
            continue
        value = table.get(key)
        if isinstance(value, str) and value != AUTO and not Path(value).is_absolute():
            table[key] = str((base / value).resolve())
    return data


def load_settings(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Defaults (``streamer/config/default.toml`` + ``categories.toml``), then
    the file at ``path`` (or ``$HOTSPOTS_CONFIG``), then env vars, then
    ``overrides`` (from command-line flags)."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    for name in ("default.toml", "categories.toml"):
        candidate = CONFIG_DIR / name
        if not candidate.exists():  # an install that lost config/ would run without harm weights
            raise ConfigError(
                f"the default configuration {candidate} is missing: the streamer package was "
                "installed without its package data (streamer/config/); reinstall it from a "
                "wheel or the source tree"
            )
        data = _merge(data, _read_toml(candidate))
    chosen = path or env.get("HOTSPOTS_CONFIG")
    source = str(chosen) if chosen else "defaults"
    if chosen:
        own = _relative_paths(_read_toml(Path(chosen)), Path(chosen).resolve().parent)
        if "horizons" in own:
            # a file's [horizons] is the full list (so a force can drop one)
            data.pop("horizons", None)
        data = _merge(data, own)
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None
    if settings.grid.profile_horizon not in settings.horizons:
        raise ConfigError(
            f"{source}: key 'grid.profile_horizon': {settings.grid.profile_horizon!r} is not a "
            f"horizon; use one of {sorted(settings.horizons)}"
        )
    _check_security(settings, source)
    _check_blends(settings, source)
    return _check_dosage(_check_alerts(settings, source), source)


def _check_blends(settings: Settings, source: str) -> None:
    for name, blend in settings.blends.items():
        if not re.fullmatch(r"[a-z0-9_]{1,32}", name) or name in settings.horizons:
            raise ConfigError(
                f"{source}: key 'blends.{name}': a blend's name is lower-case letters, "
                f"digits and _, and not a horizon's ({sorted(settings.horizons)})"
            )
        for key in ("long", "short"):
            _require_horizon(settings, source, f"blends.{name}.{key}", getattr(blend, key))
        if blend.long == blend.short:
            raise ConfigError(
                f"{source}: key 'blends.{name}': long and short are the same horizon; "
                "use that horizon's own ranking"
            )


def _check_security(settings: Settings, source: str) -> None:
    """Kafka SASL needs a user and a password variable; TLS files need a TLS
    connection and must exist (the env var itself is read when connecting)."""
    k, s = settings.kafka, settings.store
    if k.security_protocol.startswith("SASL") and not (k.sasl_username and k.sasl_password_env):
        raise ConfigError(
            f"{source}: key 'kafka.sasl_username' / 'kafka.sasl_password_env': "
            f"security_protocol {k.security_protocol} needs both (the password is read "
            "from the env var that sasl_password_env names)"
        )
    files = {
        "kafka.ssl_cafile": k.ssl_cafile,
        "kafka.ssl_certfile": k.ssl_certfile,
        "kafka.ssl_keyfile": k.ssl_keyfile,
        "store.redis_tls_ca": s.redis_tls_ca,
        "store.redis_tls_cert": s.redis_tls_cert,
        "store.redis_tls_key": s.redis_tls_key,
    }
    for key, path in files.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"{source}: key '{key}': no such file {path!r}")
    if any(path for key, path in files.items() if key.startswith("kafka.")) and (
        k.security_protocol not in ("SSL", "SASL_SSL")
    ):
        raise ConfigError(
            f"{source}: key 'kafka.security_protocol': TLS files are set, so use SSL or "
            f"SASL_SSL (got {k.security_protocol})"
        )
    if (s.redis_tls_ca or s.redis_tls_cert or s.redis_tls_key) and not s.redis_url.startswith(
        "rediss://"
    ):
        raise ConfigError(
            f"{source}: key 'store.redis_url': TLS files are set, so use a rediss:// URL"
        )


def _check_dosage(settings: Settings, source: str) -> Settings:
    """Fill in the dosage keys left to choose and check the ones given."""
    d = settings.dosage
    auto: dict[str, Any] = {}
    if d.resolution == -1:
        auto["resolution"] = _nearest(settings.grid.resolutions, 10)
    if not d.plan_horizon:
        longest = max(settings.horizons, key=lambda n: (settings.horizons[n], n))
        auto["plan_horizon"] = "week" if "week" in settings.horizons else longest
    if auto:
        d = d.model_copy(update=auto)
        settings = settings.model_copy(update={"dosage": d})
    _require_horizon(settings, source, "dosage.plan_horizon", d.plan_horizon)
    _require_resolution(settings, source, "dosage.resolution", d.resolution)
    return settings


def _require_horizon(settings: Settings, source: str, key: str, name: str) -> None:
    if name not in settings.horizons:
        raise ConfigError(
            f"{source}: key '{key}': {name!r} is not a horizon; "
            f"use one of {sorted(settings.horizons)}"
        )


def _require_resolution(settings: Settings, source: str, key: str, resolution: int) -> None:
    if resolution not in settings.grid.resolutions:
        raise ConfigError(
            f"{source}: key '{key}': {resolution} is not one of "
            f"grid.resolutions {settings.grid.resolutions}"
        )


def _nearest(resolutions: list[int], wanted: int) -> int:
    """The configured resolution nearest ``wanted`` (the finer on a tie)."""
    return min(resolutions, key=lambda r: (abs(r - wanted), -r))


def _check_alerts(settings: Settings, source: str) -> Settings:
    """Fill in the alert keys left to choose (the shortest and longest
    horizons, the grid resolution nearest 9) and check the ones given."""
    a = settings.alerts
    by_half_life = sorted(settings.horizons, key=lambda n: (settings.horizons[n], n))
    auto: dict[str, Any] = {}
    if a.resolution == -1:
        auto["resolution"] = _nearest(settings.grid.resolutions, 9)
    if not a.short:
        auto["short"] = "day" if "day" in settings.horizons else by_half_life[0]
    if not a.baseline:
        auto["baseline"] = "year" if "year" in settings.horizons else by_half_life[-1]
    if auto:
        a = a.model_copy(update=auto)
        if a.short == a.baseline and not ({"short", "baseline"} - auto.keys()):
            # one horizon only, and nothing asked of alerting: it stays off
            a = a.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={"alerts": a})
    if not a.enabled:
        return settings
    _require_horizon(settings, source, "alerts.short", a.short)
    _require_horizon(settings, source, "alerts.baseline", a.baseline)
    if settings.horizons[a.short] >= settings.horizons[a.baseline]:
        raise ConfigError(
            f"{source}: key 'alerts.short': its half-life must be shorter than "
            f"alerts.baseline's ({a.short!r} vs {a.baseline!r})"
        )
    _require_resolution(settings, source, "alerts.resolution", a.resolution)
    return settings
