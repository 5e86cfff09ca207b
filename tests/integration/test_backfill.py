"""Backfill (bulk path + ledgered tail) against the oracle and the live path."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.files import load_profile
from streamer.adapters.store import StoreOp
from streamer.services.backfill import backfill
from streamer.settings import load_settings
from tests import oracle
from tests.cli_support import hotspots


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two months of the bundled sample, plus rows that must be rejected and
    a corrected duplicate (same id, later row wins)."""
    path = tmp_path_factory.mktemp("bf") / "subset.csv.gz"
    with gzip.open(oracle.SAMPLE, "rt") as src, gzip.open(path, "wt") as out:
        header = next(src)
        out.write(header)
        lines = []
        for line in src:
            if line.split(",")[1] >= "2025-03-01":
                break
            lines.append(line)
        out.writelines(lines)
        first = lines[0].rstrip("\n").split(",")
        out.write(",".join([first[0], "2025-02-28 23:00:00", "39.96", "-75.17", "Thefts"]) + "\n")
        out.write("X1,2025-02-01 10:00:00,0,0,Thefts\n")  # null island
        out.write("X2,not a time,39.95,-75.16,Thefts\n")
        out.write("X3,2025-02-01 10:00:00,95.0,-75.16,Thefts\n")
    return path


def settings_for(namespace: str):  # type: ignore[no-untyped-def]
    return load_settings(
        environ={},
        overrides={"store": {"namespace": namespace}, "grid": {"timezone": "America/New_York"}},
    )


async def test_backfill_matches_oracle_and_ledgers_the_tail(
    client: aioredis.Redis, namespace: str, subset: Path
) -> None:
    settings = settings_for(namespace)
    store = app.store(settings, client)
    parts = app.core(settings)
    report = await backfill(
        subset,
        load_profile("philadelphia"),
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=3 * 86400,
        batch_max_events=700,
        now_s=time.time(),
    )
    assert report.rejected == {"null_island": 1, "bad_time": 1, "lat_out_of_range": 1}
    rows = _read_tolerant(subset)
    assert report.superseded == len(rows) - len({r.id for r in rows}) >= 1
    assert report.settled > 1000 and report.ledgered > 100
    alive = oracle.live(("upsert", r) for r in rows)
    at_s = max(r.t_s for r in rows) + 600
    await _matches(store, alive, at_s)
    # The ledgered tail can be cancelled exactly; settled history cannot.
    tail = sorted(alive.values(), key=lambda r: r.t_s)[-50:]
    result = await store.apply([StoreOp.cancel(r.id) for r in tail], now_s=time.time())
    assert result.cancelled == 50
    for r in tail:
        del alive[r.id]
    await _matches(store, alive, at_s)
    again = await backfill(
        subset,
        load_profile("philadelphia"),
        store=store,
        rules=parts.rules,
        scorer=parts.scorer,
        ledger_window_s=3 * 86400,
        batch_max_events=700,
        now_s=time.time(),
    )
    assert again.skipped_file


async def test_bulk_path_equals_event_by_event_path(
    client: aioredis.Redis, namespace: str, subset: Path
) -> None:
    settings_a = settings_for(namespace + "a")
    settings_b = settings_for(namespace + "b")
    store_a, store_b = app.store(settings_a, client), app.store(settings_b, client)
    parts = app.core(settings_a)
    try:
        # everything settled (bulk) ...
        await backfill(
            subset,
            load_profile("philadelphia"),
            store=store_a,
            rules=parts.rules,
            scorer=parts.scorer,
            ledger_window_s=1.0,
            batch_max_events=500,
            now_s=time.time(),
        )
        # ... against everything ledgered (the live apply script, event by event)
        await backfill(
            subset,
            load_profile("philadelphia"),
            store=store_b,
            rules=parts.rules,
            scorer=parts.scorer,
            ledger_window_s=1e9,
            batch_max_events=500,
            now_s=time.time(),
        )
        at_s = time.time()
        for res in settings_a.grid.resolutions:
            top_a = await store_a.top("month", res, 30, at_s)
            top_b = await store_b.top("month", res, 30, at_s)
            assert [r.cell for r in top_a] == [r.cell for r in top_b]
            for ra, rb in zip(top_a, top_b, strict=True):
                assert ra.score == pytest.approx(rb.score, rel=1e-9)
                a = await store_a.cell(ra.cell, at_s)
                b = await store_b.cell(rb.cell, at_s)
                assert a is not None and b is not None
                assert a.count == b.count and a.category_counts == b.category_counts
                assert a.family_counts == b.family_counts and a.last_event_s == b.last_event_s
                # profiles are float32 (display only)
                assert a.hour_of_week == pytest.approx(b.hour_of_week, rel=1e-6, abs=1e-30)
                for cat, scores in a.category_scores.items():
                    assert scores == pytest.approx(b.category_scores[cat], rel=1e-9)
    finally:
        for suffix in ("a", "b"):
            keys = await client.keys(f"{{{namespace}{suffix}}}*")
            if keys:
                await client.delete(*keys)


