"""H3 cells: the only module that imports h3.

Inside the engine a cell is an unsigned 64-bit H3 index (``int`` or a numpy
``uint64``); at the edges (Redis keys, JSON, the API) it is the usual
15-character hex string.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Sequence

import h3
import numpy as np
import numpy.typing as npt
from h3.api import basic_int as _h3int

U64 = npt.NDArray[np.uint64]

_RES_SHIFT = 52
_RES_MASK = np.uint64(0xF << _RES_SHIFT)


def cell_of(lat_deg: float, lon_deg: float, resolution: int) -> int:
    """The H3 cell (as an int) that contains a point.

    >>> cell_hex(cell_of(39.9524, -75.1636, 10))
    '8a2a134d458ffff'
    """
    return int(_h3int.latlng_to_cell(lat_deg, lon_deg, resolution))  # no hex round trip


def latlng_to_cell_capsule() -> object | None:
    """H3's C ``latlng_to_cell`` for compiled callers (the compiled kernel),
    as h3-py's Cython module exports it: a capsule named for its signature,
    ``uint64 (double lat_deg, double lng_deg, int res, int skip_dispatch)``.
    None when this h3 build does not export it (callers then use
    :func:`cell_of`)."""
    try:
        module = importlib.import_module("h3._cy.latlng")
        capi: object = module.__pyx_capi__
    except (ImportError, AttributeError):
        return None
    return capi.get("latlng_to_cell") if isinstance(capi, dict) else None


def cells_of(lat_deg: float, lon_deg: float, resolutions: Sequence[int]) -> tuple[int, ...]:
    """The cell containing a point at each resolution.

    Each is found geometrically: H3 cells do not nest exactly, so the coarse
    cell that contains a point is not always the parent of the fine one, and
    a display draws (and dispatch asks about) the cell the point lies in.
    """
    return tuple(cell_of(lat_deg, lon_deg, r) for r in resolutions)


def parent_of(cell: int, resolution: int) -> int:
    """The ancestor of ``cell`` at a coarser ``resolution`` (bit arithmetic on
    the H3 index layout: set the resolution field, fill unused digits with 7).

    >>> c = cell_of(39.9524, -75.1636, 10)
    >>> parent_of(c, 8) == int(h3.str_to_int(h3.cell_to_parent(cell_hex(c), 8)))
    True
    """
    unused = (1 << (3 * (15 - resolution))) - 1
    return (cell & ~(0xF << _RES_SHIFT)) | (resolution << _RES_SHIFT) | unused


def parents_of(cells: U64, resolution: int) -> U64:
    """Vectorised :func:`parent_of`."""
    unused = np.uint64((1 << (3 * (15 - resolution))) - 1)
    res_bits = np.uint64(resolution << _RES_SHIFT)
    out: U64 = (cells & ~_RES_MASK) | res_bits | unused
    return out


def cells_of_many(
    lat_deg: npt.NDArray[np.float64], lon_deg: npt.NDArray[np.float64], resolutions: Sequence[int]
) -> U64:
    """Cells of many points at each resolution: shape ``(points, resolutions)``.

    Police records repeat points (addresses snapped to hundred-blocks), so
    each distinct point is indexed once.
    """
    if lat_deg.size == 0:
        return np.zeros((0, len(resolutions)), dtype=np.uint64)
    # complex numbers compare exactly on both parts and sort fast
    unique, inverse = np.unique(lat_deg + 1j * lon_deg, return_inverse=True)
    to_cell = _h3int.latlng_to_cell  # the integer API: no hex round trip
    points = list(zip(unique.real.tolist(), unique.imag.tolist(), strict=True))
    columns = [
        np.fromiter(
            (to_cell(lat, lon, r) for lat, lon in points),
            dtype=np.uint64,
            count=len(points),
        )
        for r in resolutions
    ]
    found = np.stack(columns, axis=1)
    result: U64 = found[inverse.reshape(-1)]
    return result


def resolution_of(cell: int) -> int:
    """The resolution of a cell.

    >>> resolution_of(cell_of(39.95, -75.16, 9))
    9
    """
    return (cell >> _RES_SHIFT) & 0xF


def cell_hex(cell: int) -> str:
    """The canonical hex string of a cell."""
    return format(cell, "x")


CELL_ID_PATTERN = "^[0-9a-f]{15}$"  # the canonical spelling, the only one taken
_CELL_ID = re.compile(CELL_ID_PATTERN)


def cell_from_hex(text: str) -> int:
    """Parse and validate a cell id: exactly 15 lowercase hex digits naming a
    valid H3 cell (no prefix, sign, blanks, upper case or leading zeros, which
    ``int(text, 16)`` would take, and nothing beyond 64 bits); raises
    ``ValueError`` (quoting at most 40 characters of ``text``) otherwise.

    >>> cell_from_hex("8a2a134d458ffff") == cell_of(39.9524, -75.1636, 10)
    True
    """
    if not isinstance(text, str) or _CELL_ID.fullmatch(text) is None:
        raise ValueError(f"not an H3 cell id (15 lowercase hex digits): {str(text)[:40]!r}")
    value = int(text, 16)
    if not h3.is_valid_cell(text):
        raise ValueError(f"not an H3 cell id: {text!r}")
    return value


def cell_boundary(cell: int) -> list[tuple[float, float]]:
    """The cell's polygon as (lat, lon) vertices."""
    return [(float(a), float(b)) for a, b in h3.cell_to_boundary(cell_hex(cell))]


