"""The area the engine serves: an optional bounding box and/or a boundary.

A boundary is a set of polygon rings read from GeoJSON (``Polygon`` and
``MultiPolygon`` features). A point is inside when a ray from it crosses the
rings an odd number of times (the even-odd rule). Edges that two features share
(a police district border walked once each way) are dissolved first, so for
polygons that tile a city (share borders, do not overlap) the boundary is the
outline of their union, and a point exactly on an internal border is inside.
Overlapping features would cancel each other out under the even-odd rule; merge
them before use.

Containment runs on the hot path, so the boundary is indexed by a coarse grid
over its bounding box. Each cell is fully inside, fully outside, or an *edge*
cell that some boundary edge touches. Only points in edge cells run an exact
ray cast, and only against the edges met on the way from the point to the
nearest cell (east or west, whichever meets fewer edges) whose side is known.

>>> square = Boundary([[(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]], grid_size=4)
>>> square.contains(1.0, 1.0), square.contains(1.0, 3.0)
(True, False)
>>> area = Area(bbox=(0.0, 0.0, 1.0, 1.0), boundary=square)
>>> area.contains_many(np.array([0.5, 1.5]), np.array([0.5, 0.5])).tolist()
[True, False]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
BBox = tuple[float, float, float, float]
"""``(min_lon, min_lat, max_lon, max_lat)`` in degrees, edges included."""

_OUTSIDE = 0
_INSIDE = 1
_EDGE = 2

# Cells are widened by this share of a cell when deciding which edges touch
# them: far above float rounding of crossing points, far below a cell.
_PAD_SHARE = 1e-6

Edge = tuple[float, float, float, float]


class Boundary:
    """Polygon rings (lon/lat degrees) with a grid index for fast containment.

    ``rings`` are sequences (or ``(k, 2)`` arrays) of ``(lon, lat)`` vertices,
    closed or not; further coordinates (altitude) are ignored. Build it
    once at start-up; it is immutable afterwards and safe to share.
    """

    __slots__ = (
        "_cell_state",
        "_cell_state_bytes",
        "_dx",
        "_dy",
        "_edges",
        "_grid_size",
        "_walk_base",
        "_walk_bound",
        "_walk_east",
        "_walk_edge_ids",
        "_walk_offsets",
        "_walk_scalar",
        "_x0",
        "_y0",
        "bounds",
    )

    bounds: BBox
    """Bounding box of the boundary, ``(min_lon, min_lat, max_lon, max_lat)``."""

    def __init__(self, rings: Iterable[npt.ArrayLike], *, grid_size: int = 256) -> None:
        if grid_size < 1:
            raise ValueError(f"grid_size must be at least 1, got {grid_size}")
        edges = _dissolved_edges(rings)
        if len(edges) < 3:
            raise ValueError("boundary has no area: fewer than 3 edges after dissolving")
        self._edges: F64 = edges
        xs = np.concatenate([edges[:, 0], edges[:, 2]])
        ys = np.concatenate([edges[:, 1], edges[:, 3]])
        min_x, max_x = float(xs.min()), float(xs.max())
        min_y, max_y = float(ys.min()), float(ys.max())
        if not all(math.isfinite(v) for v in (min_x, max_x, min_y, max_y)):
            raise ValueError("boundary has non-finite coordinates")
        self.bounds = (min_x, min_y, max_x, max_y)
        n = grid_size
        pad_x = max((max_x - min_x) * 1e-6, 1e-9)
        pad_y = max((max_y - min_y) * 1e-6, 1e-9)
        self._grid_size = n
        self._x0 = min_x - pad_x
        self._y0 = min_y - pad_y
        self._dx = (max_x - min_x + 2 * pad_x) / n
        self._dy = (max_y - min_y + 2 * pad_y) / n
        cell_edges = self._edges_per_cell()
        state = self._classify(cell_edges)
        self._cell_state: npt.NDArray[np.int8] = state.reshape(-1)
        # Python containers for the one-point path: indexing numpy there costs more
        # than the whole test.
        self._cell_state_bytes = self._cell_state.tobytes()
        self._build_walks(cell_edges, state)

    @classmethod
    def from_geojson(cls, doc: Mapping[str, object], *, grid_size: int = 256) -> Boundary:
        """A boundary from a GeoJSON FeatureCollection, Feature or geometry of
        ``Polygon``/``MultiPolygon`` type (features without geometry are skipped)."""
        rings = list(_rings_of(doc))
        if not rings:
            raise ValueError("GeoJSON holds no polygon")
        return cls(rings, grid_size=grid_size)

    @classmethod
    def load(cls, path: str | Path, *, grid_size: int = 256) -> Boundary:
        """A boundary read from a GeoJSON file (see :meth:`from_geojson`)."""
        doc = orjson.loads(Path(path).read_bytes())
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: GeoJSON must be an object")
        return cls.from_geojson(doc, grid_size=grid_size)

    @property
    def edges(self) -> F64:
        """The dissolved boundary edges, one ``(x1, y1, x2, y2)`` row each (a copy)."""
        return self._edges.copy()

    # -- queries ---------------------------------------------------------------

    def contains(self, lat_deg: float, lon_deg: float) -> bool:
        """Whether a point is inside (even-odd rule; NaN is outside)."""
        # Same float expressions as contains_many, so both put a point in the same cell.
        fx = (lon_deg - self._x0) / self._dx
        fy = (lat_deg - self._y0) / self._dy
        n = self._grid_size
        if not (0.0 <= fx < n and 0.0 <= fy < n):
            return False
        cell = math.floor(fy) * n + math.floor(fx)
        state = self._cell_state_bytes[cell]
        if state != _EDGE:
            return state == _INSIDE
        inside, east, bound, edges = self._walk_scalar[cell]
        if east:
            lo, hi = lon_deg, bound
        else:
            lo, hi = bound, lon_deg
        y = lat_deg
        for xa, ya, xb, yb in edges:
            if (ya > y) != (yb > y):
                xi = xa + (y - ya) * (xb - xa) / (yb - ya)
                if lo < xi < hi:
                    inside = not inside
        return inside

    def contains_many(self, lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike) -> Bools:
        """Vectorised :meth:`contains`: one bool per point."""
        lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
        if lat.shape != lon.shape:
            raise ValueError(f"lat has {lat.size} values but lon has {lon.size}")
        n = self._grid_size
        fx = (lon - self._x0) / self._dx
        fy = (lat - self._y0) / self._dy
        # NaN fails both comparisons, so it lands outside.
        in_grid = (fx >= 0.0) & (fx < n) & (fy >= 0.0) & (fy < n)
        out = np.zeros(lat.shape, dtype=np.bool_)
        where = np.flatnonzero(in_grid)
        if where.size == 0:
            return out
        cells = np.floor(fy[where]).astype(np.int64) * n + np.floor(fx[where]).astype(np.int64)
        state = self._cell_state[cells]
        out[where] = state == _INSIDE
        on_edge = state == _EDGE
        if on_edge.any():
            idx = where[on_edge]
            out[idx] = self._ray_cast(cells[on_edge], lat[idx], lon[idx])
        return out

    def _ray_cast(self, cells: npt.NDArray[np.int64], y: F64, x: F64) -> Bools:
        """Exact test for points in edge cells, all (point, edge) pairs at once."""
        starts = self._walk_offsets[cells]
        counts = self._walk_offsets[cells + 1] - starts
        total = int(counts.sum())
        point = np.repeat(np.arange(cells.size), counts)
        first_pair = np.cumsum(counts) - counts
        pos = np.arange(total) - np.repeat(first_pair - starts, counts)
        e = self._edges[self._walk_edge_ids[pos]]
        py = y[point]
        crosses = (e[:, 1] > py) != (e[:, 3] > py)
        point, e, py = point[crosses], e[crosses], py[crosses]
        xi = e[:, 0] + (py - e[:, 1]) * (e[:, 2] - e[:, 0]) / (e[:, 3] - e[:, 1])
        px = x[point]
        bound = self._walk_bound[cells][point]
        east = self._walk_east[cells][point]
        lo = np.where(east, px, bound)
        hi = np.where(east, bound, px)
        hits = np.bincount(point[(lo < xi) & (xi < hi)], minlength=cells.size)
        result: Bools = self._walk_base[cells] ^ (hits % 2 == 1)
        return result

    # -- index construction ------------------------------------------------------

    def _edges_per_cell(self) -> list[list[int]]:
        """For each cell (row-major), the edges that touch it, cells widened a little."""
        n = self._grid_size
        x0, y0, dx, dy = self._x0, self._y0, self._dx, self._dy
        pad_x, pad_y = dx * _PAD_SHARE, dy * _PAD_SHARE
        per_cell: list[list[int]] = [[] for _ in range(n * n)]

        def col(x: float) -> int:
            return min(max(math.floor((x - x0) / dx), 0), n - 1)

        for k, (xa, ya, xb, yb) in enumerate(self._edges.tolist()):
            row_lo = min(max(math.floor((min(ya, yb) - pad_y - y0) / dy), 0), n - 1)
            row_hi = min(max(math.floor((max(ya, yb) + pad_y - y0) / dy), 0), n - 1)
            for row in range(row_lo, row_hi + 1):
                if ya == yb:
                    x_lo, x_hi = min(xa, xb), max(xa, xb)
                else:
                    # The part of the edge inside the (widened) row band.
                    band_lo = y0 + row * dy - pad_y
                    band_hi = y0 + (row + 1) * dy + pad_y
                    t1 = (band_lo - ya) / (yb - ya)
                    t2 = (band_hi - ya) / (yb - ya)
                    t_lo = max(min(t1, t2), 0.0)
                    t_hi = min(max(t1, t2), 1.0)
                    xs = (xa + t_lo * (xb - xa), xa + t_hi * (xb - xa))
                    x_lo, x_hi = min(xs), max(xs)
                for c in range(col(x_lo - pad_x), col(x_hi + pad_x) + 1):
                    per_cell[row * n + c].append(k)
        return per_cell

    def _classify(self, cell_edges: list[list[int]]) -> npt.NDArray[np.int8]:
        """Cell states: edge cells from the index, the rest by a ray cast from
        the cell centre (one scan line per row, all centres at once)."""
        n = self._grid_size
        e = self._edges
        state = np.full((n, n), _OUTSIDE, dtype=np.int8)
        centres_x = self._x0 + (np.arange(n) + 0.5) * self._dx
        for row in range(n):
            yc = self._y0 + (row + 0.5) * self._dy
            crosses = (e[:, 1] > yc) != (e[:, 3] > yc)
            c = e[crosses]
            xi = np.sort(c[:, 0] + (yc - c[:, 1]) * (c[:, 2] - c[:, 0]) / (c[:, 3] - c[:, 1]))
            east_of_centre = xi.size - np.searchsorted(xi, centres_x, side="right")
            state[row, east_of_centre % 2 == 1] = _INSIDE
        touched = np.array([len(edges) > 0 for edges in cell_edges]).reshape(n, n)
        state[touched] = _EDGE
        return state

    def _build_walks(self, cell_edges: list[list[int]], state: npt.NDArray[np.int8]) -> None:
        """For each edge cell: the edges between it and the nearest known cell
        in its row (east or west, whichever is fewer), that cell's side, and
        the x where the walk stops."""
        n = self._grid_size
        size = n * n
        base = np.zeros(size, dtype=np.bool_)
        bound = np.zeros(size, dtype=np.float64)
        east = np.zeros(size, dtype=np.bool_)
        walks: dict[int, list[int]] = {}
        rows = self._edges.tolist()
        no_walk: tuple[bool, bool, float, tuple[Edge, ...]] = (False, True, math.inf, ())
        scalar = [no_walk] * size
        for row, states in enumerate(state.tolist()):
            if _EDGE not in states:
                continue
            eastward = self._walks_one_way(cell_edges, states, row, range(n - 1, -1, -1), 0)
            westward = self._walks_one_way(cell_edges, states, row, range(n), 1)
            for c, (e_ids, e_base, e_bound) in eastward.items():
                w_ids, w_base, w_bound = westward[c]
                go_east = len(e_ids) <= len(w_ids)
                ids, known, stop = (e_ids, e_base, e_bound) if go_east else (w_ids, w_base, w_bound)
                cell = row * n + c
                walks[cell] = ids
                base[cell], bound[cell], east[cell] = known, stop, go_east
                edges = tuple((r[0], r[1], r[2], r[3]) for r in (rows[k] for k in ids))
                scalar[cell] = (known, go_east, stop, edges)
        lengths = np.zeros(size, dtype=np.int64)
        for cell, ids in walks.items():
            lengths[cell] = len(ids)
        self._walk_offsets: npt.NDArray[np.int64] = np.concatenate(
            [np.zeros(1, dtype=np.int64), np.cumsum(lengths)]
        )
        flat = [k for cell in sorted(walks) for k in walks[cell]]
        self._walk_edge_ids: npt.NDArray[np.int64] = np.array(flat, dtype=np.int64)
        self._walk_base: Bools = base
        self._walk_bound: F64 = bound
        self._walk_east: Bools = east
        self._walk_scalar: list[tuple[bool, bool, float, tuple[Edge, ...]]] = scalar

    def _walks_one_way(
        self,
        cell_edges: list[list[int]],
        states: list[int],
        row: int,
        order: range,
        far_side: int,
    ) -> dict[int, tuple[list[int], bool, float]]:
        """Walks for the edge cells of one row, scanning from the far end of ``order``.

        ``far_side`` is 0 when walking east (stop at the west side of the known
        cell) and 1 when walking west (stop at its east side)."""
        n = self._grid_size
        known_base, known_bound = False, math.inf if far_side == 0 else -math.inf
        running: list[int] = []
        seen: set[int] = set()
        out: dict[int, tuple[list[int], bool, float]] = {}
        for c in order:
            if states[c] != _EDGE:
                if running:
                    running, seen = [], set()
                known_base = states[c] == _INSIDE
                known_bound = self._x0 + (c + far_side) * self._dx
                continue
            for k in cell_edges[row * n + c]:
                if k not in seen:
                    seen.add(k)
                    running.append(k)
            out[c] = (sorted(running), known_base, known_bound)
        return out


def _dissolved_edges(rings: Iterable[npt.ArrayLike]) -> F64:
    """All ring edges, with zero-length edges dropped and edges present an even
    number of times (either direction) removed: they cannot change a parity."""
    counts: dict[tuple[tuple[float, float], tuple[float, float]], int] = {}
    first_seen: dict[tuple[tuple[float, float], tuple[float, float]], Edge] = {}
    for ring in rings:
        vertices = np.asarray(ring, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] < 2:
            raise ValueError(
                f"a ring must be a list of (lon, lat) pairs, got shape {vertices.shape}"
            )
        pts = [(p[0], p[1]) for p in vertices[:, :2].tolist()]
        if len(pts) < 3:
            raise ValueError(f"a ring needs at least 3 vertices, got {len(pts)}")
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        for a, b in itertools.pairwise(pts):
            if a == b:
                continue
            key = (a, b) if a < b else (b, a)
            counts[key] = counts.get(key, 0) + 1
            first_seen.setdefault(key, (a[0], a[1], b[0], b[1]))
    kept = [first_seen[key] for key, count in counts.items() if count % 2 == 1]
    return np.array(kept, dtype=np.float64).reshape(-1, 4)


def _rings_of(doc: Mapping[str, object]) -> Iterator[list[list[float]]]:
    """The polygon rings of a GeoJSON object (outer rings and holes alike)."""
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise ValueError("FeatureCollection without a 'features' list")
        for feature in features:
            if not isinstance(feature, dict):
                raise ValueError("feature is not an object")
            yield from _rings_of(feature)
    elif kind == "Feature":
        geometry = doc.get("geometry")
        if geometry is None:
            return
        if not isinstance(geometry, dict):
            raise ValueError("feature geometry is not an object")
        yield from _rings_of(geometry)
    elif kind == "Polygon":
        yield from _as_rings(doc.get("coordinates"))
    elif kind == "MultiPolygon":
        polygons = doc.get("coordinates")
        if not isinstance(polygons, list):
            raise ValueError("MultiPolygon without coordinates")
        for polygon in polygons:
            yield from _as_rings(polygon)
    else:
        raise ValueError(f"unsupported GeoJSON type {kind!r}: need Polygon or MultiPolygon")


def _as_rings(coordinates: object) -> Iterator[list[list[float]]]:
    if not isinstance(coordinates, list):
        raise ValueError("polygon coordinates must be a list of rings")
    for ring in coordinates:
        if not isinstance(ring, list) or not all(
            isinstance(p, list) and len(p) >= 2 and all(_is_number(v) for v in p[:2]) for p in ring
        ):
            raise ValueError("a ring must be a list of [lon, lat] positions")
        yield ring


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True, slots=True, eq=False)
class Area:
    """Where events may come from: inside ``bbox`` (if given) and inside
    ``boundary`` (if given). At least one of the two is required."""

    bbox: BBox | None = None
    boundary: Boundary | None = None

    def __post_init__(self) -> None:
        if self.bbox is None and self.boundary is None:
            raise ValueError("an Area needs a bbox, a boundary or both")
        if self.bbox is not None:
            if len(self.bbox) != 4 or not all(math.isfinite(v) for v in self.bbox):
                raise ValueError(f"bbox must be 4 finite numbers, got {self.bbox!r}")
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if min_lon > max_lon or min_lat > max_lat:
                raise ValueError("bbox must be (min_lon, min_lat, max_lon, max_lat)")

    @classmethod
    def from_files(
        cls,
        *,
        bbox: Sequence[float] | None = None,
        boundary_path: str | Path | None = None,
        grid_size: int = 256,
    ) -> Area:
        """An area from an optional ``(min_lon, min_lat, max_lon, max_lat)`` box
        and an optional GeoJSON boundary file."""
        box: BBox | None = None
        if bbox is not None:
            if len(bbox) != 4:
                raise ValueError(f"bbox must have 4 numbers, got {len(bbox)}")
            box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
        boundary = None
        if boundary_path is not None:
            boundary = Boundary.load(boundary_path, grid_size=grid_size)
        return cls(bbox=box, boundary=boundary)

    def contains(self, lat_deg: float, lon_deg: float) -> bool:
        """Whether a point (degrees) is in the area; NaN is not."""
        box = self.bbox
        if box is not None and not (box[0] <= lon_deg <= box[2] and box[1] <= lat_deg <= box[3]):
            return False
        return self.boundary is None or self.boundary.contains(lat_deg, lon_deg)

    def contains_many(self, lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike) -> Bools:
        """Vectorised :meth:`contains`: one bool per point."""
        lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
        if lat.shape != lon.shape:
            raise ValueError(f"lat has {lat.size} values but lon has {lon.size}")
        box = self.bbox
        if box is None:
            inside = np.ones(lat.shape, dtype=np.bool_)
        else:
            inside = (lon >= box[0]) & (lon <= box[2]) & (lat >= box[1]) & (lat <= box[3])
        if self.boundary is not None:
            where = np.flatnonzero(inside)
            inside[where] = self.boundary.contains_many(lat[where], lon[where])
        return inside
