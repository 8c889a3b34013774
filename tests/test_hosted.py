"""Hosting for a team: /health and /ready, stateless GET and DELETE, per-caller rate limits, and
one-time ids spent in a store every instance shares (Redis), failing closed when it is down.

Three replicas behind a real balancer are tests/test_replicas.py (slow).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client

from posthog_warehouse_mcp.loopback.limits import (
    CLIENT_FAILURES,
    LINK_FAILURES,
    LINK_WINDOW,
)
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.limits import Limit, Limiter, MemoryWindows, SharedAttempts
from posthog_warehouse_mcp.server.shared import RedisStore, Shared, alone, shared_for
from posthog_warehouse_mcp.server.transports import http_app
from posthog_warehouse_mcp.tools.confirm import StoreUnavailable
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.support import (
    SCHEMA_ID,
    SOURCE_ID,
    Recorder,
    free_port,
    like_posthog,
    redis_server,
    serve,
    settings,
    text_of,
)

pytestmark = pytest.mark.anyio

SECRET = "a-confirm-secret-shared-by-every-instance"
TOKEN = "team-token-0123456789"
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "external-data-sources-retrieve", "arguments": {"id": SOURCE_ID}},
}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def down_redis() -> str:
    """A Redis URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


@asynccontextmanager
async def hosted(recorder: Recorder | None = None, **overrides: Any) -> AsyncIterator[str]:
    """A stateless streamable HTTP server whose upstream is ``recorder`` (or a closed port)."""
    if recorder is None:
        config = settings(host=f"http://127.0.0.1:{free_port()}", **overrides)
        async with serve(http_app(config)) as url:
            yield url
        return
    async with serve(recorder.app()) as upstream:
        config = settings(host=upstream, **overrides)
        async with serve(http_app(config)) as url:
            yield url


STATELESS = {"mcp_transport": "http", "mcp_stateless": True}


async def test_health_answers_without_the_token_and_checks_nothing() -> None:
    async with (
        hosted(None, **STATELESS, mcp_auth_token=TOKEN) as url,
        httpx.AsyncClient() as http,
    ):
        health = await http.get(f"{url}/health", headers={"Host": "10.0.0.7:8000"})
        refused = await http.post(f"{url}/mcp", json=CALL, headers=HEADERS)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert refused.status_code == 401


