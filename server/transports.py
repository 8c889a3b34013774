"""Serve the MCP server over streamable HTTP or legacy SSE (stdio lives in the CLI).

The adapter and the in-process sandbox live in the ASGI app's lifespan: uvicorn's graceful
shutdown closes them (and stops the sandbox's PostgreSQL) before ``serve()`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

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
    """The streamable HTTP app at ``/mcp``."""
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=settings.mcp_stateless,
        json_response=settings.mcp_stateless,
        host=settings.mcp_host,
        transport_security=security(settings),
    )


def sse_app(server: Server[Any], settings: Settings) -> Starlette:
    """The legacy HTTP+SSE app: ``GET /sse`` and ``POST /messages/``."""
    sse = SseServerTransport("/messages/", security_settings=security(settings))

    async def handle_sse(request: Request) -> Response:
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
