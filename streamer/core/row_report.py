"""What became of a file's rows: read, accepted, rejected by reason,
superseded by a later row of the same id, cancelled; and the warnings a
command prints when one reason rejects more than a small share of them.

A silent loss is the failure this guards against: a file whose id column is
empty on three rows in four still produces a normal-looking table, unless
the command says how many rows it dropped, why, and in which column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

WARN_SHARE = 0.01
"""A reason that rejects more than this share of the rows read is warned of."""

COORDINATES = ("lat", "lon", "x", "y")  # WGS84 columns, or projected ones

REASON_FIELDS: Mapping[str, tuple[str, ...]] = {
    "bad_id": ("id",),
    "missing_field": ("id", "occurred_at", "category"),
    "bad_type": ("category",),
    "bad_kind": ("kind",),
    "bad_origin": ("origin_column",),
    "unknown_op": ("op_column",),
    "bad_time": ("occurred_at",),
    "future_time": ("occurred_at",),
    "not_finite": COORDINATES,
    "lat_out_of_range": ("lat", "y"),
    "lon_out_of_range": ("lon", "x"),
    "null_island": COORDINATES,
    "missing_coordinates": COORDINATES,
    "bad_coordinates": COORDINATES,
    "zero_coordinates": COORDINATES,
}
"""The event fields (source profile keys) a rejection reason is about."""

REASON_TEXT: Mapping[str, str] = {
    "bad_id": "an empty or unusable id",
    "missing_field": "a missing field",
    "bad_type": "a value of the wrong type",
    "bad_kind": "an unknown kind",
    "bad_origin": "an unknown origin",
    "unknown_op": "an unknown operation",
    "bad_time": "a time that cannot be read",
    "future_time": "a time in the future",
    "not_finite": "coordinates that are not numbers",
    "lat_out_of_range": "a latitude out of range",
    "lon_out_of_range": "a longitude out of range",
    "null_island": "the point (0, 0)",
    "outside_area": "a point outside the study area",
    "missing_coordinates": "empty coordinates",
    "bad_coordinates": "coordinates that are not numbers",
    "zero_coordinates": "zero coordinates (no location, or withheld)",
}
"""How a warning words each reason."""


@dataclass(frozen=True, slots=True)
class RowReport:
    """The fate of every row of one read.

    >>> report = RowReport(read=1000, accepted=700, rejected={"bad_id": 300})
    >>> report.line()
    '1,000 rows read: 700 accepted, 300 rejected (bad_id 300)'
    >>> report.warnings({"id": "Complaint"})
    ["300 rows (30.0 %) have an empty or unusable id in column 'Complaint'"]
    """

    read: int
    accepted: int
    rejected: Mapping[str, int] = field(default_factory=dict)
    superseded: int = 0  # an id's earlier rows, replaced by its last
    cancelled: int = 0  # ids whose last row cancels them
    on_default: int = 0  # accepted events whose category fell to the default weight

    def line(self) -> str:
        """One line of every figure."""
        parts = [f"{self.accepted:,} accepted"]
        lost = sum(self.rejected.values())
        if lost:
            reasons = ", ".join(
                f"{reason} {n:,}" for reason, n in sorted(self.rejected.items(), key=_most)
            )
            parts.append(f"{lost:,} rejected ({reasons})")
        if self.superseded:
            parts.append(f"{self.superseded:,} superseded by a later row of their id")
        if self.cancelled:
            parts.append(f"{self.cancelled:,} cancelled")
        return f"{self.read:,} rows read: " + ", ".join(parts)

    def warnings(
        self, columns: Mapping[str, str] | None = None, share: float = WARN_SHARE
    ) -> list[str]:
        """A warning for each reason that rejects more than ``share`` of the
        rows, naming the columns (profile key -> file column) it is about,
        and one when more than ``share`` of the events weigh only the
        default (their category is not in the harm table)."""
        out = []
        for reason, n in sorted(self.rejected.items(), key=_most):
            if self.read and n / self.read > share:
                text = REASON_TEXT.get(reason, reason)
                named = [
                    columns[k] for k in REASON_FIELDS.get(reason, ()) if columns and k in columns
                ]
                where = ""
                if named:
                    where = f" in column{'s' if len(named) > 1 else ''} " + ", ".join(
                        f"'{c}'" for c in named
                    )
                out.append(f"{n:,} rows ({100 * n / self.read:.1f} %) have {text}{where}")
        if self.accepted and self.on_default / self.accepted > share:
            out.append(
                f"{self.on_default:,} events ({100 * self.on_default / self.accepted:.1f} %) "
                "have a category the harm table does not list: they weigh the default "
                "([categories.default]); `hotspots categories` lists them"
            )
        return out

    def as_dict(self) -> dict[str, object]:
        """The figures, JSON-ready."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items(), key=_most)),
            "superseded": self.superseded,
            "cancelled": self.cancelled,
            "on_default_weight": self.on_default,
        }


def _most(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])
