"""Synthetic clusters for the alert harness (pure): ``k`` events spread
uniformly over a disc and a span of time, centred on real background events
and kept apart so that one alert cannot detect two."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.core.alert_replay import DAY_S, Events, FloatArray, IntArray
from streamer.core.cells import cell_hex, cells_of_many

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


@dataclass(frozen=True, slots=True)
class Cluster:
    """One injected cluster: where, when, and the cells of its events."""

    number: int
    start_s: float
    end_s: float  # start + duration
    lat_deg: float  # centre
    lon_deg: float
    t_s: tuple[float, ...]  # its events' times, sorted
    cells: frozenset[str]  # the cells its events fell in


def offsets_in_disc(
    lat_deg: float, lon_deg: float, radius_m: float, n: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """``n`` points uniformly distributed over the disc of ``radius_m``
    around a point (great-circle distance; the destination-point formula)."""
    distance = radius_m * np.sqrt(rng.random(n)) / EARTH_RADIUS_M  # radians
    bearing = 2.0 * np.pi * rng.random(n)
    lat1, lon1 = math.radians(lat_deg), math.radians(lon_deg)
    lat2 = np.arcsin(
        math.sin(lat1) * np.cos(distance) + math.cos(lat1) * np.sin(distance) * np.cos(bearing)
    )
    lon2 = lon1 + np.arctan2(
        np.sin(bearing) * np.sin(distance) * math.cos(lat1),
        np.cos(distance) - math.sin(lat1) * np.sin(lat2),
    )
    return np.degrees(lat2), np.degrees(lon2)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine).

    >>> round(distance_m(39.95, -75.16, 39.96, -75.16))
    1112
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def draw_clusters(
    background: Events,
    *,
    size: int,
    count: int,
    radius_m: float,
    duration_s: float,
    from_s: float,
    to_s: float,
    resolution: int,
    rng: np.random.Generator,
    separation_m: float = 2000.0,
    separation_s: float = 2 * DAY_S,
    max_draws: int = 10_000,
) -> tuple[list[Cluster], Events]:
    """``count`` clusters of ``size`` events in ``[from_s, to_s)`` and their
    events (``cluster`` = the cluster's number, counting 1 each).

    Each centre is a random background event of the span; each start is
    uniform in ``[from_s, to_s - duration_s]``; its events are uniform over
    the disc of ``radius_m`` and at sorted uniform times within
    ``duration_s`` of the start; categories are drawn from the span's
    background events. A cluster closer than ``separation_m`` to another
    whose time (extended by ``separation_s`` after its end) overlaps is
    drawn again, so one alert can never detect two clusters.
    """
    if size < 1 or count < 1:
        raise ValueError("clusters need a size and a count of at least 1")
    if to_s - from_s < duration_s:
        raise ValueError("the evaluation span is shorter than one cluster")
    pool = np.flatnonzero((background.t_s >= from_s) & (background.t_s < to_s))
    if pool.size == 0:
        raise ValueError("no background event in the evaluation span to centre clusters on")
    clusters: list[Cluster] = []
    columns: list[tuple[FloatArray, FloatArray, FloatArray, IntArray]] = []
    draws = 0
    while len(clusters) < count:
        draws += 1
        if draws > max_draws:
            raise ValueError(
                f"could not place {count} separated clusters in the span after "
                f"{max_draws} draws; use fewer clusters or a longer span"
            )
        centre = int(pool[rng.integers(pool.size)])
        lat0, lon0 = float(background.lat_deg[centre]), float(background.lon_deg[centre])
        start = float(from_s + rng.random() * (to_s - duration_s - from_s))
        end = start + duration_s
        if any(
            start < other.end_s + separation_s
            and other.start_s < end + separation_s
            and distance_m(lat0, lon0, other.lat_deg, other.lon_deg) < separation_m
            for other in clusters
        ):
            continue
        lat, lon = offsets_in_disc(lat0, lon0, radius_m, size, rng)
        t = np.sort(start + rng.random(size) * duration_s)
        category = background.category[pool[rng.integers(pool.size, size=size)]]
        cells = cells_of_many(lat, lon, [resolution])[:, 0]
        clusters.append(
            Cluster(
                number=len(clusters),
                start_s=start,
                end_s=end,
                lat_deg=lat0,
                lon_deg=lon0,
                t_s=tuple(t.tolist()),
                cells=frozenset(cell_hex(int(c)) for c in cells.tolist()),
            )
        )
        columns.append((t, lat, lon, category))
    t_all = np.concatenate([c[0] for c in columns])
    lat_all = np.concatenate([c[1] for c in columns])
    lon_all = np.concatenate([c[2] for c in columns])
    order = np.argsort(t_all, kind="stable")
    numbers = np.repeat(np.arange(count, dtype=np.int64), size)
    injected = Events(
        t_s=t_all[order],
        lat_deg=lat_all[order],
        lon_deg=lon_all[order],
        cell=cells_of_many(lat_all[order], lon_all[order], [resolution])[:, 0],
        category=np.concatenate([c[3] for c in columns])[order],
        factor=np.ones(t_all.size),
        cluster=numbers[order],
        categories=background.categories,
    )
    return clusters, injected
