"""The service area: bounding box and grid-indexed polygon boundary."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.area import Area, Boundary
from tests import oracle

DISTRICTS = oracle.DISTRICTS
F64 = np.ndarray[Any, np.dtype[np.float64]]


@functools.cache
def philadelphia() -> Area:
    return Area.from_files(boundary_path=DISTRICTS)


@functools.cache
def district_polygons() -> list[list[F64]]:
    """Each district as a list of rings (lon, lat arrays), straight from the file."""
    doc = orjson.loads(DISTRICTS.read_bytes())
    polygons: list[list[F64]] = []
    for feature in doc["features"]:
        geometry = feature["geometry"]
        parts = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        polygons.extend(
            [np.array(ring, dtype=np.float64)[:, :2] for ring in part] for part in parts
        )
    return polygons


def brute_force(polygons: list[list[F64]], lat: F64, lon: F64) -> np.ndarray[Any, Any]:
    """The oracle: inside any polygon, each by even-odd ray casting over all its edges."""
    inside = np.zeros(lat.shape, dtype=bool)
    for rings in polygons:
        odd = np.zeros(lat.shape, dtype=bool)
        for ring in rings:
            closed = ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])
            for start in range(0, len(closed) - 1, 64):
                a = closed[start : start + 64]
                b = closed[start + 1 : start + 65]
                a = a[: len(b)]
                x1, y1 = a[:, :1], a[:, 1:2]
                x2, y2 = b[:, :1], b[:, 1:2]
                with np.errstate(divide="ignore", invalid="ignore"):
                    crosses = (y1 > lat) != (y2 > lat)
                    xi = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
                odd ^= np.logical_xor.reduce(crosses & (lon < xi), axis=0)
        inside |= odd
    return inside


# -- the real city ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "inside"),
    [
        (39.9524, -75.1636, True),  # City Hall
        (40.0379, -75.1340, True),  # North Philadelphia
        (39.8744, -75.2424, True),  # near the airport
        (40.1, -75.02, True),  # Far Northeast
        (39.9259, -75.1196, False),  # Camden, NJ, across the Delaware
        (40.0, -75.3, False),  # Lower Merion, west of City Avenue
        (0.0, 0.0, False),
        (math.nan, -75.1636, False),
        (39.9524, math.nan, False),
    ],
)
def test_known_places(lat: float, lon: float, inside: bool) -> None:
    area = philadelphia()
    assert area.contains(lat, lon) is inside
    assert area.contains_many(np.array([lat]), np.array([lon])).tolist() == [inside]


def test_boundary_matches_a_brute_force_ray_cast_on_random_points() -> None:
    area = philadelphia()
    assert area.boundary is not None
    min_lon, min_lat, max_lon, max_lat = area.boundary.bounds
    rng = np.random.default_rng(2024)
    lat = rng.uniform(min_lat - 0.01, max_lat + 0.01, 20_000)
    lon = rng.uniform(min_lon - 0.01, max_lon + 0.01, 20_000)
    expected = brute_force(district_polygons(), lat, lon)
    assert 0.2 < expected.mean() < 0.8  # both sides are well represented
    got = area.contains_many(lat, lon)
    assert np.array_equal(got, expected)
    assert [area.contains(y, x) for y, x in zip(lat.tolist(), lon.tolist(), strict=True)] == (
        expected.tolist()
    )


def test_points_on_borders_answer_the_same_one_at_a_time_and_in_bulk() -> None:
    area = philadelphia()
    vertices = np.vstack([ring for rings in district_polygons() for ring in rings])
    midpoints = np.vstack(
        [(ring[1:] + ring[:-1]) / 2 for rings in district_polygons() for ring in rings]
    )
    points = np.vstack([vertices, midpoints])
    lat, lon = points[:, 1], points[:, 0]
    many = area.contains_many(lat, lon)
    one = [area.contains(y, x) for y, x in zip(lat.tolist(), lon.tolist(), strict=True)]
    assert many.tolist() == one


def test_internal_district_borders_are_inside() -> None:
    """Borders between two districts are dissolved: a point on one is in the city."""
    edges: dict[tuple[tuple[float, float], tuple[float, float]], int] = {}
    for rings in district_polygons():
        for ring in rings:
            pts = [tuple(p) for p in ring.tolist()]
            for a, b in itertools.pairwise(pts):
                key = (a, b) if a < b else (b, a)
                edges[key] = edges.get(key, 0) + 1
    shared = np.array([[*a, *b] for (a, b), count in edges.items() if count == 2])
    assert len(shared) > 1000
    lon = (shared[:, 0] + shared[:, 2]) / 2
    lat = (shared[:, 1] + shared[:, 3]) / 2
    assert philadelphia().contains_many(lat, lon).all()


# -- small shapes, every grid size --------------------------------------------------------------

SQUARE = [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)]
HOLE = [(1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (1.0, 3.0)]


@pytest.mark.parametrize("grid_size", [1, 2, 3, 8, 256])
def test_square_with_a_hole(grid_size: int) -> None:
    boundary = Boundary([SQUARE, HOLE], grid_size=grid_size)
    assert boundary.bounds == (0.0, 0.0, 4.0, 4.0)
    assert boundary.contains(0.5, 0.5)  # (lat, lon)
    assert not boundary.contains(2.0, 2.0)  # in the hole
    assert not boundary.contains(5.0, 2.0)
    assert boundary.contains_many(
        np.array([0.5, 2.0, 3.5]), np.array([0.5, 2.0, 2.0])
    ).tolist() == [
        True,
        False,
        True,
    ]


def test_adjacent_polygons_merge_into_their_union() -> None:
    left = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    right = [(1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0)]
    boundary = Boundary([left, right])
    assert len(boundary.edges) == 6  # the shared edge is gone
    assert boundary.contains(0.5, 1.0)  # on the former shared edge
    assert boundary.contains(0.5, 0.5) and boundary.contains(0.5, 1.5)


def star(rng: np.random.Generator, centre: tuple[float, float], vertices: int) -> F64:
    """A simple (star-shaped) polygon with random radii."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = rng.uniform(0.2, 1.0, vertices)
    return np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    vertices=st.integers(3, 60),
    polygons=st.integers(1, 3),
    grid_size=st.sampled_from([1, 2, 5, 16, 64]),
)
def test_random_polygons_match_brute_force(
    seed: int, vertices: int, polygons: int, grid_size: int
) -> None:
    rng = np.random.default_rng(seed)
    # Far enough apart not to overlap (the even-odd rule would cancel overlaps).
    shapes = [[star(rng, (3.0 * k, 0.5 * k), vertices)] for k in range(polygons)]
    boundary = Boundary([ring for rings in shapes for ring in rings], grid_size=grid_size)
    lat = rng.uniform(-1.5, 0.5 * polygons + 1.0, 3000)
    lon = rng.uniform(-1.5, 3.0 * polygons, 3000)
    expected = brute_force(shapes, lat, lon)
    assert np.array_equal(boundary.contains_many(lat, lon), expected)
    sample = slice(0, 300)
    one = [boundary.contains(y, x) for y, x in zip(lat[sample], lon[sample], strict=True)]
    assert one == expected[sample].tolist()


