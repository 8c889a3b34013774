"""Soak: many requests, with and without credentials, leave resident memory where it was.

Each server runs as its own process on loopback; after a warm-up, 20,000 unauthenticated and
20,000 authenticated requests must grow its resident memory by less than 10 MB (a reused
exception instance once grew the sandbox by 230 MB over 40,000 wrong-key requests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.client import HTTPConnection
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support import eventually, free_port, terminate

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EACH = 20_000
WARM_UP = 3_000
WORKERS = 8
GROWTH_LIMIT_MB = 10.0
KEY = "phx_soakKEY0123456789"
TOKEN = "soak-token-0123456789"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@asynccontextmanager
async def process(argv: list[str], env: dict[str, str], url: str) -> AsyncIterator[int]:
    """Run ``argv`` until the block ends; yield its pid once ``url`` answers."""
    proc = await anyio.open_process(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient() as probe:

            async def up() -> bool | None:
                assert proc.returncode is None, f"{argv} exited with {proc.returncode}"
                try:
                    await probe.get(url)
                except httpx.TransportError:
                    return None
                return True

            await eventually(up, within=60, every=0.1)
        yield proc.pid
    finally:
        await terminate(proc, within=30)


Send = Callable[[HTTPConnection], None]
"""One request on a keep-alive connection, its answer read and checked."""


async def hammer(port: int, count: int, send: Send) -> None:
    """Make ``count`` requests with ``send``, ``WORKERS`` at a time (each on its own keep-alive
    connection), each checked by ``send``. Blocking clients in threads, not httpx: they spend a
    sixth of its CPU time a request, which would otherwise be most of the soak's."""

    def worker(share: int) -> None:
        http = HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(share):
                send(http)
        finally:
            http.close()

    async with anyio.create_task_group() as tg:
        for n in range(WORKERS):
            tg.start_soon(anyio.to_thread.run_sync, worker, (count + n) // WORKERS)


async def soak(
    pid: int, port: int, unauthenticated: Send, authenticated: Send
) -> tuple[float, float]:
    """Warm up, then send both kinds; return resident memory before and after, in MB."""
    await hammer(port, WARM_UP, unauthenticated)
    await hammer(port, WARM_UP, authenticated)
    before = rss_mb(pid)
    await hammer(port, EACH, unauthenticated)
    await hammer(port, EACH, authenticated)
    after = rss_mb(pid)
    print(f"resident memory {before:.1f} MB -> {after:.1f} MB")  # shown with pytest -s
    return before, after


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's POSTHOG_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "SANDBOX_"))}
    return {**env, **extra}


@pytest.mark.slow(seconds=20)
async def test_standalone_sandbox_memory_stays_flat(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sources = "/api/environments/1/external_data_sources/"
    argv = [sys.executable, "-m", "posthog_warehouse_mcp.sandbox", "--port", str(port)]
    argv += ["--dir", str(tmp_path / "sandbox"), "--no-demo", "--api-key", KEY]

    def wrong_key(http: HTTPConnection) -> None:
        http.request("GET", sources, headers={"Authorization": "Bearer phx_wrong"})
        answer = http.getresponse()
        answer.read()
        assert answer.status == 401

    def right_key(http: HTTPConnection) -> None:
        http.request("GET", sources, headers={"Authorization": f"Bearer {KEY}"})
        answer = http.getresponse()
        answer.read()
        assert answer.status == 200

    async with process(argv, clean_env(), base) as pid:
        before, after = await soak(pid, port, wrong_key, right_key)
    assert after - before < GROWTH_LIMIT_MB, f"grew from {before:.1f} MB to {after:.1f} MB"


CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "external-data-sources-list", "arguments": {"limit": 5}},
}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


@pytest.mark.slow(seconds=80)
async def test_hosted_streamable_http_memory_stays_flat(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    argv = [sys.executable, "-m", "posthog_warehouse_mcp", "--transport", "http", "--stateless"]
    argv += ["--port", str(port), "--sandbox", "--no-demo", "--sandbox-dir", str(tmp_path)]
    # 46,000 requests with one token: past the per-caller limits, which are not measured here.
    env = clean_env(
        POSTHOG_MCP_AUTH_TOKEN=TOKEN,
        POSTHOG_LOG_LEVEL="WARNING",
        POSTHOG_MCP_RATE_LIMIT_PER_MINUTE="0",
        POSTHOG_MCP_RATE_LIMIT_PER_HOUR="0",
    )

    call = json.dumps(CALL).encode()

    def no_token(http: HTTPConnection) -> None:
        http.request("POST", "/mcp", body=call, headers=HEADERS)
        answer = http.getresponse()
        answer.read()
        assert answer.status == 401

    def with_token(http: HTTPConnection) -> None:
        headers = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
        http.request("POST", "/mcp", body=call, headers=headers)
        answer = http.getresponse()
        body = answer.read()
        assert answer.status == 200, body
        assert json.loads(body)["result"]["isError"] is False

    async with process(argv, env, url) as pid:
        before, after = await soak(pid, port, no_token, with_token)
    assert after - before < GROWTH_LIMIT_MB, f"grew from {before:.1f} MB to {after:.1f} MB"
