"""What the tests share: a recording PostHog stand-in and the answers it gives, MCP clients wired
to it (in memory, or a stdio subprocess), loopback serving and polling. Fixtures live in
conftest.py, the hand-written expectations of the tool table in cases.py; helpers live here, so
no test imports a conftest or another test module."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import mcp_types as types
import pytest
import uvicorn
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.loopback.serve import QuietServer
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.config import Settings
from posthog_warehouse_mcp.server.state import LazyClient
from posthog_warehouse_mcp.tools import models as m
from posthog_warehouse_mcp.tools.client import PostHogClient, RetryPolicy, build_http_client
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
    m.SourceTypeConfigs: (
        200,
        {"Postgres": {"name": "Postgres", "fields": [{"name": "host", "type": "text"}]}},
    ),
    m.WebhookInfo: (200, {"supports_webhooks": False, "exists": False, "schema_mapping": {}}),
    m.DirectConnectionList: (200, []),
    m.DiscoveredTableList: (200, [{"table": "orders", "detected_primary_keys": ["id"]}]),
    m.SourceSetupResult: (201, {"id": SOURCE_ID}),
    m.ResourcePreview: (200, {"rows": [], "row_count": 0, "columns": [], "error": None}),
    m.CdcPrerequisites: (200, {"valid": False, "errors": ["wal_level must be set to 'logical'"]}),
    m.DataHealthIssueList: (
        200,
        {
            "results": [
                {
                    "id": SCHEMA_ID,
                    "name": "orders",
                    "type": "external_data_sync",
                    "status": "failed",
                }
            ],
            "count": 1,
        },
    ),
    m.ConnectLink: (
        200,
        {
            "source_type": "Postgres",
            "auth_method": "credentials",
            "connect_url": "http://127.0.0.1:9/connect/t",
            "instructions": "Share this link with the user.",
        },
    ),
    m.StoredCredentialList: (
        200,
        [
            {
                "credential_id": SOURCE_ID,
                "source_type": "Postgres",
                "created_at": "2026-01-01T00:00:00Z",
                "expires_at": "2026-01-02T00:00:00Z",
            }
        ],
    ),
    m.QueryResult: (
        200,
        {
            "columns": ["count()"],
            "types": [["count()", "UInt64"]],
            "results": [[3]],
            "hogql": "SELECT count() FROM t",
        },
    ),
    m.WarehouseSchema: (
        200,
        {
            "tables": {
                "postgres.app.orders": {
                    "type": "data_warehouse",
                    "name": "postgres.app.orders",
                    "fields": {"id": {"name": "id", "type": "integer"}},
                    "source": {"id": SOURCE_ID, "source_type": "Postgres", "prefix": "app_"},
                }
            },
            "joins": [],
        },
    ),
    m.PaginatedSyncLogList: (
        200,
        {
            "count": 1,
            "next": None,
            "previous": None,
            "results": [
                {"timestamp": "2026-01-01T00:00:00Z", "level": "ERROR", "message": "timeout"}
            ],
        },
    ),
}


@dataclass
class Seen:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    headers: dict[str, str]


Responder = Callable[[Request, Seen], Response]
"""How a stand-in answers: the request, and what it recorded of it."""


def answer(
    status: int,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Responder:
    """Answer every request with ``status`` and ``raw`` bytes, or ``body`` as JSON (no body
    when both are None)."""

    def respond(request: Request, seen: Seen) -> Response:
        if raw is not None:
            return Response(raw, status_code=status, headers=headers)
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    return respond


@dataclass
class Recorder:
    """A PostHog stand-in that records every request and answers from a script."""

    seen: list[Seen] = field(default_factory=list)
    # Optional override; without it every request gets ``default`` as (status, JSON body).
    respond: Responder | None = None
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
            respond = self.respond or answer(*self.default)
            return respond(request, seen)

        return Starlette(
            routes=[
                Route("/{path:path}", handle, methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
            ]
        )

    def answer_as(self, row: Endpoint) -> None:
        if row.response in (m.SchemaPlan, m.PlanApplied):
            self.respond = like_posthog  # a plan reads a source and its jobs, then changes
            return
        self.respond = None
        # A hooked row whose result is not PostHog's answer (the audit) reads the sources list.
        self.default = (
            SAMPLE_BODIES.get(row.response) or SAMPLE_BODIES[m.PaginatedExternalDataSourceList]
        )


def like_posthog(request: Request, seen: Seen) -> Response:
    """Each sample body where PostHog would answer it: a source, its jobs, a schema."""
    if seen.path.endswith("/jobs/"):
        return JSONResponse([JOB])
    if "/external_data_schemas/" in seen.path:
        return JSONResponse(SCHEMA)
    if re.search(r"/external_data_sources/[0-9a-f-]{36}/$", seen.path):
        return JSONResponse(SOURCE)
    return JSONResponse(SAMPLE_BODIES[m.PaginatedExternalDataSourceList][1])


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
        # As for unattended automation: destructive calls act at once. The confirmation tests
        # (tests/test_confirm.py) turn it on.
        "confirm": "off",
    }
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def connect(
    recorder: Recorder, *, mode: str = "legacy", **overrides: Any
) -> AsyncIterator[Client]:
    """An MCP client talking in memory to a server whose upstream is ``recorder``."""
    server = create_server(settings(**overrides), transport=httpx.ASGITransport(app=recorder.app()))
    async with Client(server, mode=mode) as client:
        yield client


@asynccontextmanager
async def connect_with(
    config: Settings,
    *,
    retry: RetryPolicy,
    transport: httpx.AsyncBaseTransport | None = None,
    max_response_bytes: int = 20 * 1024 * 1024,
    mode: str = "legacy",
) -> AsyncIterator[Client]:
    """An MCP client in memory whose server calls ``config.host`` (or ``transport``) through an
    adapter with this retry policy and response limit."""
    http = build_http_client(
        base_url=config.base_url,
        api_key=config.api_key,
        timeout=config.timeout,
        user_agent="posthog-warehouse-mcp-tests",
        transport=transport,
    )
    async with http:
        adapter = PostHogClient(http, retry=retry, max_response_bytes=max_response_bytes)
        server = create_server(config, client=LazyClient(config, client=adapter))
        async with Client(server, mode=mode) as client:
            yield client


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the developer's POSTHOG_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    return {**env, **extra}


def use_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """For one test, replace the developer's POSTHOG_* environment variables with ``env``."""
    for key in [k for k in os.environ if k.startswith("POSTHOG_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def stdio_server(upstream: str, *args: str, **env: str) -> StdioServerParameters:
    """Start the server as a stdio subprocess with the canary key, calling ``upstream``."""
    server = ["-m", "posthog_warehouse_mcp", "--posthog-host", upstream, "--environment-id", "42"]
    return StdioServerParameters(
        command=sys.executable,
        args=[*server, *args],
        env=clean_env(POSTHOG_PERSONAL_API_KEY=CANARY_KEY, **env),
    )


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
async def serve(app: Any, *, port: int = 0, **tls: Any) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:PORT`` while uvicorn serves ``app`` there (on ``port``, or
    any free one; over TLS, ``https://``, given uvicorn's ``ssl_certfile`` and ``ssl_keyfile``)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **tls
    )
    server = QuietServer(config)

    async def started() -> bool | None:
        return True if server.started else None  # uvicorn exposes startup only as a flag

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await eventually(started, within=10, every=0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        finally:
            server.stop()


def text_of(result: types.CallToolResult) -> str:
    """The text of a tool result's first content block."""
    content = result.content[0]
    assert content.type == "text", content
    text: str = content.text
    return text


async def terminate(process: Process, *, within: float) -> bool:
    """SIGTERM ``process`` and wait; kill it if it outlives ``within`` seconds.

    Returns whether it stopped by itself.
    """
    with contextlib.suppress(ProcessLookupError):  # it may have ended by itself already
        process.terminate()
    with anyio.move_on_after(within):
        await process.wait()
    if process.returncode is not None:
        return True
    process.kill()
    await process.wait()
    return False


def installed(program: str, package: str) -> str:
    """The path of a Debian program a test starts; skip the test, saying what to install,
    when it is missing (CI installs it: .ci/run)."""
    found = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        pytest.skip(f"{program} is not installed (Debian: apt-get install {package})")
    return found


@asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[str]:
    """A throwaway redis-server on a loopback port, keeping nothing on disk; yield its URL."""
    binary = installed("redis-server", "redis-server")
    port = free_port()
    await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    process = await anyio.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def up() -> bool | None:
        assert process.returncode is None, f"redis-server exited with {process.returncode}"
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            return None
        await stream.aclose()
        return True

    try:
        await eventually(up, within=30, every=0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        await terminate(process, within=10)
