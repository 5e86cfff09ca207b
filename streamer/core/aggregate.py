"""Bulk aggregation: many events to per-cell sums in one vectorised pass.

This is the batch twin of adding events one by one (the store's apply
script): the same terms (:func:`streamer.core.decay.terms`), summed per cell,
per family, per category and per hour of the week. Tests check that the two
agree.

:func:`encode_cells` writes each cell's sums as the packed doubles the store
merges (``add_cell`` in ``lua/common.lua``); its totals are exact double-double
sums (:func:`dd_group_sums`), so a batch merged whole equals the same events
added one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streamer.core import decay
from streamer.core.cells import U64, cell_hex

if TYPE_CHECKING:
    from streamer.core.scoring import Contribution

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


def batch_of(contributions: Sequence[Contribution]) -> Batch:
    """The columns of ``contributions`` (families and categories numbered in
    order of first appearance; ``cells`` of shape ``(events, resolutions)``)."""
    m = len(contributions)
    families = [c.family for c in contributions]
    categories = [c.category for c in contributions]
    family_names = list(dict.fromkeys(families))
    category_names = list(dict.fromkeys(categories))
    family_index = {name: i for i, name in enumerate(family_names)}
    category_index = {name: i for i, name in enumerate(category_names)}
    width = len(contributions[0].cells) if m else 0
    cells = np.fromiter(
        chain.from_iterable(map(attrgetter("cells"), contributions)), np.uint64, count=m * width
    )
    return Batch(
        t_s=np.fromiter(map(attrgetter("t_s"), contributions), np.float64, count=m),
        weight=np.fromiter(map(attrgetter("weight"), contributions), np.float64, count=m),
        family=np.fromiter(map(family_index.__getitem__, families), np.int64, count=m),
        category=np.fromiter(map(category_index.__getitem__, categories), np.int64, count=m),
        hour_of_week=np.fromiter(map(attrgetter("hour_of_week"), contributions), np.int64, count=m),
        cells=cells.reshape(m, width),
        families=family_names,
        categories=category_names,
    )


def concat_batches(parts: Sequence[Batch]) -> Batch:
    """Consecutive batches as one (family and category numbers re-mapped
    onto one list of names, in order of first appearance)."""
    if len(parts) == 1:
        return parts[0]
    families: dict[str, int] = {}
    categories: dict[str, int] = {}
    family_cols, category_cols = [], []
    for p in parts:
        to_family = np.array([families.setdefault(f, len(families)) for f in p.families], np.int64)
        to_category = np.array(
            [categories.setdefault(c, len(categories)) for c in p.categories], np.int64
        )
        family_cols.append(to_family[p.family] if p.family.size else p.family)
        category_cols.append(to_category[p.category] if p.category.size else p.category)
    return Batch(
        t_s=np.concatenate([p.t_s for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        family=np.concatenate(family_cols),
        category=np.concatenate(category_cols),
        hour_of_week=np.concatenate([p.hour_of_week for p in parts]),
        cells=np.concatenate([p.cells for p in parts]),
        families=list(families),
        categories=list(categories),
    )


def dd_group_sums(groups: I64, values: F64) -> tuple[I64, F64, F64]:
    """Per-group sums of the rows of ``values`` (shape ``(m, c)``) in
    double-double: returns the distinct groups (ascending), ``hi`` and ``lo``
    (shape ``(groups, c)``) with ``hi + lo`` the exact sum to about 2**-100 of
    the sum of magnitudes, and ``hi == fl(hi + lo)``.

    >>> g, hi, lo = dd_group_sums(np.array([7, 3, 7]), np.array([[2.0**100], [1.0], [-(2.0**100)]]))
    >>> g.tolist(), hi.tolist(), lo.tolist()
    ([3, 7], [[1.0], [0.0]], [[0.0], [0.0]])
    >>> _, hi, lo = dd_group_sums(np.zeros(3, np.int64), np.array([[2.0**100], [1.0], [3.0]]))
    >>> hi.tolist(), lo.tolist()
    ([[1.2676506002282294e+30]], [[4.0]])
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or groups.shape != values.shape[:1]:
        raise ValueError(f"groups {groups.shape} do not match values {values.shape}")
    if groups.size == 0:
        return groups[:0], np.zeros((0, values.shape[1])), np.zeros((0, values.shape[1]))
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = _run_starts(ordered)
    hi, lo = _dd_sums_sorted(values, order, starts)
    return ordered[starts], hi, lo


