"""The shared data set beside a checkout: skipped where missing, failed under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import in_ci, shared_file


def test_a_missing_file_skips_outside_ci_with_a_reason_naming_its_path(tmp_path: Path) -> None:
    for environ in ({}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}):
        with pytest.raises(pytest.skip.Exception) as skipped:
            shared_file("philadelphia", "x.csv.gz", root=tmp_path, environ=environ)
        assert str(tmp_path / "philadelphia" / "x.csv.gz") in str(skipped.value), environ


def test_a_missing_file_fails_under_ci(tmp_path: Path) -> None:
    for environ in ({"CI": "true"}, {"CI": "1"}, {"CI": "TRUE"}):
        with pytest.raises(pytest.fail.Exception) as failed:
            shared_file("x.csv.gz", root=tmp_path, environ=environ)
        assert str(tmp_path / "x.csv.gz") in str(failed.value), environ
        assert "CI=true" in str(failed.value)


def test_a_present_file_is_returned_in_and_out_of_ci(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("id\n")
    for environ in ({}, {"CI": "true"}):
        assert shared_file("a", "x.csv", root=tmp_path, environ=environ) == tmp_path / "a" / "x.csv"
    with pytest.raises(pytest.skip.Exception):  # a directory is not the file
        shared_file("a", root=tmp_path, environ={})


def test_ci_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    monkeypatch.setenv("CI", "false")
    assert not in_ci()
    monkeypatch.delenv("CI")
    assert not in_ci()
