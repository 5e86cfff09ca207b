"""A backfilled file of cancels and corrections for events an earlier
backfill loaded: the state equals the batch oracle of what remains, inside
the ledger window (by id) and beyond it (records carrying their fields), and
the report tells what applied, what was only in the file, and what the
engine could not place."""

from __future__ import annotations

import gzip
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.files import load_profile
from streamer.adapters.store import Store
from streamer.services.backfill import BackfillReport, backfill
from streamer.settings import load_settings
from tests import oracle
from tests.cli_support import hotspots
from tests.pipeline_support import redis_key

WINDOW_S = 3 * 86400.0


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """January and February of the bundled sample, as the force exported it."""
    path = tmp_path_factory.mktemp("cancels") / "jan_feb.csv.gz"
    with gzip.open(oracle.SAMPLE, "rt") as src, gzip.open(path, "wt") as out:
        out.write(next(src))
        for line in src:
            if line.split(",")[1] >= "2025-03-01":
                break
            out.write(line)
    return path


def settings_for(namespace: str):  # type: ignore[no-untyped-def]
    return load_settings(
        environ={},
        overrides={"store": {"namespace": namespace}, "grid": {"timezone": "America/New_York"}},
    )


async def load(store: Store, path: Path, profile: str | None = None) -> BackfillReport:
    parts = app.core(settings_for(store.namespace))
    return await backfill(
        path,
        load_profile(profile) if profile else None,
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=WINDOW_S,
        batch_max_events=300,
        now_s=time.time(),
    )


def with_fields(row: oracle.Row, op: str = "cancel") -> dict[str, Any]:
    return {
        "id": row.id,
        "op": op,
        "occurred_at": datetime.fromtimestamp(row.t_s, UTC).isoformat(),
        "lat": row.lat,
        "lon": row.lon,
        "category": row.category,
    }


def bare(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "op": "cancel"}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


async def assert_matches(store: Store, alive: dict[str, oracle.Row], at_s: float) -> None:
    weights, default = oracle.weights()
    for name, half_life in store.horizons.items():
        for res in store.resolutions:
            want = oracle.scores(alive.values(), res, half_life, at_s, weights, default)
            want = {c: s for c, s in want.items() if s >= store.prune_below}
            got = {r.cell: r.score for r in await store.top(name, res, 10**6, at_s)}
            assert set(got) == set(want), (name, res, len(set(got) ^ set(want)))
            for cell, expected in want.items():
                assert got[cell] == pytest.approx(expected, rel=1e-9), (name, res, cell)


def counted(alive: dict[str, oracle.Row]) -> list[oracle.Row]:
    """Events that count (harm weight above zero), oldest first."""
    weights, default = oracle.weights()
    return sorted(
        (r for r in alive.values() if weights.get(r.category, default) > 0),
        key=lambda r: (r.t_s, r.id),
    )


