"""GeoJSON at the API's edge (RFC 7946): cells as hexagons, ranked cells as
a FeatureCollection, the area's outline as the display draws it, and the
study area ``/v1/risk`` reports on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi.responses import Response

from streamer.core.area import Area, Boundary
from streamer.core.cells import cell_boundary, cell_center
from streamer.settings import AUTO, Settings

log = logging.getLogger("hotspots.api")


def feature_collection(items: list[dict[str, Any]], common: dict[str, Any]) -> Response:
    """Ranked items (each with its ``polygon``) as an RFC 7946
    FeatureCollection: each feature's properties are the JSON answer's
    item (the same fields and types, less the polygon) and the answer's
    own fields (``common``: its sequence, snapshot time ``at``, ...),
    which the collection also carries as foreign members."""
    features = [
        {
            "type": "Feature",
            "id": item["cell"],
            "geometry": {"type": "Polygon", "coordinates": [item["polygon"]]},
            "properties": {
                **{k: v for k, v in item.items() if k != "polygon"},
                **common,
            },
        }
        for item in items
    ]
    collection = {"type": "FeatureCollection", **common, "features": features}
    return Response(orjson.dumps(collection), media_type="application/geo+json")


def in_box(cell: str, box: tuple[float, float, float, float]) -> bool:
    """Whether the cell's centre is in the box (one across the antimeridian
    when its west edge is east of its east edge)."""
    lat, lon = cell_center(int(cell, 16))
    west, south, east, north = box
    across = lon >= west or lon <= east
    return south <= lat <= north and (west <= lon <= east if west <= east else across)


def polygon(cell: str) -> list[list[float]]:
    """The cell's hexagon as a closed GeoJSON ring ([lon, lat], counter-clockwise)."""
    ring_ = [[lon, lat] for lat, lon in cell_boundary(int(cell, 16))]
    if _signed_area(ring_) < 0:
        ring_.reverse()
    return [*ring_, ring_[0]]


def _signed_area(ring_: Sequence[Sequence[float]]) -> float:
    return 0.5 * sum(
        a[0] * b[1] - b[0] * a[1] for a, b in zip(ring_, [*ring_[1:], ring_[0]], strict=True)
    )


def study_area(settings: Settings, outline: Path | None) -> Area | None:
    """Where the engine's events come from, as ``/v1/risk`` reports it: the
    events' box and boundary (``events.bbox``, ``events.boundary``), else
    the outline the display draws (``outline``); None when there is neither
    (every point counts)."""
    ev = settings.events
    bbox = tuple(ev.bbox) if ev.bbox else None
    boundary = None
    own = ev.boundary if ev.boundary != AUTO else None
    for path in (own, None if bbox else outline):
        if path is None:
            continue
        try:
            boundary = Boundary.load(path)
            break
        except (OSError, ValueError) as exc:
            log.warning("study_area_unreadable path=%s error=%s", path, exc)
    if bbox is None and boundary is None:
        return None
    return Area(bbox=(bbox[0], bbox[1], bbox[2], bbox[3]) if bbox else None, boundary=boundary)


NO_OUTLINE = b'{"type": "FeatureCollection", "features": []}'


def read_outline(path: Path | None, label: str | None = None) -> bytes:
    """The boundary file as RFC 7946 GeoJSON: no ``crs`` member (7946 knows
    only WGS 84 lon/lat) and rings wound by the right-hand rule (exterior
    rings counter-clockwise, holes clockwise), whatever the file had. With
    ``label``, each feature's ``label`` property is its property ``label``
    (the display labels districts by ``label`` first)."""
    if path is None:
        return NO_OUTLINE
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("boundary_missing path=%s error=%s (the display draws no outline)", path, exc)
        return NO_OUTLINE
    if label is not None:
        for feature in doc.get("features", []) if isinstance(doc, dict) else []:
            props = feature.get("properties") or {}
            if label in props:
                feature["properties"] = {**props, "label": props[label]}
    return orjson.dumps(rfc7946(doc))


def rfc7946(node: Any) -> Any:
    """A GeoJSON object with every ``crs`` member dropped and polygon rings
    rewound (exterior counter-clockwise, holes clockwise).

    >>> rfc7946({"type": "Polygon", "crs": {}, "coordinates": [[[0, 0], [0, 1], [1, 0], [0, 0]]]})
    {'type': 'Polygon', 'coordinates': [[[0, 0], [1, 0], [0, 1], [0, 0]]]}
    """
    if isinstance(node, list):
        return [rfc7946(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: rfc7946(v) for k, v in node.items() if k not in ("crs", "coordinates")}
    if "coordinates" in node:
        kind, coordinates = node.get("type"), node["coordinates"]
        if kind == "Polygon":
            coordinates = _wound(coordinates)
        elif kind == "MultiPolygon" and isinstance(coordinates, list):
            coordinates = [_wound(polygon) for polygon in coordinates]
        out["coordinates"] = coordinates
    return out


def _wound(rings: Any) -> Any:
    """A polygon's rings, the first counter-clockwise and the rest clockwise."""
    if not isinstance(rings, list):
        return rings
    out = []
    for i, ring_ in enumerate(rings):
        if isinstance(ring_, list) and len(ring_) >= 3:
            counter = _signed_area([p[:2] for p in ring_]) > 0
            if counter != (i == 0):
                ring_ = ring_[::-1]
        out.append(ring_)
    return out
