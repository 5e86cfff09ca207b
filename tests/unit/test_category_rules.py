"""The suggestion rules of ``hotspots categories``
(streamer/config/category_rules.toml): keyword and code matching, and
weights on the bundled table's scale."""

from __future__ import annotations

import statistics
import tomllib
from pathlib import Path

import pytest

from streamer.analysis.categories import (
    REFERENCE_PATH,
    code_scheme,
    load_rules,
    suggest,
    word_pattern,
)

RULES = load_rules()
BUNDLED = tomllib.loads(REFERENCE_PATH.read_text())["categories"]


def _median(*names: str) -> float:
    return statistics.median(BUNDLED[n]["weight"] for n in names)


@pytest.mark.parametrize(
    ("value", "word", "family", "weight"),
    [
        ("BURGLARY - RESIDENTIAL", "burglary", "burglary", None),
        ("Break and Enter Commercial", "break and enter", "burglary", None),
        ("break-and-enter/residential", "break and enter", "burglary", None),
        ("Theft from Vehicle", "theft from vehicle", "vehicle", 5.0),
        ("Vehicle Theft", "vehicle theft", "vehicle", 28.0),
        ("Theft of Vehicle", "theft of vehicle", "vehicle", 28.0),
        ("Theft of Bicycle", "theft", "property", 2.0),
        ("Identity Theft", "identity theft", "fraud", None),
        ("Sexual Assault", "sexual", "sexual", 182.0),
        ("Simple Assault", "assault", "violence", 10.0),
        ("Murder 1st degree", "murder", "violence", 5475.0),
        ("NARCOTICS", "narcotics", "drugs", 3.0),
        ("Firearm discharge", "firearm", "weapons", 274.0),
        ("Noise Disturbance", "disturbance", "disorder", 7.5),
        ("Traffic - Collision", "traffic", "other", 7.5),
    ],
)
def test_keywords_whole_words_any_case_specific_first(
    value: str, word: str, family: str, weight: float | None
) -> None:
    found = suggest(value, [], None, RULES)
    assert found is not None
    assert (found.rule, found.matched, found.outcome.family) == ("keyword", word, family)
    if weight is not None:
        assert found.outcome.weight == weight
    assert found.reason == f"keyword {word!r}"


@pytest.mark.parametrize(
    "value", ["Burglarious entry", "Theftuous", "Assaultive", "Lost property", "", "ROB"]
)
def test_no_keyword_inside_a_word(value: str) -> None:
    assert suggest(value, [], None, RULES) is None


def test_weights_are_medians_of_the_bundled_rows_of_the_kind() -> None:
    burglary = suggest("Burglary", [], None, RULES)
    robbery = suggest("Robbery", [], None, RULES)
    assert burglary is not None and robbery is not None
    assert burglary.outcome.weight == _median("Burglary Residential", "Burglary Non-Residential")
    assert burglary.outcome.weight == 229.0
    assert robbery.outcome.weight == _median("Robbery Firearm", "Robbery No Firearm")


def test_flags_follow_the_rows_unless_the_rule_sets_them() -> None:
    drugs = suggest("Drug possession", [], None, RULES)
    collision = suggest("Vehicle collision", [], None, RULES)
    dui = suggest("DUI", [], None, RULES)
    assert drugs is not None and collision is not None and dui is not None
    assert drugs.outcome.enforcement  # as Philadelphia's drug row
    assert dui.outcome.enforcement
    assert not collision.outcome.enforcement  # the rule says so
    justified = suggest("X", ["09C"], "nibrs", RULES)
    assert justified is not None and not justified.outcome.include


def test_bundled_values_get_their_own_family() -> None:
    # Philadelphia's own labels through the keyword rules: the bundled family,
    # or no suggestion for the "other" rows no keyword describes
    for name, row in BUNDLED.items():
        found = suggest(name, [], None, RULES)
        if found is None:
            assert row["family"] == "other", name
        else:
            assert found.outcome.family == row["family"], name


@pytest.mark.parametrize(
    ("codes", "scheme", "family", "like"),
    [
        (["500"], "ucr", "burglary", ("Burglary Residential", "Burglary Non-Residential")),
        (["200"], "ucr", "sexual", ("Rape",)),
        (["200"], "nibrs", "property", ("Arson",)),
        (["100"], "ucr", "violence", ("Homicide - Criminal",)),
        (["09a"], "nibrs", "violence", ("Homicide - Criminal",)),
        (["23F"], "nibrs", "vehicle", ("Theft from Vehicle",)),
        (["23C"], "nibrs", "property", ("Thefts",)),
        (
            ["13A"],
            "nibrs",
            "violence",
            ("Aggravated Assault Firearm", "Aggravated Assault No Firearm"),
        ),
        (["13B"], "nibrs", "violence", ("Other Assaults",)),
        (["35A"], "nibrs", "drugs", ("Narcotic / Drug Law Violations",)),
        (["520"], "nibrs", "weapons", ("Weapon Violations",)),
        ([" 2400 "], "ucr", "disorder", ("Disorderly Conduct",)),
    ],
)
def test_codes_by_scheme(codes: list[str], scheme: str, family: str, like: tuple[str, ...]) -> None:
    found = suggest("Unlabelled", codes, scheme, RULES)
    assert found is not None
    assert (found.rule, found.scheme, found.outcome.family) == ("code", scheme, family)
    assert found.outcome.weight == _median(*like)


def test_the_most_frequent_code_wins_over_a_keyword() -> None:
    found = suggest("Burglary", ["", "23C", "220"], "nibrs", RULES)
    assert found is not None
    assert (found.rule, found.matched, found.outcome.family) == ("code", "23C", "property")
    assert found.reason == "NIBRS code '23C'"
    # a rare code does not decide: the value's words do
    unknown_code = suggest("Burglary", ["999", "23C"], "nibrs", RULES)
    assert unknown_code is not None and unknown_code.rule == "keyword"
    no_scheme = suggest("Burglary", ["23C"], None, RULES)
    assert no_scheme is not None and no_scheme.rule == "keyword"


def test_code_scheme() -> None:
    assert code_scheme(["100", "600", "2600"]) == "ucr"
    assert code_scheme(["13A", "120", "220", "90Z"]) == "nibrs"
    # no letter: numbers of three digits are not told from a force's own
    assert code_scheme(["120", "220"]) is None
    assert code_scheme(["23F", "1400"]) is None  # mixed
    assert code_scheme(["63", "245", "40"]) is None  # a force's own clearance codes
    assert code_scheme([]) is None


def test_phrases_join_on_spaces_hyphens_slashes() -> None:
    pattern = word_pattern("hit and run")
    assert pattern.search("HIT-AND-RUN")
    assert pattern.search("Hit / and run")
    assert not pattern.search("hit andrun")


def test_a_rule_naming_no_bundled_row_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[keyword]]\nwords = ["x"]\nfamily = "other"\nlike = ["No Such Row"]\n')
    with pytest.raises(ValueError, match="No Such Row"):
        load_rules(rules)
    rules.write_text('[[code]]\nscheme = "icd"\ncodes = ["1"]\nlike = ["Thefts"]\n')
    with pytest.raises(ValueError, match="scheme 'icd'"):
        load_rules(rules)
