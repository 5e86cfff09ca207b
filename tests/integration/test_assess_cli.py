"""``hotspots assess`` and ``hotspots feedback-check`` as processes, on the
bundled sample."""

from __future__ import annotations

import csv
import gzip
import os
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamer.core.cells import cell_hex, cells_of_many
from tests import oracle
from tests.cli_support import hotspots


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}


def _top_cells_jan_mar(k: int) -> list[str]:
    lat: list[float] = []
    lon: list[float] = []
    with gzip.open(oracle.SAMPLE, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["t_local"] < "2025-04-01" and row["lat"] and row["lon"]:
                lat.append(float(row["lat"]))
                lon.append(float(row["lon"]))
    cells = cells_of_many(np.array(lat), np.array(lon), [9])[:, 0]
    return [cell_hex(c) for c, _ in Counter(cells.tolist()).most_common(k)]


def test_assess_on_the_sample(tmp_path: Path) -> None:
    targets = _top_cells_jan_mar(5)
    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("\n".join(targets) + "\n")
    png = tmp_path / "areas.png"
    done = hotspots(
        "assess",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--targets",
        str(targets_file),
        "--before",
        "2025-01-01..2025-03-31",
        "--after",
        "2025-04-01..2025-06-30",
        "--png",
        str(png),
        "--json",
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    # what became of the file's rows: every one read, accounted for
    rows = report["rows"]
    assert (
        rows["read"]
        == rows["accepted"]
        + sum(rows["rejected"].values())
        + rows["superseded"]
        + rows["cancelled"]
    )
    assert rows["read"] > 100_000 and rows["warnings"] == []
    assert report["before_days"] == pytest.approx(90 - 1 / 24)  # DST on 9 March
    assert report["after_days"] == pytest.approx(91)
    assert sorted(report["cells"]["target"]) == sorted(targets)
    areas = report["areas"]
    assert areas["target"]["cells"] == 5
    # at most 18 buffer cells per target, fewer where their rings overlap
    assert 18 <= areas["buffer"]["cells"] <= 5 * 18
    assert areas["control"]["cells"] > areas["buffer"]["cells"]
    sets = [set(report["cells"][n]) for n in ("target", "buffer", "control")]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    # the busiest cells of the quarter: over a hundred events each
    assert areas["target"]["before"] >= 5 * 100
    for area in areas.values():
        assert area["before"] > 0 and area["after"] > 0
        assert area["harm_before"] >= area["before"]  # every counting event weighs >= 1
    r, d, c = (areas[n] for n in ("target", "buffer", "control"))
    counts = report["counts"]
    ratio = c["after"] / c["before"]
    assert counts["net_effect_target"] == pytest.approx(r["before"] * ratio - r["after"])
    assert counts["net_effect_buffer"] == pytest.approx(d["before"] * ratio - d["after"])
    assert counts["total_net_effect"] == pytest.approx(
        counts["net_effect_target"] + counts["net_effect_buffer"]
    )
    expected_wdq = (d["after"] / c["after"] - d["before"] / c["before"]) / (
        r["after"] / c["after"] - r["before"] / c["before"]
    )
    assert counts["wdq"] == pytest.approx(expected_wdq)
    assert counts["wdq_reading"]
    assert counts["gross_change"] == r["after"] - r["before"]
    assert any("periods differ in length" in n for n in report["notes"])
    assert any("had counting events in the before period" in n for n in report["notes"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = hotspots(
        "assess",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--targets",
        str(targets_file),
        "--before",
        "2025-01-01..2025-03-31",
        "--after",
        "2025-04-01..2025-06-30",
        env=_env(),
    )
    assert table.returncode == 0, table.stderr
    assert "R target" in table.stdout and "WDQ =" in table.stdout


def test_assess_rejects_bad_flags(tmp_path: Path) -> None:
    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("8a2a134d458ffff\n")
    done = hotspots(
        "assess",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--targets",
        str(targets_file),
        "--before",
        "2025-03-31..2025-01-01",
        "--after",
        "2025-04-01..2025-06-30",
        env=_env(),
    )
    assert done.returncode == 2
    assert "--before" in done.stderr and "Traceback" not in done.stderr


def test_feedback_check_on_the_sample() -> None:
    done = hotspots(
        "feedback-check",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--from",
        "2025-01-01",
        "--to",
        "2025-12-31",
        "--json",
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["rows"]["read"] > 100_000 and report["rows"]["accepted"] > 0
    assert report["parameters"]["resolution"] == 10
    assert report["parameters"]["half_life_s"] == 7 * 86400
    assert report["cells_with_events"] > 5000
    assert report["flagged"] == round(0.01 * report["cells_with_events"])
    assert report["stay_flagged"] + len(report["dropped"]) == report["flagged"]
    assert len(report["added"]) == len(report["dropped"])
    assert report["overlap_pct"] == pytest.approx(100 * report["stay_flagged"] / report["flagged"])
    # the export has no origin column: only enforcement categories (drugs, weapons, ...)
    assert report["proactive_events"] == 0 and report["origin_column"] is False
    assert 0 < report["driven_events"] < report["events"]
    assert 0.0 <= report["driven_share_of_flagged_score"] <= 1.0
    assert 0.0 < report["driven_share_of_all_score"] < 1.0
    assert any("only the enforcement categories matter" in n for n in report["notes"])
    for cell in report["dropped"]:
        assert 0.0 < cell["driven_share"] <= 1.0
