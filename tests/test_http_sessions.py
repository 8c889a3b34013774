"""Streamable HTTP sessions are held for a laptop, not a fleet: an idle session is closed after
`--session-idle-timeout` seconds, at most `--max-sessions` are open at once (past that a 503 says
why and when to retry), and 5,000 abandoned sessions leave the server's memory where it was.
SSE with a foreign Host is refused without a traceback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.cli import parser, settings_from
from posthog_warehouse_mcp.server.transports import http_app, sse_app
from tests.support import Recorder, clean_env, eventually, free_port, serve, settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
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
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def initialize(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """POST a raw initialize request, opening a session that is never used again."""
    return await http.post(f"{url}/mcp", json=INIT, headers=ACCEPT)


@asynccontextmanager
async def mcp_over_http(**overrides: Any) -> AsyncIterator[str]:
    """Serve the MCP server over streamable HTTP, its upstream a recorder nobody reaches."""
    async with serve(Recorder().app()) as upstream:
        config = settings(host=upstream, mcp_transport="http", **overrides)
        async with serve(http_app(config)) as url:
            yield url


def test_laptop_sized_defaults_that_flags_and_the_environment_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = settings()
    assert 300 <= defaults.mcp_session_idle_timeout <= 600
    assert 100 <= defaults.mcp_max_sessions <= 500
    monkeypatch.setenv("POSTHOG_MCP_MAX_SESSIONS", "7")
    flagged = settings_from(parser().parse_args(["--session-idle-timeout", "2.5"]))
    assert (flagged.mcp_session_idle_timeout, flagged.mcp_max_sessions) == (2.5, 7)


async def test_past_the_session_cap_a_503_says_why_and_when_to_retry() -> None:
    async with (
        mcp_over_http(mcp_max_sessions=2) as url,
        httpx.AsyncClient() as http,
    ):
        opened = [await initialize(http, url) for _ in range(2)]
        refused = await initialize(http, url)
        # Ending a session makes room for another.
        ended = await http.delete(
            f"{url}/mcp", headers={"Mcp-Session-Id": opened[0].headers["mcp-session-id"]}
        )
        admitted = await initialize(http, url)
    assert [r.status_code for r in opened] == [200, 200]
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    error = refused.json()["error"]
    assert "2 MCP sessions are open" in error["message"]
    assert "POSTHOG_MCP_MAX_SESSIONS" in error["message"]
    assert ended.status_code == 200
    assert admitted.status_code == 200


async def test_an_idle_session_is_closed_and_its_id_then_answers_404() -> None:
    async with (
        mcp_over_http(mcp_session_idle_timeout=0.5) as url,
        httpx.AsyncClient() as http,
    ):
        session = (await initialize(http, url)).headers["mcp-session-id"]
        headers = {**ACCEPT, "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}

        async def expired() -> bool | None:
            answer = await http.post(f"{url}/mcp", json=TOOLS_LIST, headers=headers)
            return True if answer.status_code == 404 else None

        # Each look is a request, which keeps the session alive: look less often than it idles.
        await eventually(expired, within=30, every=1.0)


async def test_sse_with_a_foreign_host_is_refused_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = settings(mcp_transport="sse")
    app = sse_app(
        create_server(config, transport=httpx.ASGITransport(app=Recorder().app())), config
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as http:
        refused = await http.get("/sse", headers={"Host": "evil.example"})
        foreign = await http.get("/sse", headers={"Origin": "http://evil.example"})
    assert (refused.status_code, foreign.status_code) == (421, 403)
    assert not [r for r in caplog.records if r.exc_info is not None]


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """The server as a process (its own interpreter, so its memory is its own), logging to `log`."""
    env = clean_env(
        POSTHOG_PERSONAL_API_KEY="phx_sessionsKEY0123456789",
        POSTHOG_STATE_DIR=str(log.parent),
        PYTHONPATH=str(ROOT),
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "posthog_warehouse_mcp", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def fresh_client() -> httpx.AsyncClient:
    """A client with new connections: after a pause, the server has closed the kept-alive ones
    (uvicorn keeps them 5 s), and reusing one as it closes fails."""
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20))


# At most `--max-sessions` (200) sessions are open at once and the rest of a flood is refused
# (503) until some idle out, so the shorter the idle time, the more of the 5,000 requests open
# a real session (about 1,000 a flood at 2 s; 500 to 800 at 5 s), and the sooner they expire.
IDLE_SECONDS = 2.0


async def flood(port: int, count: int) -> tuple[dict[int, int], str]:
    """`count` initialize requests, 20 at a time, each session abandoned; the answers' statuses
    and the newest session opened. Blocking clients in threads, not httpx, whose client-side CPU
    a request was more than the server's."""
    body = json.dumps(INIT).encode()
    statuses: Counter[int] = Counter()
    newest = [""]
    lock = threading.Lock()

    def abandon(share: int) -> None:
        for _ in range(share):
            # A new connection for each request: a kept-alive one can be closed by the server
            # just as a request goes out on it (on a loaded machine), which says nothing of
            # sessions.
            http = HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                http.request("POST", "/mcp", body=body, headers=ACCEPT)
                answer = http.getresponse()
                answer.read()
            finally:
                http.close()
            with lock:
                statuses[answer.status] += 1
                if answer.status == 200:
                    newest[0] = answer.headers["mcp-session-id"]

    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(anyio.to_thread.run_sync, abandon, count // 20)
    return dict(statuses), newest[0]


async def expire(url: str, session: str) -> None:
    """Return once `session` has been closed for idling."""
    headers = {**ACCEPT, "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}

    async def expired() -> bool | None:
        async with fresh_client() as http:
            answer = await http.post(f"{url}/mcp", json=TOOLS_LIST, headers=headers)
        return True if answer.status_code == 404 else None

    # Each look is a request, which keeps the session alive: look less often than it idles.
    await eventually(expired, within=120, every=IDLE_SECONDS * 1.5)


@pytest.mark.slow(seconds=35)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_5000_abandoned_sessions_leave_memory_flat_after_they_expire(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    async with serve(Recorder().app()) as upstream:
        args = ["--transport", "http", "--port", str(port), "--posthog-host", upstream]
        args += ["--environment-id", "42", "--session-idle-timeout", str(IDLE_SECONDS)]
        args += ["--log-level", "ERROR"]
        # One caller sends the whole flood: per-caller limits (tests/test_hosted.py) would
        # refuse most of it, and this test is about sessions.
        args += ["--rate-limit-per-minute", "0", "--rate-limit-per-hour", "0"]
        process = spawn(args, log)
        try:
            async with fresh_client() as http:

                async def up() -> bool | None:
                    try:
                        return (await initialize(http, url)).status_code == 200 or None
                    except httpx.TransportError:
                        return None

                await eventually(up, within=60, every=0.2)
                # Warm up: the first sessions load what every later one shares.
                for _ in range(50):
                    await initialize(http, url)
            before = rss_mb(process.pid)
            # Once the flood's newest session has expired, so have all the others.
            statuses, newest = await flood(port, 5000)
            peak = rss_mb(process.pid)
            await expire(url, newest)
            after = rss_mb(process.pid)
            # A second flood reuses the memory the first one's sessions left.
            again, newest = await flood(port, 5000)
            await expire(url, newest)
            after_again = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    report = {
        "before_mb": before,
        "peak_mb": peak,
        "after_expiry_mb": after,
        "after_a_second_flood_mb": after_again,
        "statuses": statuses,
        "statuses_again": again,
    }
    print(json.dumps(report), file=sys.stderr)
    assert sum(statuses.values()) == 5000 and set(statuses) <= {200, 503}, report
    # Before the fix: +185 MB (about 38 KB a session), never given back.
    assert after - before < 40, report
    assert after_again - after < 15, report
    assert "Traceback" not in log.read_text()
