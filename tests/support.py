"""What the tests share: a recording PostHog stand-in, MCP clients wired to it, loopback serving
and polling. Fixtures live in conftest.py; helpers live here, so no test imports a conftest."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import uvicorn
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.config import Settings
from posthog_warehouse_mcp.tools import models as m
from posthog_warehouse_mcp.tools.table import Endpoint

SOURCE_ID = "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11"
SCHEMA_ID = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CANARY_KEY = "phx_canaryKEY0123456789abcdef"

SOURCE = {
    "id": SOURCE_ID,
    "source_type": "Postgres",
    "prefix": "app_",
    "status": "Completed",
    "job_inputs": {"host": "db.internal", "port": 5432},
    "schemas": [{"id": SCHEMA_ID, "name": "orders", "should_sync": True, "table": None}],
    "new_upstream_field": {"nested": True},
}
SCHEMA = {"id": SCHEMA_ID, "name": "orders", "should_sync": True, "status": "Brand new status"}
JOB = {"id": "j1", "status": "Completed", "rows_synced": 10, "created_at": "2026-01-01T00:00:00Z"}

SAMPLE_BODIES: dict[type, tuple[int, Any]] = {
    m.PaginatedExternalDataSourceList: (
        200,
        {"count": 1, "next": None, "previous": None, "results": [SOURCE]},
    ),
    m.PaginatedExternalDataSchemaList: (
        200,
        {"count": 1, "next": None, "previous": None, "results": [SCHEMA]},
    ),
    m.ExternalDataSource: (200, SOURCE),
    m.ExternalDataSchema: (200, SCHEMA),
    m.ExternalDataJobList: (200, [JOB]),
    m.ExternalDataSchemaList: (200, [SCHEMA]),
    m.ExternalDataSourceCreated: (201, {"id": SOURCE_ID}),
    m.RefreshSchemasResult: (200, {"added": 1, "deleted": 0, "total_tables_seen": 3}),
    m.WebhookResult: (200, {"success": True, "webhook_url": "https://x", "error": None}),
    m.IncrementalFieldsResult: (
        200,
        {
            "incremental_fields": [
                {"label": "id", "type": "integer", "field": "id", "field_type": "integer"}
            ],
            "incremental_available": True,
            "append_available": True,
        },
    ),
    m.Ack: (204, None),
}


@dataclass
class Seen:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    headers: dict[str, str]


@dataclass
class Recorder:
    """A PostHog stand-in that records every request and answers from a script."""

    seen: list[Seen] = field(default_factory=list)
    # Optional override: (request) -> Response; default answers with the sample body.
    respond: Callable[[Request, Seen], Response] | None = None
    default: tuple[int, Any] = (200, {})

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            raw = await request.body()
            seen = Seen(
                request.method,
                request.url.path,
                list(request.query_params.multi_items()),
                json.loads(raw) if raw else None,
                dict(request.headers),
            )
            self.seen.append(seen)
            if self.respond is not None:
                return self.respond(request, seen)
            status, body = self.default
            if body is None:
                return Response(status_code=status)
            return JSONResponse(body, status_code=status)

        return Starlette(
            routes=[
                Route("/{path:path}", handle, methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
            ]
        )

    def answer_as(self, row: Endpoint) -> None:
        self.default = SAMPLE_BODIES[row.response]


def settings(**overrides: Any) -> Settings:
    """Settings that ignore the developer's environment."""
    base: dict[str, Any] = {
        "personal_api_key": CANARY_KEY,
        "environment_id": "42",
        "host": "https://us.posthog.com",
        "read_only": False,
        "toolsets": [],
        "tools": [],
        "sandbox": False,
    }
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def connect(
    recorder: Recorder, *, mode: str = "legacy", **overrides: Any
) -> AsyncIterator[Client]:
    """An MCP client talking in memory to a server whose upstream is ``recorder``."""
    server = create_server(settings(**overrides), transport=httpx.ASGITransport(app=recorder.app()))
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        yield client


MODES = pytest.mark.parametrize("mode", ["legacy", "auto"])


T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, every: float = 0.05
) -> T:
    """Call ``probe`` until it returns something other than None, and return that.

    Raises:
        TimeoutError: when ``within`` seconds pass first.
    """
    with anyio.fail_after(within):
        while (value := await probe()) is None:  # noqa: ASYNC110 (polling is the point)
            await anyio.sleep(every)
    return value


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:PORT`` while uvicorn serves ``app`` there."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def started() -> bool | None:
        return True if server.started else None  # uvicorn exposes startup only as a flag

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await eventually(started, within=10, every=0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


def text_of(result: Any) -> str:
    """The text of a tool result's first content block."""
    content = result.content[0]
    assert content.type == "text", content
    text: str = content.text
    return text
