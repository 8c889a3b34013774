"""A confirmation only a person can give (POSTHOG_CONFIRM=human): a card in the chat whose
Approve calls an app-only tool, or a one-time page on 127.0.0.1 where the person types what
will go. The destructive request goes out exactly once, after the approval; a decline, a
replay, a wrong name, a foreign page or a foreign Host sends nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.approvals import (
    APPROVAL_META,
    APPROVE_TOOL,
    ApprovalRefused,
    Approvals,
    Held,
)
from tests.support import SCHEMA, SCHEMA_ID, Recorder, Seen, settings, text_of

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

    async def send(held: Held, api_key: str | None) -> dict[str, Any]:
        sent.append(held)
        return {}

    approvals = Approvals(seconds=0.01)
    approval = await approvals.hold(Held("x", {}, "", {}))
    await anyio.sleep(0.05)
    with pytest.raises(ApprovalRefused, match="expired"):
        await approvals.approve(approval, caller="", api_key=None, send=send)
    assert sent == []
