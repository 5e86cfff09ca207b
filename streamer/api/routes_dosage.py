"""The patrol dosage routes (``/v1/dosage``): the day's planned hot spots
and their visits, the plan, the briefing notes and a unit's tasks, over
what :class:`~streamer.adapters.patrols.Dosage` keeps."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query

from streamer.adapters.patrols import Dosage, PlanError
from streamer.api.auth import Caller
from streamer.api.context import Api
from streamer.api.errors import MESSAGE_CHARS, invalid
from streamer.api.geojson import polygon
from streamer.api.params import local_day

log = logging.getLogger("hotspots.api")


def add_routes(app: FastAPI, api: Api) -> None:
    anyone, admin = api.guards.anyone, api.guards.admin
    dosage = Dosage(api.store, api.settings)

    def dosage_on() -> None:
        if not api.settings.dosage.enabled:
            raise HTTPException(404, "patrol dosage is off on this server (dosage.enabled = false)")

    # (routes list it after the token check: no token, nothing learnt, not even this)
    dosage_enabled = Depends(dosage_on)
    day_query = Query(
        None,
        alias="date",
        description="local day YYYY-MM-DD in grid.timezone (default: today on the engine's clock)",
    )

    @app.get("/v1/dosage", dependencies=[anyone, dosage_enabled])
    async def dosage_summary(day: str | None = day_query) -> dict[str, Any]:
        """Per planned hot spot on ``date``: visits, minutes, Koper visits,
        last visit, days since, compliance, minutes per unit, briefing note,
        hexagon; per unit: minutes in the planned hot spots."""
        now_s = await api.now()
        summary = await dosage.summary(local_day(day, dosage.day_of(now_s)), now_s)
        for row in summary["cells"]:
            row["polygon"] = polygon(row["cell"])
        return summary

    @app.get("/v1/dosage/plan", dependencies=[anyone, dosage_enabled])
    async def dosage_plan() -> dict[str, Any]:
        """The plan: the ranking's top N, or a list of cells with their units."""
        return await dosage.plan()

    @app.put("/v1/dosage/plan", dependencies=[admin, dosage_enabled])
    async def set_dosage_plan(
        body: Annotated[dict[str, Any], Body(examples=[{"mode": "list", "cells": []}])],
        caller: Caller = admin,
    ) -> dict[str, Any]:
        """Set the plan (admin): ``{"mode": "top"}`` or ``{"mode": "list",
        "cells": [{"cell": HEX, "units": [UNIT, ...]}, ...]}``; today's
        planned cells follow at once."""
        try:
            plan = await dosage.set_plan(body, await api.now())
        except PlanError as exc:
            raise invalid("body", "plan", str(exc)[:MESSAGE_CHARS], None) from None
        log.info("dosage_plan_set by=%s mode=%s", caller.name, plan.get("mode"))
        return plan

    @app.get("/v1/dosage/notes", dependencies=[anyone, dosage_enabled])
    async def dosage_notes() -> dict[str, Any]:
        """Briefing notes by cell: ``{"notes": {cell: {text, author, updated_at}}}``."""
        return {"notes": await dosage.notes()}

    @app.put("/v1/dosage/notes/{cell}", dependencies=[admin, dosage_enabled])
    async def set_dosage_note(
        cell: str,
        text: Annotated[str, Body(embed=True, description="the note; empty removes it")],
        caller: Caller = admin,
    ) -> dict[str, Any]:
        """Write a hot spot's briefing note (admin); its author is the token's name."""
        try:
            note = await dosage.set_note(cell, text, caller.name, await api.now())
        except PlanError as exc:
            raise invalid("body", "text", str(exc)[:MESSAGE_CHARS], None) from None
        log.info("dosage_note_set cell=%s by=%s chars=%d", cell.lower(), caller.name, len(text))
        return {"cell": cell.lower(), **note}

    @app.get("/v1/dosage/unit/{unit}", dependencies=[anyone, dosage_enabled])
    async def dosage_unit(unit: str, day: str | None = day_query) -> dict[str, Any]:
        """The officer's page: the unit's tasked hot spots, notes and minutes."""
        now_s = await api.now()
        view = await dosage.unit_view(unit, local_day(day, dosage.day_of(now_s)), now_s)
        for task in view["tasks"]:
            task["polygon"] = polygon(task["cell"])
        return view
