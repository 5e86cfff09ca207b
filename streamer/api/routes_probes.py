"""The open routes a platform probes: liveness, readiness (the store
answers) and the Prometheus metrics."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer.api.context import Api
from streamer.api.errors import STORE_DOWN


def add_routes(app: FastAPI, api: Api) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``: no token, not documented."""
    store, metrics = api.store, api.metrics

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            await store.client.ping()
        except STORE_DOWN:
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