def cell_center(cell: int) -> tuple[float, float]:
    """The cell's centre as (lat, lon)."""
    lat, lon = h3.cell_to_latlng(cell_hex(cell))
    return float(lat), float(lon)


def ring(cell: int, k: int) -> list[int]:
    """Cells within ``k`` steps of ``cell`` (including it)."""
    return [int(h3.str_to_int(c)) for c in h3.grid_disk(cell_hex(cell), k)]


@functools.lru_cache(maxsize=1 << 18)
def neighbours_hex(cell: str) -> frozenset[str]:
    """The cells one step from ``cell`` (hex ids; six, or five near a pentagon)."""
    return frozenset(h3.grid_ring(cell, 1))


def center_hex(cell: str) -> tuple[float, float]:
    """The centre of a hex cell id as (lat, lon)."""
    lat, lon = h3.cell_to_latlng(cell)
    return float(lat), float(lon)


def cells_in_box(
    min_lon_deg: float, min_lat_deg: float, max_lon_deg: float, max_lat_deg: float, resolution: int
) -> U64:
    """The cells whose centres lie in a lon/lat box, sorted by id.

    A study area is cut from these by testing each centre against its
    boundary (:func:`centers_of_many`), the same containment rule as events.

    >>> box = cells_in_box(-75.17, 39.95, -75.16, 39.96, 9)
    >>> bool(np.all(np.diff(box.astype(np.float64)) > 0)), int(box.size) > 5
    (True, True)
    """
    ring = [
        (min_lat_deg, min_lon_deg),
        (min_lat_deg, max_lon_deg),
        (max_lat_deg, max_lon_deg),
        (max_lat_deg, min_lon_deg),
    ]
    found = h3.polygon_to_cells(h3.LatLngPoly(ring), resolution)
    out = np.fromiter((h3.str_to_int(c) for c in found), dtype=np.uint64, count=len(found))
    out.sort()
    return out


def centers_of_many(cells: U64) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The centres of many cells as (lat, lon) arrays."""
    pairs = [h3.cell_to_latlng(cell_hex(int(c))) for c in cells.tolist()]
    lat = np.array([p[0] for p in pairs], dtype=np.float64)
    lon = np.array([p[1] for p in pairs], dtype=np.float64)
    return lat, lon


def neighbours_of_many(cells: U64) -> U64:
    """The cells one step from each cell: shape ``(cells, 6)``, a pentagon's
    missing sixth neighbour is 0 (no valid cell has id 0)."""
    out = np.zeros((cells.size, 6), dtype=np.uint64)
    for i, c in enumerate(cells.tolist()):
        ring1 = sorted(h3.str_to_int(n) for n in h3.grid_ring(cell_hex(int(c)), 1))
        out[i, : len(ring1)] = ring1
    return out


def children_of_many(cells: U64, resolution: int) -> U64:
    """Every cell of ``resolution`` under any of ``cells`` (coarser ones),
    sorted by id; cells already at ``resolution`` or finer stay as they are.

    >>> parent = cell_of(39.95, -75.16, 7)
    >>> int(children_of_many(np.array([parent], dtype=np.uint64), 9).size)
    49
    """
    out: list[int] = []
    for cell in cells.tolist():
        if resolution_of(int(cell)) >= resolution:
            out.append(int(cell))
        else:
            out += [
                int(h3.str_to_int(c)) for c in h3.cell_to_children(cell_hex(int(cell)), resolution)
            ]
    return np.unique(np.array(out, dtype=np.uint64))


def area_km2_of_many(cells: U64) -> float:
    """The cells' total area in km² (H3's exact cell areas)."""
    return float(sum(h3.cell_area(cell_hex(int(c)), unit="km^2") for c in cells.tolist()))
