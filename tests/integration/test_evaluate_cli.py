"""``hotspots evaluate`` as a process, on the bundled sample."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import orjson

from streamer.settings import load_settings
from tests import oracle
from tests.cli_support import hotspots

COVERAGES = [0.01, 0.02, 0.05, 0.1]
# the sample's force: its study area is the union of its police districts
FORCE = ("--config", str(oracle.ROOT / "streamer" / "config" / "forces" / "philadelphia.toml"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}


def _check_methods(methods: list[dict[str, object]]) -> None:
    for method in methods:
        rows = method["coverages"]
        assert isinstance(rows, list)
        assert [r["coverage"] for r in rows] == COVERAGES
        cells = [r["cells"] for r in rows]
        assert cells == sorted(cells) and cells[0] >= 1
        for r in rows:
            assert 0 <= r["hit_rate"] <= 1
            assert 0 <= r["pei"] <= 1 + 1e-9
            assert r["pai"] >= 0
        hits = [r["hit_rate"] for r in rows]
        assert hits == sorted(hits)  # more cells flagged never catch fewer events


def test_evaluate_on_the_sample(tmp_path: Path) -> None:
    out_csv, out_png = tmp_path / "acc.csv", tmp_path / "acc.png"
    done = hotspots(
        *FORCE,
        "evaluate",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--from",
        "2025-03-01",
        "--to",
        "2025-03-31",
        "--json",
        "--csv",
        str(out_csv),
        "--png",
        str(out_png),
        "--quiet",
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    names = [m["method"] for m in report["methods"]]
    assert names == [
        "engine day (1d)",
        "engine week (7d)",
        "engine month (28d)",
        "engine year (365d)",
        "count last 28d",
        "count last 365d",
        "previous day",
    ]
    assert report["best_engine"] in names[:4]
    assert report["study_cells"] > 1000  # Philadelphia at resolution 9: about 3,500
    # 31 days, one of which the sample does not hold
    assert report["periods"] + report["periods_skipped"] == 31
    assert report["periods"] >= 28
    assert report["parameters"]["history_from"].startswith("2025-01-01")
    _check_methods(report["methods"])
    # every ranking beats flagging cells at random by a wide margin at 1%
    for method in report["methods"]:
        assert method["coverages"][0]["pai"] > 1.5

    with out_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(names) * len(COVERAGES) * report["periods"]
    first = rows[0]
    assert int(first["captured"]) <= int(first["best"]) <= int(first["events"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_grid_on_the_sample_reports_the_unseen_span(tmp_path: Path) -> None:
    out_json = tmp_path / "grid.json"
    done = hotspots(
        *FORCE,
        "evaluate",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--from",
        "2025-03-01",
        "--to",
        "2025-03-31",
        "--period",
        "shift",
        "--grid",
        "--train-to",
        "2025-03-21",
        "--json",
        str(out_json),
        "--quiet",
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "Test span 2025-03-21" in done.stdout
    report = orjson.loads(out_json.read_bytes())
    grid = report["grid"]
    assert grid["configurations"] == 204
    chosen = grid["chosen"]
    assert chosen["name"] == grid["top_train"][0]["name"]
    assert chosen["train_pai"] == max(c["train_pai"] for c in grid["top_train"])
    assert grid["test"][0]["method"] == chosen["name"]
    _check_methods(grid["test"])
    assert report["train_periods"] + report["test_periods"] == report["periods"]
    # the chosen configuration, as an engine config that loads (unless smoothed)
    if chosen["smoothing"] > 0:
        assert chosen["engine_config"] is None
    else:
        own = tmp_path / "own.toml"
        own.write_text(chosen["engine_config"])
        engine = load_settings(own, environ={})
        assert engine.weights.harm is (chosen["weights"] == "harm")
        assert engine.store.namespace == "tuned" and engine.kafka.group == "tuned"
    # the best blend the live engine can serve, as a config section it accepts
    publishable = grid["publishable"]
    assert publishable["name"].endswith(" s=0 harm") and "+" in publishable["name"]
    assert "To publish it, add to the config:\n[blends.tuned]\n" in done.stdout
    config = tmp_path / "blend.toml"
    config.write_text(publishable["config"])
    blend = load_settings(config, environ={}).blends["tuned"]
    horizons = load_settings(environ={}).horizons
    assert publishable["name"].startswith(f"{blend.long_share:g}*")
    assert horizons[blend.long] > horizons[blend.short]


def test_evaluate_rejects_bad_dates() -> None:
    done = hotspots(
        *FORCE,
        "evaluate",
        str(oracle.SAMPLE),
        "--profile",
        "philadelphia",
        "--from",
        "2025-03-31",
        "--to",
        "2025-03-01",
        env=_env(),
    )
    assert done.returncode == 2
    assert "--from" in done.stderr


def test_evaluate_without_a_study_area_names_the_key(tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text('[grid]\ntimezone = "America/New_York"\n')
    days = ("--profile", "philadelphia", "--from", "2025-03-01", "--to", "2025-03-07")
    done = hotspots("--config", str(bare), "evaluate", str(oracle.SAMPLE), *days, env=_env())
    assert done.returncode == 2, done.stderr
    assert "no study area" in done.stderr and "events.boundary" in done.stderr
    assert '"auto"' in done.stderr


def test_an_auto_study_area_is_derived_from_the_points_and_said_so(tmp_path: Path) -> None:
    auto = tmp_path / "auto.toml"
    auto.write_text('[events]\nboundary = "auto"\n')
    days = ("--profile", "philadelphia", "--from", "2025-03-01", "--to", "2025-03-07")
    common = ("evaluate", str(oracle.SAMPLE), *days, "--resolution", "9", "--quiet")
    derived = hotspots("--config", str(auto), *common, "--json", env=_env())
    assert derived.returncode == 0, derived.stderr
    report = orjson.loads(derived.stdout)
    note = report["parameters"]["study_area_note"]
    assert report["parameters"]["boundary"] == "auto" and "derived" in note and "km²" in note
    outlined = orjson.loads(hotspots(*FORCE, *common, "--json", env=_env()).stdout)
    assert outlined["parameters"]["study_area_note"] is None
    # the hull of the points holds every event (the outline leaves out the few
    # whose cell's centre falls outside the districts) and is of the city's size
    assert outlined["events"] <= report["events"] <= 1.01 * outlined["events"]
    assert 0.5 * outlined["study_cells"] < report["study_cells"] < 1.5 * outlined["study_cells"]
    table = hotspots("--config", str(auto), *common, env=_env())
    assert "warning: study area derived from the file's points" in table.stdout


def test_a_file_that_loses_rows_says_how_many_why_and_in_which_column(tmp_path: Path) -> None:
    # March of the sample, three ids in four emptied (an older schema's rows)
    # and every tenth category one the harm table does not list
    with gzip.open(oracle.SAMPLE, "rt", newline="") as src:
        reader = csv.DictReader(src)
        march = [r for r in reader if r["t_local"].startswith("2025-03")]
    for i, row in enumerate(march):
        if i % 4:
            row["dc_key"] = ""
        elif i % 40 == 0:
            row["text_general_code"] = "Loitering After Curfew"
    lossy = tmp_path / "lossy.csv"
    with lossy.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(march[0]))
        writer.writeheader()
        writer.writerows(march)
    emptied = sum(1 for r in march if not r["dc_key"])
    days = ("--profile", "philadelphia", "--from", "2025-03-01", "--to", "2025-03-31", "--quiet")
    done = hotspots(*FORCE, "evaluate", str(lossy), *days, env=_env())
    assert done.returncode == 0, done.stderr
    share = 100 * emptied / len(march)
    expected = f"{emptied:,} rows ({share:.1f} %) have an empty or unusable id in column 'dc_key'"
    assert f"{len(march):,} rows read: " in done.stdout
    assert f"warning: {expected}" in done.stdout
    assert "have a category the harm table does not list" in done.stdout
    report = orjson.loads(
        hotspots(*FORCE, "evaluate", str(lossy), *days, "--json", env=_env()).stdout
    )
    assert report["rows"]["rejected"] == {"bad_id": emptied}
    rows = report["rows"]
    assert rows["read"] == len(march) and expected in rows["warnings"]
    assert rows["accepted"] + emptied + rows["superseded"] + rows["cancelled"] == len(march)
    unknown = sum(
        1 for r in march if r["dc_key"] and r["text_general_code"] == "Loitering After Curfew"
    )
    assert report["rows"]["on_default_weight"] == unknown > 0
