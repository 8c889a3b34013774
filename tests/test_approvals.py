"""A confirmation only a person can give (POSTHOG_CONFIRM=human): a card in the chat whose
Approve calls an app-only tool, or a one-time page (127.0.0.1 on stdio, the public URL over
HTTP) where the person types what will go. The destructive request goes out exactly once,
after the approval, whichever instance sharing the store takes it; a decline, a replay, an
expiry, another caller, a wrong name, a foreign page or a foreign Host sends nothing.

The tests across instances start a throwaway redis-server (skipped, saying what to install,
without it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.loopback.limits import LINK_FAILURES
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.approvals import (
    APPROVAL_META,
    APPROVAL_SECONDS,
    APPROVE_TOOL,
    PAGE,
    ApprovalRefused,
    Approvals,
    Held,
)
from posthog_warehouse_mcp.server.callers import SERVER, Caller
from posthog_warehouse_mcp.server.limits import MemoryWindows, SharedAttempts
from posthog_warehouse_mcp.server.records import MemoryRecords
from posthog_warehouse_mcp.server.shared import RedisStore, Shared, shared_for
from posthog_warehouse_mcp.server.transports import http_app
from posthog_warehouse_mcp.tools.errors import PostHogError
from tests.support import (
    SCHEMA,
    SCHEMA_ID,
    Recorder,
    Seen,
    free_port,
    redis_server,
    serve,
    settings,
    text_of,
)

pytestmark = pytest.mark.anyio

HOSTILE = "<img src=x onerror=alert(1)>"
TABLE = {**SCHEMA, "name": HOSTILE, "table": {"name": "app_postgres_orders", "row_count": 1234}}
DELETE = ("external-data-schemas-delete-data", {"id": SCHEMA_ID})


class AppsHost(ClientExtension):
    """A client that renders MCP Apps."""

    identifier = EXTENSION_ID

    def settings(self) -> dict[str, Any]:
        return {"mimeTypes": [APP_MIME_TYPE]}


def posthog(request: Request, seen: Seen) -> Response:
    if request.method != "GET":
        return Response(status_code=204)
    return JSONResponse(TABLE)


def changes(recorder: Recorder) -> list[str]:
    return [s.method for s in recorder.seen if s.method != "GET"]


@asynccontextmanager
async def human(
    recorder: Recorder, *, apps: bool = False, **overrides: Any
) -> AsyncIterator[Client]:
    server = create_server(
        settings(confirm="human", **overrides), transport=httpx.ASGITransport(app=recorder.app())
    )
    async with Client(server, mode="legacy", extensions=[AppsHost()] if apps else None) as client:
        yield client


async def test_a_card_sends_the_call_once_after_approve() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder, apps=True) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        approve = listed[APPROVE_TOOL]
        assert approve.meta and approve.meta["ui"]["visibility"] == ["app"]
        first = await client.call_tool(*DELETE)
        assert first.is_error is False
        answer = first.structured_content or {}
        assert answer["confirmation_required"] is True and "confirmation_token" not in answer
        approval = (first.meta or {})[APPROVAL_META]
        assert approval not in text_of(first) and approval not in str(answer)
        assert answer["approve_at"].startswith("http://127.0.0.1:")  # hosts that fail to render
        assert changes(recorder) == []
        done = await client.call_tool(APPROVE_TOOL, {"approval": approval, "decision": "approve"})
        assert done.is_error is False, text_of(done)
        assert changes(recorder) == ["DELETE"]
        again = await client.call_tool(APPROVE_TOOL, {"approval": approval, "decision": "approve"})
        assert again.is_error is True and "nothing was sent" in text_of(again)
        # The page's link for the same call no longer approves it either.
        async with httpx.AsyncClient() as browser:
            page = await browser.post(
                answer["approve_at"],
                data={"name": HOSTILE, "decision": "approve"},
                headers={"origin": origin_of(answer["approve_at"])},
            )
        assert page.status_code == 409
    assert changes(recorder) == ["DELETE"]


async def test_a_declined_card_sends_nothing_and_cannot_be_approved_after() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder, apps=True) as client:
        first = await client.call_tool(*DELETE)
        approval = (first.meta or {})[APPROVAL_META]
        declined = await client.call_tool(
            APPROVE_TOOL, {"approval": approval, "decision": "decline"}
        )
        assert (declined.structured_content or {}) == {"declined": True, "sent": False}
        late = await client.call_tool(APPROVE_TOOL, {"approval": approval, "decision": "approve"})
        forged = await client.call_tool(APPROVE_TOOL, {"approval": "x" * 32, "decision": "approve"})
    assert late.is_error is True and forged.is_error is True
    assert changes(recorder) == []


async def test_without_apps_there_is_no_app_only_tool() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as refused:
            await client.call_tool(APPROVE_TOOL, {"approval": "x", "decision": "approve"})
    assert APPROVE_TOOL not in names
    assert refused.value.code == types.INVALID_PARAMS
    assert changes(recorder) == []


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def test_the_page_approves_once_with_the_name_typed() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder) as client:
        first = await client.call_tool(*DELETE)
        answer = first.structured_content or {}
        link = answer["approve_at"]
        assert "confirmation_token" not in answer and changes(recorder) == []
        origin = {"origin": origin_of(link)}
        async with httpx.AsyncClient() as browser:
            shown = await browser.get(link)
            assert shown.status_code == 200
            assert HOSTILE not in shown.text and "&lt;img src=x" in shown.text
            assert "1234 rows" in shown.text
            wrong = await browser.post(
                link, data={"name": "orders", "decision": "approve"}, headers=origin
            )
            assert wrong.status_code == 400 and changes(recorder) == []
            foreign = await browser.post(
                link,
                data={"name": HOSTILE, "decision": "approve"},
                headers={"origin": "http://evil.example"},
            )
            assert foreign.status_code == 403 and changes(recorder) == []
            rebound = await browser.get(link, headers={"host": "evil.example"})
            assert rebound.status_code == 400
            approved = await browser.post(
                link, data={"name": HOSTILE, "decision": "approve"}, headers=origin
            )
            assert approved.status_code == 200 and "sent once" in approved.text
            replay = await browser.post(
                link, data={"name": HOSTILE, "decision": "approve"}, headers=origin
            )
            assert replay.status_code == 404
    assert changes(recorder) == ["DELETE"]


async def test_a_page_declined_sends_nothing() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder) as client:
        link = ((await client.call_tool(*DELETE)).structured_content or {})["approve_at"]
        async with httpx.AsyncClient() as browser:
            declined = await browser.post(
                link, data={"decision": "decline"}, headers={"origin": origin_of(link)}
            )
    assert declined.status_code == 200 and "nothing was sent" in declined.text
    assert changes(recorder) == []


async def test_over_http_without_a_human_path_a_token_is_the_fallback() -> None:
    recorder = Recorder(respond=posthog)
    async with human(recorder, mcp_transport="http") as client:
        answer = (await client.call_tool(*DELETE)).structured_content or {}
    assert "confirmation_token" in answer and "approve_at" not in answer
    assert changes(recorder) == []


async def test_an_expired_approval_sends_nothing() -> None:
    sent: list[Held] = []

    async def send(held: Held, caller: Caller) -> dict[str, Any]:
        sent.append(held)
        return {}

    approvals = Approvals(seconds=0.01)
    approval = await approvals.hold(Held("x", {}, "", {}))
    await anyio.sleep(0.05)
    with pytest.raises(ApprovalRefused, match="expired"):
        await approvals.approve(approval, caller=SERVER, send=send)
    assert sent == []


# Across instances: a held call is data in the store they share (Redis), taken once by
# whichever instance the approval reaches.

SECRET = "an-approvals-secret-shared-by-every-instance"
HTTP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
PUBLIC = "http://approvals.test"
BROWSER = {"host": "approvals.test", "origin": PUBLIC}


def shared_human(redis_url: str, **overrides: Any) -> Any:
    return settings(confirm="human", redis_url=redis_url, confirm_secret=SECRET, **overrides)


async def test_a_card_held_on_one_instance_is_approved_once_through_another(
    tmp_path: Path,
) -> None:
    recorder = Recorder(respond=posthog)
    upstream = httpx.ASGITransport(app=recorder.app())
    async with redis_server(tmp_path / "redis") as url:
        config = shared_human(url)
        one = create_server(config, transport=upstream, shared=shared_for(config))
        two = create_server(config, transport=upstream, shared=shared_for(config))
        async with (
            Client(one, mode="legacy", extensions=[AppsHost()]) as a,
            Client(two, mode="legacy", extensions=[AppsHost()]) as b,
        ):
            first = await a.call_tool(*DELETE)
            approval = (first.meta or {})[APPROVAL_META]
            assert approval not in text_of(first) and changes(recorder) == []
            approve = {"approval": approval, "decision": "approve"}
            done = await b.call_tool(APPROVE_TOOL, approve)
            replays = [
                await a.call_tool(APPROVE_TOOL, approve),
                await b.call_tool(APPROVE_TOOL, approve),
            ]
    assert done.is_error is False, text_of(done)
    assert all(r.is_error and "nothing was sent" in text_of(r) for r in replays)
    assert changes(recorder) == ["DELETE"]


@asynccontextmanager
async def mcp_client(url: str, key: str) -> AsyncIterator[Client]:
    """A client that renders MCP Apps, on streamable HTTP, sending `key` as its own."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        async with Client(transport, mode="legacy", extensions=[AppsHost()]) as client:
            yield client


