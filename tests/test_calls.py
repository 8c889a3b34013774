"""Every tool, through a real MCP client, sends exactly the request PostHog documents."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS
from tests.cases import CASES, LOCAL, PLAN_ID, READ_THEN_WRITE, SCH, SEVERAL_READS, SRC, with_plan
from tests.support import MODES, SCHEMA_ID, SOURCE_ID, Recorder, connect, text_of

pytestmark = pytest.mark.anyio

# tool -> arguments that must be refused before any request
INVALID: list[tuple[str, dict[str, Any]]] = [
    ("external-data-sources-list", {"limit": 0}),
    ("external-data-sources-list", {"unknown": 1}),
    ("external-data-sources-create", {"source_type": "Postgres"}),
    (
        "external-data-sources-create",
        {"source_type": "Postgres", "payload": {}, "client_secret": "x"},
    ),
    ("external-data-sources-create", {"source_type": "Postgres", "payload": {}, "account_id": "x"}),
    ("external-data-sources-retrieve", {"id": "../../projects"}),
    ("external-data-sources-retrieve", {}),
    ("external-data-sources-bulk-update-schemas-partial-update", {"id": SOURCE_ID, "schemas": []}),
    ("external-data-sources-jobs", {"id": SOURCE_ID, "schemas": "orders"}),
    ("external-data-schemas-partial-update", {"id": SCHEMA_ID, "sync_type": "sometimes"}),
    ("external-data-schemas-partial-update", {"id": SCHEMA_ID, "sync_time_of_day": "3am"}),
    ("external-data-schemas-cancel", {"id": SCHEMA_ID, "should_sync": True}),
    ("external-data-schemas-resync", {"id": 12}),
]


def test_every_tool_has_a_case() -> None:
    assert set(CASES) == {row.name for row in ENDPOINTS}


@MODES
@pytest.mark.parametrize("name", sorted(CASES))
async def test_valid_call_sends_the_documented_request(name: str, mode: str) -> None:
    args, method, path, query, body = CASES[name]
    recorder = Recorder()
    recorder.answer_as(BY_NAME[name])
    async with connect(recorder, mode=mode) as client:
        if args.get("plan_id") == PLAN_ID:
            args = await with_plan(client, args)
            recorder.seen.clear()
        result = await client.call_tool(name, args)
    if name in LOCAL:  # answered here: its case's database is not there, and PostHog unasked
        assert recorder.seen == []
        assert "nothing was sent" in text_of(result), result.content
        return
    assert result.is_error is False, result.content
    if name in SEVERAL_READS:
        assert {s.method for s in recorder.seen} == {"GET"}
    elif name in READ_THEN_WRITE:
        assert [s.method for s in recorder.seen] == ["GET", "PATCH"]
    else:
        assert len(recorder.seen) == 1
    seen = recorder.seen[0]
    # Parameter order is free, but repeated values keep theirs (a stable sort by name).
    by_name = sorted(seen.query, key=lambda kv: kv[0])
    assert (seen.method, seen.path, by_name, seen.body) == (
        method,
        path,
        sorted(query, key=lambda kv: kv[0]),
        body,
    )
    assert seen.headers["authorization"].startswith("Bearer phx_")
    assert seen.headers["user-agent"].startswith("posthog-warehouse-mcp/")
    assert isinstance(result.structured_content, dict)


@MODES
@pytest.mark.parametrize(("name", "args"), INVALID)
async def test_invalid_arguments_send_nothing(name: str, args: dict[str, Any], mode: str) -> None:
    recorder = Recorder()
    async with connect(recorder, mode=mode) as client:
        result = await client.call_tool(name, args)
    assert result.is_error is True
    text = text_of(result)
    assert "nothing was sent" in text
    assert "Traceback" not in text
    assert "pydantic" not in text
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("alias", "path"),
    [
        ("external-data-schemas-cancel-create", f"{SCH}cancel/"),
        ("external-data-schemas-delete-data-destroy", f"{SCH}delete_data/"),
        ("external-data-schemas-reload-create", f"{SCH}reload/"),
        ("external-data-schemas-resync-create", f"{SCH}resync/"),
        ("external-data-sources-jobs-retrieve", f"{SRC}jobs/"),
        ("external-data-sources-refresh-schemas-create", f"{SRC}refresh_schemas/"),
        ("external-data-sources-reload-create", f"{SRC}reload/"),
    ],
)
async def test_operation_id_aliases_are_callable_but_not_listed(alias: str, path: str) -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME[alias])
    ident = SCHEMA_ID if alias.startswith("external-data-schemas") else SOURCE_ID
    async with connect(recorder) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool(alias, {"id": ident})
    assert alias not in listed
    assert result.is_error is False
    assert recorder.seen[0].path == path


@MODES
async def test_unknown_tool_is_an_invalid_params_protocol_error(mode: str) -> None:
    recorder = Recorder()
    async with connect(recorder, mode=mode) as client:
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("external-data-sources-nope", {})
    assert unknown.value.code == types.INVALID_PARAMS
    assert recorder.seen == []


@MODES
async def test_lists_and_empty_answers_become_objects(mode: str) -> None:
    recorder = Recorder()
    recorder.default = (200, [{"id": "j1", "status": "Running", "surprise": 1}])
    async with connect(recorder, mode=mode) as client:
        jobs = await client.call_tool("external-data-sources-jobs", {"id": SOURCE_ID})
        recorder.default = (204, None)
        gone = await client.call_tool("external-data-schemas-destroy", {"id": SCHEMA_ID})
    assert jobs.structured_content == {
        "results": [{"id": "j1", "status": "Running", "surprise": 1}]
    }
    assert gone.structured_content == {"ok": True, "status_code": 204}


async def test_unknown_fields_and_enum_values_pass_through() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-retrieve"])
    async with connect(recorder) as client:
        source = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
        recorder.answer_as(BY_NAME["external-data-schemas-retrieve"])
        schema = await client.call_tool("external-data-schemas-retrieve", {"id": SCHEMA_ID})
    assert source.structured_content["new_upstream_field"] == {"nested": True}
    assert schema.structured_content["status"] == "Brand new status"
    assert text_of(source).startswith('{"id":')


async def test_missing_environment_id_says_how_to_set_it() -> None:
    recorder = Recorder()
    async with connect(recorder, environment_id=None) as client:
        result = await client.call_tool("external-data-sources-list", {})
    assert result.is_error is True
    assert "POSTHOG_ENVIRONMENT_ID" in text_of(result)
    assert recorder.seen == []


async def test_projects_prefix_is_configurable() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-list"])
    async with connect(recorder, path_prefix="projects") as client:
        await client.call_tool("external-data-sources-list", {})
    assert recorder.seen[0].path == "/api/projects/42/external_data_sources/"
