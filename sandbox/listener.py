"""The in-process sandbox's loopback listener: its app on 127.0.0.1, on a free port, behind an
access token and a Host and Origin check, for `posthog-warehouse-mcp sql`, curl and the connect
page.

The MCP server talks to its in-process sandbox without a network; this listener is for the
person, and for a second program (the warehouse file is locked by this process). When the
server runs read-only, so does the listener: it answers reads (GET) and `query/` (what the
`sql` command needs), and the connect page, and refuses every other write with 403.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.hosts import Visitors, headers_of, listener_hosts
from ..loopback.serve import free_socket, listening
from ..loopback.tokens import tokens_match
from . import errors
from .access import ACCESS_FILE, Access, remove
from .connect import CONNECT_PAGE

logger = logging.getLogger(__name__)


# The one write a read-only listener takes: a query, which runs in a read-only transaction.
QUERY_PATH = re.compile(r"/api/(?:environments|projects)/[^/]+/query/?")
READS = ("GET", "HEAD")
READ_ONLY = (
    "This sandbox runs read-only (the MCP server's --read-only): its loopback API takes reads "
    "(GET) and query/ only."
)


class TokenGuard:
    """Answers only requests with the bearer token, a loopback Host (no DNS rebinding) and no
    foreign Origin; `read_only`: only reads and queries."""

    def __init__(self, app: ASGIApp, token: str, port: int, *, read_only: bool = False) -> None:
        self.app = app
        self.token = token
        self.visitors = Visitors(listener_hosts(port))
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        problem = self.visitors.refusal(headers)
        if problem is not None:
            await refuse(send, *problem)
            return
        path = str(scope.get("path", ""))
        if path.startswith(CONNECT_PAGE.prefix):
            # A browser's page, guarded by its own one-time token, Origin check and limits.
            await self.app(scope, receive, send)
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not tokens_match(token.strip(), self.token):
            await _refuse(send, 401, errors.invalid_key().body)
            return
        if self.read_only and not (scope["method"] in READS or QUERY_PATH.fullmatch(path)):
            await refuse(send, 403, READ_ONLY)
            return
        await self.app(scope, receive, send)


def refusal(status: int, detail: str) -> dict[str, object]:
    """DRF's body for a request the sandbox will not take: 400 a validation error, 403 a
    permission denied."""
    if status == 403:
        return {
            "type": "authentication_error",
            "code": "permission_denied",
            "detail": detail,
            "attr": None,
        }
    return errors.validation_error(detail).body


async def refuse(send: Send, status: int, detail: str) -> None:
    """Answer a request the sandbox will not take (a foreign Host or Origin, a write when
    read-only) with `refusal`."""
    await _refuse(send, status, refusal(status, detail))


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


@asynccontextmanager
async def loopback(
    app: ASGIApp, directory: Path, *, read_only: bool = False
) -> AsyncIterator[Access]:
    """Serve `app` on 127.0.0.1 (a free port) behind a new token, and write the access file,
    for the duration of the block; `read_only`: answer only reads, queries and the connect
    page."""
    token = secrets.token_urlsafe(24)
    sock = free_socket()
    port = int(sock.getsockname()[1])
    guarded = TokenGuard(app, token, port, read_only=read_only)
    async with listening(guarded, sock) as url:
        access = Access(url, token, os.getpid())
        access.write(directory)
        logger.info("sandbox also reachable at %s (token in %s)", access.url, ACCESS_FILE)
        try:
            yield access
        finally:
            remove(directory, access.pid)
