"""Bearer tokens: configured by their SHA-256 digest, each with a role
(``display``, ``dispatch``, ``admin``); the FastAPI dependencies that admit
a route's roles."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request

ROLES = ("display", "dispatch", "admin")
ANY_ROLE = frozenset(ROLES)
DISPATCH = frozenset({"dispatch", "admin"})
ADMIN = frozenset({"admin"})
QUERY_TOKEN_REFUSED = (
    "a token in the URL (access_token) is taken only by /v1/stream and /v1/ws: "
    "send it as an Authorization: Bearer header"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who holds a token: its name in ``api.tokens`` and its role."""

    name: str
    role: str


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a token is configured by."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str, query_token: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else the
    ``access_token`` query parameter's.

    >>> bearer("Bearer abc ", None), bearer("bearer", "q"), bearer("", None)
    ('abc', 'q', None)
    """
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return query_token


class Gate:
    """Who a token is, among the configured ones (sha256 hex -> the token's
    name and role), compared in constant time."""

    def __init__(self, digests: dict[str, Caller]) -> None:
        self.digests = digests

    def caller_of(self, token: str | None) -> Caller | None:
        if not token:
            return None
        digest = token_digest(token)
        for known, caller in self.digests.items():
            if hmac.compare_digest(known, digest):
                return caller
        return None

    def allow(
        self, roles: frozenset[str], in_query: bool = False
    ) -> Callable[[Request], Awaitable[Caller]]:
        """A dependency that admits tokens of ``roles``: from the
        ``Authorization`` header, and from ``?access_token=`` only where
        ``in_query`` (the push stream: an EventSource cannot set headers). A
        token in the URL elsewhere is refused, whatever the header says:
        URLs end up in logs, histories and Referer headers."""
        caller_of = self.caller_of

        # async, though it awaits nothing: FastAPI runs a plain def dependency
        # in its thread pool, a thread hop on every request
        async def check(request: Request) -> Caller:
            header = request.headers.get("authorization", "")
            query_token = request.query_params.get("access_token")
            if query_token is not None and not in_query:
                raise HTTPException(401, QUERY_TOKEN_REFUSED, {"WWW-Authenticate": "Bearer"})
            caller = caller_of(bearer(header, query_token))
            if caller is None:
                raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
            if caller.role not in roles:
                raise HTTPException(403)
            return caller

        return check


@dataclass(frozen=True, slots=True)
class Guards:
    """The routes' token checks, one dependency each (FastAPI solves one
    dependency once per request: a route that lists ``admin`` and takes its
    caller checks the token once)."""

    anyone: Any  # any role, from the header
    listener: Any  # any role, also from ?access_token= (the push stream)
    dispatch: Any
    admin: Any

    @classmethod
    def of(cls, gate: Gate) -> Guards:
        return cls(
            anyone=Depends(gate.allow(ANY_ROLE)),
            listener=Depends(gate.allow(ANY_ROLE, in_query=True)),
            dispatch=Depends(gate.allow(DISPATCH)),
            admin=Depends(gate.allow(ADMIN)),
        )
