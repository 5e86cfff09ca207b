"""The demo's simulated patrols: their pings make the visits they were meant to."""

from __future__ import annotations

import h3

from streamer.core.dosage import Ping, VisitRules, visits_of
from streamer.local.patrol_sim import PatrolSimulator

CELLS = [
    h3.latlng_to_cell(39.9526, -75.1652, 10),
    h3.latlng_to_cell(39.9610, -75.1550, 10),
    h3.latlng_to_cell(39.9400, -75.1700, 10),
    h3.latlng_to_cell(39.9700, -75.1800, 10),
]
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def pings_of(sim: PatrolSimulator, until_s: float) -> dict[str, list[Ping]]:
    out: dict[str, list[Ping]] = {}
    from datetime import datetime

    for p in sim.advance(until_s):
        at = datetime.fromisoformat(p["at"]).timestamp()
        ping = Ping(p["unit"], at, p["lat"], p["lon"], p["status"], p["speed"])
        out.setdefault(p["unit"], []).append(ping)
    return out


def test_simulated_stays_become_visits_of_ten_to_eighteen_minutes() -> None:
    sim = PatrolSimulator(["P-1", "P-2"], CELLS, T0, seed=3)
    # advancing in steps gives the same pings as at once
    again = PatrolSimulator(["P-1", "P-2"], CELLS, T0, seed=3)
    stepped: dict[str, list[Ping]] = {}
    for k in range(1, 25):
        for unit, ps in pings_of(again, T0 + k * 3600).items():
            stepped.setdefault(unit, []).extend(ps)
    whole = pings_of(sim, T0 + 24 * 3600)
    assert whole == stepped
    rules = VisitRules(resolution=10)
    for unit, pings in whole.items():
        visits = visits_of(pings, rules)
        route = set(CELLS[0::2]) if unit == "P-1" else set(CELLS[1::2])
        assert len(visits) >= 20, (unit, len(visits))
        assert {v.cell for v in visits} == route
        # stays of 10-18 min, pinged every 30 s: a visit spans all but < 1 interval
        assert all(570 <= v.seconds <= 1080 for v in visits), [v.seconds for v in visits]
