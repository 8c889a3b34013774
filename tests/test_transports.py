"""The server over real transports: stdio subprocess, SSE and streamable HTTP on loopback."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from posthog_warehouse_mcp.server.transports import http_app
from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS
from tests.support import CANARY_KEY, SOURCE_ID, Recorder, serve, settings, stdio_server, terminate

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def mcp_over_http(recorder: Recorder, *, kind: str, **overrides: Any) -> AsyncIterator[str]:
    """Serve the MCP server (kind ``http`` or ``sse``) whose upstream is ``recorder``."""
    async with serve(recorder.app()) as upstream:
        config = settings(host=upstream, mcp_transport=kind, **overrides)
        async with serve(http_app(config)) as url:
            yield url


@pytest.mark.slow
async def test_stdio_subprocess_lists_and_calls() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with (
        serve(recorder.app()) as upstream,
        Client(stdio_server(upstream), mode="legacy") as client,
    ):
        tools = (await client.list_tools()).tools
        result = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
    assert len(tools) == len(ENDPOINTS)
    assert result.is_error is False
    assert recorder.seen[0].headers["authorization"] == f"Bearer {CANARY_KEY}"


async def test_streamable_http_lists_and_calls() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with mcp_over_http(recorder, kind="http") as url:
        for mode in ("legacy", "auto"):
            async with Client(f"{url}/mcp", mode=mode) as client:
                assert len((await client.list_tools()).tools) == len(ENDPOINTS)
                result = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
                assert result.is_error is False
    assert len(recorder.seen) == 2


async def test_sse_lists_and_calls() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with (
        mcp_over_http(recorder, kind="sse") as url,
        sse_client(f"{url}/sse") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert len((await session.list_tools()).tools) == len(ENDPOINTS)
        result = await session.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
    assert result.is_error is False
    assert recorder.seen[0].path.endswith(f"/external_data_sources/{SOURCE_ID}/")


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def initialize(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    """POST a raw initialize request to the streamable HTTP endpoint."""
    return await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **headers})


async def test_http_rejects_bad_host_and_origin() -> None:
    async with mcp_over_http(Recorder(), kind="http") as url, httpx.AsyncClient() as http:
        good = await initialize(http, url)
        bad_host = await initialize(http, url, Host="evil.example")
        bad_origin = await initialize(http, url, Origin="http://evil.example")
    assert good.status_code == 200
    assert bad_host.status_code == 421
    assert bad_origin.status_code == 403


async def test_http_bearer_token_is_required() -> None:
    async with (
        mcp_over_http(Recorder(), kind="http", mcp_auth_token="s3cret-token") as url,
        httpx.AsyncClient() as http,
    ):
        missing = await initialize(http, url)
        wrong = await initialize(http, url, Authorization="Bearer nope")
        right = await initialize(http, url, Authorization="Bearer s3cret-token")
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "s3cret-token" not in wrong.text
    assert right.status_code == 200


async def test_forwarded_keys_reach_upstream_per_caller() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with mcp_over_http(
        recorder, kind="http", mcp_stateless=True, forward_key=True, personal_api_key=None
    ) as url:
        for key in ("phx_aliceKEY123456", "phx_bobKEY654321"):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
            async with (
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                result = await session.call_tool(
                    "external-data-sources-retrieve", {"id": SOURCE_ID}
                )
                assert result.is_error is False
            await http.aclose()
    assert [s.headers["authorization"] for s in recorder.seen] == [
        "Bearer phx_aliceKEY123456",
        "Bearer phx_bobKEY654321",
    ]


@pytest.mark.slow(seconds=35)
async def test_stdio_server_stops_on_sigterm_right_after_stdin_closes() -> None:
    # A host closes stdin and sends SIGTERM at once. This once left the process spinning in
    # cancellation at 100% CPU about one time in 30; twenty rounds make a regression show.
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    init = {**INIT, "params": {**INIT["params"]}}
    call = {
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": "external-data-sources-retrieve", "arguments": {"id": SOURCE_ID}},
    }
    async with serve(recorder.app()) as upstream:
        params = stdio_server(upstream)
        for _ in range(20):
            process = await anyio.open_process(
                [params.command, *params.args], env=params.env, stderr=subprocess.DEVNULL
            )
            assert process.stdin is not None and process.stdout is not None
            lines = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
            lines += [{**call, "id": n} for n in range(2, 42)]
            await process.stdin.send(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
            received = b""
            while received.count(b"\n") < 41:  # the initialize answer and 40 results
                received += await process.stdout.receive()
            await process.stdin.aclose()
            if not await terminate(process, within=15):
                pytest.fail("the server was still running 15 s after SIGTERM")
