"""The endpoint table is consistent, and the tool definitions derived from it are lean."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from posthog_warehouse_mcp.server.app import tool_definition
from posthog_warehouse_mcp.tools.table import BY_NAME, DESTRUCTIVE_WARNING, ENDPOINTS, TOOLSETS

SNAPS = Path(__file__).parent / "__toolsnaps__"
NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def test_names_are_unique_and_valid_mcp_tool_names() -> None:
    names = [row.name for row in ENDPOINTS]
    assert len(names) == len(set(names)) == 21
    aliases = [a for row in ENDPOINTS for a in row.aliases]
    assert not set(aliases) & set(names)
    assert all(NAME.match(n) for n in names + aliases)


@pytest.mark.parametrize("row", ENDPOINTS, ids=lambda r: r.name)
def test_every_path_placeholder_is_a_params_field(row) -> None:  # type: ignore[no-untyped-def]
    for placeholder in row.path_fields:
        assert placeholder in row.params.model_fields
    assert row.toolset in TOOLSETS


@pytest.mark.parametrize("row", ENDPOINTS, ids=lambda r: r.name)
def test_every_input_property_has_a_description(row) -> None:  # type: ignore[no-untyped-def]
    schema = tool_definition(row).input_schema
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{row.name}.{name} has no description"
    assert "title" not in json.dumps(schema)


def test_destructive_tools_warn_first_and_annotations_follow_the_table() -> None:
    destructive = {r.name for r in ENDPOINTS if r.is_destructive}
    assert destructive == {
        "external-data-sources-destroy",
        "external-data-sources-delete-webhook-create",
        "external-data-schemas-destroy",
        "external-data-schemas-delete-data",
        "external-data-schemas-resync",
    }
    for row in ENDPOINTS:
        tool = tool_definition(row)
        assert tool.annotations is not None
        assert tool.annotations.destructive_hint is row.is_destructive
        assert tool.annotations.read_only_hint is row.is_read_only
        assert (tool.description or "").startswith(DESTRUCTIVE_WARNING) is row.is_destructive
    read_only = {r.name for r in ENDPOINTS if r.is_read_only}
    assert "external-data-schemas-incremental-fields-create" in read_only
    assert not {
        "external-data-sources-create",
        "external-data-sources-reload",
        "external-data-schemas-resync",
    } & {r.name for r in ENDPOINTS if r.is_idempotent}


def test_output_schemas_are_objects() -> None:
    for row in ENDPOINTS:
        assert tool_definition(row).output_schema["type"] == "object"  # type: ignore[index]


@pytest.mark.parametrize("row", ENDPOINTS, ids=lambda r: r.name)
def test_tool_definition_matches_snapshot(row) -> None:  # type: ignore[no-untyped-def]
    current = tool_definition(row).model_dump(mode="json", by_alias=True, exclude_none=True)
    path = SNAPS / f"{row.name}.json"
    if os.environ.get("UPDATE_TOOLSNAPS") == "1":
        path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot for {row.name}: run with UPDATE_TOOLSNAPS=1 and commit it"
    assert json.loads(path.read_text()) == current, (
        f"{row.name} changed; if intended, rerun with UPDATE_TOOLSNAPS=1 and commit the snapshot"
    )


def test_no_snapshot_for_a_tool_that_is_gone() -> None:
    assert {p.stem for p in SNAPS.glob("*.json")} <= set(BY_NAME)


def test_schema_cache_is_current() -> None:
    from posthog_warehouse_mcp.tools.schema import _cached, json_schema

    cached = _cached()
    assert cached, "tools/schemas.json is stale or missing: run python -m tools.schema"
    for row in ENDPOINTS:
        assert cached[f"{row.params.__name__}:validation"] == json_schema(row.params)
        assert cached[f"{row.response.__name__}:serialization"] == json_schema(
            row.response, mode="serialization"
        )
