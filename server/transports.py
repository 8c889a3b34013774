"""Serve the MCP server over streamable HTTP or legacy SSE (stdio: the CLI and stdio.py).

The adapter and the in-process sandbox live in the ASGI app's lifespan: uvicorn's graceful
shutdown closes them (and stops the sandbox's PostgreSQL) before ``serve()`` returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .app import create_server
from .auth import BearerAuth
from .config import Settings
from .state import LazyClient, open_backend

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("posthog_warehouse_mcp.http")


def security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin checks (DNS-rebinding protection), always on."""
    host = settings.mcp_host
    hosts = settings.mcp_allowed_hosts or (
        ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        if settings.is_loopback
        else [f"{host}:*", f"{host}"]
    )
    origins = settings.mcp_allowed_origins or (
        ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
        if settings.is_loopback
        else [f"https://{host}:*", f"http://{host}:*"]
    )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def streamable_http_app(server: Server[Any], settings: Settings) -> Starlette:
    """The streamable HTTP app at ``/mcp``, holding sessions as a laptop can: each closed after
    ``--session-idle-timeout`` idle seconds, at most ``--max-sessions`` at once (the SDK's
    defaults, 30 minutes and 10,000 sessions of about 38 KB each, suit a large server)."""
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=settings.mcp_stateless,
        json_response=settings.mcp_stateless,
        host=settings.mcp_host,
        transport_security=security(settings),
        session_idle_timeout=settings.mcp_session_idle_timeout,
        max_sessions=settings.mcp_max_sessions,
    )


class SessionCap:
    """Says what the SDK's 503 past the session cap means: how many sessions are open, which
    setting raises the cap, what frees room, and (``Retry-After``) when to try again."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        idle = settings.mcp_session_idle_timeout
        self.retry_after = str(math.ceil(min(idle, 60.0)))
        self.message = (
            f"Too many open sessions: {settings.mcp_max_sessions} MCP sessions are open, the "
            "most this server holds (POSTHOG_MCP_MAX_SESSIONS, --max-sessions). End the "
            "sessions you no longer use (DELETE /mcp with their Mcp-Session-Id); a session "
            f"idle for {idle:g} s is closed. Try again later."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        # Only a request without a session can open one, and only that is refused at the cap.
        if scope["type"] != "http" or b"mcp-session-id" in headers:
            await self.app(scope, receive, send)
            return
        refused = False

        async def watch(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, receive, watch)
        if refused:  # the SDK has logged it
            response = JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": self.message}},
                status_code=503,
                headers={"Retry-After": self.retry_after},
            )
            await response(scope, receive, send)


def sse_app(server: Server[Any], settings: Settings) -> Starlette:
    """The legacy HTTP+SSE app: ``GET /sse`` and ``POST /messages/``."""
    sse = SseServerTransport("/messages/", security_settings=security(settings))
    checks = TransportSecurityMiddleware(security(settings))

    async def handle_sse(request: Request) -> Response:
        # Checked here as well: the SDK answers a foreign Host or Origin itself, then raises,
        # which would log a traceback for every such request.
        refused = await checks.validate_request(request, is_post=False)
        if refused is not None:
            return refused
        # request._send is how the SDK's own SseServerTransport docs reach the raw send.
        async with sse.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    return Starlette(
        routes=[
            Route("/sse", handle_sse, methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
        ]
    )


@dataclass(frozen=True)
class HttpKind:
    """One HTTP transport: where clients connect, and how its app is built."""

    path: str
    build: Callable[[Server[Any], Settings], Starlette]


KINDS: dict[str, HttpKind] = {
    "http": HttpKind("/mcp", streamable_http_app),
    "sse": HttpKind("/sse", sse_app),
}


def http_app(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The ASGI app for ``settings.mcp_transport``, behind bearer auth when configured.

    One adapter serves every connection; it and the in-process sandbox (or ``transport``, in
    tests) are opened and closed by the app's lifespan.
    """
    client = LazyClient(settings, transport)
    inner = KINDS[settings.mcp_transport].build(create_server(settings, client=client), settings)
    app: ASGIApp = inner
    if settings.mcp_transport == "http" and not settings.mcp_stateless:
        app = SessionCap(app, settings)
    if settings.auth_token or settings.forward_key:
        app = BearerAuth(inner, token=settings.auth_token, forward_key=settings.forward_key)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if transport is None:
                client.transport = await stack.enter_async_context(open_backend(settings))
            stack.push_async_callback(client.aclose)
            # Mounted apps get no lifespan of their own: run the SDK's (its session manager).
            await stack.enter_async_context(inner.router.lifespan_context(inner))
            yield

    return Starlette(routes=[Mount("/", app=app)], lifespan=lifespan)


async def serve_http(settings: Settings) -> None:
    """Serve ``settings.mcp_transport`` with uvicorn until interrupted."""
    app = http_app(settings)
    config = uvicorn.Config(
        app, host=settings.mcp_host, port=settings.mcp_port, log_level="warning", lifespan="on"
    )
    log.info(
        "serving %s on http://%s:%d%s",
        settings.mcp_transport,
        settings.mcp_host,
        settings.mcp_port,
        KINDS[settings.mcp_transport].path,
    )
    await uvicorn.Server(config).serve()


__all__ = ["KINDS", "http_app", "serve_http"]
