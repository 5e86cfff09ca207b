"""The row report: figures, warnings over the share, the columns they name."""

from __future__ import annotations

from streamer.core.row_report import REASON_TEXT, RowReport


def test_a_loss_over_one_percent_is_warned_of_with_its_column_and_share() -> None:
    report = RowReport(read=428_860, accepted=111_504, rejected={"bad_id": 317_356})
    (warning,) = report.warnings({"id": "Complaint", "lat": "Y", "lon": "X"})
    assert warning == "317,356 rows (74.0 %) have an empty or unusable id in column 'Complaint'"


def test_a_loss_at_or_under_the_share_is_not_warned_of() -> None:
    report = RowReport(read=1000, accepted=985, rejected={"bad_time": 10, "null_island": 5})
    assert report.warnings({"occurred_at": "t"}) == []
    assert report.warnings({"occurred_at": "t"}, share=0.005) == [
        "10 rows (1.0 %) have a time that cannot be read in column 't'"
    ]


def test_coordinates_name_the_columns_the_profile_reads() -> None:
    report = RowReport(read=100, accepted=80, rejected={"zero_coordinates": 20})
    projected = report.warnings({"x": "X", "y": "Y"})
    assert projected == [
        "20 rows (20.0 %) have zero coordinates (no location, or withheld) in columns 'X', 'Y'"
    ]
    assert report.warnings({}) == [
        "20 rows (20.0 %) have zero coordinates (no location, or withheld)"
    ]


def test_events_on_the_default_weight_are_warned_of() -> None:
    report = RowReport(read=200, accepted=200, on_default=150)
    (warning,) = report.warnings()
    assert warning.startswith("150 events (75.0 %) have a category the harm table does not list")
    assert "hotspots categories" in warning


def test_the_line_and_the_json_carry_every_figure() -> None:
    report = RowReport(
        read=10, accepted=5, rejected={"bad_time": 1, "bad_id": 2}, superseded=1, cancelled=1
    )
    assert report.line() == (
        "10 rows read: 5 accepted, 3 rejected (bad_id 2, bad_time 1), "
        "1 superseded by a later row of their id, 1 cancelled"
    )
    assert report.as_dict() == {
        "read": 10,
        "accepted": 5,
        "rejected": {"bad_id": 2, "bad_time": 1},
        "superseded": 1,
        "cancelled": 1,
        "on_default_weight": 0,
    }


def test_every_reason_of_the_event_model_has_words() -> None:
    from streamer.core.event_model import COORDINATE_FAULTS, REASONS

    file_reasons = {"too_large", "bad_json"}  # whole messages, never a file's rows
    assert set(REASONS) - file_reasons | set(COORDINATE_FAULTS) <= set(REASON_TEXT)
