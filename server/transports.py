"""Serve the MCP server over streamable HTTP or legacy SSE (stdio: the CLI and stdio.py).

The adapter and the in-process sandbox live in the ASGI app's lifespan: uvicorn's graceful
shutdown closes them (and stops the sandbox's PostgreSQL) before ``serve()`` returns.

Beside the MCP endpoint, for a balancer and an orchestrator (no authentication, no Host
check: they are probed by address):

- ``GET /health``: liveness. The process answers; nothing else is checked.
- ``GET /ready``: the upstream PostHog host and the shared store (Redis, when configured)
  answer; a 503 names the one that does not.

And, with ``POSTHOG_MCP_PUBLIC_URL``, the approval page at ``/approve/<token>`` (no bearer
token: a browser cannot send one; the one-time link is the credential, and the page checks
that the Host and the Origin are the public URL's: server/approvals.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import uvicorn
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..loopback.hosts import host_of, origin_of
from .app import approvals_for, create_server
from .approvals import PAGE
from .auth import BearerAuth
from .config import Settings
from .limits import RateLimit, limiter_for
from .shared import Shared, alone, shared_for
from .state import LazyClient, open_backend

if TYPE_CHECKING:
    from .oauth.cimd import DocumentFetcher

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
    if settings.mcp_oauth and settings.mcp_public_url and not settings.mcp_allowed_hosts:
        # Clients reach /mcp at the public URL, whose host the bind address does not name.
        hosts = [*hosts, host_of(settings.mcp_public_url)]
    if settings.mcp_oauth and settings.mcp_public_url and not settings.mcp_allowed_origins:
        origins = [*origins, origin_of(settings.mcp_public_url)]
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


class NoStream:
    """Stateless streamable HTTP offers no stream of its own: ``GET /mcp`` (the stream a client
    may open for server messages) and ``DELETE /mcp`` (ending a session) answer ``405`` with
    ``Allow: POST``, as the MCP specification says a server without that stream answers and as
    the SDK answers 2026-07-28 requests. Left to the SDK, a 2025-era GET would open an event
    stream that nothing ever writes to, held open on a replica until the client or the
    balancer gives up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "DELETE"):
            await self.app(scope, receive, send)
            return
        message = (
            "Method Not Allowed: this server is stateless; it has no stream to open and no "
            "session to end. Send each request as a POST."
        )
        response = JSONResponse(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}},
            status_code=405,
            headers={"Allow": "POST"},
        )
        await response(scope, receive, send)


# How long a readiness probe waits for each dependency (a balancer probes every few seconds).
PROBE_SECONDS = 2.0


class Probes:
    """``/health`` and ``/ready`` for this instance."""

    def __init__(self, client: LazyClient, shared: Shared) -> None:
        self.client = client
        self.shared = shared

    async def health(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def ready(self, request: Request) -> Response:
        """Readiness: PostHog and the shared store answer; a 503 says which does not."""
        found: dict[str, str | None] = {}

        async def check(name: str, probe: Callable[[], Awaitable[str | None]]) -> None:
            with anyio.move_on_after(PROBE_SECONDS) as waited:
                found[name] = await probe()
            if waited.cancelled_caught:
                found[name] = f"no answer within {PROBE_SECONDS:g} s"

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(check, "posthog", self.posthog_problem)
            if self.shared.redis is not None:
                tg.start_soon(check, "store", self.shared.problem)
        body: dict[str, Any] = {
            name: "reachable" if problem is None else problem for name, problem in found.items()
        }
        if self.shared.redis is None:
            body["store"] = "none (this process only)"
        ok = all(problem is None for problem in found.values())
        body = {"status": "ready" if ok else "not ready", **body}
        body["seconds"] = round(time.monotonic() - started, 3)
        return JSONResponse(
            body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"}
        )

    async def posthog_problem(self) -> str | None:
        """Why the upstream host cannot be reached, or None: any answer below 500 is one
        (PostHog answers ``/_health``; a stand-in may answer 404)."""
        http = self.client.get().http
        try:
            answer = await http.get("/_health", timeout=PROBE_SECONDS)
        except httpx.HTTPError as exc:
            return f"{http.base_url} unreachable ({type(exc).__name__})"
        if answer.status_code >= 500:
            return f"{http.base_url} answered {answer.status_code}"
        return None


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


def http_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    shared: Shared | None = None,
    fetcher: DocumentFetcher | None = None,
) -> Starlette:
    """The ASGI app for ``settings.mcp_transport``, behind bearer auth when configured, with
    ``/health`` and ``/ready`` beside it.

    One adapter serves every connection; it and the in-process sandbox (or ``transport``, in
    tests) are opened and closed by the app's lifespan, as are the shared store's connections
    (``shared``, by default as the settings say). With ``--oauth``, the OAuth routes
    (server/oauth/) are served beside them, and ``fetcher`` (tests: one trusting their CA)
    reads client ID metadata documents.
    """
    client = LazyClient(settings, transport)
    shared = shared if shared is not None else shared_for(settings)
    approvals = approvals_for(settings, shared)
    server = create_server(settings, client=client, shared=shared, approvals=approvals)
    inner = KINDS[settings.mcp_transport].build(server, settings)
    app: ASGIApp = inner
    if settings.mcp_transport == "http":
        app = NoStream(app) if settings.mcp_stateless else SessionCap(app, settings)
        limiter = limiter_for(settings, shared.windows)
        if limiter is not None:
            app = RateLimit(app, limiter)
    oauth_routes: list[Route] = []
    oauth = None
    if settings.mcp_oauth:
        from .oauth import OAuth, PublicHost

        oauth = OAuth.build(settings, shared.records, fetcher=fetcher, windows=shared.windows)
        app = oauth.guard(app)
        approvals.sessions = oauth
        hosts = PublicHost.of(settings)
        oauth_routes = [
            Route(r.path, hosts.wrap(oauth.wrap(r.app)), methods=sorted(r.methods or ["GET"]))
            for r in oauth.routes()
        ]
    elif settings.auth_token or settings.forward_key:
        app = BearerAuth(app, token=settings.auth_token, forward_key=settings.forward_key)
    probes = Probes(client, shared)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(shared.running())
            if transport is None:
                client.transport = await stack.enter_async_context(open_backend(settings))
            stack.push_async_callback(client.aclose)
            # Mounted apps get no lifespan of their own: run the SDK's (its session manager).
            await stack.enter_async_context(inner.router.lifespan_context(inner))
            yield

    # The approval page answers browsers, outside the bearer check; only with a public URL.
    page = (
        [Route(PAGE.route, approvals.page, methods=["GET", "POST"])]
        if approvals.public_url is not None
        else []
    )
    outer = Starlette(
        routes=[
            Route("/health", probes.health, methods=["GET"]),
            Route("/ready", probes.ready, methods=["GET"]),
            *oauth_routes,
            *page,
            Mount("/", app=app),
        ],
        lifespan=lifespan,
    )
    # Tests reach the OAuth provider (its records) through the app they were given.
    outer.state.oauth = oauth
    return outer


async def serve_http(settings: Settings) -> None:
    """Serve ``settings.mcp_transport`` with uvicorn until interrupted."""
    app = http_app(settings)
    warning = alone(settings)
    if warning is not None:
        log.warning("%s", warning)
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
