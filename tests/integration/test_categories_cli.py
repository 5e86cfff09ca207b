"""``hotspots categories`` as a process: the bundled sample (every value in
the harm table) and a small export of a force the table does not know."""

from __future__ import annotations

import csv
import gzip
import os
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamer import app
from streamer.settings import load_settings
from tests import oracle
from tests.cli_support import hotspots

HEADER = ["case_id", "reported", "lat", "lon", "offence", "nibrs"]
# (offence, NIBRS code, rows); one case id is repeated below
ROWS = [
    ("BURGLARY - RESIDENTIAL", "220", 3),
    ("Theft of Bicycle", "23C", 4),
    ("Thefts", "23C", 2),  # a value of the bundled table
    ("Mystery Report", "13A", 1),  # no keyword; its code says aggravated assault
    ("Lost Property", "", 2),  # no keyword, no code
    ("", "", 1),  # no category
    ("default", "", 1),  # the name of the table's fall-back row
]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}


def _export(tmp_path: Path, *, code_column: bool = False) -> tuple[Path, Path]:
    """A small CSV export and a source profile for it."""
    path = tmp_path / "force.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        n = 0
        for offence, code, times in ROWS:
            for _ in range(times):
                n += 1
                out.writerow([f"C{n}", "2024-05-01T10:00:00", "47.6", "-122.3", offence, code])
        out.writerow([f"C{n}", "2024-05-01T11:00:00", "47.6", "-122.3", "Lost Property", ""])
    profile = tmp_path / "force.toml"
    profile.write_text(
        'format = "csv"\nid = "case_id"\noccurred_at = "reported"\n'
        'timezone = "America/Los_Angeles"\nlat = "lat"\nlon = "lon"\ncategory = "offence"\n'
        + ('category_code = "nibrs"\n' if code_column else "")
    )
    return path, profile


def _run(*args: str) -> dict[str, object]:
    done = hotspots("categories", *args, "--json", env=_env())
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = orjson.loads(done.stdout)
    return report