def _run_starts(ordered: npt.NDArray[Any]) -> I64:
    """Where each run of equal values starts in a sorted array."""
    new = np.empty(ordered.size, dtype=np.bool_)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return np.flatnonzero(new)


def _two_sum(a: F64, b: F64) -> tuple[F64, F64]:
    """Knuth: ``s + e == a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _dd_add(a_hi: F64, a_lo: F64, b_hi: F64, b_lo: F64) -> tuple[F64, F64]:
    """Double-double addition, the accurate ("IEEE") variant: relative error
    about 2**-104 of the result even under cancellation."""
    s, e = _two_sum(a_hi, b_hi)
    t, f = _two_sum(a_lo, b_lo)
    e += t
    hi = s + e
    e -= hi - s
    e += f
    s = hi + e
    e -= s - hi
    return s, e


# Elements per pairwise tree. Bigger arrays make numpy's temporaries come
# from fresh pages each time (malloc returns them to the system), and a page
# fault costs more than the arithmetic: 60k x 4 values in one tree take twice
# as long as in chunks of this size.
_TREE_CHUNK = 1 << 14


def _dd_sums_sorted(values: F64, order: I64, starts: I64) -> tuple[F64, F64]:
    """:func:`dd_group_sums` of ``values[order]`` (rows sorted by group, the
    groups beginning at ``starts``): ``hi``, ``lo`` of shape ``(groups, c)``.

    Consecutive groups are summed a chunk of rows at a time; a group too big
    for one chunk is cut, and its pieces are summed by one more tree.
    """
    m, width = values.shape
    n_groups = starts.size
    out_hi = np.empty((n_groups, width))
    out_lo = np.empty((n_groups, width))
    rows = max(_TREE_CHUNK // max(width, 1), 2)
    ends = np.append(starts[1:], m)
    cut: list[int] = []  # groups cut between chunks (once per piece)
    pieces_hi: list[F64] = []
    pieces_lo: list[F64] = []
    r0 = 0
    while r0 < m:
        g0 = int(np.searchsorted(starts, r0, side="right")) - 1
        r1 = min(r0 + rows, m)
        if r1 < m:  # end on a group boundary unless one group fills the chunk
            g_end = int(np.searchsorted(starts, r1, side="right")) - 1
            r1 = int(starts[g_end]) if starts[g_end] > r0 else r1
        g1 = int(np.searchsorted(starts, r1 - 1, side="right"))
        local = np.maximum(starts[g0:g1], r0)
        counts = np.minimum(ends[g0:g1], r1) - local
        flat = values[order[r0:r1]].T.reshape(-1)
        hi, lo = _dd_tree(flat, None, np.tile(counts, width))
        hi = hi.reshape(width, g1 - g0).T
        lo = lo.reshape(width, g1 - g0).T
        out_hi[g0:g1] = hi
        out_lo[g0:g1] = lo
        for k in sorted({g0, g1 - 1}):  # pieces stay in group order
            if starts[k] < r0 or ends[k] > r1:
                cut.append(k)
                pieces_hi.append(hi[k - g0])
                pieces_lo.append(lo[k - g0])
        r0 = r1
    if cut:
        groups, counts = np.unique(np.array(cut), return_counts=True)
        hi = np.stack(pieces_hi).T.reshape(-1)
        lo = np.stack(pieces_lo).T.reshape(-1)
        hi, lo = _dd_tree(hi, lo, np.tile(counts, width))
        out_hi[groups] = hi.reshape(width, groups.size).T
        out_lo[groups] = lo.reshape(width, groups.size).T
    return out_hi, out_lo


def _dd_tree(hi: F64, lo: F64 | None, counts: I64) -> tuple[F64, F64]:
    """Double-double sums of consecutive groups of ``hi + lo`` (``lo`` None:
    zero) with ``counts`` elements each: a pairwise tree adding elements
    ``2i`` and ``2i + 1`` of every group at each level, all groups at once.
    Returns normalised ``hi``, ``lo`` per group."""
    n_groups = counts.size
    out_hi = np.empty(n_groups)
    out_lo = np.zeros(n_groups)
    first = np.cumsum(counts) - counts
    single = counts == 1
    out_hi[single] = hi[first[single]]
    if lo is not None:
        out_lo[single] = lo[first[single]]
    live = ~single
    gid = np.flatnonzero(live)
    keep = np.repeat(live, counts)
    hi = hi[keep]
    lo = lo[keep] if lo is not None else None
    counts = counts[live]
    while gid.size:
        odd = counts & 1
        if odd.any():
            # a zero after each odd group: then elements (2i, 2i+1) always pair up
            at = np.arange(hi.size) + np.repeat(np.cumsum(odd) - odd, counts)
            padded = np.zeros(hi.size + int(odd.sum()))
            padded[at] = hi
            hi = padded
            if lo is not None:
                padded = np.zeros(hi.size)
                padded[at] = lo
                lo = padded
        if lo is None:
            hi, lo = _two_sum(hi[0::2], hi[1::2])
        else:
            hi, lo = _dd_add(hi[0::2], lo[0::2], hi[1::2], lo[1::2])
        counts = (counts + 1) >> 1
        done = counts == 1
        if done.any():
            first = (np.cumsum(counts) - counts)[done]
            out_hi[gid[done]] = hi[first]
            out_lo[gid[done]] = lo[first]
            keep = np.repeat(~done, counts)
            hi, lo = hi[keep], lo[keep]
            gid, counts = gid[~done], counts[~done]
    return _two_sum(out_hi, out_lo)


def _group_sums(
    major: I64, major_size: int, minor: I64, minor_size: int, values: F64
) -> tuple[I64, I64, I64, F64]:
    """Rows grouped by ``(major, minor)`` (values below the sizes): each
    distinct pair in ascending order, its row count and the plain sums of its
    ``values`` rows, added in row order (as one-by-one additions would)."""
    keys = major * minor_size + minor
    size = major_size * minor_size
    if size <= 4 * keys.size + 65536:  # dense bins: no sort
        all_counts = np.bincount(keys, minlength=size)
        present = np.flatnonzero(all_counts)
        counts = all_counts[present]
        index, bins = keys, size
    else:
        present, index = np.unique(keys, return_inverse=True)
        index = index.reshape(-1)
        counts = np.bincount(index, minlength=present.size)
        bins = present.size
    sums = np.empty((present.size, values.shape[1]))
    for i in range(values.shape[1]):
        column = np.bincount(index, values[:, i], minlength=bins)
        sums[:, i] = column[present] if bins == size else column
    group_major, group_minor = np.divmod(present, minor_size)
    return group_major, group_minor, counts, sums


def encode_cells(
    batch: Batch,
    *,
    resolutions: Sequence[int],
    horizons: Mapping[str, float],
    landmarks: Mapping[str, int],
    profile_horizon: str,
) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Per-cell sums for the store's bulk merge (``add_cell`` in ``lua/common.lua``).

    Returns ``(labels, cells)``. ``labels`` names the families (``"f:NAME"``)
    then the categories (``"c:NAME"``) that occur; a label index is a 1-based
    position in it. ``cells`` has one ``(cell hex, blob)`` per distinct cell
    of each resolution; the blob is little-endian doubles::

        n, last, hi_1..hi_H, lo_1..lo_H, ne, nh,
        ne x (label index, count, v_1..v_H), nh x (hour of week, w)

    with H horizons in the order of ``horizons``: ``n`` events, the newest
    time ``last``, the exact (double-double) per-horizon sums of their terms,
    one entry per family and category present (its count and plain sums),
    and per hour of the week present the sum of the profile horizon's terms.
    """
    m = len(batch)
    if m == 0:
        return [], []
    if batch.cells.shape != (m, len(resolutions)):
        raise ValueError(f"cells {batch.cells.shape} do not match resolutions {resolutions}")
    names = list(horizons)
    term_cols = np.empty((m, len(names)))
    for i, name in enumerate(names):
        term_cols[:, i] = decay.terms(batch.weight, batch.t_s, horizons[name], landmarks[name])
    used_families = np.unique(batch.family)
    used_categories = np.unique(batch.category)
    labels = [f"f:{batch.families[i]}" for i in used_families.tolist()]
    labels += [f"c:{batch.categories[i]}" for i in used_categories.tolist()]
    label_of_family = np.zeros(len(batch.families), dtype=np.int64)
    label_of_family[used_families] = np.arange(1, used_families.size + 1)
    label_of_category = np.zeros(len(batch.categories), dtype=np.int64)
    label_of_category[used_categories] = np.arange(used_families.size + 1, len(labels) + 1)
    event_labels = np.concatenate(
        (label_of_family[batch.family], label_of_category[batch.category])
    )
    cells: list[tuple[str, bytes]] = []
    for j in range(len(resolutions)):
        cells += _encode_column(
            batch.cells[:, j],
            batch,
            term_cols,
            event_labels,
            len(labels) + 1,
            names.index(profile_horizon),
        )
    return labels, cells


