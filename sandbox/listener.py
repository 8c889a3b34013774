"""The in-process sandbox's loopback listener: its app on 127.0.0.1, on a free port, behind an
access token and a Host check, for `posthog-warehouse-mcp sql`, curl and the connect page.

The MCP server talks to its in-process sandbox without a network; this listener is for the
person, and for a second program (the warehouse file is locked by this process).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.hosts import listener_hosts
from ..loopback.tokens import tokens_match
from . import errors
from .access import ACCESS_FILE, Access, remove
from .connect import CONNECT_PAGE

logger = logging.getLogger(__name__)


class TokenGuard:
    """Answers only requests with the bearer token and a loopback Host (no DNS rebinding)."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.hosts = listener_hosts(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("host", "") not in self.hosts:
            await _refuse(send, 400, errors.validation_error("Invalid Host header.").body)
            return
        if str(scope.get("path", "")).startswith(CONNECT_PAGE.prefix):
            # A browser's page, guarded by its own one-time token and Origin check.
            await self.app(scope, receive, send)
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not tokens_match(token.strip(), self.token):
            await _refuse(send, 401, errors.invalid_key().body)
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, body: dict[str, object]) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": content})


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers to the process."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


@asynccontextmanager
async def loopback(app: ASGIApp, directory: Path) -> AsyncIterator[Access]:
    """Serve `app` on 127.0.0.1 (a free port) behind a new token, and write the access file,
    for the duration of the block."""
    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        TokenGuard(app, token, port),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = QuietServer(config)
    access = Access(f"http://127.0.0.1:{port}", token, os.getpid())
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        while not server.started:
            if stopped.is_set():
                raise RuntimeError("the sandbox's loopback listener did not start")
            await anyio.sleep(0.01)
        access.write(directory)
        logger.info("sandbox also reachable at %s (token in %s)", access.url, ACCESS_FILE)
        try:
            yield access
        finally:
            remove(directory, access.pid)
            server.should_exit = True