def _by_value(report: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = report["categories"]
    assert isinstance(rows, list)
    return {r["value"]: r for r in rows}


def test_every_value_of_the_sample_is_in_the_table() -> None:
    report = _run(str(oracle.SAMPLE), "--profile", "philadelphia")
    with gzip.open(oracle.SAMPLE, "rt", newline="") as handle:
        expected = Counter(row["text_general_code"] for row in csv.DictReader(handle))
    rows = report["categories"]
    assert isinstance(rows, list)
    assert {r["value"]: r["count"] for r in rows} == dict(expected)
    counts = [r["count"] for r in rows]
    assert counts == sorted(counts, reverse=True)
    assert report["rows"] == sum(expected.values())
    assert {r["rule"] for r in rows} == {"exact"}
    assert all(r["suggestion"] is None for r in rows)
    table = tomllib.loads((oracle.ROOT / "streamer" / "config" / "categories.toml").read_text())[
        "categories"
    ]
    for r in rows:
        assert (r["weight"], r["family"]) == (
            table[r["value"]]["weight"],
            table[r["value"]]["family"],
        )
    assert report["summary"] == {
        "exact": {"values": len(expected), "events": sum(expected.values())},
        "code": {"values": 0, "events": 0},
        "keyword": {"values": 0, "events": 0},
        "default": {"values": 0, "events": 0},
    }


def test_a_new_force_counts_rules_and_suggestions(tmp_path: Path) -> None:
    path, profile = _export(tmp_path)
    report = _run(str(path), "--profile", str(profile))
    rows = _by_value(report)
    assert list(rows) == [
        "Theft of Bicycle",
        "BURGLARY - RESIDENTIAL",
        "Lost Property",
        "Thefts",
        "Mystery Report",
        "default",
    ]
    assert {v: r["count"] for v, r in rows.items()} == {
        "Theft of Bicycle": 4,
        "BURGLARY - RESIDENTIAL": 3,
        "Lost Property": 3,  # rows: the repeated case id counts twice
        "Thefts": 2,
        "Mystery Report": 1,
        "default": 1,
    }
    assert report["rows"] == 15 and report["rows_without_category"] == 1
    assert {v: r["rule"] for v, r in rows.items()} == {
        "Theft of Bicycle": "keyword",
        "BURGLARY - RESIDENTIAL": "keyword",
        "Lost Property": "default",
        "Thefts": "exact",
        "Mystery Report": "default",  # without a code column only its label counts
        "default": "default",
    }
    # now: the default weight for every value the table does not name
    assert {v: r["weight"] for v, r in rows.items()} == {
        "Theft of Bicycle": 1.0,
        "BURGLARY - RESIDENTIAL": 1.0,
        "Lost Property": 1.0,
        "Thefts": 2.0,
        "Mystery Report": 1.0,
        "default": 1.0,
    }
    burglary = rows["BURGLARY - RESIDENTIAL"]["suggestion"]
    assert isinstance(burglary, dict)
    assert burglary["reason"] == "keyword 'burglary'"
    assert (burglary["family"], burglary["weight"]) == ("burglary", 229.0)  # median of 274, 184
    assert rows["Lost Property"]["suggestion"] is None
    assert rows["Thefts"]["suggestion"] is None
    assert report["summary"] == {
        "exact": {"values": 1, "events": 2},
        "code": {"values": 0, "events": 0},
        "keyword": {"values": 2, "events": 7},
        "default": {"values": 3, "events": 5},
    }


def test_several_files_are_read_as_one(tmp_path: Path) -> None:
    path, profile = _export(tmp_path)
    other = tmp_path / "force-2.csv"
    other.write_text(path.read_text())
    for args in ([str(path), str(other)], [str(tmp_path / "force*.csv")]):
        report = _run(*args, "--profile", str(profile))
        assert {v: r["count"] for v, r in _by_value(report).items()}["Theft of Bicycle"] == 8
        assert report["rows"] == 30
    # a file named twice is read once
    assert _run(str(path), str(path), "--profile", str(profile))["rows"] == 15


def test_a_code_column_suggests_by_code(tmp_path: Path) -> None:
    path, profile = _export(tmp_path, code_column=True)
    report = _run(str(path), "--profile", str(profile))
    rows = _by_value(report)
    assert report["code_column"] == "nibrs" and report["code_scheme"] == "nibrs"
    assert rows["BURGLARY - RESIDENTIAL"]["codes"] == ["220"]
    assert rows["Lost Property"]["codes"] == []
    assert rows["Mystery Report"]["rule"] == "code"
    mystery = rows["Mystery Report"]["suggestion"]
    assert isinstance(mystery, dict)
    assert mystery["reason"] == "NIBRS code '13A'"
    assert (mystery["family"], mystery["weight"]) == ("violence", 1095.0)  # median 1825, 365
    # a code decides before the label: 23C is a larceny, whatever the words say
    bicycle = rows["Theft of Bicycle"]["suggestion"]
    assert isinstance(bicycle, dict)
    assert (bicycle["rule"], bicycle["matched"], bicycle["family"]) == ("code", "23C", "property")
    assert rows["Thefts"]["rule"] == "exact" and rows["Lost Property"]["rule"] == "default"
    assert report["summary"] == {
        "exact": {"values": 1, "events": 2},
        "code": {"values": 3, "events": 8},
        "keyword": {"values": 0, "events": 0},
        "default": {"values": 2, "events": 4},
    }


def test_a_forces_own_codes_get_no_code_rule(tmp_path: Path) -> None:
    path, profile = _export(tmp_path, code_column=True)
    text = path.read_text().replace(",220\n", ",B1\n").replace(",13A\n", ",X9\n")
    path.write_text(text)
    report = _run(str(path), "--profile", str(profile))
    assert report["code_scheme"] is None
    rows = _by_value(report)
    assert rows["BURGLARY - RESIDENTIAL"]["rule"] == "keyword"
    assert rows["Mystery Report"]["rule"] == "default"
    done = hotspots("categories", str(path), "--profile", str(profile), env=_env())
    assert "neither UCR x 100 nor NIBRS" in done.stdout


def test_write_a_starter_table_that_loads(tmp_path: Path) -> None:
    path, profile = _export(tmp_path)
    table = tmp_path / "force-categories.toml"
    report = _run(str(path), "--profile", str(profile), "--write", str(table))
    assert report["written"] == str(table)
    text = table.read_text()
    assert "# suggested (keyword 'burglary'): review" in text
    assert "# suggested (keyword 'theft'): review" in text
    assert text.count("# no rule matched: review") == 2  # Lost Property, Mystery Report
    settings = load_settings(table, environ={})
    weights = app.weight_table(settings)
    assert settings.categories["BURGLARY - RESIDENTIAL"].family == "burglary"
    assert weights.weigh("BURGLARY - RESIDENTIAL", "reported").weight == 229.0
    assert weights.weigh("Theft of Bicycle", "reported").weight == 2.0
    assert weights.weigh("Thefts", "reported").weight == 2.0  # copied
    lost = weights.weigh("Lost Property", "reported")
    assert (lost.weight, lost.family, lost.known) == (1.0, "other", True)
    assert "" not in settings.categories
    # a value named "default" gets no row of its own: it would replace the fall-back
    assert '# the value "default" always gets [categories.default]: review' in text
    assert settings.default_category.weight == 1.0
    # with the table as the config every value is named
    again = _run(str(path), "--profile", str(profile), "--config", str(table))
    rules = {v: r["rule"] for v, r in _by_value(again).items()}
    assert rules.pop("default") == "default"
    assert set(rules.values()) == {"exact"}


def test_write_never_overwrites_without_force(tmp_path: Path) -> None:
    path, profile = _export(tmp_path)
    table = tmp_path / "mine.toml"
    table.write_text("# the analyst's own table\n")
    done = hotspots(
        "categories", str(path), "--profile", str(profile), "--write", str(table), env=_env()
    )
    assert done.returncode == 2
    assert "exists" in done.stderr and "--force" in done.stderr
    assert table.read_text() == "# the analyst's own table\n"
    _run(str(path), "--profile", str(profile), "--write", str(table), "--force")
    assert '[categories."Theft of Bicycle"]' in table.read_text()


def test_the_table_view(tmp_path: Path) -> None:
    path, profile = _export(tmp_path)
    done = hotspots("categories", str(path), "--profile", str(profile), env=_env())
    assert done.returncode == 0, done.stderr
    for text in ("Theft of Bicycle", "keyword 'burglary'", "default", "exact", "review"):
        assert text in done.stdout
    assert "1 rows have no category" in done.stdout


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "no such file"),
        ("pattern matching nothing", "matches no file"),
        ("unknown profile", "--profile"),
        ("column not in the file", "'offence'"),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path: Path, case: str, message: str) -> None:
    path, profile = _export(tmp_path)
    args = [str(path), "--profile", str(profile)]
    if case == "missing file":
        args[0] = str(tmp_path / "nowhere.csv")
    elif case == "pattern matching nothing":
        args[0] = str(tmp_path / "nowhere-*.csv")
    elif case == "unknown profile":
        args[2] = "no-such-force"
    else:
        path.write_text("case_id,reported,lat,lon,type\nC1,2024-05-01,47.6,-122.3,Theft\n")
    done = hotspots("categories", *args, env=_env())
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