def _encode_column(
    cells: U64, batch: Batch, term_cols: F64, event_labels: I64, label_width: int, prof: int
) -> list[tuple[str, bytes]]:
    m, nh = term_cols.shape
    order = np.argsort(cells, kind="stable")
    ordered = cells[order]
    starts = _run_starts(ordered)
    unique = ordered[starts]
    n_cells = starts.size
    new = np.zeros(m, dtype=np.int64)
    new[starts] = 1
    cell_of = np.empty(m, dtype=np.int64)
    cell_of[order] = np.cumsum(new) - 1
    count = np.diff(starts, append=m)
    last = np.maximum.reduceat(batch.t_s[order], starts)
    hi, lo = _dd_sums_sorted(term_cols, order, starts)

    entry_cell, entry_label, entry_n, entry_sum = _group_sums(
        np.concatenate((cell_of, cell_of)),
        n_cells,
        event_labels,
        label_width,
        np.concatenate((term_cols, term_cols)),
    )
    hour_cell, hour, _, hour_sum = _group_sums(
        cell_of, n_cells, batch.hour_of_week, 168, term_cols[:, prof : prof + 1]
    )
    ne = np.bincount(entry_cell, minlength=n_cells)
    nhours = np.bincount(hour_cell, minlength=n_cells)

    # every cell's doubles side by side in one buffer, then sliced per cell
    head, width = 4 + 2 * nh, 2 + nh
    size = head + ne * width + 2 * nhours
    offset = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(size, out=offset[1:])
    buf = np.empty(int(offset[-1]), dtype="<f8")
    heads = np.empty((n_cells, head))
    heads[:, 0] = count
    heads[:, 1] = last
    heads[:, 2 : 2 + nh] = hi
    heads[:, 2 + nh : 2 + 2 * nh] = lo
    heads[:, -2] = ne
    heads[:, -1] = nhours
    buf[offset[:-1, None] + np.arange(head)] = heads
    first = np.cumsum(ne) - ne
    at = offset[entry_cell] + head + (np.arange(entry_cell.size) - first[entry_cell]) * width
    buf[at[:, None] + np.arange(width)] = np.column_stack((entry_label, entry_n, entry_sum))
    first = np.cumsum(nhours) - nhours
    at = offset[hour_cell] + head + ne[hour_cell] * width
    at += (np.arange(hour_cell.size) - first[hour_cell]) * 2
    buf[at[:, None] + np.arange(2)] = np.column_stack((hour, hour_sum))
    raw = buf.tobytes()
    bounds = (offset * 8).tolist()
    return [
        (c, raw[a:b])
        for c, a, b in zip(map(cell_hex, unique.tolist()), bounds[:-1], bounds[1:], strict=True)
    ]


