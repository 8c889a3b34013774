"""A query's limits hold whatever it does: its time (time spent waiting for a turn included), how
many run at once and wait (past the queue: busy, retry), the caller's own deadline, memory, and
the size and nesting of its text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.query_pool import QueryLimits
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.tools.client import PostHogClient, build_http_client
from posthog_warehouse_mcp.tools.errors import TransportError
from tests.sandbox.support import API, client_for, services_of
from tests.support import eventually, settings, text_of

pytestmark = pytest.mark.anyio

# Generous on a busy two-core machine: an answer must come within the deadline plus this.
MARGIN = 10.0
LIMITS = QueryLimits(seconds=1.5, workers=2, queue=2)
# Runs until it is stopped: DuckDB never finishes counting an endless recursion.
ENDLESS = "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r) SELECT count() FROM r"
NESTED = "SELECT " + "(" * 6000 + "1" + ")" * 6000  # the attack run's S87: 12,008 characters


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A sandbox whose queries stop after 1.5 s, two at a time, two more waiting."""
    async with (
        open_sandbox(tmp_path / "sandbox", demo=False, query_limits=LIMITS) as app,
        client_for(app) as client,
    ):
        yield app, client


async def hogql(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post(
        f"{API}/query/", json={"query": {"kind": "HogQLQuery", "query": query}}
    )


async def timed(client: httpx.AsyncClient, query: str) -> tuple[httpx.Response, float]:
    started = anyio.current_time()
    response = await hogql(client, query)
    return response, anyio.current_time() - started


async def test_a_query_past_its_time_limit_is_stopped_and_the_next_one_runs(
    limited: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = limited
    response, took = await timed(client, ENDLESS)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("The query took longer than 1.5 seconds"), (
        response.text
    )
    assert took < LIMITS.seconds + MARGIN
    after = await hogql(client, "SELECT 1 AS one")
    assert after.json()["results"] == [[1]]


@pytest.mark.slow
async def test_past_the_queue_a_query_is_answered_busy_and_waiting_counts_against_its_limit(
    limited: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = limited
    pool = services_of(app).queries.pool
    running: list[tuple[httpx.Response, float]] = []
    queued: list[tuple[httpx.Response, float]] = []

    async def send(into: list[tuple[httpx.Response, float]]) -> None:
        into.append(await timed(client, ENDLESS))

    async def counted(attribute: str) -> bool | None:
        return True if getattr(pool, attribute) == 2 else None

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(send, running)
        await eventually(lambda: counted("running"))
        # Two more arrive later, and wait: their turn comes when the first two are stopped,
        # with the rest of their own 1.5 s, too little to run: they are told to retry.
        await anyio.sleep(0.2)
        for _ in range(2):
            tg.start_soon(send, queued)
        await eventually(lambda: counted("waiting"))
        # The queue is full: these two are told at once to retry.
        busy = [await hogql(client, ENDLESS) for _ in range(2)]
    for response in busy:
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) >= 1
        body = response.json()
        assert (body["type"], body["code"]) == ("throttled_error", "throttled")
        assert "2 queries running and 2 more waiting" in body["detail"]
        assert "Retry in" in body["detail"]
    for response, took in running:
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("The query took longer than 1.5 seconds")
        assert took < LIMITS.seconds + MARGIN
    for response, took in queued:
        assert response.status_code == 429, response.text
        assert "waited" in response.json()["detail"] and "for a turn" in response.json()["detail"]
        assert int(response.headers["retry-after"]) >= 1
        # Waiting counted against the limit: answered when the limit since arrival passed.
        assert took < LIMITS.seconds + MARGIN
    after = await hogql(client, "SELECT 1 AS one")
    assert after.json()["results"] == [[1]]


@pytest.mark.slow
async def test_the_callers_deadline_stops_a_query_in_the_in_process_sandbox(
    tmp_path: Path,
) -> None:
    """POSTHOG_TIMEOUT holds against the in-process sandbox: the exchange's deadline cancels the
    request, and the query's process with it, long before the sandbox's own limit."""
    limits = QueryLimits(seconds=60.0)
    async with open_sandbox(tmp_path / "sandbox", demo=False, query_limits=limits) as app:
        http = build_http_client(
            base_url="http://sandbox",
            api_key=None,
            timeout=1.5,
            user_agent="test",
            transport=httpx.ASGITransport(app=app),
        )
        async with http:
            client = PostHogClient(http)
            started = anyio.current_time()
            with pytest.raises(TransportError, match=r"within the timeout \(1.5 s\)"):
                await client.request(
                    "POST",
                    f"{API}/query/",
                    json_body={"query": {"kind": "HogQLQuery", "query": ENDLESS}},
                    retry=False,
                )
            assert anyio.current_time() - started < 1.5 + MARGIN
            pool = services_of(app).queries.pool
            assert pool.running == 0
            one = await client.request(
                "POST",
                f"{API}/query/",
                json_body={"query": {"kind": "HogQLQuery", "query": "SELECT 1 AS one"}},
                retry=False,
            )
            assert one.body["results"] == [[1]]


@pytest.mark.slow
async def test_a_query_over_the_memory_limit_is_stopped_naming_it(tmp_path: Path) -> None:
    limits = QueryLimits(memory_mb=300)
    async with (
        open_sandbox(tmp_path / "sandbox", demo=False, query_limits=limits) as app,
        client_for(app) as client,
    ):
        response, took = await timed(client, "SELECT length(repeat('x', 1000000000))")
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith("The query used too much memory and was stopped"), detail
        assert "may hold 300 MB together" in detail
        assert took < limits.seconds + MARGIN
        after = await hogql(client, "SELECT 1 AS one")
        assert after.json()["results"] == [[1]]


async def test_a_query_longer_than_the_cap_is_refused_before_parsing(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    response = await hogql(client, "SELECT " + "+".join(["1"] * 100_000))  # 200 KB: Q4
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["attr"]) == ("hogql_query_error", None)
    assert "longer than 30000 characters" in body["detail"]


async def test_a_deeply_nested_query_is_a_clear_error_and_one_log_line(
    sandbox: tuple[Starlette, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = sandbox
    caplog.set_level(logging.INFO)
    response = await hogql(client, NESTED)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("The query is nested too deeply")
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    assert len([r for r in caplog.records if "nested too deeply" in r.getMessage()]) == 1


async def test_execute_sql_reports_a_deeply_nested_query_as_a_tool_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app:
        server = create_server(settings(environment_id="1"), transport=httpx.ASGITransport(app=app))
        async with Client(server, mode="legacy") as client:
            result = await client.call_tool("execute-sql", {"query": NESTED})
    assert result.is_error is True
    assert "nested too deeply" in text_of(result)
    assert "failed inside the server" not in text_of(result)
    traced: list[Any] = [r for r in caplog.records if r.exc_info]
    assert not traced, traced
