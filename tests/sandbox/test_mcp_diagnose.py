"""Through MCP against the sandbox: an agent finds why a table's sync fails, fixes it, syncs again.

Every step uses what the tools return; nothing is guessed: the wizard's field names build the
create payload, the jobs give the workflow_run_id the sync logs are filtered by.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sandbox.support import Upstream, agent, call

pytestmark = pytest.mark.anyio


async def test_agent_reads_a_failing_syncs_log_fixes_the_table_and_syncs_again(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE readings (id int PRIMARY KEY, value int NOT NULL);"
        "INSERT INTO readings SELECT g, g FROM generate_series(1, 20) g;"
        "CREATE VIEW ratios AS SELECT id, 100 / (value - value) AS ratio FROM readings;"
    )
    async with agent(tmp_path) as (client, _app):
        wizard = await call(client, "external-data-sources-wizard", {"source_type": "Postgres"})
        fields = wizard["Postgres"]["fields"]
        connection = upstream.creds.job_inputs()
        payload = {f["name"]: connection[f["name"]] for f in fields if f["name"] in connection}
        assert {f["name"] for f in fields if f.get("required")} <= set(payload)
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

        upstream.execute(
            "CREATE OR REPLACE VIEW ratios AS "
            "SELECT id, 100 / NULLIF(value - value, 0) AS ratio FROM readings;"
        )
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
