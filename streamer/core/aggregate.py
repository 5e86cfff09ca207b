"""Bulk aggregation: many events to per-cell sums in one vectorised pass.

This is the batch twin of adding events one by one (the store's apply
script): the same terms (:func:`streamer.core.decay.terms`), summed per cell,
per family, per category and per hour of the week. Tests check that the two
agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streamer.core import decay
from streamer.core.cells import U64, cell_hex

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Batch:
    """Columns of accepted, weighted events (one row per event).

    ``family``/``category`` are indexes into ``families``/``categories``;
    ``cells`` holds one column per resolution (shape ``(events, resolutions)``),
    in the order of the ``resolutions`` passed to :func:`aggregate`.
    """

    t_s: F64
    weight: F64
    family: I64
    category: I64
    hour_of_week: I64
    cells: U64
    families: Sequence[str]
    categories: Sequence[str]

    def __len__(self) -> int:
        return int(self.t_s.size)

    def take(self, mask: npt.NDArray[np.bool_]) -> Batch:
        """The rows where ``mask`` is true."""
        return Batch(
            self.t_s[mask],
            self.weight[mask],
            self.family[mask],
            self.category[mask],
            self.hour_of_week[mask],
            self.cells[mask],
            self.families,
            self.categories,
        )


def hours_of_week(t_s: F64, zone: ZoneInfo) -> I64:
    """Vectorised hour of the week (Monday 00h = 0) in ``zone``.

    UTC offsets change only on whole hours in every zone in use, so one
    zoneinfo lookup per distinct UTC hour is exact.

    >>> hours_of_week(np.array([0.0, 3600.0 * 24 * 4]), ZoneInfo("UTC")).tolist()
    [72, 0]
    """
    if t_s.size == 0:
        return np.zeros(0, dtype=np.int64)
    hour = np.floor(t_s / 3600.0).astype(np.int64)
    unique, inverse = np.unique(hour, return_inverse=True)
    offset_h = np.fromiter(
        (_offset_hours(int(h), zone) for h in unique.tolist()), dtype=np.int64, count=unique.size
    )
    local_hour = unique + offset_h
    # 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week.
    how: I64 = ((local_hour + 72) % 168)[inverse.reshape(-1)]
    return how


def _offset_hours(hour: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(hour * 3600.0, UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds() // 3600) if offset is not None else 0


def aggregate(
    batch: Batch,
    *,
    resolutions: Sequence[int],
    horizons: Mapping[str, float],
    landmarks: Mapping[str, int],
    profile_horizon: str,
) -> list[dict[str, Any]]:
    """Per-cell sums for every resolution, in the store's merge format:
    ``{c, n, hi, lo, nf, F, nc, C, w, last}`` (see ``lua/merge.lua``)."""
    out: list[dict[str, Any]] = []
    for j in range(len(resolutions)):
        out.extend(
            aggregate_resolution(
                batch, j, horizons=horizons, landmarks=landmarks, profile_horizon=profile_horizon
            )
        )
    return out


def aggregate_resolution(
    batch: Batch,
    column: int,
    *,
    horizons: Mapping[str, float],
    landmarks: Mapping[str, int],
    profile_horizon: str,
) -> list[dict[str, Any]]:
    """:func:`aggregate` for the resolution in ``batch.cells[:, column]``."""
    names = list(horizons)
    term_cols = (
        np.stack(
            [decay.terms(batch.weight, batch.t_s, horizons[n], landmarks[n]) for n in names], axis=1
        )
        if len(batch)
        else np.zeros((0, len(names)))
    )
    return _per_cell(batch, batch.cells[:, column], term_cols, names.index(profile_horizon))


def _per_cell(batch: Batch, cells: U64, term_cols: F64, prof: int) -> list[dict[str, Any]]:
    if cells.size == 0:
        return []
    unique, inv = np.unique(cells, return_inverse=True)
    inv = inv.reshape(-1)
    n_cells, n_h = unique.size, term_cols.shape[1]
    counts = np.bincount(inv, minlength=n_cells)
    sums = np.stack(
        [np.bincount(inv, term_cols[:, i], minlength=n_cells) for i in range(n_h)], axis=1
    )
    last = np.full(n_cells, -np.inf)
    np.maximum.at(last, inv, batch.t_s)

    def breakdown(
        idx: I64, width: int, all_horizons: bool
    ) -> tuple[dict[int, dict[int, int]], dict[int, dict[int, Any]]]:
        # dense (cell, label) bins: no sort, cells x labels is small
        key = inv.astype(np.int64) * width + idx
        size = n_cells * width
        kn = np.bincount(key, minlength=size)
        present = np.flatnonzero(kn)
        cols = range(n_h) if all_horizons else [prof]
        ks = np.stack(
            [np.bincount(key, term_cols[:, i], minlength=size)[present] for i in cols], axis=1
        )
        n_map: dict[int, dict[int, int]] = {}
        s_map: dict[int, dict[int, Any]] = {}
        for k, n, s in zip(present.tolist(), kn[present].tolist(), ks.tolist(), strict=True):
            c, label = divmod(k, width)
            n_map.setdefault(c, {})[label] = n
            s_map.setdefault(c, {})[label] = s if all_horizons else s[0]
        return n_map, s_map

    fam_n, fam_s = breakdown(batch.family, max(len(batch.families), 1), True)
    cat_n, cat_s = breakdown(batch.category, max(len(batch.categories), 1), False)
    how_key = inv.astype(np.int64) * 168 + batch.hour_of_week
    hsum = np.bincount(how_key, term_cols[:, prof], minlength=n_cells * 168)
    hcount = np.bincount(how_key, minlength=n_cells * 168)
    how_map: dict[int, dict[str, float]] = {}
    nz = np.flatnonzero(hcount)
    for k, v in zip(nz.tolist(), hsum[nz].tolist(), strict=True):
        c, h = divmod(k, 168)
        how_map.setdefault(c, {})[str(h)] = v
    fams, cats = batch.families, batch.categories
    zeros = [0.0] * n_h
    rows: list[dict[str, Any]] = []
    for c, (cell, n, s, t_last) in enumerate(
        zip(unique.tolist(), counts.tolist(), sums.tolist(), last.tolist(), strict=True)
    ):
        rows.append(
            {
                "c": cell_hex(cell),
                "n": n,
                "hi": s,
                "lo": zeros,
                "nf": {fams[f]: v for f, v in fam_n[c].items()},
                "F": {fams[f]: v for f, v in fam_s[c].items()},
                "nc": {cats[f]: v for f, v in cat_n[c].items()},
                "C": {cats[f]: v for f, v in cat_s[c].items()},
                "w": how_map[c],
                "last": t_last,
            }
        )
    return rows
