"""Cell ids at the edges: exactly the canonical 15 lowercase hex digits."""

from __future__ import annotations

import pytest

from streamer.core.cells import cell_from_hex, cell_hex, cell_of

CELL = cell_hex(cell_of(39.9524, -75.1636, 10))


def test_a_canonical_id_parses_to_its_cell() -> None:
    assert CELL == "8a2a134d458ffff"
    assert cell_hex(cell_from_hex(CELL)) == CELL


@pytest.mark.parametrize(
    "text",
    [
        "0x" + CELL,  # int(..., 16) takes a prefix
        " " + CELL,  # and surrounding blanks
        CELL + "\n",
        "-" + CELL,  # and a sign (an H3 OverflowError further on)
        "+" + CELL,
        CELL.upper(),  # not the canonical spelling
        "8a2a_134d458ffff",  # underscores
        "0" + CELL,  # 16 digits, the same value
        "f" * 17,  # beyond 64 bits (an H3 OverflowError further on)
        "1" * 40,
        "",
        "nothex",
        "8a2a134d458fff",  # 14 digits
        "ffffffffffffff0",  # 15 digits, not a cell
    ],
)
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not an H3 cell id"):
        cell_from_hex(text)


def test_the_error_does_not_echo_a_huge_value() -> None:
    with pytest.raises(ValueError) as caught:
        cell_from_hex("a" * 9000)
    assert len(str(caught.value)) < 100
