"""Workflow prompts are served over MCP and mention only tools that exist, in a sensible order."""

from __future__ import annotations

import re

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from posthog_warehouse_mcp.server.prompts import PROMPTS, Prompt
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.support import MODES, Recorder, connect

pytestmark = pytest.mark.anyio

TOOL = re.compile(r"external-data-[a-z-]+[a-z]")


@pytest.mark.parametrize("prompt", PROMPTS, ids=lambda p: p.name)
def test_prompt_mentions_only_existing_tools(prompt: Prompt) -> None:
    text = prompt.render({a.name: "x" for a in prompt.arguments})
    named = TOOL.findall(text)
    assert len(named) >= 3
    unknown = [n for n in named if n not in BY_NAME]
    assert unknown == []


def test_workflows_name_their_tools_in_order() -> None:
    text = {p.name: p.render({}) for p in PROMPTS}

    def order(name: str, *tools: str) -> None:
        positions = [text[name].index(t) for t in tools]
        assert positions == sorted(positions), (name, tools)

    order(
        "connect-postgres",
        "external-data-sources-create",
        "external-data-schemas-incremental-fields-create",
        "external-data-sources-bulk-update-schemas-partial-update",
        "external-data-sources-reload",
        "external-data-sources-jobs",
    )
    order(
        "switch-to-incremental",
        "external-data-schemas-incremental-fields-create",
        "external-data-schemas-partial-update",
        "external-data-schemas-reload",
    )
    assert "cannot be undone" in text["remove-source"]


@MODES
async def test_prompts_list_and_get(mode: str) -> None:
    async with connect(Recorder(), mode=mode) as client:
        listed = (await client.list_prompts()).prompts
        got = await client.get_prompt("connect-postgres", {"host": "db", "database": "shop"})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("connect-postgres", {})
    assert missing.value.code == types.INVALID_PARAMS
    assert "host, database" in str(missing.value)
    assert [p.name for p in listed] == [p.name for p in PROMPTS]
    content = got.messages[0].content
    assert isinstance(content, types.TextContent) and "shop" in content.text
