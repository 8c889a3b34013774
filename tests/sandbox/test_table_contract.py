"""Every row of the endpoint table, called through MCP, gets PostHog's answer from the sandbox.

The same tool calls the recording stand-in checks request by request (tests/test_calls.py),
here against the sandbox: each result must fit the tool's output schema (the MCP client
validates structured content) or be the error PostHog gives in that situation. The walk calls
by name the tools whose call needs the walk's state or a check of its own; every other tool is
called with its recorded-request case's arguments (``CASES`` in tests/cases.py), the sandbox's
ids in place of the stand-in's, so a new plain read needs only its sandbox handler here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from posthog_warehouse_mcp.tools.table import ENDPOINTS
from tests.cases import CASES
from tests.sandbox.support import Upstream, agent
from tests.support import SCHEMA_ID, SOURCE_ID, text_of

pytestmark = pytest.mark.anyio

# Tools that must fail here, with PostHog's own message, given the situation of the walk.
EXPECTED_ERRORS = {
    "external-data-sources-create-webhook-create": "does not support webhooks",
    "external-data-sources-delete-webhook-create": "does not support webhooks",
    "external-data-schemas-cancel": "No running sync to cancel.",
    # No sandbox source has CDC enabled (PostHog's answer for such a source).
    "external-data-sources-repair-cdc-create": "CDC is not enabled on this source.",
    "external-data-sources-update-webhook-inputs-create": "does not support webhooks",
    "external-data-sources-preview-resource": "Preview is not supported for source type 'Postgres'",
    # This sandbox is reached in memory, with no address a browser can open; the MCP server's
    # in-process sandbox and the standalone one have one (tests/sandbox/test_connect_page.py).
    "data-warehouse-source-connect-link": "no address a browser can open",
}
# The walk's last steps, called by name after every other tool: they stop, re-import and delete
# what the others read.
LAST = (
    "external-data-schemas-cancel",
    "external-data-schemas-resync",
    "external-data-schemas-delete-data",
    "external-data-schemas-destroy",
    "external-data-sources-destroy",
)


def with_ids(value: Any, ids: dict[str, str]) -> Any:
    """A case's arguments with the stand-in's ids (tests/support.py) replaced by the sandbox's."""
    if isinstance(value, dict):
        return {key: with_ids(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [with_ids(item, ids) for item in value]
    return ids.get(value, value) if isinstance(value, str) else value


async def test_every_tool_answers_as_posthog_does(tmp_path: Path, upstream: Upstream) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, now() FROM generate_series(1, 50) g;"
        "CREATE TABLE notes (id int PRIMARY KEY);"
    )
    called: dict[str, Any] = {}
    async with agent(tmp_path) as (client, _app):

        async def use(name: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(name, args)
            text = text_of(result)
            if name in EXPECTED_ERRORS:
                assert result.is_error is True, text
                assert EXPECTED_ERRORS[name] in text
            else:
                assert result.is_error is False, f"{name}: {text}"
            called[name] = result.structured_content
            return result.structured_content or {}

        payload = upstream.payload(
            [{"name": "orders", "should_sync": False}, {"name": "notes", "should_sync": False}]
        )
        source_id = (
            await use(
                "external-data-sources-create", {"source_type": "Postgres", "payload": payload}
            )
        )["id"]
        listed = await use("external-data-sources-list", {"search": "Postgres", "limit": 5})
        assert listed["count"] == 1
        source = await use("external-data-sources-retrieve", {"id": source_id})
        ids = {s["name"]: s["id"] for s in source["schemas"]}
        await use("external-data-sources-partial-update", {"id": source_id, "description": "x"})
        await use(
            "external-data-sources-bulk-update-schemas-partial-update",
            {"id": source_id, "schemas": [{"id": ids["notes"], "sync_type": "full_refresh"}]},
        )
        await use("external-data-sources-create-webhook-create", {"id": source_id})
        await use("external-data-sources-delete-webhook-create", {"id": source_id})
        await use(
            "external-data-sources-revenue-analytics-config-partial-update",
            {"id": source_id, "enabled": True},
        )
        plan = await use(
            "external-data-schemas-plan",
            {"id": source_id, "match": "not*", "set": {"sync_frequency": "12hour"}},
        )
        assert [t["name"] for t in plan["tables"]] == ["notes"] and plan["refused"] == []
        applied = await use(
            "external-data-schemas-apply-plan", {"id": source_id, "plan_id": plan["plan_id"]}
        )
        assert [a["name"] for a in applied["applied"]] == ["notes"]
        await use("external-data-sources-refresh-schemas", {"id": source_id})
        await use("external-data-schemas-list", {"search": "orders"})
        await use("external-data-schemas-retrieve", {"id": ids["orders"]})
        await use("external-data-schemas-incremental-fields-create", {"id": ids["orders"]})
        await use(
            "external-data-schemas-partial-update",
            {"id": ids["orders"], "should_sync": True, "sync_type": "full_refresh"},
        )
        await use("external-data-schemas-reload", {"id": ids["orders"], "wait_seconds": 60})
        await use("external-data-sources-reload", {"id": source_id, "wait_seconds": 60})
        jobs = await use("external-data-sources-jobs", {"id": source_id, "schemas": ["orders"]})
        followed = await use(
            "external-data-sources-jobs-wait", {"id": source_id, "wait_seconds": 5}
        )
        assert followed["wait"]["finished"] is True
        logs = await use(
            "external-data-sync-logs",
            {"schema_id": ids["orders"], "job_id": jobs["results"][0]["workflow_run_id"]},
        )
        assert logs["results"] and {e["level"] for e in logs["results"]} <= {"INFO", "ERROR"}
        tables = await use(
            "external-data-sources-db-schema",
            {"source_type": "Postgres", "payload": upstream.creds.job_inputs()},
        )
        found = {t["table"]: t for t in tables["results"]}
        assert found["orders"]["detected_primary_keys"] == ["id"]
        rehearsed = await use(
            "external-data-sources-rehearse",
            {
                "source_type": "Postgres",
                "payload": {
                    **upstream.creds.job_inputs(),
                    "schemas": [{"name": "orders", "sync_type": "full_refresh"}],
                },
            },
        )
        assert rehearsed["tables"][0]["rows"]["count"] == 50
        set_up = await use(
            "data-warehouse-source-setup",
            {"source_type": "Postgres", "payload": upstream.creds.job_inputs(), "prefix": "su"},
        )
        await use(
            "external-data-sources-update-webhook-inputs-create",
            {"id": source_id, "inputs": {"signing_secret": "whsec_x"}},
        )
        await use(
            "external-data-sources-preview-resource",
            {"source_type": "Postgres", "payload": {}, "resource_name": "orders"},
        )
        cdc = await use(
            "external-data-sources-check-cdc-prerequisites-create",
            {
                "source_type": "Postgres",
                "payload": upstream.creds.job_inputs(),
                "tables": ["orders"],
            },
        )
        assert cdc["valid"] is False  # the shared server runs with wal_level replica
        assert "wal_level must be set to 'logical'" in cdc["errors"][0]
        audit = await use("external-data-sources-audit", {})
        assert audit["checked"]["sources"] == 2
        # The setup source's tables are syncing or synced; none is broken.
        assert (await use("data-warehouse-data-health-issues-retrieve", {}))["results"] == []
        counted = await use(
            "execute-sql", {"query": "SELECT count() AS n FROM postgres.orders", "limit": 5}
        )
        assert counted["results"] == [[50]]
        listed_tables = await use("read-data-warehouse-schema", {"search": "orders"})
        assert "postgres.orders" in listed_tables["tables"]
        await use("data-warehouse-source-connect-link", {"source_type": "Postgres"})
        stored = await use("data-warehouse-stored-credentials-list", {})
        assert stored["results"] == []
        wizard = await use("external-data-sources-wizard", {"source_type": "Postgres"})
        assert "password" in {f["name"] for f in wizard["Postgres"]["fields"]}
        webhook = await use("external-data-sources-webhook-info-retrieve", {"id": source_id})
        assert webhook["supports_webhooks"] is False
        assert (await use("external-data-sources-connections-list", {}))["results"] == []
        # Every tool not called by name, with its case's arguments, on the walk's source.
        sandbox_ids = {SOURCE_ID: source_id, SCHEMA_ID: ids["orders"]}
        for row in ENDPOINTS:
            if row.name not in called and row.name not in LAST:
                assert row.name in CASES, f"{row.name}: no case in tests/cases.py CASES"
                await use(row.name, with_ids(CASES[row.name].arguments, sandbox_ids))
        await use("external-data-schemas-cancel", {"id": ids["orders"]})
        await use("external-data-schemas-resync", {"id": ids["orders"], "wait_seconds": 60})
        await use("external-data-schemas-delete-data", {"id": ids["orders"]})
        await use("external-data-schemas-destroy", {"id": ids["notes"]})
        await use("external-data-sources-destroy", {"id": source_id})
        await client.call_tool("external-data-sources-destroy", {"id": set_up["id"]})
        gone = await client.call_tool("external-data-sources-retrieve", {"id": source_id})
        assert gone.is_error is True
        assert "404" in text_of(gone)
    assert set(called) == {row.name for row in ENDPOINTS}
    assert upstream.creds.password not in json.dumps(called, default=str)
