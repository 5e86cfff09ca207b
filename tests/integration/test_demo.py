"""``hotspots demo`` end to end: broker, backfill, worker, replay through Kafka,
rankings out, and nothing left behind when it stops by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import redis

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 40
H3_CELL = re.compile(r"\b8[0-9a-f]{14}\b")
SUMMARY = re.compile(
    r"summary: replayed (\d+) events through Kafka; store seq (\d+); "
    r"Kafka records applied (\d+)"
)
DECEMBER = datetime(2025, 12, 1, tzinfo=ZoneInfo("America/New_York")).timestamp()


def _alive(pid: int) -> bool:
    """True if ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _matching(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def test_demo_replays_through_kafka_and_cleans_up(redis_url: str, namespace: str) -> None:
    env = dict(os.environ)
    env["HOTSPOTS_STORE__REDIS_URL"] = f'"{redis_url}"'
    command = [
        sys.executable,
        "-m",
        "streamer.cli",
        "demo",
        "--duration",
        str(DURATION_S),
        "--no-live",
        "--speed",
        "20000",
        "--namespace",
        namespace,
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DURATION_S + 60
    )
    elapsed = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert elapsed < DURATION_S + 20, f"the demo took {elapsed:.0f} s\n{out[-3000:]}"

    # Rankings were shown: plenty of distinct H3 cells (resolution 10 ids start 8a).
    assert len(set(H3_CELL.findall(out))) >= 10, out[-3000:]
    assert "top 10 cells, day, resolution 10:" in out, out[-3000:]

    # Events flowed through Kafka into the store.
    summary = SUMMARY.search(out)
    assert summary is not None, out[-3000:]
    replayed, seq, applied = (int(x) for x in summary.groups())
    assert replayed > 100, summary.group(0)
    assert 0 < applied <= replayed, summary.group(0)
    backfilled = re.search(r"backfilled .* store seq (\d+)", out)
    assert backfilled is not None, out[-3000:]
    assert seq > int(backfilled.group(1)), summary.group(0)
    if f"redis: using {redis_url}" in out:  # (not the embedded fallback)
        client = redis.Redis.from_url(redis_url)
        try:
            offsets = client.hvals("{" + namespace + "}:offsets")
            watermark = client.hget("{" + namespace + "}:meta", "watermark")
        finally:
            client.close()
        assert sum(int(v) + 1 for v in offsets) == applied
        assert watermark is not None and float(watermark) >= DECEMBER  # a replayed event

    # Nothing left behind: processes, temporary files.
    pids = re.search(r"pids: broker=(\d+) worker=(\d+) valkey=(\S+)", out)
    assert pids is not None, out[-3000:]
    started_pids = [int(p) for p in pids.groups() if p.isdigit()]
    assert not [p for p in started_pids if _alive(p)], out[-3000:]
    bootstrap = re.search(r"broker \(tansu\) pid \d+ at (\S+)", out)
    web_port = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", out)
    assert bootstrap is not None and web_port is not None
    assert _matching(f"tansu.*{re.escape(bootstrap.group(1))}") == []
    assert _matching(f"streamer.cli run --web-port {web_port.group(1)}") == []
    # The wall display was served, and its server stopped too.
    display = re.search(r"wall display: http://127\.0\.0\.1:(\d+)/\?token=\S+", out)
    assert display is not None, out[-3000:]
    assert re.search(r"API server pid \d+ stopped \(exit code", out), out[-3000:]
    assert _matching(f"streamer.cli serve --host 127.0.0.1 --port {display.group(1)}") == []
    tmp = re.search(r"temporary files in (\S+)", out)
    assert tmp is not None and not Path(tmp.group(1)).exists()
