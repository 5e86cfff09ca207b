"""Simulated patrol units for the demo (there is no public GPS/AVL data).

Each unit walks a round of hot spots: it stays at one for 10 to 18 minutes
(pings jittered by a few metres around the cell's centre), then drives to
the next at ``drive_mps``, pinging every ``every_s`` seconds of event time.
Deterministic for a seed; :meth:`PatrolSimulator.advance` yields the pings
up to a moment, so a replay can keep them in step with its event clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamer.core.cells import center_hex
from streamer.core.dosage import distance_m


@dataclass(slots=True)
class _Leg:
    kind: str  # "stay" | "drive"
    start_s: float
    end_s: float
    origin: tuple[float, float]
    target: tuple[float, float]


@dataclass(slots=True)
class _Unit:
    name: str
    route: list[str]
    stop: int
    leg: _Leg
    next_ping_s: float
    rng: random.Random


class PatrolSimulator:
    """Units patrolling ``cells`` (hex ids), unit ``i`` taking every
    ``len(units)``-th cell in turn."""

    def __init__(
        self,
        units: Sequence[str],
        cells: Sequence[str],
        start_s: float,
        *,
        seed: int = 1,
        every_s: float = 30.0,
        stay_s: tuple[float, float] = (600.0, 1080.0),
        drive_mps: float = 8.0,
    ) -> None:
        if not units or not cells:
            raise ValueError("a patrol simulation needs units and cells")
        self.every_s = every_s
        self.stay_s = stay_s
        self.drive_mps = drive_mps
        self.units: list[_Unit] = []
        for i, name in enumerate(units):
            route = list(cells[i :: len(units)]) or [cells[i % len(cells)]]
            rng = random.Random(f"{seed}:{name}")
            here = center_hex(route[0])
            first = _Leg("stay", start_s, start_s + rng.uniform(*stay_s), here, here)
            self.units.append(_Unit(name, route, 0, first, start_s + rng.uniform(0, every_s), rng))

    def advance(self, to_s: float) -> Iterator[dict[str, Any]]:
        """Every unit's pings from where it stopped up to ``to_s``, as JSON-ready dicts."""
        for unit in self.units:
            while unit.next_ping_s <= to_s:
                t = unit.next_ping_s
                while t > unit.leg.end_s:
                    self._next_leg(unit)
                yield self._ping(unit, t)
                unit.next_ping_s = t + self.every_s

    def _next_leg(self, unit: _Unit) -> None:
        leg = unit.leg
        if leg.kind == "stay":
            unit.stop = (unit.stop + 1) % len(unit.route)
            target = center_hex(unit.route[unit.stop])
            metres = distance_m(*leg.target, *target)
            unit.leg = _Leg(
                "drive", leg.end_s, leg.end_s + metres / self.drive_mps, leg.target, target
            )
        else:
            stay = unit.rng.uniform(*self.stay_s)
            unit.leg = _Leg("stay", leg.end_s, leg.end_s + stay, leg.target, leg.target)

    def _ping(self, unit: _Unit, t: float) -> dict[str, Any]:
        leg = unit.leg
        if leg.kind == "stay":
            lat = leg.target[0] + unit.rng.uniform(-2e-5, 2e-5)
            lon = leg.target[1] + unit.rng.uniform(-2e-5, 2e-5)
            status, speed = "patrol", round(unit.rng.uniform(0.3, 1.4), 2)
        else:
            span = leg.end_s - leg.start_s
            f = 0.0 if span <= 0 else min(max((t - leg.start_s) / span, 0.0), 1.0)
            lat = leg.origin[0] + f * (leg.target[0] - leg.origin[0])
            lon = leg.origin[1] + f * (leg.target[1] - leg.origin[1])
            status, speed = "patrol", self.drive_mps
        return {
            "unit": unit.name,
            "at": datetime.fromtimestamp(math.floor(t), UTC).isoformat(),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "status": status,
            "speed": speed,
        }