async def test_cancels_file_applies_by_id_in_the_window_and_by_fields_beyond_it(
    client: aioredis.Redis, namespace: str, subset: Path, tmp_path: Path
) -> None:
    store = app.store(settings_for(namespace), client)
    first = await load(store, subset, "philadelphia")
    assert first.settled > 10_000 and first.ledgered > 500
    alive = oracle.live(("upsert", r) for r in oracle.read_rows(subset))
    at_s = max(r.t_s for r in alive.values()) + 600
    newest = max(r.t_s for r in alive.values())
    events = counted(alive)
    ledgered = [r for r in events if r.t_s >= newest - WINDOW_S + 3600]
    settled = [r for r in events if r.t_s < newest - WINDOW_S - 86400]
    rng = random.Random(17)
    by_id = rng.sample(ledgered, 60)
    rest = list(settled)
    rng.shuffle(rest)
    by_fields, unplaceable, moved_old = rest[:400], rest[400:425], rest[425:428]
    moved_new = [r for r in ledgered if r not in by_id][:3]
    categories = sorted({r.category for r in events})

    # groups of records, shuffled as groups: rows of one id keep their order
    groups: list[list[dict[str, Any]]] = []
    groups += [[bare(r.id)] for r in by_id]
    groups += [[with_fields(r)] for r in by_fields]
    groups += [[bare(r.id)] for r in unplaceable]  # settled history: no ledger entry
    groups += [[bare(f"never-{i}")] for i in range(5)]
    # an event of a category that does not count: it never added anything
    lawful = oracle.Row("lawful-1", newest - 10 * 86400, 39.95, -75.16, "Homicide - Justifiable")
    groups.append([with_fields(lawful)])
    # a correction of settled history: the old version's adjustment row, then the new one
    corrected: list[oracle.Row] = []
    for r in moved_old:
        new = r.moved(0.002, rng.choice(categories))
        corrected.append(new)
        groups.append([with_fields(r), with_fields(new, "upsert")])
    # a correction of a ledgered event: the new version alone (the ledger has the old)
    for r in moved_new:
        new = r.moved(-0.002, rng.choice(categories))
        corrected.append(new)
        groups.append([with_fields(new, "upsert")])
    # an event that lives and dies within this file
    ghost = oracle.Row("ghost-1", newest - 7200, 39.95, -75.16, "Thefts")
    groups.append([with_fields(ghost, "upsert"), bare(ghost.id)])
    rng.shuffle(groups)
    records = [r for g in groups for r in g]

    report = await load(store, write_jsonl(tmp_path / "cancels.jsonl", records))

    assert report.cancels_by_id == len(by_id)
    assert report.cancels_by_fields == len(by_fields) + len(moved_old)
    assert report.unknown_cancel == len(unplaceable) + 5
    assert report.cancelled == 1  # the ghost
    assert report.cancels_uncounted == 1
    assert report.store_cancels == (
        report.cancels_by_id
        + report.cancels_by_fields
        + report.cancels_repeated
        + report.cancels_uncounted
        + report.unknown_cancel
    )
    assert report.replaced_by_id == len(moved_new)
    for r in [*by_id, *by_fields, *moved_old, *moved_new]:
        del alive[r.id]
    for r in corrected:
        alive[r.id] = r
    await assert_matches(store, alive, at_s)

    # The same cancels again (another file): each was applied once already.
    again = [bare(r.id) for r in by_id] + [with_fields(r) for r in by_fields]
    rng.shuffle(again)
    repeat = await load(store, write_jsonl(tmp_path / "again.jsonl", again))
    assert repeat.cancels_repeated == len(again)
    assert repeat.cancels_by_id == repeat.cancels_by_fields == repeat.unknown_cancel == 0
    await assert_matches(store, alive, at_s)


async def test_cancels_with_fields_apply_after_the_ledger_forgot_the_events(
    client: aioredis.Redis, namespace: str, subset: Path, tmp_path: Path
) -> None:
    store = app.store(settings_for(namespace), client)
    await load(store, subset, "philadelphia")
    forgotten = await store.trim_ledger(time.time() + store.ledger_retention_s + 2 * 86400)
    assert forgotten > 500 and await client.hlen(redis_key(store, "ledger")) == 0
    alive = oracle.live(("upsert", r) for r in oracle.read_rows(subset))
    at_s = max(r.t_s for r in alive.values()) + 600
    events = counted(alive)
    rng = random.Random(3)
    recent = rng.sample(events[-600:], 80)  # were ledgered, now forgotten
    fielded, bare_ones = recent[:70], recent[70:]
    records = [with_fields(r) for r in fielded] + [bare(r.id) for r in bare_ones]
    report = await load(store, write_jsonl(tmp_path / "late.jsonl", records))
    assert report.cancels_by_fields == len(fielded)
    assert report.unknown_cancel == len(bare_ones)
    assert report.cancels_by_id == report.cancelled == 0
    for r in fielded:
        del alive[r.id]
    await assert_matches(store, alive, at_s)


def test_command_line_report_separates_cancels_and_warns_of_unknown_ones(
    namespace: str, subset: Path, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HOTSPOTS_STORE__NAMESPACE": namespace,
        "HOTSPOTS_STORE__REDIS_URL": f'"{redis_url}"',
        "HOTSPOTS_GRID__TIMEZONE": '"America/New_York"',
        "HOTSPOTS_STORE__LEDGER_RETENTION": '"3d"',  # the file's last 3 days ledgered
    }
    loaded = hotspots("backfill", str(subset), "--profile", "philadelphia", "--json", env=env)
    assert loaded.returncode == 0, loaded.stderr
    events = counted(oracle.live(("upsert", r) for r in oracle.read_rows(subset)))
    records = [bare(r.id) for r in events[-20:]]  # ledgered: the newest of the file
    records += [with_fields(r) for r in events[:30]]  # settled, carrying their fields
    records += [bare(r.id) for r in events[100:107]]  # settled, bare: cannot be placed
    records += [with_fields(oracle.Row("g", events[-1].t_s, 39.95, -75.16, "Thefts"), "upsert")]
    records += [bare("g")]
    path = write_jsonl(tmp_path / "cancels.jsonl", records)
    done = hotspots("backfill", str(path), "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["cancelled_within_file"] == 1
    assert report["cancels_applied_to_store"] == {"by_id": 20, "by_fields": 30}
    assert report["unknown_cancel"] == 7
    assert "warning: 7 cancels name events the store cannot place" in done.stderr