async def test_another_callers_key_cannot_approve_a_held_call(tmp_path: Path) -> None:
    recorder = Recorder(respond=posthog)
    alice, bob = "phx_aliceKEY0123456789", "phx_bobKEY0123456789"
    async with redis_server(tmp_path / "redis") as url:
        config = shared_human(url, mcp_transport="http", forward_key=True, personal_api_key=None)

        def instance() -> Any:
            upstream = httpx.ASGITransport(app=recorder.app())
            return serve(http_app(config, transport=upstream, shared=shared_for(config)))

        async with instance() as one, instance() as two:
            async with mcp_client(one, alice) as a:
                first = await a.call_tool(*DELETE)
            approval = (first.meta or {})[APPROVAL_META]
            assert "approve_at" not in (first.structured_content or {})  # no page for keys
            approve = {"approval": approval, "decision": "approve"}
            async with mcp_client(two, bob) as b:
                refused = await b.call_tool(APPROVE_TOOL, approve)
                declined = await b.call_tool(APPROVE_TOOL, {**approve, "decision": "decline"})
            assert changes(recorder) == []
            async with mcp_client(two, alice) as a:
                done = await a.call_tool(APPROVE_TOOL, approve)
                again = await a.call_tool(APPROVE_TOOL, approve)
    assert refused.is_error is True and "another caller" in text_of(refused)
    assert declined.is_error is True and "another caller" in text_of(declined)
    assert done.is_error is False, text_of(done)
    assert again.is_error is True
    assert changes(recorder) == ["DELETE"]
    assert {s.headers["authorization"] for s in recorder.seen} == {f"Bearer {alice}"}


