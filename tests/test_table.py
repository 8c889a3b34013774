"""The endpoint table is consistent, and the tool definitions derived from it are lean."""

from __future__ import annotations

import json
import re
import typing

import mcp_types as types
import pytest

from posthog_warehouse_mcp.tools import definitions, snapshot
from posthog_warehouse_mcp.tools.definitions import definition
from posthog_warehouse_mcp.tools.table import DESTRUCTIVE_WARNING, ENDPOINTS, TOOLSETS, Endpoint
from tests.cases import DESTRUCTIVE, LOCAL, NEVER_RETRIED, READ_ONLY, READ_SCOPED

NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ROWS = pytest.mark.parametrize("row", ENDPOINTS, ids=lambda r: r.name)


def test_names_are_unique_and_valid_mcp_tool_names() -> None:
    names = [row.name for row in ENDPOINTS]
    assert len(names) == len(set(names))
    aliases = [a for row in ENDPOINTS for a in row.aliases]
    assert not set(aliases) & set(names)
    assert all(NAME.match(n) for n in names + aliases)


@ROWS
def test_a_rows_hook_and_preview_take_its_params_model(row: Endpoint) -> None:
    for behaviour in (row.hook, row.preview):
        if behaviour is None:
            continue
        declared = typing.get_type_hints(behaviour)["call"]  # Caller[SomeParams]
        (model,) = typing.get_args(declared)
        assert issubclass(row.params, model), (
            f"{row.name}: {behaviour.__qualname__} reads {model.__name__}, "
            f"but the row's params are {row.params.__name__}"
        )


@ROWS
def test_every_path_placeholder_is_a_params_field(row: Endpoint) -> None:
    for placeholder in row.path_fields:
        assert placeholder in row.params.model_fields
    assert row.toolset in TOOLSETS


@ROWS
def test_every_input_property_has_a_description(row: Endpoint) -> None:
    schema = definition(row)["inputSchema"]
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{row.name}.{name} has no description"
    assert "title" not in json.dumps(schema)


def test_destructive_read_only_and_retried_tools_are_the_intended_ones() -> None:
    assert {r.name for r in ENDPOINTS if r.is_destructive} == DESTRUCTIVE
    assert {r.name for r in ENDPOINTS if r.is_read_only} == READ_ONLY
    assert {r.name for r in ENDPOINTS if not r.is_retry_safe} == NEVER_RETRIED


def test_each_tool_needs_the_scopes_posthog_requires() -> None:
    scopes = {r.name: r.scopes for r in ENDPOINTS}
    # A tool answered on this machine reaches no PostHog endpoint and needs no scope.
    assert {scopes.pop(name) for name in LOCAL} == {()}
    # Data health is on PostHog's warehouse-view API, and its tool asks for both read scopes.
    health = "data-warehouse-data-health-issues-retrieve"
    assert scopes.pop(health) == ("warehouse_view:read", "external_data_source:read")
    # The query endpoint needs query:read, whatever the query kind.
    queries = {"execute-sql", "read-data-warehouse-schema"}
    assert {scopes.pop(name) for name in queries} == {("query:read",)}
    read = {name for name, needs in scopes.items() if needs == ("external_data_source:read",)}
    assert read == READ_SCOPED - {health} - queries - LOCAL
    others = {scopes[name] for name in scopes.keys() - READ_SCOPED}
    assert others == {("external_data_source:write",)}


@ROWS
def test_annotations_and_warning_follow_the_row(row: Endpoint) -> None:
    tool = types.Tool.model_validate(definition(row))
    assert tool.annotations is not None
    assert tool.annotations.destructive_hint is (row.name in DESTRUCTIVE)
    assert tool.annotations.read_only_hint is (row.name in READ_ONLY)
    assert tool.annotations.idempotent_hint is row.is_idempotent
    assert (tool.description or "").startswith(DESTRUCTIVE_WARNING) is (row.name in DESTRUCTIVE)
    assert tool.output_schema is not None and tool.output_schema["type"] == "object"


def test_committed_tools_json_is_the_table_as_it_is_now() -> None:
    # tools/tools.json is the reviewed snapshot of every definition and the start-up cache.
    committed = definitions.TOOLS_JSON.read_text()
    assert committed == snapshot.render(), (
        "tools/tools.json differs from the table: if the change is intended, run "
        "python -m posthog_warehouse_mcp.tools.snapshot and commit the file"
    )


def test_the_server_serves_the_snapshot_only_while_it_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert definitions.read_snapshot() is not None
    monkeypatch.setattr(definitions, "fingerprint", lambda: "code changed since")
    assert definitions.read_snapshot() is None
