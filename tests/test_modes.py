"""Read-only mode, toolsets and the tool allow-list decide what is listed and what may be sent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.config import Settings
from posthog_warehouse_mcp.tools.table import BY_NAME, DESTRUCTIVE_WARNING, ENDPOINTS, TOOLSETS
from tests.cases import (
    DESTRUCTIVE,
    LOCAL,
    READ_ONLY,
    READ_SCOPED,
    SEVERAL_READS,
    TOOLSET_TOOLS,
    arguments,
)
from tests.support import (
    CANARY_KEY,
    MODES,
    Recorder,
    clean_env,
    connect,
    serve,
    stdio_server,
    text_of,
    use_env,
)

pytestmark = pytest.mark.anyio

# Read-only mode offers what a read-scoped key can call: the rest need a write scope.
WRITES = [row for row in ENDPOINTS if row.name not in READ_SCOPED]


def of(*toolsets: str, read_only: bool = False) -> set[str]:
    """What these toolsets list (as tests/cases.py writes them out), with read_only only the
    read-scoped tools."""
    tools = set[str]().union(*(TOOLSET_TOOLS[toolset] for toolset in toolsets))
    return tools & READ_SCOPED if read_only else tools


# What --read-only --toolsets schemas,sync lists (incremental-fields needs write, though it
# changes nothing).
READ_ONLY_SCHEMAS_AND_SYNC = of("schemas", "sync", read_only=True)


def names(tools: Iterable[types.Tool]) -> set[str]:
    return {t.name for t in tools}


def answering(tool: str) -> Recorder:
    recorder = Recorder()
    recorder.answer_as(BY_NAME[tool])
    return recorder


@MODES
async def test_read_only_lists_only_what_a_read_scoped_key_can_call(mode: str) -> None:
    async with connect(Recorder(), mode=mode, read_only=True) as client:
        tools = (await client.list_tools()).tools
    assert names(tools) == READ_SCOPED
    assert all(t.annotations and t.annotations.read_only_hint for t in tools)
    # Annotated read-only as PostHog has them, yet they need a write scope: not listed.
    assert {
        "external-data-schemas-incremental-fields-create",
        "external-data-sources-db-schema",
        "external-data-sources-preview-resource",
        "external-data-sources-check-cdc-prerequisites-create",
    } == READ_ONLY - READ_SCOPED


@MODES
async def test_read_only_refuses_every_other_tool_and_its_aliases_without_sending(
    mode: str,
) -> None:
    recorder = Recorder()
    async with connect(recorder, mode=mode, read_only=True) as client:
        for row in WRITES:
            for name in (row.name, *row.aliases):
                result = await client.call_tool(name, arguments(row.name))
                assert result.is_error is True, name
                message = text_of(result)
                scopes = " and ".join(row.scopes)
                assert message.startswith(f"{row.name} needs the scope {scopes} and the server")
                assert "nothing was sent" in message
                assert "--read-only" in message
    assert recorder.seen == []


@MODES
async def test_read_only_still_allows_every_read_scoped_tool(mode: str) -> None:
    for name in sorted(READ_SCOPED):
        recorder = answering(name)
        async with connect(recorder, mode=mode, read_only=True) as client:
            result = await client.call_tool(name, arguments(name))
        methods = [s.method for s in recorder.seen]
        if name in LOCAL:  # offered, and answered here (this case's database is not there)
            assert "not enabled" not in text_of(result) and methods == []
            continue
        assert result.is_error is False, text_of(result)
        if name in SEVERAL_READS:
            assert set(methods) == {"GET"}
        else:
            assert methods == [BY_NAME[name].method]


@pytest.mark.parametrize("toolset", TOOLSETS)
async def test_a_toolset_lists_only_its_tools_and_refuses_the_rest(toolset: str) -> None:
    expected = TOOLSET_TOOLS[toolset]
    recorder = Recorder()
    async with connect(recorder, toolsets=[toolset]) as client:
        listed = names((await client.list_tools()).tools)
        outside = [row for row in ENDPOINTS if row.toolset != toolset]
        for row in outside:
            result = await client.call_tool(row.name, arguments(row.name))
            assert result.is_error is True
            assert "not enabled on this server" in text_of(result)
            assert f"toolset '{row.toolset}'" in text_of(result)
    assert listed == expected
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"toolsets": ["sources", "webhooks"]}, of("sources", "webhooks")),
        ({"read_only": True, "toolsets": ["sync"]}, of("sync", read_only=True)),
        ({"read_only": True, "toolsets": ["schemas", "sync"]}, READ_ONLY_SCHEMAS_AND_SYNC),
        (
            {"tools": ["external-data-sources-list", "external-data-schemas-resync"]},
            {"external-data-sources-list", "external-data-schemas-resync"},
        ),
        (
            {
                "read_only": True,
                "tools": ["external-data-sources-list", "external-data-schemas-resync"],
            },
            {"external-data-sources-list"},
        ),
        (
            {
                "toolsets": ["sources"],
                "tools": ["external-data-sources-list", "external-data-schemas-resync"],
            },
            {"external-data-sources-list"},
        ),
        (
            {"read_only": True, "toolsets": ["webhooks", "revenue"]},
            of("webhooks", "revenue", read_only=True),
        ),
        ({"read_only": True, "toolsets": ["revenue"]}, of("revenue", read_only=True)),
    ],
    ids=lambda v: str(v)[:40],
)
async def test_filters_combine_as_an_intersection(
    overrides: dict[str, Any], expected: set[str]
) -> None:
    recorder = Recorder()
    async with connect(recorder, **overrides) as client:
        listed = names((await client.list_tools()).tools)
        # Everything not listed is refused before any request.
        for row in ENDPOINTS:
            if row.name not in listed:
                result = await client.call_tool(row.name, arguments(row.name))
                assert result.is_error is True and "nothing was sent" in text_of(result)
    assert listed == expected
    assert recorder.seen == []


async def test_an_alias_in_the_tool_allow_list_enables_its_tool() -> None:
    async with connect(Recorder(), tools=["external-data-schemas-cancel-create"]) as client:
        listed = names((await client.list_tools()).tools)
    assert listed == {"external-data-schemas-cancel"}


async def test_environment_variables_set_the_same_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(
        monkeypatch,
        POSTHOG_PERSONAL_API_KEY=CANARY_KEY,
        POSTHOG_ENVIRONMENT_ID="42",
        POSTHOG_READ_ONLY="1",
        POSTHOG_TOOLSETS="sources, schemas",
        POSTHOG_TOOLS="external-data-sources-list,external-data-sources-destroy",
    )
    config = Settings()
    recorder = Recorder()
    server = create_server(config, transport=httpx.ASGITransport(app=recorder.app()))
    async with Client(server, mode="legacy") as client:
        listed = names((await client.list_tools()).tools)
        refused = await client.call_tool(
            "external-data-sources-destroy", arguments("external-data-sources-destroy")
        )
    assert listed == {"external-data-sources-list"}
    assert refused.is_error is True and "read-only" in text_of(refused)
    assert recorder.seen == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--read-only", "--toolsets", "sync,schemas"], {}),
        ([], {"POSTHOG_READ_ONLY": "1", "POSTHOG_TOOLSETS": "sync,schemas"}),
    ],
    ids=["flags", "env"],
)
async def test_stdio_server_applies_read_only_and_toolsets(
    args: list[str], env: dict[str, str]
) -> None:
    recorder = Recorder()
    async with (
        serve(recorder.app()) as upstream,
        Client(stdio_server(upstream, *args, **env), mode="legacy") as client,
    ):
        listed = names((await client.list_tools()).tools)
        refused = await client.call_tool(
            "external-data-schemas-resync", arguments("external-data-schemas-resync")
        )
    assert listed == READ_ONLY_SCHEMAS_AND_SYNC
    assert refused.is_error is True and "read-only" in text_of(refused)
    assert recorder.seen == []


UNKNOWN_NAMES: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "toolsets flag": (["--toolsets", "nope"], {}, ["nope", *TOOLSETS]),
    "toolsets mixed": (["--toolsets", "sources,nope,sync"], {}, ["nope", *TOOLSETS]),
    "toolsets env": ([], {"POSTHOG_TOOLSETS": "nope"}, ["nope", *TOOLSETS]),
    "tools flag": (
        ["--tools", "external-data-sources-lst"],
        {},
        ["external-data-sources-lst", *(row.name for row in ENDPOINTS)],
    ),
}


@pytest.mark.slow
async def test_unknown_names_are_a_startup_error_naming_the_valid_values() -> None:
    done: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def start(case: str) -> None:
        argv, env, _ = UNKNOWN_NAMES[case]
        done[case] = await anyio.run_process(
            [sys.executable, "-m", "posthog_warehouse_mcp", *argv],
            env=clean_env(**env),
            check=False,
        )

    # The cases run side by side: each is a cold Python start.
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for case in UNKNOWN_NAMES:
                tg.start_soon(start, case)
    for case, (_, _, must_name) in UNKNOWN_NAMES.items():
        process = done[case]
        stderr = process.stderr.decode()
        assert process.returncode == 2, (case, stderr)
        assert process.stdout == b"", case
        first_line = stderr.strip().splitlines()[0]
        assert first_line.startswith("posthog-warehouse-mcp: Unknown tool"), case
        for name in must_name:
            assert name in first_line, (case, name)
        assert "Traceback" not in stderr, case


@MODES
async def test_only_destructive_tools_are_listed_with_the_warning_first_and_the_hint(
    mode: str,
) -> None:
    async with connect(Recorder(), mode=mode) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        description = tool.description or ""
        warned = description.startswith(DESTRUCTIVE_WARNING)
        assert warned is (tool.name in DESTRUCTIVE), tool.name
        assert description.count("DESTRUCTIVE") == int(warned), tool.name
        assert tool.annotations is not None
        assert tool.annotations.destructive_hint is (tool.name in DESTRUCTIVE), tool.name
    assert len(tools) == len(ENDPOINTS)