async def stateless_call(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The destructive call, POSTed alone by a client with neither forms nor cards."""
    name, arguments = DELETE
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    body["params"] = {"name": name, "arguments": arguments}
    answer = await http.post(f"{url}/mcp", json=body, headers=HTTP_HEADERS)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["result"]
    return found


def on(instance: str, link: str) -> str:
    """The link's page, asked of one instance directly (the balancer would pick one)."""
    return instance + urlsplit(link).path


@asynccontextmanager
async def page_instances(url: str, recorder: Recorder) -> AsyncIterator[tuple[str, str]]:
    """Two stateless instances sharing the Redis at `url`, serving the approval page at the
    public URL; their base URLs."""
    config = shared_human(url, mcp_transport="http", mcp_stateless=True, mcp_public_url=PUBLIC)

    def instance() -> Any:
        upstream = httpx.ASGITransport(app=recorder.app())
        return serve(http_app(config, transport=upstream, shared=shared_for(config)))

    async with instance() as one, instance() as two:
        yield one, two


async def test_over_http_the_page_at_the_public_url_approves_once_on_any_instance(
    tmp_path: Path,
) -> None:
    recorder = Recorder(respond=posthog)
    async with (
        redis_server(tmp_path / "redis") as url,
        page_instances(url, recorder) as (one, two),
        httpx.AsyncClient() as http,
    ):
        held = await stateless_call(http, one)
        answer = held["structuredContent"]
        link = answer["approve_at"]
        assert link.startswith(f"{PUBLIC}/approve/")
        assert "confirmation_token" not in answer and changes(recorder) == []
        shown = await http.get(on(two, link), headers={"host": "approvals.test"})
        assert shown.status_code == 200 and "1234 rows" in shown.text
        own_host = await http.get(on(two, link))
        assert own_host.status_code == 400
        rebound = await http.get(on(two, link), headers={"host": "evil.example"})
        assert rebound.status_code == 400
        approve = {"name": HOSTILE, "decision": "approve"}
        foreign = await http.post(
            on(one, link), data=approve, headers={**BROWSER, "origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        wrong = await http.post(on(one, link), data={**approve, "name": "orders"}, headers=BROWSER)
        assert wrong.status_code == 400 and changes(recorder) == []
        approved = await http.post(on(two, link), data=approve, headers=BROWSER)
        assert approved.status_code == 200 and "sent once" in approved.text
        assert changes(recorder) == ["DELETE"]
        replays = [
            await http.post(on(one, link), data=approve, headers=BROWSER),
            await http.post(on(two, link), data=approve, headers=BROWSER),
        ]
    assert [r.status_code for r in replays] == [404, 404]
    assert changes(recorder) == ["DELETE"]


async def test_a_links_failed_attempts_count_on_every_instance_sharing_redis(
    tmp_path: Path,
) -> None:
    """Ten refused forms on one link, spread over two instances, hold it on both (each instance
    counted only its own before); the link is not used up, and Redis holds no token."""
    recorder = Recorder(respond=posthog)
    async with (
        redis_server(tmp_path / "redis") as url,
        page_instances(url, recorder) as (one, two),
        httpx.AsyncClient() as http,
    ):
        link = (await stateless_call(http, one))["structuredContent"]["approve_at"]
        wrong = {"name": "orders", "decision": "approve"}
        refused = [
            await http.post(on(either, link), data=wrong, headers=BROWSER)
            for either in (one, two) * (LINK_FAILURES // 2)
        ]
        held = [await http.get(on(either, link), headers=BROWSER) for either in (one, two)]
        store = RedisStore(url)
        async with store.running():
            keys = [str(k) for k in await store._redis().keys("*")]
    assert [r.status_code for r in refused] == [400] * LINK_FAILURES
    assert [r.status_code for r in held] == [429, 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in held)
    assert changes(recorder) == []
    token = urlsplit(link).path.rsplit("/", 1)[-1]
    assert any(":page:link:" in k for k in keys) and not any(token in k for k in keys)


async def test_over_http_without_a_public_url_the_token_remains_and_no_page_is_served() -> None:
    recorder = Recorder(respond=posthog)
    config = settings(confirm="human", mcp_transport="http", mcp_stateless=True)
    upstream = httpx.ASGITransport(app=recorder.app())
    async with serve(http_app(config, transport=upstream)) as url, httpx.AsyncClient() as http:
        answer = (await stateless_call(http, url))["structuredContent"]
        page = await http.get(f"{url}/approve/anything")
    assert "confirmation_token" in answer and "approve_at" not in answer
    assert page.status_code != 200
    assert changes(recorder) == []


async def page_link(approvals: Approvals) -> tuple[str, Starlette]:
    """A page link for a held DELETE of orders: its path, and an app serving the page."""
    held = Held(DELETE[0], DELETE[1], "", {"tables": [{"name": "orders"}]})
    link = await approvals.link(await approvals.hold(held), held)
    assert link is not None
    app = Starlette(routes=[Route(PAGE.route, approvals.page, methods=["GET", "POST"])])
    return urlsplit(link).path, app


async def test_a_page_link_expires_and_then_sends_nothing() -> None:
    now = [0.0]
    store = MemoryRecords(clock=lambda: now[0])
    approvals = Approvals(store, public_url=PUBLIC)
    sent: list[Held] = []

    async def send(held: Held, api_key: str | None) -> dict[str, Any]:
        sent.append(held)
        return {}

    approvals.send = send
    path, app = await page_link(approvals)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as http:
        assert (await http.get(path)).status_code == 200
        now[0] += APPROVAL_SECONDS + 1
        late = await http.post(
            path, data={"name": "orders", "decision": "approve"}, headers=BROWSER
        )
    assert late.status_code == 404
    assert sent == []


async def test_the_store_keeps_neither_the_approval_id_nor_the_links_token() -> None:
    """Whoever reads the store (a Redis dump) learns nothing that approves or opens a call."""
    store = MemoryRecords()
    approvals = Approvals(store, public_url=PUBLIC)
    held = Held(DELETE[0], DELETE[1], "", {"tables": [{"name": "orders"}]})
    approval = await approvals.hold(held)
    link = await approvals.link(approval, held)
    assert link is not None
    token = urlsplit(link).path.rsplit("/", 1)[-1]
    kept = json.dumps(store._kept)
    assert approval not in kept and token not in kept
    assert (await approvals.links.find(token)) is not None


class CountingFails(MemoryWindows):
    """A store that answers reads and fails to count (it went away mid-request)."""

    async def count(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        raise ConnectionError("the store went away")


async def test_a_failure_the_store_cannot_count_leaves_the_pages_answer_as_it_was() -> None:
    """The call was sent and failed upstream: the page says so (502), not "nothing was sent"
    because the failed attempt could not be counted afterwards."""
    approvals = Approvals(
        MemoryRecords(), public_url=PUBLIC, attempts=SharedAttempts(CountingFails())
    )
    sent: list[Held] = []

    async def send(held: Held, caller: Caller) -> dict[str, Any]:
        sent.append(held)
        raise PostHogError("PostHog did not answer in time", status=504)

    approvals.send = send
    path, app = await page_link(approvals)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as http:
        answer = await http.post(
            path, data={"name": "orders", "decision": "approve"}, headers=BROWSER
        )
    assert len(sent) == 1
    assert answer.status_code == 502 and "the call failed" in answer.text


async def test_with_the_store_down_nothing_is_held_and_nothing_sent() -> None:
    recorder = Recorder(respond=posthog)
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    config = settings(confirm="human", confirm_secret=SECRET)
    server = create_server(
        config,
        transport=httpx.ASGITransport(app=recorder.app()),
        shared=Shared(store, store, store, store),
    )
    async with Client(server, mode="legacy", extensions=[AppsHost()]) as client:
        first = await client.call_tool(*DELETE)
        refused = await client.call_tool(
            APPROVE_TOOL, {"approval": "x" * 32, "decision": "approve"}
        )
    assert first.is_error is True and "shared store" in text_of(first)
    assert "nothing was sent" in text_of(first)
    assert refused.is_error is True and "shared store" in text_of(refused)
    assert changes(recorder) == []


class NobodySignedIn:
    """Sessions (``--oauth``) in which no browser is signed in."""

    async def caller(self, request: Request) -> Caller | None:
        return None


async def test_a_signed_in_page_checks_host_and_origin_before_the_person() -> None:
    public = "http://127.0.0.1:9"
    approvals = Approvals(public_url=public)
    approvals.sessions = NobodySignedIn()
    held = Held("external-data-schemas-delete-data", {"id": "x"}, "oauth:someone:1", {})
    link = await approvals.link(await approvals.hold(held), held)
    assert link is not None
    app = Starlette(routes=[Route(PAGE.route, approvals.page, methods=["GET", "POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as browser:
        rebound = await browser.get(link, headers={"host": "evil.example"})
        foreign = await browser.post(
            link, data={"decision": "decline"}, headers={"origin": "http://evil.example"}
        )
        refused = [await browser.get(link) for _ in range(12)]
    # A foreign page learns nothing of the link (not even that it wants a sign-in).
    assert rebound.status_code == 400 and foreign.status_code == 403
    # Failed sign-in checks count as failed attempts, as any other refusal does.
    assert refused[0].status_code == 401
    assert refused[-1].status_code == 429
