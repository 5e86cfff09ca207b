"""What changed in a top list between two ticks.

Displays keep a copy of each top list and apply these diffs in sequence;
a gap in sequence numbers tells them to fetch a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """A cell at a rank with its score."""

    cell: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class TopDiff:
    """Cells that entered, left or moved in one top list."""

    entered: list[Entry]
    left: list[str]
    moved: list[Entry]

    def __bool__(self) -> bool:
        return bool(self.entered or self.left or self.moved)

    def as_dict(self) -> dict[str, object]:
        return {
            "entered": [[e.cell, e.rank, e.score] for e in self.entered],
            "left": list(self.left),
            "moved": [[e.cell, e.rank, e.score] for e in self.moved],
        }


def diff(before: Sequence[Entry], after: Sequence[Entry], *, rel_score: float = 0.0) -> TopDiff:
    """Entered, left and moved cells. A cell "moved" when its rank changed, or
    its score changed by more than ``rel_score`` (relative).

    >>> a = [Entry("x", 1, 3.0), Entry("y", 2, 2.0)]
    >>> b = [Entry("y", 1, 4.0), Entry("z", 2, 1.0)]
    >>> d = diff(a, b)
    >>> [e.cell for e in d.entered], d.left, [(e.cell, e.rank) for e in d.moved]
    (['z'], ['x'], [('y', 1)])
    >>> bool(diff(a, a))
    False
    """
    old = {e.cell: e for e in before}
    new = {e.cell: e for e in after}
    entered = [e for e in after if e.cell not in old]
    left = [e.cell for e in before if e.cell not in new]
    moved = []
    for e in after:
        prev = old.get(e.cell)
        if prev is None:
            continue
        changed = abs(e.score - prev.score) > rel_score * max(abs(prev.score), 1e-300)
        if prev.rank != e.rank or changed:
            moved.append(e)
    return TopDiff(entered, left, moved)