def _read_tolerant(path: Path) -> list[oracle.Row]:
    """The subset's valid rows, read independently (bad rows skipped)."""
    import csv
    from datetime import datetime

    out = []
    with gzip.open(path, "rt", newline="") as handle:
        for rec in csv.DictReader(handle):
            try:
                local = datetime.strptime(rec["t_local"], "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
            lat, lon = float(rec["lat"]), float(rec["lon"])
            if abs(lat) > 90 or (lat == 0 and lon == 0):
                continue
            t = local.replace(tzinfo=oracle.NY).timestamp()
            out.append(oracle.Row(rec["dc_key"], t, lat, lon, rec["text_general_code"]))
    return out


async def _matches(store, alive: dict[str, oracle.Row], at_s: float) -> None:  # type: ignore[no-untyped-def]
    weights, default = oracle.weights()
    for name, half_life in store.horizons.items():
        for res in store.resolutions:
            want = oracle.scores(alive.values(), res, half_life, at_s, weights, default)
            want = {c: s for c, s in want.items() if s >= store.prune_below}
            got = {r.cell: r.score for r in await store.top(name, res, 10**6, at_s)}
            assert set(got) == set(want), (name, res)
            for cell, expected in want.items():
                assert got[cell] == pytest.approx(expected, rel=1e-9), (name, res, cell)


def test_command_line_backfill_and_top(namespace: str, subset: Path, redis_url: str) -> None:
    import os

    env = {
        **os.environ,
        "HOTSPOTS_STORE__NAMESPACE": namespace,
        "HOTSPOTS_STORE__REDIS_URL": f'"{redis_url}"',
    }
    done = hotspots("backfill", str(subset), "--profile", "philadelphia", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["read"] == (
        report["accepted"] + sum(report["rejected"].values()) + report["superseded_by_later_row"]
    )
    top = hotspots(
        "top",
        "--horizon",
        "year",
        "--resolution",
        "9",
        "--limit",
        "5",
        "--at",
        "2025-03-01T00:00:00+00:00",
        "--json",
        env=env,
    )
    assert top.returncode == 0, top.stderr
    rows = orjson.loads(top.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    weights, default = oracle.weights()
    want = oracle.scores(_read_tolerant(subset), 9, 365 * 86400.0, 1740787200.0, weights, default)
    best = sorted(want.items(), key=lambda kv: -kv[1])[:5]
    assert [r["cell"] for r in rows] == [c for c, _ in best]
    assert [r["score"] for r in rows] == pytest.approx([s for _, s in best], rel=1e-9)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["top", "--horizon", "fortnight"], "--horizon"),
        (["top", "--resolution", "7"], "--resolution"),
        (["top", "--at", "yesterday"], "--at"),
        (["top", "--limmit", "3"], "--limmit"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], needle: str, namespace: str) -> None:
    import os

    done = hotspots(*args, env={**os.environ, "HOTSPOTS_STORE__NAMESPACE": namespace})
    assert done.returncode == 2
    assert needle in done.stderr


def test_bad_config_key_exits_2_naming_the_key(tmp_path: Path) -> None:
    import os

    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nredis_urll = "redis://x"\n[horizons]\nweek = "7 weeks"\n')
    done = hotspots("--config", str(bad), "top", env=dict(os.environ))
    assert done.returncode == 2
    assert "store.redis_urll" in done.stderr and "horizons.week" in done.stderr


def test_several_files_load_as_one_and_losses_are_said(
    namespace: str, subset: Path, redis_url: str, tmp_path: Path
) -> None:
    import os

    env = {
        **os.environ,
        "HOTSPOTS_STORE__NAMESPACE": namespace,
        "HOTSPOTS_STORE__REDIS_URL": f'"{redis_url}"',
    }
    # the subset cut in two files, read back by a quoted glob, then one more
    # file (named beside it) whose ids are mostly empty
    with gzip.open(subset, "rt") as src:
        header, *lines = src.readlines()
    half = len(lines) // 2
    for name, part in (("part-1.csv", lines[:half]), ("part-2.csv", lines[half:])):
        (tmp_path / name).write_text(header + "".join(part))
    lossy = tmp_path / "lossy.csv"
    lossy.write_text(header + "".join("," + line.split(",", 1)[1] for line in lines[:300]))
    glob = str(tmp_path / "part-*.csv")
    args = ("backfill", glob, str(lossy), "--profile", "philadelphia", "--json")
    done = hotspots(*args, env=env)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["read"] == len(lines) + 300
    assert report["rejected"]["bad_id"] == 300
    share = 100 * 300 / report["read"]
    warning = f"300 rows ({share:.1f} %) have an empty or unusable id in column 'dc_key'"
    assert report["warnings"] == [warning] and f"warning: {warning}" in done.stderr
    # the same files again are known (one digest for the set): nothing done
    again = hotspots(*args[:-1], env=env)
    assert again.returncode == 0 and "before; nothing done" in again.stdout
    # a pattern that matches nothing is a usage error naming it
    missing = hotspots(
        "backfill", str(tmp_path / "none-*.csv"), "--profile", "philadelphia", env=env
    )
    assert missing.returncode == 2 and "none-*.csv" in missing.stderr