async def test_ready_says_posthog_and_the_store_are_reachable(tmp_path: Path) -> None:
    recorder = Recorder()
    async with (
        redis_server(tmp_path / "redis") as redis_url,
        hosted(recorder, **STATELESS, redis_url=redis_url, confirm_secret=SECRET) as url,
        httpx.AsyncClient() as http,
    ):
        ready = await http.get(f"{url}/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["posthog"] == ready.json()["store"] == "reachable"


async def test_ready_names_what_is_unreachable() -> None:
    async with hosted(None, **STATELESS) as url, httpx.AsyncClient() as http:
        no_posthog = await http.get(f"{url}/ready")
    assert no_posthog.status_code == 503
    assert "unreachable" in no_posthog.json()["posthog"]
    assert no_posthog.json()["store"].startswith("none")
    async with (
        hosted(Recorder(), **STATELESS, redis_url=down_redis(), confirm_secret=SECRET) as url,
        httpx.AsyncClient() as http,
    ):
        no_store = await http.get(f"{url}/ready")
    assert no_store.status_code == 503
    assert no_store.json()["posthog"] == "reachable"
    assert "unreachable" in no_store.json()["store"]
    assert SECRET not in no_store.text


async def test_stateless_get_and_delete_answer_405_with_allow_post() -> None:
    async with (
        hosted(Recorder(), **STATELESS, mcp_auth_token=TOKEN) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        get = await http.get(f"{url}/mcp", headers={"Accept": "text/event-stream", **auth})
        delete = await http.delete(f"{url}/mcp", headers=auth)
        anonymous = await http.get(f"{url}/mcp", headers={"Accept": "text/event-stream"})
    for answer in (get, delete):
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
        assert "stateless" in answer.json()["error"]["message"]
    assert anonymous.status_code == 401  # authentication comes first (OAuth discovery needs it)


async def test_a_caller_past_its_limit_gets_429_with_retry_after_and_others_do_not() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    limits = {"mcp_rate_limit_per_minute": 3, "forward_key": True, "personal_api_key": None}
    async with hosted(recorder, **STATELESS, **limits) as url, httpx.AsyncClient() as http:

        async def post(key: str) -> httpx.Response:
            headers = {**HEADERS, "Authorization": f"Bearer {key}"}
            return await http.post(f"{url}/mcp", json=CALL, headers=headers)

        alice = [await post("phx_alice0123456789") for _ in range(4)]
        bob = await post("phx_bob0123456789")
        health = await http.get(f"{url}/health")
    assert [a.status_code for a in alice] == [200, 200, 200, 429]
    refused = alice[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert "3 requests a minute" in refused.json()["error"]["message"]
    assert "POSTHOG_MCP_RATE_LIMIT_PER_MINUTE" in refused.json()["error"]["message"]
    assert bob.status_code == 200
    assert health.status_code == 200
    assert len(recorder.seen) == 4  # the refused request reached nothing


async def test_over_sse_a_call_past_the_limit_is_a_tool_error_saying_when_to_retry() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with (
        hosted(recorder, mcp_transport="sse", mcp_rate_limit_per_minute=2) as url,
        sse_client(f"{url}/sse") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        results = [
            await session.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
            for _ in range(3)
        ]
    assert [r.is_error for r in results] == [False, False, True]
    assert "retry in" in text_of(results[-1])
    assert "Nothing was done" in text_of(results[-1])
    assert len(recorder.seen) == 2


async def test_limits_are_served_when_the_store_is_down() -> None:
    limiter = Limiter([Limit(1, 60, "a minute", "X")], RedisStore(down_redis()))
    assert await limiter.check("caller") is None
    assert await limiter.check("caller") is None


async def test_memory_windows_forget_the_oldest_past_their_bound() -> None:
    windows = MemoryWindows(keys=100)
    limiter = Limiter([Limit(1, 60, "a minute", "X")], windows)
    for n in range(1_000):
        assert await limiter.check(f"caller-{n}") is None
    assert len(windows) <= 100
    assert await limiter.check("caller-999") is not None


async def test_shared_page_attempts_hold_a_link_and_a_client_to_the_pages_limits() -> None:
    now = [1_000_000.0]
    windows = MemoryWindows(clock=lambda: now[0])
    one, two = (SharedAttempts(windows, clock=lambda: now[0]) for _ in range(2))
    for n in range(LINK_FAILURES):
        assert await one.retry_after("10.0.0.1", "link") is None
        await (one if n % 2 else two).fail("10.0.0.1", "link")
    # Held on both instances, for what is left of the link's ten-minute window.
    wait = await two.retry_after("10.0.0.1", "link")
    assert wait is not None and 1 <= wait <= int(LINK_WINDOW)
    assert await one.retry_after("10.0.0.2", "another") is None
    now[0] += LINK_WINDOW
    assert await one.retry_after("10.0.0.1", "link") is None  # a new window
    # A client guessing (no live link) is held after its minute's failures, whatever link.
    for _ in range(CLIENT_FAILURES):
        await two.fail("10.0.0.3", None)
    assert await one.retry_after("10.0.0.3", "any") is not None


async def test_shared_page_attempts_fail_closed_when_the_store_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A count that cannot be looked up refuses the page; one that cannot be added after the
    page answered is logged, and the answer stands."""
    attempts = SharedAttempts(RedisStore(down_redis()))
    with pytest.raises(StoreUnavailable):
        await attempts.retry_after("127.0.0.1", "link")
    await attempts.fail("127.0.0.1", "link")
    assert "was not counted" in caplog.text


async def test_looking_a_page_count_up_writes_nothing(tmp_path: Path) -> None:
    windows = MemoryWindows()
    assert await SharedAttempts(windows).retry_after("127.0.0.1", "a-guessed-token") is None
    assert len(windows) == 0
    async with redis_server(tmp_path / "redis") as url:
        store = RedisStore(url)
        async with store.running():
            attempts = SharedAttempts(store)
            for n in range(5):
                assert await attempts.retry_after("127.0.0.1", f"guess-{n}") is None
            assert await store._redis().keys("*") == []
            await attempts.fail("127.0.0.1", "guess-0")
            assert len(await store._redis().keys("*")) == 2


def destructive_server(shared: Shared, recorder: Recorder) -> Client:
    config = settings(confirm="token", confirm_secret=SECRET)
    server = create_server(config, transport=httpx.ASGITransport(app=recorder.app()), shared=shared)
    return Client(server, mode="legacy")


async def test_with_the_store_down_a_token_is_refused_and_reads_go_on() -> None:
    recorder = Recorder(respond=like_posthog)
    store = RedisStore(down_redis())
    tool = "external-data-schemas-destroy"
    async with destructive_server(Shared(store, store, store), recorder) as client:
        read = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
        asked = await client.call_tool(tool, {"id": SCHEMA_ID})
        token = (asked.structured_content or {})["confirmation_token"]
        refused = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
    assert read.is_error is False
    assert refused.is_error is True
    assert "shared store" in text_of(refused)
    assert "nothing was sent" in text_of(refused)
    assert [s.method for s in recorder.seen if s.method != "GET"] == []
    async with store.running():
        with pytest.raises(StoreUnavailable):
            await store.spend("n", 0)


async def test_a_token_acts_once_across_instances_sharing_redis(tmp_path: Path) -> None:
    recorder = Recorder(respond=like_posthog)
    tool = "external-data-schemas-destroy"
    async with redis_server(tmp_path / "redis") as url:
        config = settings(redis_url=url, confirm_secret=SECRET)
        first, second = shared_for(config), shared_for(config)
        assert isinstance(first.redis, RedisStore)
        async with (
            destructive_server(first, recorder) as a,
            destructive_server(second, recorder) as b,
        ):
            asked = await a.call_tool(tool, {"id": SCHEMA_ID})
            token = (asked.structured_content or {})["confirmation_token"]
            args = {"id": SCHEMA_ID, "confirmation_token": token}
            acted = await b.call_tool(tool, args)
            replayed = [await a.call_tool(tool, args), await b.call_tool(tool, args)]
        async with first.running():
            assert first.redis is not None and await first.redis.problem() is None
    assert acted.is_error is False, text_of(acted)
    assert all(r.is_error and "used already" in text_of(r) for r in replayed)
    assert [s.method for s in recorder.seen if s.method != "GET"] == ["DELETE"]


async def test_instances_sharing_redis_count_one_caller_together(tmp_path: Path) -> None:
    async with redis_server(tmp_path / "redis") as url:
        one, two = RedisStore(url), RedisStore(url)
        limits = [Limit(3, 60, "a minute", "X")]
        async with one.running(), two.running():
            checks = [
                await Limiter(limits, store).check("caller") for store in (one, two, one, two)
            ]
    assert checks[:3] == [None, None, None]
    assert checks[3] is not None and checks[3].retry_after >= 1


@pytest.mark.slow
async def test_a_lock_in_redis_is_ended_only_by_its_owner_and_gone_records_stay_gone(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path / "redis") as url:
        one, two = RedisStore(url), RedisStore(url)
        async with one.running(), two.running():
            claimed = [await one.claim("lock", "one", 30), await two.claim("lock", "two", 30)]
            # A replica whose own lock expired must not end the one another now holds.
            by_another = await two.release("lock", "two")
            still = await one.peek("lock")
            by_owner = await one.release("lock", "one")
            await one.hold("grant", "v1", 60)
            replaced = await two.replace("grant", "v2", 60)
            await one.take("grant")  # revoked
            written_back = await two.replace("grant", "v3", 60)
            after = await one.peek("grant")
    assert claimed == [True, False]
    assert by_another is False and still == "one" and by_owner is True
    assert replaced is True and written_back is False and after is None


def test_a_stateless_start_without_redis_says_what_it_gives_up() -> None:
    warning = alone(settings(**STATELESS))
    assert warning is not None
    assert "POSTHOG_REDIS_URL" in warning and "once on each replica" in warning
    assert alone(settings(**STATELESS, redis_url=down_redis(), confirm_secret=SECRET)) is None
    assert alone(settings(mcp_transport="http")) is None  # sessions: one process by design
