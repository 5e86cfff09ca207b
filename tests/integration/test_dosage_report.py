"""``hotspots dosage-report`` as a process, over a real Redis: a list plan of
two hot spots, a unit patrolling one of them for 16 minutes today."""

from __future__ import annotations

import csv
import os
import random
import struct
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.patrols import Dosage
from streamer.core.cells import cell_hex, cell_of, center_hex
from streamer.core.dosage import Ping
from streamer.settings import load_settings
from tests.cli_support import hotspots

RES = 10
A = cell_hex(cell_of(39.9526, -75.1652, RES))  # City Hall, Philadelphia
B = cell_hex(cell_of(39.9800, -75.1500, RES))  # ~3 km north
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def noon_zone() -> str:
    """A fixed-offset zone where it is about midday now, so that the pings
    (the last 20 minutes) and "today" never straddle local midnight."""
    offset = max(min(12 - datetime.now(UTC).hour, 12), -11)  # hours east of UTC
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def env_for(namespace: str, redis_url: str, zone: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}
    return {
        **env,
        "HOTSPOTS_STORE__NAMESPACE": namespace,
        "HOTSPOTS_STORE__REDIS_URL": f'"{redis_url}"',
        "HOTSPOTS_TIME__CLOCK": '"wall"',
        "HOTSPOTS_GRID__TIMEZONE": f'"{zone}"',
    }


def foot_patrol(unit: str, cell: str, start_s: float, minutes: int) -> list[Ping]:
    """A ping every 10 s within a few metres of the cell's centre."""
    lat, lon = center_hex(cell)
    rng = random.Random(unit + cell)
    return [
        Ping(
            unit,
            start_s + 10 * i,
            lat + rng.uniform(-3e-5, 3e-5),
            lon + rng.uniform(-3e-5, 3e-5),
            "patrol",
            0.8,
        )
        for i in range(minutes * 6 + 1)
    ]


async def test_report_of_a_day_with_one_hot_spot_patrolled(
    client: aioredis.Redis, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    zone = noon_zone()
    settings = load_settings(
        environ={},
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "time": {"clock": "wall"},
            "grid": {"timezone": zone},
        },
    )
    assert settings.dosage.resolution == RES
    dosage = Dosage(app.store(settings, client), settings)
    now = time.time()
    await dosage.set_plan({"mode": "list", "cells": [{"cell": A, "units": ["P-101"]}, B]}, now)
    units = await dosage.add_pings(foot_patrol("P-101", A, now - 20 * 60, 16))  # ends 4 min ago
    await dosage.recompute(units)
    today = dosage.day_of(now)
    assert dosage.day_of(now - 20 * 60) == today
    yesterday = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
    env = env_for(namespace, redis_url, zone)

    # the table, over yesterday (no plan recorded) and today
    done = hotspots(
        "dosage-report", "--from", yesterday, "--to", today, "--out", str(tmp_path), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "1/2 covered" in done.stdout and "0/2 covered" in done.stdout
    assert f"no plan recorded for {yesterday}:" in done.stdout
    assert "the plan as it stands (a list of 2 hot spots)" in done.stdout
    stem = tmp_path / f"dosage-{yesterday}-{today}"

    with stem.with_suffix(".csv").open(newline="") as handle:
        rows = {(r["date"], r["cell"]): r for r in csv.DictReader(handle)}
    assert set(rows) == {(d, c) for d in (yesterday, today) for c in (A, B)}
    a, b = rows[today, A], rows[today, B]
    assert float(a["delivered_minutes"]) == 16.0 and float(b["delivered_minutes"]) == 0.0
    assert float(a["planned_minutes"]) == 15.0 and float(b["planned_minutes"]) == 15.0
    assert (a["visits"], a["koper_visits"], a["compliant"]) == ("1", "1", "true")
    assert (b["visits"], b["koper_visits"], b["compliant"]) == ("0", "0", "false")
    assert a["unit_minutes"] == "P-101=16.00" and b["unit_minutes"] == ""
    assert a["plan_recorded"] == "true"  # setting the plan fixed today's cells
    for cell in (A, B):
        old = rows[yesterday, cell]
        assert old["plan_recorded"] == "false"
        assert float(old["delivered_minutes"]) == 0.0 and old["compliant"] == "false"

    png = stem.with_suffix(".png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 500

    # --json: the summary instead of the table
    done = hotspots(
        "dosage-report", "--from", today, "--to", today, "--out", str(tmp_path), "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["from"], report["to"], report["timezone"]) == (today, today, zone)
    [day] = report["days"]
    assert day["date"] == today and day["plan_recorded"] is True
    assert (day["planned"], day["covered"], day["covered_share"]) == (2, 1, 0.5)
    assert (day["planned_minutes"], day["delivered_minutes"]) == (30.0, 16.0)
    assert day["minutes_share"] == pytest.approx(16.0 / 30.0)
    cells = {c["cell"]: c for c in day["cells"]}
    assert cells[A]["delivered_minutes"] == 16.0 and cells[A]["unit_minutes"] == {"P-101": 16.0}
    assert cells[A]["compliant"] is True and cells[B]["compliant"] is False
    assert report["totals"]["covered"] == 1 and report["totals"]["planned"] == 2
    assert report["files"]["csv"] == str(tmp_path / f"dosage-{today}-{today}.csv")
    assert Path(report["files"]["png"]).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--from", "2025-02-30", "--to", "2025-03-01"], "--from: not a date"),
        (["--from", "2025-03-01", "--to", "tomorrow"], "--to: not a date"),
        (["--from", "2025-03-02", "--to", "2025-03-01"], "--from 2025-03-02 is after --to"),
    ],
)
def test_bad_dates_exit_2_naming_the_flag(
    flags: list[str], needle: str, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    env = env_for(namespace, redis_url, "UTC")
    done = hotspots("dosage-report", *flags, "--out", str(tmp_path), env=env)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
