"""One rule for time-of-week windows: the command line and the API accept
the same windows, give the same hours, and refuse the same ones."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from streamer import cli
from streamer.api import params
from streamer.core.weekhours import WindowError, window_hours
from streamer.usage import UsageError

WINDOWS = [
    ("fri", "22:00", "02:00"),
    ("sun", "23:00", "01:00"),
    ("mon", "00:00", "00:00"),
    ("wed", "09:00", "17:00"),
    ("fri", "22:30", "02:00"),
    ("fri", "22:00", "24:00"),
    ("fri", "7:00", "09:00"),
    ("fry", "22:00", "02:00"),
    ("fri", "22", "02:00"),
]


def cli_hours(day: str, start: str, end: str) -> list[int] | None:
    try:
        return cli.window_hours(day, start, end)
    except UsageError:
        return None


def api_hours(day: str, start: str, end: str) -> list[int] | None:
    try:
        return params.window_hours(day, start, end)
    except RequestValidationError:
        return None


@pytest.mark.parametrize("day, start, end", WINDOWS)
def test_the_command_line_and_the_api_agree(day: str, start: str, end: str) -> None:
    try:
        want: list[int] | None = window_hours(day, start, end)
    except WindowError:
        want = None
    assert cli_hours(day, start, end) == want
    assert api_hours(day, start, end) == want


def test_the_rule() -> None:
    assert window_hours("mon", "00:00", "00:00") == list(range(24))
    assert window_hours("sun", "22:00", "02:00") == [166, 167, 0, 1]
    with pytest.raises(WindowError) as refused:
        window_hours("fri", "22:00", "24:00")
    assert refused.value.field == "to"


def test_the_command_line_names_the_flag_and_takes_a_days_full_name() -> None:
    assert cli.window_hours("Friday", "22:00", "02:00") == [118, 119, 120, 121]
    with pytest.raises(UsageError, match="--from: from must be a whole hour"):
        cli.window_hours("fri", "22:30", "02:00")