def decode_cell(blob: bytes, horizons: int) -> dict[str, Any]:
    """The fields of one :func:`encode_cells` blob with ``horizons`` horizons:
    ``{"n", "last", "hi", "lo", "entries": [(label index, count, [v...])],
    "hours": [(hour of week, w)]}``."""
    x = np.frombuffer(blob, dtype="<f8").tolist()
    nh = horizons
    head = 4 + 2 * nh
    if len(x) < head:
        raise ValueError(f"cell blob of {len(blob)} bytes is too short")
    ne, nhours = int(x[head - 2]), int(x[head - 1])
    if len(x) != head + ne * (2 + nh) + 2 * nhours:
        raise ValueError(f"cell blob of {len(blob)} bytes does not hold {ne} + {nhours} entries")
    j = head
    entries: list[tuple[int, int, list[float]]] = []
    for _ in range(ne):
        entries.append((int(x[j]), int(x[j + 1]), x[j + 2 : j + 2 + nh]))
        j += 2 + nh
    hours = [(int(x[k]), x[k + 1]) for k in range(j, len(x), 2)]
    return {
        "n": int(x[0]),
        "last": x[1],
        "hi": x[2 : 2 + nh],
        "lo": x[2 + nh : head - 2],
        "entries": entries,
        "hours": hours,
    }
