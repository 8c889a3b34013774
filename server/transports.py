"""Serve the MCP server over streamable HTTP or legacy SSE (stdio lives in the CLI)."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from posthog_warehouse_mcp.server.config import bearer

log = logging.getLogger("posthog_warehouse_mcp.http")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True)
class HttpOptions:
    """How the HTTP transports listen and whom they let in."""

    host: str = "127.0.0.1"
    port: int = 8000
    stateless: bool = False
    auth_token: str | None = None
    forward_key: bool = False
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect."""
        return self.host in LOOPBACK

    def security(self) -> TransportSecuritySettings:
        """Host and Origin checks (DNS-rebinding protection), always on."""
        hosts = self.allowed_hosts or (
            ["127.0.0.1:*", "localhost:*", "[::1]:*"]
            if self.is_loopback
            else [f"{self.host}:*", f"{self.host}"]
        )
        origins = self.allowed_origins or (
            ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
            if self.is_loopback
            else [f"https://{self.host}:*", f"http://{self.host}:*"]
        )
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
        )


class BearerAuth:
    """Reject HTTP requests without the server's token (or, forwarding, without a PostHog key)."""

    def __init__(self, app: ASGIApp, *, token: str | None, forward_key: bool) -> None:
        self.app = app
        self.token = token
        self.forward_key = forward_key

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = bearer(Request(scope).headers)
        if self.forward_key:
            ok = given is not None and given.startswith(("phx_", "pha_", "phs_"))
            detail = "Send your PostHog personal API key as Authorization: Bearer phx_..."
        else:
            ok = given is not None and hmac.compare_digest(given, self.token or "")
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


def streamable_http_app(server: Server[Any], options: HttpOptions) -> Starlette:
    """The streamable HTTP app at ``/mcp``."""
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=options.stateless,
        json_response=options.stateless,
        host=options.host,
        transport_security=options.security(),
    )


def sse_app(server: Server[Any], options: HttpOptions) -> Starlette:
    """The legacy HTTP+SSE app: ``GET /sse`` and ``POST /messages/``."""
    sse = SseServerTransport("/messages/", security_settings=options.security())

    async def handle_sse(request: Request) -> Response:
        async with sse.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    return Starlette(
        routes=[
            Route("/sse", handle_sse, methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
        ]
    )


def http_app(server: Server[Any], options: HttpOptions, *, kind: str) -> ASGIApp:
    """The ASGI app for ``kind`` (``http`` or ``sse``), behind bearer auth when configured."""
    app: ASGIApp = (
        streamable_http_app(server, options) if kind == "http" else sse_app(server, options)
    )
    if options.auth_token or options.forward_key:
        app = BearerAuth(app, token=options.auth_token, forward_key=options.forward_key)
    return app


class _Uvicorn(uvicorn.Server):
    """uvicorn that does not re-raise SIGTERM/SIGINT after its graceful shutdown.

    It re-sends the signal once ``serve()`` returns, which would kill the process before the
    sandbox (and its embedded PostgreSQL) is shut down by the code around ``serve()``.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


async def serve_http(app: ASGIApp, options: HttpOptions) -> None:
    """Run ``app`` with uvicorn until interrupted."""
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", lifespan="on"
    )
    await _Uvicorn(config).serve()


__all__ = ["HttpOptions", "http_app", "serve_http"]
