"""The names of one engine's Redis keys (docs/redis.md lists what each holds).

Every name starts with the store's prefix, ``{NAMESPACE}``: the braces make
the namespace a Redis Cluster hash tag, so one engine's keys (and the
scripts that touch several of them) live on one slot. Each function below
is one key family; its parameters are the parts of the name that vary.

The Lua scripts in ``lua/`` receive the prefix as ``KEYS[1]`` and build the
names they touch from it (``P .. ':meta'``, ``P .. ':rank:' .. h .. ':' .. res``):
those spellings are theirs and must stay equal to the ones here, which
``tests/unit/test_keys.py`` checks by reading the scripts.
"""

from __future__ import annotations

from collections.abc import Callable


def namespace_prefix(namespace: str) -> str:
    """The prefix of every key of ``namespace`` (its Redis Cluster hash tag)."""
    return "{" + namespace + "}"


def every_key(prefix: str) -> str:
    """A SCAN pattern that matches every key of the engine (and only its)."""
    return prefix + "*"


def _join(prefix: str, *parts: object) -> str:
    return ":".join([prefix, *map(str, parts)])


# rankings and cells ----------------------------------------------------
def rank(prefix: str, horizon: str, res: int | str) -> str:
    """Sorted set: the cells of resolution ``res`` by decayed score over ``horizon``."""
    return _join(prefix, "rank", horizon, res)


def cell(prefix: str, cell: str) -> str:
    """String: one cell's packed record (counts, exact sums, per family and category)."""
    return _join(prefix, "cell", cell)


def hour_of_week(prefix: str, cell: str) -> str:
    """String: one cell's hour-of-week profile (168 float32)."""
    return _join(prefix, "how", cell)


def labels(prefix: str) -> str:
    """Hash: family and category labels -> the slot numbers cell records use."""
    return _join(prefix, "labels")


def meta(prefix: str) -> str:
    """Hash: sequence number, watermark, landmarks, half-lives and record layout."""
    return _join(prefix, "meta")


# ledger, offsets, backfills --------------------------------------------
def ledger(prefix: str) -> str:
    """Hash: event id -> the day it was applied and the contribution it made."""
    return _join(prefix, "ledger")


def ledger_day(prefix: str, day: str) -> str:
    """List: the ids ledgered on ``day`` (YYYYMMDD), for trimming."""
    return _join(prefix, "ledger", "day", day)


def ledger_days(prefix: str) -> str:
    """Set: the days that have a :func:`ledger_day` list."""
    return _join(prefix, "ledger", "days")


def offsets(prefix: str) -> str:
    """Hash: ``topic:partition`` -> the last Kafka offset applied."""
    return _join(prefix, "offsets")


def backfills(prefix: str) -> str:
    """Hash: SHA-256 of each backfilled file -> its name and when it was loaded."""
    return _join(prefix, "backfills")


# alerts ----------------------------------------------------------------
def touched(prefix: str) -> str:
    """Set: cells changed since the alert detector's last tick."""
    return _join(prefix, "touched")


def alert_notices(prefix: str) -> str:
    """Stream: the alert notices (opened, updated, closed)."""
    return _join(prefix, "alerts")


def open_alerts(prefix: str) -> str:
    """Hash: alert id -> alert JSON, while the alert is open."""
    return _join(prefix, "alerts", "open")


def alert_channel(prefix: str) -> str:
    """Pub/sub channel: one message per alert notice."""
    return _join(prefix, "alerts", "live")


def alert_detector_state(prefix: str) -> str:
    """String: the alert detector's own state between ticks."""
    return _join(prefix, "alerts", "state")


def alert_daily_counts(prefix: str) -> str:
    """Hash: cell -> its daily counts, the detector's baselines."""
    return _join(prefix, "alerts", "days")


def delivery_lease(prefix: str) -> str:
    """String: the lease of the one worker that forwards alert notices."""
    return _join(prefix, "alerts", "deliverer")


# patrols and dosage ----------------------------------------------------
def patrol_pings(prefix: str, unit: str) -> str:
    """Sorted set: one unit's pings by time, for ``dosage.retention``."""
    return _join(prefix, "patrol", "pings", unit)


def patrol_units(prefix: str) -> str:
    """Set: the units that ever pinged."""
    return _join(prefix, "patrol", "units")


def patrol_resume(prefix: str) -> str:
    """Hash: unit -> the time its visits can be recomputed from."""
    return _join(prefix, "patrol", "resume")


def patrol_visits(prefix: str, date: str) -> str:
    """Hash: unit -> JSON list of its visits that started on local ``date``."""
    return _join(prefix, "patrol", "visits", date)


def last_visits(prefix: str) -> str:
    """Sorted set: cell -> the end of its latest visit (POSIX s)."""
    return _join(prefix, "dosage", "last")


def dosage_plan(prefix: str) -> str:
    """String: the dosage plan (JSON)."""
    return _join(prefix, "dosage", "plan")


def planned_cells(prefix: str, date: str) -> str:
    """String: the plan's cells as fixed for ``date``, and when (JSON)."""
    return _join(prefix, "dosage", "planned", date)


def briefing_notes(prefix: str) -> str:
    """Hash: cell -> its briefing note (JSON)."""
    return _join(prefix, "dosage", "notes")


def dosage_summary(prefix: str, date: str) -> str:
    """String: the summary of ``date`` (as ``GET /v1/dosage`` answers)."""
    return _join(prefix, "dosage", "day", date)


def unvisited_alerts(prefix: str) -> str:
    """Hash: cell -> the id of its open "unvisited" alert."""
    return _join(prefix, "dosage", "alerts")


def ping_watch(prefix: str) -> str:
    """Hash: since when, and up to when, the ping consumer has read the pings topic."""
    return _join(prefix, "dosage", "watch")


# publication, timers, demo ---------------------------------------------
def updates_channel(prefix: str) -> str:
    """Pub/sub channel: one message per publication tick in which the store changed."""
    return _join(prefix, "updates")


def published(prefix: str) -> str:
    """Hash: the lists last published and the wall time of the publisher's last tick."""
    return _join(prefix, "published")


def leader_lease(prefix: str) -> str:
    """String: the leader lease of the timers."""
    return _join(prefix, "leader")


def demo_marker(prefix: str) -> str:
    """String: marks a namespace that ``hotspots demo`` wrote (so it may empty it)."""
    return _join(prefix, "demo")


FAMILIES: tuple[Callable[..., str], ...] = (
    rank,
    cell,
    hour_of_week,
    labels,
    meta,
    ledger,
    ledger_day,
    ledger_days,
    offsets,
    backfills,
    touched,
    alert_notices,
    open_alerts,
    alert_channel,
    alert_detector_state,
    alert_daily_counts,
    delivery_lease,
    patrol_pings,
    patrol_units,
    patrol_resume,
    patrol_visits,
    last_visits,
    dosage_plan,
    planned_cells,
    briefing_notes,
    dosage_summary,
    unvisited_alerts,
    ping_watch,
    updates_channel,
    published,
    leader_lease,
    demo_marker,
)
"""Every key family, in docs/redis.md's order of topics."""
