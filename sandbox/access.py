"""How a person (or a second program) reaches a running sandbox: its loopback address and an
access token, in `access.json` in the sandbox directory (0600).

The in-process sandbox (the MCP server's `--sandbox`, which talks to it without a network)
also listens on 127.0.0.1 on a free port, behind the token and a Host check, for
`posthog-warehouse-mcp sql` and curl. The standalone sandbox writes its own address there.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from . import errors
from .connect import PAGE_PREFIX

logger = logging.getLogger(__name__)

ACCESS_FILE = "access.json"


@dataclass(frozen=True)
class Access:
    """Where a running sandbox answers, and the bearer token it wants (None: any)."""

    url: str
    token: str | None
    pid: int

    def write(self, directory: Path) -> Path:
        """Write the access file (owner-only) and return its path."""
        path = directory / ACCESS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out)
        path.chmod(0o600)
        return path

    @classmethod
    def read(cls, directory: Path) -> Access | None:
        """The access file of a sandbox directory, or None when no sandbox runs there."""
        try:
            data = json.loads((directory / ACCESS_FILE).read_text())
            access = cls(str(data["url"]), data.get("token"), int(data["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.kill(access.pid, 0)
        except ProcessLookupError:
            return None  # left by a sandbox that was killed
        except PermissionError:
            pass
        return access


def remove(directory: Path, pid: int) -> None:
    """Remove the access file if this process wrote it."""
    current = Access.read(directory)
    if current is not None and current.pid == pid:
        with suppress(OSError):
            (directory / ACCESS_FILE).unlink()


class TokenGuard:
    """Answers only requests with the bearer token and a loopback Host (no DNS rebinding)."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("host", "") not in self.hosts:
            await _refuse(send, 400, errors.validation_error("Invalid Host header.").body)
            return
        if str(scope.get("path", "")).startswith(PAGE_PREFIX):
            # A browser's page, guarded by its own one-time token and Origin check.
            await self.app(scope, receive, send)
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.token):
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


def _quiet_server() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """A uvicorn server that leaves the process's signal handlers to the process."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


@asynccontextmanager
async def loopback(app: ASGIApp, directory: Path) -> AsyncIterator[Access]:
    """Serve `app` on 127.0.0.1 (a free port) behind a new token, and write the access file,
    for the duration of the block."""
    import socket

    import uvicorn

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
    server = _quiet_server()(config)
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
