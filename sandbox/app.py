"""An app factory for ASGI servers.

`uvicorn --factory posthog_warehouse_mcp.sandbox.app:create_app`
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.hosts import HostCheck, Visitors
from .access import STANDALONE_DIRECTORY, Access, remove
from .cloud_rules import CloudRules
from .listener import refuse
from .runtime import open_sandbox

# Without a bind address to go by (an ASGI server started on its own): loopback, any port.
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")


class _Deferred:
    """Forwards requests to the sandbox app once the lifespan has started it."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            raise RuntimeError("the sandbox has not started (the server must run ASGI lifespan)")
        await self.app(scope, receive, send)


def create_app(
    directory: Path | None = None,
    *,
    api_key: str | None = None,
    demo: bool | None = None,
    cloud_rules: bool | None = None,
    advertise: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """A Starlette app that starts the sandbox in its lifespan.

    Without arguments it reads SANDBOX_DIR (default `./sandbox-data`), SANDBOX_API_KEY,
    SANDBOX_DEMO (`0` turns the demo off), SANDBOX_CLOUD_RULES (`1` enforces PostHog
    Cloud's host and TLS rules on new sources) and SANDBOX_ALLOWED_HOSTS. `advertise` is the URL
    it is served at, written with the API key to the directory's access file for
    `posthog-warehouse-mcp sql`. It answers only requests whose Host is one of `allowed_hosts`
    (`name:port`, or `name:*` for any port; default: loopback, any port) and whose Origin, if
    any, is a page of one of them: no DNS rebinding, no cross-site posts.
    """
    directory = Path(directory or os.environ.get("SANDBOX_DIR") or STANDALONE_DIRECTORY)
    api_key = api_key if api_key is not None else os.environ.get("SANDBOX_API_KEY") or None
    if demo is None:
        demo = os.environ.get("SANDBOX_DEMO", "1") not in ("0", "false", "no")
    if cloud_rules is None:
        cloud_rules = os.environ.get("SANDBOX_CLOUD_RULES", "0") in ("1", "true", "yes")
    rules = CloudRules() if cloud_rules else None
    if allowed_hosts is None:
        named = os.environ.get("SANDBOX_ALLOWED_HOSTS", "")
        allowed_hosts = [h.strip() for h in named.split(",") if h.strip()] or LOOPBACK_HOSTS
    inner = _Deferred()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_sandbox(
            directory, api_key=api_key, demo=bool(demo), cloud_rules=rules
        ) as sandbox_app:
            inner.app = sandbox_app
            if advertise is not None:
                sandbox_app.state.services.public_url = advertise
                Access(advertise, api_key, os.getpid()).write(directory)
            try:
                yield
            finally:
                inner.app = None
                if advertise is not None:
                    remove(directory, os.getpid())

    checked = HostCheck(inner, Visitors(allowed_hosts), refuse=refuse)
    return Starlette(routes=[Mount("/", app=checked)], lifespan=lifespan)
