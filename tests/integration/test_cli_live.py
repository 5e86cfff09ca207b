"""The live commands from the command line: replay and check-config."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from streamer.local.broker import LocalBroker
from tests.cli_support import hotspots
from tests.pipeline_support import dead_letters


async def test_replay_publishes_every_row_keyed_by_id(broker: LocalBroker, namespace: str) -> None:
    topic = f"{namespace}.incidents"
    env = {
        **os.environ,
        "HOTSPOTS_KAFKA__BOOTSTRAP": f'"{broker.bootstrap}"',
        "HOTSPOTS_KAFKA__INCIDENTS_TOPIC": f'"{topic}"',
        "HOTSPOTS_KAFKA__CALLS_TOPIC": f'"{namespace}.calls"',
        "HOTSPOTS_KAFKA__DEAD_LETTER_TOPIC": f'"{namespace}.dlq"',
    }
    done = hotspots(
        "replay",
        "streamer/data/philadelphia_2025.csv.gz",
        "--profile",
        "philadelphia",
        "--max",
        "--limit",
        "500",
        "--quiet",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "sent 500 events in" in done.stdout
    records = await dead_letters(broker.bootstrap, topic, 500)  # reads any topic
    assert len(records) == 500
    good = [orjson.loads(value) for _headers, value in records]
    assert len({e["id"] for e in good if str(e["id"]).isdigit()}) == 500
    assert all(e["occurred_at"].endswith("+00:00") and e["kind"] == "incident" for e in good)


def test_replay_with_a_bad_speed_exits_2(namespace: str) -> None:
    done = hotspots(
        "replay",
        "streamer/data/philadelphia_2025.csv.gz",
        "--profile",
        "philadelphia",
        "--speed",
        "-3",
        env=dict(os.environ),
    )
    assert done.returncode == 2 and "--speed" in done.stderr


def test_check_config_prints_the_merged_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "force.toml"
    cfg.write_text(
        '[horizons]\nshift = "8h"\nweek = "7d"\n[grid]\nprofile_horizon = "week"\n'
        '[store]\nnamespace = "force2"\n'
    )
    done = hotspots("--config", str(cfg), "check-config", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    merged = orjson.loads(done.stdout)
    assert merged["store"]["namespace"] == "force2"
    # a file's [horizons] replaces the default list; other sections merge key by key
    assert merged["horizons"] == {"shift": 8 * 3600, "week": 7 * 86400}
    assert merged["grid"]["resolutions"] == [8, 9, 10]
    assert merged["categories"]["Thefts"]["weight"] > 0


def test_profile_horizon_must_be_a_configured_horizon(tmp_path: Path) -> None:
    cfg = tmp_path / "force.toml"
    cfg.write_text('[horizons]\nshift = "8h"\n')
    done = hotspots("--config", str(cfg), "check-config", env=dict(os.environ))
    assert done.returncode == 2
    assert "grid.profile_horizon" in done.stderr and "shift" in done.stderr
