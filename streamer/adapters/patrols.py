"""Patrol dosage in Redis: pings in, visits and doses out.

Keys (``P`` = the store prefix; :mod:`streamer.adapters.keys` names them):

- ``P:patrol:pings:UNIT`` sorted set: score = ping time, member = the ping
  (JSON); exact duplicates collapse; older than ``dosage.retention`` trimmed.
- ``P:patrol:units`` set: units that ever pinged.
- ``P:patrol:visits:DAY`` hash: unit -> JSON list of its visits that started
  on local day ``DAY`` (``YYYY-MM-DD``), recomputed from the unit's pings
  (a function of the set of pings: redelivered, late or shuffled pings give
  the same visits).
- ``P:patrol:resume`` hash: unit -> the time its visits can be recomputed
  from (:func:`streamer.core.dosage.resume_at`), so a batch walks only the
  unit's pings since then.
- ``P:dosage:last`` sorted set: cell -> end of its latest visit (POSIX s).
- ``P:dosage:plan`` string: the plan (JSON: ``{"mode": "top"}`` or
  ``{"mode": "list", "cells": [{"cell", "units"}]}``).
- ``P:dosage:planned:DAY`` string: the plan's cells as fixed for that day
  (JSON: ``{"cells": [{"cell", "units"}], "fixed_at": POSIX s}``; an older
  bare list of cells is read too), fixed at the start of the day by the
  leader's dosage tick, or when an admin sets a plan (docs/dosage.md).
- ``P:dosage:watch`` hash: ``since``, when the engine's ping consumer first
  ran (POSIX s); ``through``, the time up to which it has read the pings
  topic (its last poll that left no backlog).
- ``P:dosage:notes`` hash: cell -> briefing note (JSON: text, author, updated_at).
- ``P:dosage:day:DAY`` string: the day's summary, as the leader last wrote it.
- ``P:dosage:alerts`` hash: cell -> id of its open "unvisited" alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streamer.adapters import keys
from streamer.adapters.decode import text
from streamer.adapters.store import Store
from streamer.core import dosage as core
from streamer.core.cells import center_hex
from streamer.settings import Settings

NOTE_MAX_CHARS = 2000
_HOURS_OF_PEAK = 6  # a cell's peak hours: its busiest hours of the weekday
WATCH_LAG_S = 120.0  # pings read up to this long ago still count as observing now


class PlanError(ValueError):
    """A plan or note the API refuses (the message says why)."""


def visit_rules(settings: Settings) -> core.VisitRules:
    d = settings.dosage
    return core.VisitRules(
        resolution=d.resolution,
        max_gap_s=d.max_gap,
        min_visit_s=d.min_visit,
        max_speed_mps=d.max_speed,
        patrol_statuses=frozenset([*d.patrol_statuses, None]),
        debounce_s=d.debounce,
        koper_visit_s=d.koper_visit,
    )


def _ping_json(p: core.Ping) -> bytes:
    return orjson.dumps([p.at_s, p.lat_deg, p.lon_deg, p.status, p.speed_mps])


def _ping_of(unit: str, raw: object) -> core.Ping:
    at_s, lat, lon, status, speed = orjson.loads(raw if isinstance(raw, bytes | str) else b"")
    return core.Ping(unit, float(at_s), float(lat), float(lon), status, speed)


def _visit_json(v: core.Visit) -> list[Any]:
    return [v.cell, v.start_s, v.end_s, v.seconds, v.pings]


def _visit_of(unit: str, row: list[Any]) -> core.Visit:
    cell, start_s, end_s, seconds, pings = row
    return core.Visit(unit, cell, float(start_s), float(end_s), float(seconds), int(pings))


def iso(t_s: float | None) -> str | None:
    return None if t_s is None else datetime.fromtimestamp(t_s, UTC).isoformat()


class Dosage:
    """Reads and writes one engine's dosage state."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.rules = visit_rules(settings)
        self.tz = ZoneInfo(settings.grid.timezone)
        d = settings.dosage
        self.requirement = core.Requirement(d.required_visits, d.required_visit)

    def day_of(self, t_s: float) -> str:
        return self.local_date(t_s).isoformat()

    def local_date(self, t_s: float) -> date:
        return datetime.fromtimestamp(t_s, self.tz).date()

    # pings and visits -------------------------------------------------
    async def add_pings(self, pings: Iterable[core.Ping]) -> dict[str, float]:
        """Store pings (one transaction); returns the units concerned, each
        with the time of its earliest ping in this batch."""
        by_unit: dict[str, list[core.Ping]] = {}
        for p in pings:
            by_unit.setdefault(p.unit, []).append(p)
        if not by_unit:
            return {}
        keep = self.settings.dosage.retention
        async with self.store.client.pipeline(transaction=True) as pipe:
            for unit, items in by_unit.items():
                key = keys.patrol_pings(self.store.prefix, unit)
                pipe.zadd(key, {_ping_json(p): p.at_s for p in items})
                newest = max(p.at_s for p in items)
                pipe.zremrangebyscore(key, "-inf", f"({newest - keep}")
            pipe.sadd(keys.patrol_units(self.store.prefix), *by_unit)
            await pipe.execute()
        return {unit: min(p.at_s for p in items) for unit, items in by_unit.items()}

    async def recompute(self, units: Mapping[str, float] | Iterable[str]) -> None:
        """Visits of each unit from its stored pings, written per local day
        (only the days its pings cover: older days are settled).

        Given each unit's earliest new ping (what :meth:`add_pings` returns),
        a unit whose new pings all come after its resume point (kept in
        ``P:patrol:resume``, see :func:`streamer.core.dosage.resume_at`) is
        walked from that point only, with the same result as a walk over all
        its pings; otherwise, and for a bare list of units, from all of them.
        Three pipelined reads and one transaction, whatever the number of units.
        """
        client = self.store.client
        earliest = dict(units) if isinstance(units, Mapping) else {}
        names = sorted(set(units))
        if not names:
            return
        resume_key = keys.patrol_resume(self.store.prefix)
        stored_resumes = await client.hmget(resume_key, names)
        since: dict[str, float] = {}
        for unit, raw_resume in zip(names, stored_resumes, strict=True):
            if raw_resume is not None and unit in earliest and earliest[unit] > float(raw_resume):
                since[unit] = float(raw_resume)
        async with client.pipeline(transaction=False) as pipe:
            for unit in names:
                pings_key = keys.patrol_pings(self.store.prefix, unit)
                if unit in since:
                    pipe.zrangebyscore(pings_key, repr(since[unit]), "+inf")
                else:
                    pipe.zrange(pings_key, 0, -1)
            raw_pings = await pipe.execute()
        walks = []  # (unit, its pings, the first and last local day they cover)
        for unit, raw in zip(names, raw_pings, strict=True):
            pings = [_ping_of(unit, member) for member in raw]
            if pings:
                times = [p.at_s for p in pings]
                first, final = (self.local_date(t) for t in (min(times), max(times)))
                walks.append((unit, pings, first, final))
        resumed_units = [(unit, first) for unit, _, first, _ in walks if unit in since]
        async with client.pipeline(transaction=False) as pipe:
            for unit, first in resumed_units:
                pipe.hget(keys.patrol_visits(self.store.prefix, first.isoformat()), unit)
            stored = await pipe.execute()
        stored_lists = {unit: raw for (unit, _), raw in zip(resumed_units, stored, strict=True)}
        last: dict[str, float] = {}
        async with client.pipeline(transaction=True) as pipe:
            for unit, pings, first_day, last_day in walks:
                resumed = since.get(unit)
                every = core.visits_of(pings, self.rules, include_pass_bys=True)
                resume = core.resume_at(pings, every, self.rules)
                visits = [v for v in every if v.kind == "visit"]
                by_day: dict[str, list[list[Any]]] = {}
                if resumed is not None:
                    # the first day's visits from before the resume point stand
                    rows = orjson.loads(stored_lists.get(unit) or b"[]")
                    settled = [row for row in rows if row[1] < resumed]
                    if settled:
                        by_day[first_day.isoformat()] = settled
                for v in visits:
                    by_day.setdefault(self.day_of(v.start_s), []).append(_visit_json(v))
                    last[v.cell] = max(last.get(v.cell, v.end_s), v.end_s)
                day = first_day
                while day <= last_day:
                    name = day.isoformat()
                    key = keys.patrol_visits(self.store.prefix, name)
                    if name in by_day:
                        pipe.hset(key, unit, orjson.dumps(by_day[name]))
                    elif day > first_day or resumed is not None:
                        # (a full walk's first day may hold visits from trimmed pings)
                        pipe.hdel(key, unit)
                    day += timedelta(days=1)
                if resume is not None:
                    pipe.hset(resume_key, unit, repr(resume))
                else:
                    pipe.hdel(resume_key, unit)
            if last:
                pipe.zadd(keys.last_visits(self.store.prefix), last, gt=True)
            await pipe.execute()

    async def visits_on(self, day: str) -> list[core.Visit]:
        """Every unit's visits that started on ``day``."""
        raw = await self.store.client.hgetall(keys.patrol_visits(self.store.prefix, day))
        out: list[core.Visit] = []
        for unit, rows in raw.items():
            name = unit.decode() if isinstance(unit, bytes) else str(unit)
            out += [_visit_of(name, row) for row in orjson.loads(rows)]
        return out

    # the plan -------------------------------------------------------------
    async def plan(self) -> dict[str, Any]:
        raw = await self.store.client.get(keys.dosage_plan(self.store.prefix))
        d = self.settings.dosage
        base: dict[str, Any] = {
            "mode": "top",
            "horizon": d.plan_horizon,
            "resolution": d.resolution,
            "top_n": d.plan_top_n,
        }
        if raw:
            base.update(orjson.loads(raw))
        return base

    async def set_plan(self, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        """Set the plan (admin): ``{"mode": "top"}`` or ``{"mode": "list",
        "cells": [{"cell": HEX, "units": [..]}, ...]}``; today's planned cells
        are fixed again at once, from the new plan and the ranking of now."""
        mode = body.get("mode")
        if mode == "top":
            plan: dict[str, Any] = {"mode": "top"}
        elif mode == "list":
            cells = body.get("cells")
            if not isinstance(cells, list) or not cells:
                raise PlanError("a list plan needs 'cells': [{'cell': hex, 'units': [...]}, ...]")
            plan = {"mode": "list", "cells": [self._entry(c) for c in cells]}
        else:
            raise PlanError("'mode' is 'top' (the ranking's top N) or 'list'")
        plan["updated_at"] = iso(now_s)
        async with self.store.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.dosage_plan(self.store.prefix), orjson.dumps(plan))
            pipe.delete(keys.planned_cells(self.store.prefix, self.day_of(now_s)))
            await pipe.execute()
        await self.fix_plan(self.day_of(now_s), now_s)
        return await self.plan()

    def _entry(self, raw: object) -> dict[str, Any]:
        if isinstance(raw, str):
            raw = {"cell": raw}
        if not isinstance(raw, Mapping) or not isinstance(raw.get("cell"), str):
            raise PlanError("each planned cell is {'cell': hex, 'units': [unit, ...]}")
        cell = str(raw["cell"]).lower()
        try:
            valid = int(cell, 16) > 0 and (int(cell, 16) >> 52) & 0xF == self.rules.resolution
        except ValueError:
            valid = False
        if not valid:
            raise PlanError(f"{cell!r} is not a cell of resolution {self.rules.resolution}")
        units = raw.get("units", [])
        if not isinstance(units, list) or not all(isinstance(u, str) and u for u in units):
            raise PlanError(f"'units' of {cell} must be a list of unit names")
        return {"cell": cell, "units": sorted(set(units))}

    async def planned(self, day: str, now_s: float) -> list[dict[str, Any]]:
        """The plan's cells for ``day``: as fixed for it (:meth:`fix_plan`),
        else as the plan stands at ``now_s`` (a top-N plan: the ranking of
        that moment). Reading never fixes a plan."""
        fixed = await self._fixed(day)
        return fixed[0] if fixed is not None else await self._plan_cells(now_s)

    async def fix_plan(self, day: str, now_s: float) -> list[dict[str, Any]]:
        """Fix ``day``'s planned cells from the plan and the ranking at
        ``now_s``, unless they are fixed already (the first call wins, also
        across workers); returns the day's cells. Only today's plan is
        fixed: a past day's ranking is not the one it had then."""
        fixed = await self._fixed(day)
        if fixed is not None or self.day_of(now_s) != day:
            return fixed[0] if fixed is not None else await self._plan_cells(now_s)
        cells = await self._plan_cells(now_s)
        record = orjson.dumps({"cells": cells, "fixed_at": now_s})
        key = keys.planned_cells(self.store.prefix, day)
        if not await self.store.client.set(key, record, nx=True, ex=400 * 86400):
            fixed = await self._fixed(day)  # another worker fixed it first
            return fixed[0] if fixed is not None else cells
        return cells

    async def plan_fixed_at(self, day: str) -> float | None:
        """When ``day``'s planned cells were fixed (None: not fixed; NaN: fixed
        by an older engine, which did not record when)."""
        fixed = await self._fixed(day)
        return None if fixed is None else fixed[1]

    async def _fixed(self, day: str) -> tuple[list[dict[str, Any]], float] | None:
        raw = await self.store.client.get(keys.planned_cells(self.store.prefix, day))
        if not raw:
            return None
        record = orjson.loads(raw)
        if isinstance(record, list):  # written before plans recorded when
            return record, math.nan
        return list(record["cells"]), float(record["fixed_at"])

    async def _plan_cells(self, now_s: float) -> list[dict[str, Any]]:
        plan = await self.plan()
        if plan["mode"] == "list":
            return list(plan["cells"])
        top = await self.store.top(plan["horizon"], plan["resolution"], plan["top_n"], now_s)
        return [{"cell": r.cell, "units": []} for r in top]

    # what the engine has observed ---------------------------------------
    async def watched(self, now_s: float, *, caught_up: bool) -> None:
        """The ping consumer's mark after a poll: ``since`` is set once,
        ``through`` moves to ``now_s`` when the poll left no backlog."""
        key = keys.ping_watch(self.store.prefix)
        async with self.store.client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, "since", repr(now_s))
            if caught_up:
                pipe.hset(key, "through", repr(now_s))
            await pipe.execute()

    async def watch(self) -> tuple[float | None, float | None]:
        """``(since, through)`` of :meth:`watched` (None where never marked)."""
        since, through = await self.store.client.hmget(
            keys.ping_watch(self.store.prefix), ["since", "through"]
        )
        return (
            None if since is None else float(since),
            None if through is None else float(through),
        )

    def day_start(self, day: str) -> float:
        """Local midnight at the start of ``day`` (POSIX s)."""
        return datetime.combine(date.fromisoformat(day), datetime.min.time(), self.tz).timestamp()

    async def observation(self, day: str, now_s: float) -> dict[str, Any]:
        """Whether the engine observed ``day``'s patrol window up to
        ``now_s``: its ping consumer ran from before the day began and has
        read the pings topic up to within :data:`WATCH_LAG_S` (or three
        dosage intervals, if longer) of now. ``reason`` says why not."""
        since, through = await self.watch()
        start = self.day_start(day)
        lag_s = max(WATCH_LAG_S, 3 * self.settings.dosage.interval)
        if since is None:
            reason: str | None = "no patrol pings read yet"
        elif since > start:
            reason = f"pings read only since {iso(since)}, after the day began"
        elif through is None or through < now_s - lag_s:
            reason = f"pings read only up to {iso(through)} (consumer behind or stopped)"
        else:
            reason = None
        return {
            "observed": reason is None,
            "since": iso(since),
            "through": iso(through),
            "reason": reason,
        }

    # notes ------------------------------------------------------------------
    async def notes(self) -> dict[str, dict[str, Any]]:
        raw = await self.store.client.hgetall(keys.briefing_notes(self.store.prefix))
        return {text(k): orjson.loads(v) for k, v in raw.items()}

    async def set_note(self, cell: str, text: str, author: str, now_s: float) -> dict[str, Any]:
        cell = self._entry({"cell": cell})["cell"]
        if len(text) > NOTE_MAX_CHARS:
            raise PlanError(f"a note has at most {NOTE_MAX_CHARS} characters")
        note = {"text": text, "author": author, "updated_at": iso(now_s)}
        key = keys.briefing_notes(self.store.prefix)
        if text.strip():
            await self.store.client.hset(key, cell, orjson.dumps(note))
        else:
            await self.store.client.hdel(key, cell)
        return note

    # summaries ------------------------------------------------------------
    async def peak_hours(
        self, cells: list[str], day: str, now_s: float
    ) -> dict[str, frozenset[int]]:
        """Each cell's busiest local hours on ``day``'s weekday, from its
        hour-of-week profile (cells without a profile are left out)."""
        if not cells or not self.settings.dosage.peak_hours:
            return {}
        weekday = date.fromisoformat(day).weekday()
        details = await self.store.cells(cells, now_s)
        out: dict[str, frozenset[int]] = {}
        for cell, d in details.items():
            hours = d.hour_of_week[weekday * 24 : weekday * 24 + 24]
            if len(hours) == 24 and sum(hours) > 0:
                ranked = sorted(range(24), key=lambda h: (-hours[h], h))[:_HOURS_OF_PEAK]
                out[cell] = frozenset(ranked)
        return out

    async def summary(self, day: str, now_s: float) -> dict[str, Any]:
        """Per planned cell: visits, minutes, Koper visits, last visit, days
        since, compliance; per unit: minutes in the planned cells."""
        planned = await self.planned(day, now_s)
        cells = [e["cell"] for e in planned]
        previous = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        visits = await self.visits_on(day) + await self.visits_on(previous)
        doses = core.dose_by_day(
            visits, set(cells), self.tz, koper_visit_s=self.rules.koper_visit_s
        )
        starting = core.visits_by_day(visits, self.tz)
        peaks = await self.peak_hours(cells, day, now_s)
        lasts = await self._last_visits(cells)
        notes = await self.notes()
        rows = []
        for entry in planned:
            cell = entry["cell"]
            dose = doses.get((cell, day))
            req = core.Requirement(
                self.requirement.visits_per_day, self.requirement.min_visit_s, peaks.get(cell)
            )
            todays = starting.get((cell, day), [])
            lat, lon = center_hex(cell)
            since = core.days_since_last_visit(lasts.get(cell), now_s)
            rows.append(
                {
                    "cell": cell,
                    "center": [lat, lon],
                    "units_tasked": entry.get("units", []),
                    "visits": dose.visits if dose else 0,
                    "minutes": (dose.seconds if dose else 0.0) / 60.0,
                    "koper_visits": dose.koper_visits if dose else 0,
                    "last_visit_at": iso(lasts.get(cell)),
                    "days_since_last_visit": since,
                    "compliant": core.compliance(todays, req, self.tz),
                    "required": {
                        "visits": req.visits_per_day,
                        "minutes": req.min_visit_s / 60.0,
                        "hours": sorted(req.hours) if req.hours else None,
                    },
                    "units": {u: s / 60.0 for u, s in (dose.units if dose else {}).items()},
                    "note": notes.get(cell),
                }
            )
        in_day = [v for v in visits if self.day_of(v.start_s) == day]
        units = core.unit_minutes_in(in_day, set(cells))
        fixed_at = await self.plan_fixed_at(day)
        return {
            "date": day,
            "resolution": self.rules.resolution,
            "at": iso(now_s),
            "plan_fixed_at": None if fixed_at is None or math.isnan(fixed_at) else iso(fixed_at),
            "plan_fixed": fixed_at is not None,
            "observation": await self.observation(day, now_s),
            "cells": rows,
            "covered": sum(1 for r in rows if r["compliant"]),
            "planned": len(rows),
            "units": {u: s / 60.0 for u, s in sorted(units.items())},
        }

    async def plan_recorded(self, day: str) -> bool:
        """Whether ``day``'s planned cells were fixed (on that day)."""
        return bool(await self.store.client.exists(keys.planned_cells(self.store.prefix, day)))

    async def _last_visits(self, cells: list[str]) -> dict[str, float]:
        if not cells:
            return {}
        scores = await self.store.client.zmscore(keys.last_visits(self.store.prefix), cells)
        return {c: float(s) for c, s in zip(cells, scores, strict=True) if s is not None}

    async def unit_view(self, unit: str, day: str, now_s: float) -> dict[str, Any]:
        """The officer's page: the unit's tasked cells (all planned cells when
        the plan names no units for them), notes, its minutes there today."""
        summary = await self.summary(day, now_s)
        tasks = [
            {
                "cell": r["cell"],
                "center": r["center"],
                "note": r["note"],
                "minutes_by_you": r["units"].get(unit, 0.0),
                "minutes": r["minutes"],
                "compliant": r["compliant"],
                "required": r["required"],
                "last_visit_at": r["last_visit_at"],
            }
            for r in summary["cells"]
            if not r["units_tasked"] or unit in r["units_tasked"]
        ]
        return {"unit": unit, "date": day, "at": summary["at"], "tasks": tasks}

    def overdue(self, summary: Mapping[str, Any], now_s: float) -> list[tuple[str, str]]:
        """Planned cells to warn about (unvisited late in the window, or for
        days), only over what the engine observed: nothing unless the day's
        plan is fixed and its window observed (``summary["observation"]``),
        and "unvisited for N days" only when the engine has read pings since
        the cell's last visit ended."""
        if not summary["plan_fixed"] or not summary["observation"]["observed"]:
            return []
        since = datetime.fromisoformat(summary["observation"]["since"]).timestamp()
        rows = summary["cells"]
        # a cell never visited counts from the start of today: it is late in
        # its window like any other, but not "unvisited for days" on day one;
        # so does one last visited before the engine watched (the days since
        # were not all observed)
        midnight = self.day_start(self.day_of(now_s))
        last: dict[str, float] = {}
        for r in rows:
            seen = r["last_visit_at"]
            seen_s = datetime.fromisoformat(seen).timestamp() if seen else midnight
            last[r["cell"]] = seen_s if seen_s >= since else midnight
        out: list[tuple[str, str]] = []
        for r in rows:
            hours = r["required"]["hours"]
            req = core.Requirement(
                self.requirement.visits_per_day,
                self.requirement.min_visit_s,
                frozenset(hours) if hours else None,
            )
            out += core.overdue(
                [r["cell"]],
                last,
                now_s,
                self.tz,
                req,
                late_after_hour=self.settings.dosage.late_after_hour,
                days_limit=self.settings.dosage.unvisited_days,
                compliant_today={r["cell"]} if r["compliant"] else set(),
            )
        return out
