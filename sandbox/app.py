"""An app factory for ASGI servers.

`uvicorn --factory posthog_warehouse_mcp.sandbox.app:create_app`
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from .access import STANDALONE_DIRECTORY, Access, remove
from .cloud_rules import CloudRules
from .runtime import open_sandbox


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
) -> Starlette:
    """A Starlette app that starts the sandbox in its lifespan.

    Without arguments it reads SANDBOX_DIR (default `./sandbox-data`), SANDBOX_API_KEY,
    SANDBOX_DEMO (`0` turns the demo off) and SANDBOX_CLOUD_RULES (`1` enforces PostHog
    Cloud's host and TLS rules on new sources). `advertise` is the URL it is served at, written
    with the API key to the directory's access file for `posthog-warehouse-mcp sql`.
    """
    directory = Path(directory or os.environ.get("SANDBOX_DIR") or STANDALONE_DIRECTORY)
    api_key = api_key if api_key is not None else os.environ.get("SANDBOX_API_KEY") or None
    if demo is None:
        demo = os.environ.get("SANDBOX_DEMO", "1") not in ("0", "false", "no")
    if cloud_rules is None:
        cloud_rules = os.environ.get("SANDBOX_CLOUD_RULES", "0") in ("1", "true", "yes")
    rules = CloudRules() if cloud_rules else None
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

    return Starlette(routes=[Mount("/", app=inner)], lifespan=lifespan)