# -- bbox, construction, GeoJSON -----------------------------------------------------------------


def test_bbox_only_area_includes_its_edges() -> None:
    area = Area(bbox=(-75.3, 39.8, -74.9, 40.2))
    assert area.contains(39.8, -75.3) and area.contains(40.2, -74.9)
    assert not area.contains(40.2001, -75.0)
    assert not area.contains(math.nan, -75.0)
    lat = np.array([39.9, 39.7, 40.0, math.nan])
    lon = np.array([-75.0, -75.0, -74.8, -75.0])
    assert area.contains_many(lat, lon).tolist() == [True, False, False, False]


def test_bbox_and_boundary_must_both_hold() -> None:
    west_half = Area.from_files(bbox=(-75.3, 39.8, -75.15, 40.2), boundary_path=DISTRICTS)
    assert west_half.contains(39.9524, -75.1636)  # City Hall, west of -75.15
    assert not west_half.contains(40.1, -75.02)  # in the city but east of the box
    assert west_half.contains_many(
        np.array([39.9524, 40.1]), np.array([-75.1636, -75.02])
    ).tolist() == [
        True,
        False,
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bbox": (1.0, 0.0, 0.0, 1.0)}, {"bbox": (0.0, 0.0, math.inf, 1.0)}],
)
def test_invalid_areas_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Area(**kwargs)


def test_mismatched_columns_are_refused() -> None:
    with pytest.raises(ValueError):
        philadelphia().contains_many(np.zeros(3), np.zeros(2))


def test_geojson_forms(tmp_path: Path) -> None:
    ring = [[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]]
    far = [[[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 10.0]]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    multi = {"type": "MultiPolygon", "coordinates": [[ring], far]}
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": multi},
            {"type": "Feature", "properties": {}, "geometry": None},
        ],
    }
    assert Boundary.from_geojson(polygon).contains(1.0, 1.0)
    from_file = tmp_path / "area.geojson"
    from_file.write_bytes(orjson.dumps(collection))
    area = Area.from_files(boundary_path=from_file)
    assert area.contains(1.0, 1.0) and area.contains(10.2, 10.8) and not area.contains(5.0, 5.0)
    with pytest.raises(ValueError, match="Polygon"):
        Boundary.from_geojson({"type": "Point", "coordinates": [0.0, 0.0]})
    with pytest.raises(ValueError):
        Boundary.from_geojson({"type": "FeatureCollection", "features": []})
    with pytest.raises(ValueError):
        Boundary.from_geojson({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 1.0]]]})
