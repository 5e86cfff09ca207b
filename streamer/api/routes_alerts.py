"""``/v1/alerts``: alerts of emerging hot spots, open and recently closed."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

from streamer.api.alerts import read_alerts
from streamer.api.context import Api


def add_routes(app: FastAPI, api: Api) -> None:
    @app.get("/v1/alerts", dependencies=[api.guards.anyone])
    async def alerts(
        status: str = Query(
            "open",
            pattern="^(open|all)$",
            description="open: the open alerts; all: also the most recently closed ones",
        ),
        limit: int | None = Query(
            None,
            ge=1,
            le=1000,
            description="with status=all, at most this many closed alerts (default alerts.recent)",
        ),
    ) -> dict[str, Any]:
        """Alerts of emerging hot spots, as the detector keeps them
        (docs/alerts.md): the open ones, newest ``updated_at`` first; with
        ``status=all`` then the most recently closed (cleared or merged)
        ones, newest first, each as its last notice left it."""
        recent = 0
        if status == "all":
            recent = api.settings.alerts.recent if limit is None else limit
        opened, closed = await read_alerts(api.store, recent)
        return {"alerts": [*opened, *closed]}
