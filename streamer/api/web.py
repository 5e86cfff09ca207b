"""The HTML pages (the wall display at ``/``, the officer's phone page at
``/officer``) and their static files, with the headers that lock them down."""

from __future__ import annotations

import urllib.parse
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response

WEB = Path(str(resources.files("streamer") / "web"))


def page_security(tile_url: str | None) -> dict[str, str]:
    """The headers of the HTML pages: scripts, styles and calls of this
    server only, images also from the base map's tile server; never framed,
    never sniffed, no Referer (the page address carries its token).

    >>> policy = page_security("https://{s}.tiles.example:8443/{z}/{x}/{y}.png")
    >>> [p for p in policy["Content-Security-Policy"].split("; ") if p.startswith("img")]
    ["img-src 'self' data: https://*.tiles.example:8443"]
    """
    images = "'self' data:"
    if tile_url:
        parts = urllib.parse.urlsplit(tile_url.replace("{", "%7B").replace("}", "%7D"))
        host = parts.netloc
        if "%7B" in host:  # a templated subdomain ({s}.tiles...): any subdomain
            host = "*." + host.split(".", 1)[1]
        if parts.scheme in ("http", "https") and host:
            images += f" {parts.scheme}://{host}"
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def add_routes(app: FastAPI, tile_url: str | None) -> None:
    """``/``, ``/officer``, ``/favicon.ico`` and ``/static/{name}``: no
    token (the pages' API calls carry it), not documented."""
    # (no-cache: displays run for days; an upgrade must reach them on reload)
    page_headers = {"Cache-Control": "no-cache", **page_security(tile_url)}

    @app.get("/", include_in_schema=False)
    async def display() -> Response:
        return FileResponse(WEB / "index.html", headers=page_headers)

    @app.get("/officer", include_in_schema=False)
    async def officer() -> Response:
        """The officer's phone page (its API calls carry ``?token=``, as the display's)."""
        return FileResponse(WEB / "officer.html", headers=page_headers)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # (the pages have no icon: browsers ask anyway; nothing, for a day)
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = (WEB / "static" / name).resolve()
        if path.parent != (WEB / "static").resolve() or not path.is_file():
            raise HTTPException(404)
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, headers=headers)
