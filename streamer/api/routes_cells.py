"""Cells by place and time: ``/v1/cells/{cell}`` (one cell in full),
``/v1/risk`` (a location's cells for dispatch, also in the fast lane) and
``/v1/windows`` (the top cells of a time-of-week window)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException, Query
from fastapi.responses import Response

from streamer.api.auth import DISPATCH
from streamer.api.context import Api
from streamer.api.geojson import polygon
from streamer.api.lane import LaneApp, caller_of, query_of
from streamer.api.params import RISK_PARAMS, decimal_in, window_hours
from streamer.api.ranking import peak_hours
from streamer.core import decay
from streamer.core.cells import cell_from_hex, cell_hex, cell_of, ring


async def risk_answer(api: Api, lat: float, lon: float) -> Response:
    """``/v1/risk``'s answer for a location."""
    store = api.store
    at_s = await api.now()
    cells = [cell_hex(cell_of(lat, lon, r)) for r in store.resolutions]
    pairs = list(zip(store.resolutions, cells, strict=True))
    seq, landmarks, rows = await store.positions(pairs)
    top_n = api.settings.publish.top_n
    factors = {
        n: decay.decay_factor(at_s, store.horizons[n], k)
        for n, k in landmarks.items()
        if k is not None
    }
    out = []
    for res, c, per in zip(store.resolutions, cells, rows, strict=True):
        horizons: dict[str, Any] = {}
        for n, found in per.items():
            if found is None or n not in factors:
                horizons[n] = {"rank": None, "score": 0.0, "percentile": 0.0, "hotspot": False}
                continue
            rank, stored, size = found
            horizons[n] = {
                "rank": rank + 1,
                "score": stored * factors[n],
                "percentile": 100.0 * (1.0 - rank / max(size, 1)),
                "hotspot": rank < top_n,
            }
        out.append({"resolution": res, "cell": c, "horizons": horizons})
    # serialised here: FastAPI's encoder walks every value of a returned dict
    inside = api.area is None or api.area.contains(lat, lon)
    body = {"at": at_s, "sequence": seq, "in_study_area": inside, "cells": out}
    return Response(orjson.dumps(body), media_type="application/json")


def add_routes(app: LaneApp, api: Api) -> None:
    store, anyone, dispatch = api.store, api.guards.anyone, api.guards.dispatch

    @app.get("/v1/cells/{cell}", dependencies=[anyone])
    async def cell_detail(cell: str) -> dict[str, Any]:
        """One cell in full, with its neighbours' scores."""
        try:
            value = cell_from_hex(cell)
        except ValueError:
            raise HTTPException(404, "not an H3 cell id") from None
        hexed = cell_hex(value)
        at_s = await api.now()
        d = await store.cell(hexed, at_s)
        if d is None or d.count < api.settings.api.min_count:
            raise HTTPException(404, "no data for this cell")
        neighbours = [cell_hex(c) for c in ring(value, 1) if c != value]
        near = await store.cells(neighbours, at_s)
        return {
            "cell": hexed,
            "resolution": (value >> 52) & 0xF,
            "at": at_s,
            "count": d.count,
            "last_event_at": d.last_event_s,
            "scores": d.scores,
            "families": {"counts": d.family_counts, "scores": d.family_scores},
            "categories": {"counts": d.category_counts, "scores": d.category_scores},
            "hour_of_week": d.hour_of_week,
            "peak_hours": peak_hours(d.hour_of_week),
            "polygon": polygon(hexed),
            "neighbours": {
                c: near[c].scores if c in near else dict.fromkeys(store.names, 0.0)
                for c in neighbours
            },
        }

    @app.get("/v1/risk", dependencies=[dispatch])
    async def risk(
        lat: float = Query(..., ge=-90, le=90), lon: float = Query(..., ge=-180, le=180)
    ) -> Response:
        """For dispatch: the location's cell at each resolution and its rank,
        percentile and hot-spot status (in the top ``publish.top_n``) per horizon."""
        return await risk_answer(api, lat, lon)

    async def risk_fast(scope: Any) -> Response | None:
        """``/v1/risk`` in the fast lane (:class:`LaneApp`), or None."""
        query = query_of(scope)
        caller = caller_of(api.gate, scope)
        if caller is None or caller.role not in DISPATCH or not query.keys() <= RISK_PARAMS:
            # (a token in the URL among them: refused the general way)
            return None
        lat = decimal_in(query.get("lat"), 90.0)
        lon = decimal_in(query.get("lon"), 180.0)
        return None if lat is None or lon is None else await risk_answer(api, lat, lon)

    app.lanes["/v1/risk"] = risk_fast

    @app.get("/v1/windows", dependencies=[anyone])
    async def windows(
        day: str = Query(..., description="mon..sun"),
        start: str = Query(..., alias="from", description="HH:MM"),
        end: str = Query(..., alias="to", description="HH:MM (may pass midnight)"),
        resolution: int = Query(9),
        limit: int = Query(20, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Top cells for a time-of-week window, by their hour-of-week profile."""
        api.check_grid(store.profile_horizon, resolution)
        hours = window_hours(day, start, end)
        at_s = await api.now()
        rows = await store.window(resolution, hours, limit, at_s)
        return {
            "at": at_s,
            "resolution": resolution,
            "hours_of_week": hours,
            "timezone": api.settings.grid.timezone,
            "hotspots": [
                {"cell": r.cell, "rank": r.rank, "score": r.score, "polygon": polygon(r.cell)}
                for r in rows
            ],
        }
