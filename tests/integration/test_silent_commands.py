"""Commands that used to print nothing: ``hotspots top`` with nothing to
list says why and what to do; ``hotspots top --live`` whose output is not a
terminal prints plain lines while it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from tests.cli_support import ROOT, hotspots

H3_CELL = re.compile(r"\b8[0-9a-f]{14}\b")
CITY_HALL = (39.9524, -75.1636)
FIRST_LINE_TIMEOUT_S = 30.0


def _env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOTSPOTS_STORE__NAMESPACE": namespace,
        "HOTSPOTS_STORE__REDIS_URL": f'"{redis_url}"',
        **extra,
    }


@pytest.fixture
def old_events(tmp_path: Path, redis_url: str, namespace: str) -> str:
    """Five robberies at City Hall in May 2016 backfilled into ``namespace``;
    returns the newest one's time."""
    path = tmp_path / "events.jsonl"
    times = [f"2016-05-0{day}T22:00:00Z" for day in range(1, 6)]
    path.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "id": f"old-{i}",
                    "kind": "incident",
                    "occurred_at": at,
                    "lat": CITY_HALL[0] + i * 1e-4,
                    "lon": CITY_HALL[1],
                    "category": "Robbery Firearm",
                    "origin": "reported",
                }
            )
            for i, at in enumerate(times)
        )
    )
    done = hotspots("backfill", str(path), "--json", "--quiet", env=_env(redis_url, namespace))
    assert done.returncode == 0, done.stdout + done.stderr
    assert orjson.loads(done.stdout)["accepted"] == 5, done.stdout
    return times[-1]


def test_top_on_an_empty_namespace_says_it_holds_no_events(redis_url: str, namespace: str) -> None:
    for json_flag in ([], ["--json"]):
        done = hotspots("top", *json_flag, env=_env(redis_url, namespace))
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stdout == ("[]\n" if json_flag else ""), done.stdout
        assert "nothing to list" in done.stderr and repr(namespace) in done.stderr, done.stderr
        assert "holds no events" in done.stderr and "hotspots backfill" in done.stderr


def test_top_on_decayed_scores_says_so_and_names_the_event_clock(
    redis_url: str, namespace: str, old_events: str
) -> None:
    wall = hotspots("top", env=_env(redis_url, namespace))  # week ranking, the wall clock
    assert wall.returncode == 1, wall.stdout + wall.stderr
    assert wall.stdout == ""
    message = wall.stderr
    assert "has decayed below store.prune_below" in message, message
    assert "the newest event is of 2016-05-05T22:00:00+00:00" in message, message
    assert 'time.clock = "event"' in message and "HOTSPOTS_TIME__CLOCK=event" in message, message

    event = hotspots("top", env=_env(redis_url, namespace, HOTSPOTS_TIME__CLOCK='"event"'))
    assert event.returncode == 0, event.stderr
    assert len(H3_CELL.findall(event.stdout)) >= 1, event.stdout

    late = hotspots("top", "--at", "2030-01-01T00:00:00Z", env=_env(redis_url, namespace))
    assert late.returncode == 1
    assert "Choose an --at nearer the data" in late.stderr, late.stderr


def test_live_top_prints_plain_lines_while_it_runs_when_not_a_terminal(
    redis_url: str, namespace: str, old_events: str
) -> None:
    env = _env(redis_url, namespace, HOTSPOTS_TIME__CLOCK='"event"')
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    live = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "top", "--live"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(live.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(FIRST_LINE_TIMEOUT_S)
        assert first and first[0], "no line while running"  # before: nothing until it stopped
        line = first[0]
        assert line.startswith("seq ") and "data time 2016-05-05" in line, line
        assert "day #1 " in line and H3_CELL.search(line), line
    finally:
        live.send_signal(signal.SIGTERM)
        rest, errors = live.communicate(timeout=30)
    assert live.returncode == 0, errors
    assert "\x1b[" not in line + rest  # no terminal control codes in a pipe
    assert "cells, day, resolution 10:" in rest and "cells, week, resolution 10:" in rest, rest
