"""MCP Apps: a client that negotiated the extension sees each view's resource on the tools it
shows, can list and read the views, and gets results that tell the model the person sees them;
a client without it sees the tools, resources and results it always saw. The views themselves
are self-contained: nothing loaded from elsewhere, data only ever as text."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPError

from posthog_warehouse_mcp.server import apps
from posthog_warehouse_mcp.server.app import create_server, listing_for
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.cases import CASES
from tests.support import MODES, Recorder, answer, settings, text_of

pytestmark = pytest.mark.anyio

RENDERS_APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
QUERY = CASES["execute-sql"].arguments
QUERY_ANSWER = {"columns": ["count()"], "types": [["count()", "UInt64"]], "results": [[3]]}


@asynccontextmanager
async def client(
    *, mode: str = "legacy", apps_client: bool, recorder: Recorder | None = None, **overrides: Any
) -> AsyncIterator[Client]:
    """An MCP client in memory, declaring MCP Apps or not."""
    recorder = recorder or Recorder(default=(200, QUERY_ANSWER))
    server = create_server(settings(**overrides), transport=httpx.ASGITransport(app=recorder.app()))
    extensions = [RENDERS_APPS] if apps_client else []
    async with Client(server, mode=mode, extensions=extensions) as connected:
        yield connected


@MODES
async def test_a_client_without_apps_sees_the_tools_resources_and_results_as_before(
    mode: str,
) -> None:
    async with client(mode=mode, apps_client=False) as plain:
        listed = await plain.list_tools()
        assert listed.tools == listing_for(settings()).tools
        assert all(tool.meta is None for tool in listed.tools)
        assert (await plain.list_resources()).resources == []
        result = await plain.call_tool("execute-sql", QUERY)
    assert len(result.content) == 1
    assert json.loads(text_of(result)) == result.structured_content


@MODES
async def test_an_apps_client_sees_the_view_of_each_tool_a_view_shows(mode: str) -> None:
    async with client(mode=mode, apps_client=True) as host:
        listed = (await host.list_tools()).tools
    with_view = {tool.name: (tool.meta or {})["ui"]["resourceUri"] for tool in listed if tool.meta}
    assert with_view == {tool: view.uri for tool, view in apps.BY_TOOL.items()}
    assert with_view["external-data-sources-audit"] == "ui://posthog-warehouse/health.html"
    # Apart from _meta, the tools are the ones every client sees.
    plain = listing_for(settings()).tools
    assert [tool.model_copy(update={"meta": None}) for tool in listed] == plain


async def test_a_view_is_named_only_on_tools_the_settings_offer() -> None:
    async with client(apps_client=True, read_only=True) as host:
        listed = (await host.list_tools()).tools
    names = {tool.name for tool in listed}
    assert "data-warehouse-source-setup" not in names
    assert {tool.name for tool in listed if tool.meta} == set(apps.BY_TOOL) & names


@MODES
async def test_the_views_are_listed_and_read_as_mcp_app_resources(mode: str) -> None:
    async with client(mode=mode, apps_client=True) as host:
        listed = (await host.list_resources()).resources
        assert [r.uri for r in listed] == [view.uri for view in apps.VIEWS]
        for resource in listed:
            assert resource.mime_type == APP_MIME_TYPE
            assert resource.meta == {"ui": apps.RESOURCE_UI}
            (content,) = (await host.read_resource(resource.uri)).contents
            assert isinstance(content, types.TextResourceContents)
            assert content.uri == resource.uri and content.mime_type == APP_MIME_TYPE
            # No domain at all: the views reach nothing outside the page the host gives them.
            assert content.meta == {
                "ui": {"csp": {"connectDomains": [], "resourceDomains": []}, "prefersBorder": True}
            }
            assert content.text.startswith("<!DOCTYPE html>")


async def test_a_client_without_apps_can_still_read_a_view() -> None:
    async with client(apps_client=False) as plain:
        (content,) = (await plain.read_resource(apps.VIEWS[0].uri)).contents
    assert content.mime_type == APP_MIME_TYPE


async def test_reading_a_resource_no_view_has_is_a_protocol_error() -> None:
    async with client(apps_client=True) as host:
        with pytest.raises(MCPError) as raised:
            await host.read_resource("ui://posthog-warehouse/nope.html")
    assert raised.value.error.code == types.INVALID_PARAMS


@MODES
async def test_a_shown_result_tells_the_model_and_keeps_its_content(mode: str) -> None:
    async with client(mode=mode, apps_client=False) as plain:
        before = await plain.call_tool("execute-sql", QUERY)
    async with client(mode=mode, apps_client=True) as host:
        shown = await host.call_tool("execute-sql", QUERY)
    assert shown.structured_content == before.structured_content
    assert shown.content[0] == before.content[0]
    (note,) = shown.content[1:]
    assert isinstance(note, types.TextContent)
    assert "Query results view" in note.text and "do not repeat" in note.text


async def test_a_tool_without_a_view_and_a_failed_call_get_no_note() -> None:
    failing = Recorder(respond=answer(500, {"detail": "boom"}))
    async with client(apps_client=True, recorder=failing) as host:
        failed = await host.call_tool("execute-sql", QUERY)
        unviewed = await host.call_tool("external-data-schemas-list", {})
    assert failed.is_error is True and len(failed.content) == 1
    assert len(unviewed.content) == 1


def test_every_tool_a_view_shows_is_a_row_of_the_table() -> None:
    assert set(apps.BY_TOOL) <= set(BY_NAME)
    assert len(apps.BY_URI) == len(apps.VIEWS)


# What a view must not contain once served: a script or style from elsewhere, a way to put data
# in the page as markup, an include left unexpanded, a closing script tag inside an include.
FORBIDDEN = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
    r"<script[^>]+src|<link|@import|url\(|/\* include:"
)


@pytest.mark.parametrize("view", apps.VIEWS, ids=lambda v: v.name)
def test_a_served_view_is_one_self_contained_document(view: apps.View) -> None:
    page = apps.html(view.name)
    assert len(page.encode()) <= 150_000
    assert FORBIDDEN.findall(page) == []
    # The only address in it is SVG's namespace, which names and fetches nothing.
    assert set(re.findall(r"https?://[^\s\"'`)]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert page.count("<script>") == page.count("</script>") == 1
    for shared in ("bridge.js", "base.css"):
        text = (apps.VIEWS_DIR / shared).read_text()
        assert "</script" not in text and "</style" not in text
        assert text in page
