"""Through MCP against the sandbox: an agent finds why a table's sync fails, fixes it, syncs again.

Every step uses what the tools return; nothing is guessed: the wizard's field names build the
create payload, the jobs give the workflow_run_id the sync logs are filtered by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.sandbox.support import Upstream, agent, call
from tests.support import eventually

pytestmark = pytest.mark.anyio

# A view whose every read fails (division by zero), and the fix.
BROKEN_VIEW = """
CREATE TABLE readings (id int PRIMARY KEY, value int NOT NULL);
INSERT INTO readings SELECT g, g FROM generate_series(1, 20) g;
CREATE VIEW ratios AS SELECT id, 100 / (value - value) AS ratio FROM readings;
"""
FIXED_VIEW = (
    "CREATE OR REPLACE VIEW ratios AS SELECT id, 100 / NULLIF(value - value, 0) AS ratio "
    "FROM readings"
)


async def payload_from_wizard(client: Client, upstream: Upstream) -> dict[str, Any]:
    """The connection fields the wizard lists for Postgres, filled from the upstream's."""
    wizard = await call(client, "external-data-sources-wizard", {"source_type": "Postgres"})
    fields = wizard["Postgres"]["fields"]
    connection = upstream.creds.job_inputs()
    payload = {f["name"]: connection[f["name"]] for f in fields if f["name"] in connection}
    assert {f["name"] for f in fields if f.get("required")} <= set(payload)
    return payload


async def test_agent_reads_a_failing_syncs_log_fixes_the_table_and_syncs_again(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(BROKEN_VIEW)
    async with agent(tmp_path) as (client, _app):
        payload = await payload_from_wizard(client, upstream)
        payload["schemas"] = [{"name": "ratios", "should_sync": True, "sync_type": "full_refresh"}]
        created = await call(
            client,
            "external-data-sources-create",
            {"source_type": "Postgres", "prefix": "lab", "payload": payload},
        )
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        (schema,) = [s for s in source["schemas"] if s["name"] == "ratios"]

        failed = await call(
            client, "external-data-schemas-reload", {"id": schema["id"], "wait_seconds": 60}
        )
        assert failed["wait"]["finished"] is True
        assert failed["wait"]["jobs"][0]["status"] == "Failed"
        jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
        run = jobs["results"][0]["workflow_run_id"]
        errors = await call(
            client,
            "external-data-sync-logs",
            {"schema_id": schema["id"], "job_id": run, "level": "ERROR"},
        )
        assert [e["message"] for e in errors["results"]] == ["Sync failed: division by zero"]
        everything = await call(client, "external-data-sync-logs", {"schema_id": schema["id"]})
        assert {e["level"] for e in everything["results"]} <= {"INFO", "ERROR"}  # no DEBUG

        upstream.execute(FIXED_VIEW)
        fixed = await call(
            client, "external-data-schemas-reload", {"id": schema["id"], "wait_seconds": 60}
        )
        assert fixed["wait"]["jobs"][0]["status"] == "Completed"
        assert fixed["wait"]["jobs"][0]["rows_synced"] == 20
        latest = await call(
            client, "external-data-sync-logs", {"schema_id": schema["id"], "limit": 1}
        )
        assert latest["results"][0]["message"].startswith("Sync completed: 20 rows synced")
    assert upstream.creds.password not in str(everything)


async def test_agent_connects_only_the_tables_it_chose_from_the_discovery(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, g, now() FROM generate_series(1, 30) g;"
        "CREATE TABLE audit (line text);"  # no key, no cursor: not chosen
        "CREATE TABLE users (id int PRIMARY KEY, name text);"
        "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 5) g;"
    )
    async with agent(tmp_path) as (client, _app):
        payload = await payload_from_wizard(client, upstream)
        discovered = await call(
            client,
            "external-data-sources-db-schema",
            {"source_type": "Postgres", "payload": payload},
        )
        tables = {t["table"]: t for t in discovered["results"]}
        assert set(tables) == {"orders", "audit", "users"}
        # Built from what the discovery said, not guessed: incremental where a cursor and a
        # key were found, full refresh otherwise; the keyless table is left out.
        chosen = []
        for name in ("orders", "users"):
            table = tables[name]
            cursor = next(
                (f for f in table["incremental_fields"] if f["field"] == "updated_at"), None
            )
            entry = {"name": name, "should_sync": True, "sync_type": "full_refresh"}
            if cursor is not None and table["detected_primary_keys"]:
                entry |= {
                    "sync_type": "incremental",
                    "incremental_field": cursor["field"],
                    "incremental_field_type": cursor["field_type"],
                    "primary_key_columns": table["detected_primary_keys"],
                }
            chosen.append(entry)
        assert chosen[0]["sync_type"] == "incremental" and chosen[1]["sync_type"] == "full_refresh"
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "shop",
                "payload": {**payload, "schemas": chosen},
            },
        )
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        synced = {s["name"]: s for s in source["schemas"] if s.get("should_sync")}
        assert set(synced) == {"orders", "users"}
        for schema in synced.values():
            done = await call(
                client, "external-data-schemas-reload", {"id": schema["id"], "wait_seconds": 60}
            )
            assert done["wait"]["jobs"][0]["status"] == "Completed", done


async def test_agent_sets_up_in_one_step_finds_the_broken_table_and_repairs_it(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(BROKEN_VIEW)
    async with agent(tmp_path) as (client, _app):
        payload = await payload_from_wizard(client, upstream)
        created = await call(
            client, "data-warehouse-source-setup", {"source_type": "Postgres", "payload": payload}
        )

        async def settled() -> list[dict[str, Any]] | None:
            """Both tables' first syncs, once neither is running."""
            jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
            runs: list[dict[str, Any]] = jobs["results"]
            done = len(runs) == 2 and all(j["status"] != "Running" for j in runs)
            return runs if done else None

        jobs = await eventually(settled, within=60)
        assert sorted(j["status"] for j in jobs) == ["Completed", "Failed"]
        health = await call(client, "data-warehouse-data-health-issues-retrieve", {})
        (issue,) = health["results"]
        assert (issue["name"], issue["status"], issue["type"]) == (
            "ratios",
            "failed",
            "external_data_sync",
        )
        assert issue["error"] == "division by zero"
        errors = await call(
            client,
            "external-data-sync-logs",
            {"schema_id": issue["id"], "level": "ERROR"},
        )
        assert [e["message"] for e in errors["results"]] == ["Sync failed: division by zero"]

        upstream.execute(FIXED_VIEW)
        fixed = await call(
            client, "external-data-schemas-reload", {"id": issue["id"], "wait_seconds": 60}
        )
        assert fixed["wait"]["jobs"][0]["status"] == "Completed"
        assert fixed["wait"]["jobs"][0]["rows_synced"] == 20
        assert (await call(client, "data-warehouse-data-health-issues-retrieve", {})) == {
            "results": [],
            "count": 0,
        }
