"""``/v1/config`` and ``/v1/boundary``: what a display needs to draw itself."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from streamer.api.context import Api


def add_routes(app: FastAPI, api: Api) -> None:
    store, anyone = api.store, api.guards.anyone

    @app.get("/v1/config", dependencies=[anyone])
    async def config() -> dict[str, Any]:
        """What a display needs to draw itself."""
        s = api.settings
        names = sorted(store.names, key=lambda n: store.horizons[n])
        return {
            "name": s.api.name,
            "horizons": names,
            "half_lives_s": {n: store.horizons[n] for n in names},
            "resolutions": store.resolutions,
            "families": api.families,
            "default": {
                "horizon": "week" if "week" in names else names[0],
                "resolution": store.resolutions[len(store.resolutions) // 2],
            },
            "tile_url": s.api.tile_url,
            "stale_after_s": s.api.stale_after,
            "top_n": s.publish.top_n,
            "timezone": s.grid.timezone,
        }

    @app.get("/v1/boundary", dependencies=[anyone])
    async def boundary() -> Response:
        """The area's outline (GeoJSON), the display's base map."""
        return Response(api.boundary, media_type="application/geo+json")
