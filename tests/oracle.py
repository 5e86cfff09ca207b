"""An independent batch oracle: the definition of a score, computed directly.

It shares no code with the engine: its own CSV reading (stdlib csv),
its own time conversion (zoneinfo row by row), h3 called per point at every
resolution, the weight table read straight from the TOML, and
``sum w 2**(-(at - t)/h)`` summed with ``math.fsum``.
"""

from __future__ import annotations

import csv
import gzip
import math
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import h3

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "streamer" / "data" / "philadelphia_2025.csv.gz"
# Philadelphia's police districts: the copy shipped in streamer/data/ (the shared one
# beside the checkout is the same file)
DISTRICTS = ROOT / "streamer" / "data" / "philadelphia_police_districts.geojson"
NY = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class Row:
    id: str
    t_s: float
    lat: float
    lon: float
    category: str

    def moved(self, dlat: float, category: str) -> Row:
        return replace(self, lat=self.lat + dlat, category=category)


def read_rows(path: Path, limit: int | None = None) -> list[Row]:
    """Rows of a Philadelphia export (local times), in file order."""
    out: list[Row] = []
    with gzip.open(path, "rt", newline="") as handle:
        for rec in csv.DictReader(handle):
            local = datetime.strptime(rec["t_local"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=NY)
            out.append(
                Row(
                    rec["dc_key"],
                    local.timestamp(),
                    float(rec["lat"]),
                    float(rec["lon"]),
                    rec["text_general_code"],
                )
            )
            if limit is not None and len(out) >= limit:
                break
    return out


def weights() -> tuple[dict[str, float], float]:
    """Category weights (included ones) and the default weight, from the TOML."""
    with open(ROOT / "streamer" / "config" / "categories.toml", "rb") as handle:
        table = tomllib.load(handle)["categories"]
    default = table.get("default", {}).get("weight", 1.0)
    return (
        {
            name: (rule.get("weight", default) if rule.get("include", True) else 0.0)
            for name, rule in table.items()
            if name != "default"
        },
        default,
    )


def live(ops: Iterable[tuple[str, Row]]) -> dict[str, Row]:
    """The events alive after upserts/cancels applied in order (last wins)."""
    alive: dict[str, Row] = {}
    for op, row in ops:
        if op == "cancel":
            alive.pop(row.id, None)
        else:
            alive[row.id] = row
    return alive


def scores(
    rows: Iterable[Row],
    resolution: int,
    half_life_s: float,
    at_s: float,
    weight_of: dict[str, float],
    default: float,
) -> dict[str, float]:
    """Cell (hex) -> score at ``at_s``."""
    terms: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        w = weight_of.get(r.category, default)
        if w <= 0:
            continue
        cell = h3.latlng_to_cell(r.lat, r.lon, resolution)
        terms[cell].append(w * 2.0 ** (-(at_s - r.t_s) / half_life_s))
    return {c: math.fsum(v) for c, v in terms.items()}


def hour_of_week(t_s: float, zone: ZoneInfo) -> int:
    local = datetime.fromtimestamp(t_s, UTC).astimezone(zone)
    return local.weekday() * 24 + local.hour
