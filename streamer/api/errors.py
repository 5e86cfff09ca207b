"""The API's error answers: a store that is down (503), the one 422 shape
(FastAPI's ``HTTPValidationError``, with what it quotes back cut short), and
a 405 whose ``Allow`` names every method of its path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

STORE_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
ECHO_CHARS = 40  # of a bad value, quoted back in an error
MESSAGE_CHARS = 200  # of a message that may quote one in full (the dosage plan's)


def store_unavailable() -> Response:
    """The answer of any route while Redis cannot be reached."""
    return JSONResponse({"error": "store unavailable"}, status_code=503)


def validation_failed(errors: Sequence[Any]) -> Response:
    """A 422 of FastAPI's ``HTTPValidationError`` shape (``{"detail": [{"type",
    "loc", "msg", "input"}]}``), each input quoted back at most
    ``ECHO_CHARS`` characters long (a 9 KB value is not sent back whole)
    and only when it is a plain value."""
    detail = []
    for error in errors:
        item = {k: error[k] for k in ("type", "loc", "msg") if k in error}
        value = error.get("input")
        if isinstance(value, str):
            item["input"] = value[:ECHO_CHARS]
        elif isinstance(value, bool | int | float) or value is None:
            item["input"] = value
        if isinstance(error.get("ctx"), dict):
            item["ctx"] = {k: str(v)[:ECHO_CHARS] for k, v in error["ctx"].items()}
        detail.append(item)
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def cut(value: object) -> str:
    """A value as an error message quotes it: at most ``ECHO_CHARS`` characters.

    >>> cut("x" * 100) == repr("x" * 40) + "..."
    True
    """
    text = str(value)
    return repr(text[:ECHO_CHARS]) + ("..." if len(text) > ECHO_CHARS else "")


def invalid(where: str, name: str, message: str, value: object) -> RequestValidationError:
    """A 422 in the shape FastAPI's own validation errors take (one error
    model for every 422), for parameter ``name`` in ``where`` ("query",
    "path", "body")."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (where, name), "msg": message, "input": value}]
    )


def add_handlers(app: FastAPI) -> None:
    """Answers a store that is down with :func:`store_unavailable`, every
    422 with :func:`validation_failed` and a 405 with every method of its
    path in ``Allow``."""

    async def store_down(request: Request, exc: Exception) -> Response:
        return store_unavailable()

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_failed(exc.errors())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route of the
            # path only (GET of /v1/dosage/plan, not its PUT): every route's
            allowed: set[str] = set()
            for route in app.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE and isinstance(route, APIRoute | Route):
                    allowed |= route.methods or set()
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
        return await http_exception_handler(request, exc)

    for error in STORE_DOWN:
        app.add_exception_handler(error, store_down)
    app.add_exception_handler(RequestValidationError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
