"""``/v1/hotspots`` (ranked cells, also in the fast lane) and
``/v1/blends/{name}`` (a configured blend's ranking)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException, Query
from fastapi.responses import Response

from streamer.api.auth import ANY_ROLE
from streamer.api.context import Api
from streamer.api.errors import cut
from streamer.api.geojson import feature_collection, polygon
from streamer.api.lane import LaneApp, caller_of, query_of
from streamer.api.params import HOTSPOTS_DEFAULT, MAX_LIMIT, HotspotsQuery
from streamer.api.ranking import Hotspots


def add_routes(app: LaneApp, api: Api) -> None:
    store, anyone = api.store, api.guards.anyone
    listing = Hotspots(api)

    @app.get("/v1/hotspots", dependencies=[anyone])
    async def hotspots(
        horizon: str = Query(HOTSPOTS_DEFAULT.horizon, description="a configured horizon name"),
        resolution: int = Query(
            HOTSPOTS_DEFAULT.resolution, description="a configured H3 resolution"
        ),
        limit: int = Query(HOTSPOTS_DEFAULT.limit, ge=1, le=MAX_LIMIT),
        family: str | None = Query(None, description="rank by this family's score"),
        bbox: str | None = Query(None, description="min_lon,min_lat,max_lon,max_lat"),
        format: str = Query(HOTSPOTS_DEFAULT.format, pattern="^(json|geojson)$"),
    ) -> Response:
        """Ranked hot spot cells, scores decayed to now."""
        return await listing.answer(HotspotsQuery(horizon, resolution, limit, family, bbox, format))

    async def hotspots_fast(scope: Any) -> Response | None:
        """``/v1/hotspots`` in the fast lane (:class:`LaneApp`), or None."""
        query = query_of(scope)
        caller = caller_of(api.gate, scope)
        if caller is None or caller.role not in ANY_ROLE:
            return None
        asked = HotspotsQuery.read(query)
        return None if asked is None else await listing.answer(asked)

    app.lanes["/v1/hotspots"] = hotspots_fast

    @app.get("/v1/blends/{name}", dependencies=[anyone])
    async def blend(
        name: str,
        resolution: int = Query(9, description="a configured H3 resolution"),
        limit: int = Query(20, ge=1, le=1000),
        format: str = Query("json", pattern="^(json|geojson)$"),
    ) -> Response:
        """A configured blend's ranking (``[blends.NAME]``): each cell's score
        is ``long_share * its share of the long horizon's decayed harm + (1 -
        long_share) * its share of the short one's``; shares do not decay."""
        rule = api.settings.blends.get(name)
        if rule is None:
            known = sorted(api.settings.blends)
            raise HTTPException(404, f"no blend {cut(name)}; configured: {known}")
        api.check_grid(rule.long, resolution)
        min_count = api.settings.api.min_count
        seq, rows = await store.blend_top(
            rule.long, rule.short, rule.long_share, resolution, limit * 4 if min_count else limit
        )
        if min_count:
            details = await store.cells([r.cell for r in rows], await api.now())
            rows = [r for r in rows if r.cell in details and details[r.cell].count >= min_count]
        items = [
            {"cell": r.cell, "rank": rank, "score": r.score, "polygon": polygon(r.cell)}
            for rank, r in enumerate(rows[:limit], start=1)
        ]
        body = {
            "sequence": seq,
            "blend": name,
            "long": rule.long,
            "short": rule.short,
            "long_share": rule.long_share,
            "resolution": resolution,
            "hotspots": items,
        }
        if format == "geojson":
            return feature_collection(items, {k: v for k, v in body.items() if k != "hotspots"})
        return Response(orjson.dumps(body), media_type="application/json")
