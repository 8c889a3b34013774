"""HTTP authentication: the server's bearer token, or each caller's own PostHog key."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.tokens import tokens_match

POSTHOG_KEY_PREFIXES = ("phx_", "pha_", "phs_")


def bearer(headers: Any) -> str | None:
    """The bearer token of an ``Authorization`` header, if any."""
    value = headers.get("authorization") if headers is not None else None
    if not value or not value.lower().startswith("bearer "):
        return None
    token = str(value[7:].strip())
    return token or None


class BearerAuth:
    """Reject HTTP requests without the server's token (or, forwarding, without a PostHog key).

    Written here rather than taken from the SDK: its auth needs OAuth issuer metadata that a
    static token does not have.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, forward_key: bool) -> None:
        self.app = app
        self.token = token
        self.forward_key = forward_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = bearer(Request(scope).headers)
        if self.forward_key:
            ok = given is not None and given.startswith(POSTHOG_KEY_PREFIXES)
            detail = "Send your PostHog personal API key as Authorization: Bearer phx_..."
        else:
            ok = given is not None and tokens_match(given, self.token or "")
            detail = "Send the server's token as Authorization: Bearer <token>."
        if not ok:
            response = JSONResponse(
                {"error": "invalid_token", "error_description": detail},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
