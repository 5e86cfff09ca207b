"""``hotspots evaluate-alerts`` as a process, on the bundled sample."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import orjson

from tests import oracle
from tests.cli_support import hotspots


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}


def test_evaluate_alerts_on_the_sample(tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "eval.json", tmp_path / "eval.csv"
    done = hotspots(
        "evaluate-alerts",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--warmup-from",
        "2025-01-01",
        "--from",
        "2025-03-01",
        "--to",
        "2025-03-31",
        "--sizes",
        "3,8",
        "--clusters",
        "6",
        "--seed",
        "7",
        "--jobs",
        "2",
        "--json",
        str(out_json),
        "--csv",
        str(out_csv),
        "--quiet",
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(out_json.read_bytes())
    assert report["rows"]["read"] > 100_000 and report["rows"]["accepted"] > 0
    assert f"{report['rows']['read']:,} rows read: " in done.stdout
    assert f"naive c={report['false_alerts_per_day']['naive_threshold']}" in done.stdout
    assert "seed 7;" in done.stdout
    params = report["parameters"]
    assert params["sizes"] == [3, 8] and params["clusters"] == 6 and params["seed"] == 7
    assert params["tick_s"] == 300.0 and params["radius_m"] == 250.0 and params["hours"] == 6.0
    assert params["days"] == 31.0 - 1 / 24  # local days: clocks went forward on 9 March
    assert params["warmup_events"] > 15_000 and params["background_events"] > 7_000
    false = report["false_alerts_per_day"]
    assert false["engine"] >= 0 and false["naive"] >= 0
    assert 2 <= false["naive_threshold"] <= 30
    assert false["naive"] == false["naive_by_threshold"][str(false["naive_threshold"])]
    rates = [false["naive_by_threshold"][str(c)] for c in range(2, 31)]
    assert rates == sorted(rates, reverse=True)  # a higher threshold never opens more

    assert [s["k"] for s in report["sizes"]] == [3, 8]
    for size in report["sizes"]:
        for method in ("engine", "naive"):
            o = size[method]
            assert o["clusters"] == 6 and 0 <= o["detected"] <= 6
            assert 0.0 <= o["detection_rate"] <= 1.0
            assert o["detection_rate"] == o["detected"] / 6
            assert 0.0 <= o["chance_detection_rate"] <= 1.0
            if o["detected"]:
                assert o["median_delay_min"] >= 0
                assert 0 <= o["median_delay_events"] <= size["k"]
            else:
                assert o["median_delay_min"] is None and o["median_delay_events"] is None
    # eight events within 250 m in six hours stand out in a month of Philadelphia
    assert report["sizes"][1]["engine"]["detected"] >= 1

    with out_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["k"], r["method"]) for r in rows] == [
        ("3", "engine"),
        ("3", "naive"),
        ("8", "engine"),
        ("8", "naive"),
    ]
    assert rows[1]["threshold"] == str(false["naive_threshold"])


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    done = hotspots(
        "evaluate-alerts",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--sizes",
        "3,x",
        env=_env(),
    )
    assert done.returncode == 2 and "--sizes" in done.stderr
    done = hotspots("evaluate-alerts", str(tmp_path / "missing.csv"), env=_env())
    assert done.returncode == 2 and "no such file" in done.stderr
