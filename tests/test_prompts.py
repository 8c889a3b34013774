"""Workflow prompts are served over MCP and mention only tools that exist, in a sensible order."""

from __future__ import annotations

import re

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from posthog_warehouse_mcp.server.prompts import (
    INSTRUCTIONS,
    PROMPTS,
    PROMPTS_BY_NAME,
    Prompt,
    instructions,
)
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.support import MODES, Recorder, connect, settings

pytestmark = pytest.mark.anyio

# A tool name is any token that starts as one of the table's tools does (its first two words:
# external-data-, data-warehouse-, ...) and goes on, or is a two-word tool name (execute-sql), so
# a tool with a new prefix is recognised too.
PREFIXES = sorted({"-".join(name.split("-")[:2]) for name in BY_NAME}, key=len, reverse=True)
SHORT = sorted(name for name in BY_NAME if name.count("-") == 1)
TOOL = re.compile(
    rf"\b(?:(?:{'|'.join(map(re.escape, PREFIXES))})(?:-[a-z]+)+"
    rf"|{'|'.join(map(re.escape, SHORT))})\b"
)


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
        "external-data-sources-wizard",
        "external-data-sources-db-schema",
        "external-data-sources-create",
        "external-data-sources-jobs",
    )
    order(
        "diagnose-failing-sync",
        "data-warehouse-data-health-issues-retrieve",
        "external-data-sync-logs",
        "external-data-schemas-cancel",
        "external-data-schemas-resync",
    )
    order(
        "switch-to-incremental",
        "external-data-schemas-incremental-fields-create",
        "external-data-schemas-partial-update",
        "external-data-schemas-reload",
        "external-data-schemas-resync",
    )
    assert "Never omit schemas: PostHog then enables EVERY table" in text["connect-postgres"]
    assert "never start with a resync" in text["diagnose-failing-sync"]
    assert "cannot be undone" in text["remove-source"]


def test_the_audit_only_reads() -> None:
    audit = next(p for p in PROMPTS if p.name == "audit-data-health").render({})
    named = set(TOOL.findall(audit))
    assert "data-warehouse-data-health-issues-retrieve" in named
    assert all(BY_NAME[n].is_read_only for n in named), named


def test_the_pattern_finds_every_tool_of_the_table() -> None:
    names = set(BY_NAME)
    assert set(TOOL.findall(" ".join(sorted(names)))) == names


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


@pytest.mark.parametrize(
    ("overrides", "names_the_demo"),
    [
        ({"sandbox": True}, True),
        ({"sandbox": True, "demo": False}, False),
        ({"sandbox": True, "mcp_transport": "http", "mcp_auth_token": "t" * 32}, False),  # refs off
        ({"sandbox": False}, False),
    ],
)
def test_the_instructions_name_the_demo_reference_where_it_resolves(
    overrides: dict[str, object], names_the_demo: bool
) -> None:
    text = instructions(settings(**overrides))
    assert text.startswith(INSTRUCTIONS)
    assert ('{"env": "POSTHOG_SECRET_SANDBOX_DEMO"}' in text) is names_the_demo
    assert ("local sandbox" in text) is bool(overrides["sandbox"])


def test_the_sandbox_tour_uses_the_demo_reference_in_order() -> None:
    text = PROMPTS_BY_NAME["try-the-sandbox"].render({})
    reference = '{"env": "POSTHOG_SECRET_SANDBOX_DEMO"}'
    tools = (
        "external-data-sources-list",
        "external-data-sources-db-schema",
        "external-data-sources-create",
        "external-data-sources-jobs-wait",
        "execute-sql",
    )
    positions = [text.index(t) for t in tools]
    assert positions == sorted(positions)
    assert text.index(reference) > text.index("external-data-sources-db-schema")
    assert reference in PROMPTS_BY_NAME["connect-postgres"].render({})
