"""An agent's whole workflow through the MCP tools against the sandbox and a real Postgres.

Create a source, enable tables with bulk update, sync with wait_seconds (and progress), check
the warehouse; change rows upstream and watch incremental merge and append; delete data and
resync; rediscover tables after adding and dropping one upstream.
"""

from __future__ import annotations

import json
from pathlib import Path

import mcp_types as types
import pytest

from tests.sandbox.support import (
    Upstream,
    agent,
    call,
    enable_and_sync,
    schema_by_name,
    warehouse_rows,
)
from tests.support import eventually

pytestmark = pytest.mark.anyio


async def test_agent_connects_syncs_merges_and_rediscovers(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, g, now() - interval '1 day' FROM generate_series(1, 300) g;"
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text, created_at timestamptz);"
        "INSERT INTO events SELECT g, 'view', now() FROM generate_series(1, 200) g;"
    )
    async with agent(tmp_path) as (client, app):
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "shop_",
                "payload": upstream.payload(
                    [
                        {"name": "orders", "should_sync": False},
                        {"name": "events", "should_sync": False},
                    ]
                ),
            },
        )
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        orders = schema_by_name(source, "orders")
        events = schema_by_name(source, "events")
        fields = await call(
            client, "external-data-schemas-incremental-fields-create", {"id": orders["id"]}
        )
        assert "updated_at" in {f["field"] for f in fields["incremental_fields"]}

        await call(
            client,
            "external-data-sources-bulk-update-schemas-partial-update",
            {
                "id": created["id"],
                "schemas": [
                    {
                        "id": orders["id"],
                        "should_sync": True,
                        "sync_type": "incremental",
                        "incremental_field": "updated_at",
                        "incremental_field_type": "timestamp",
                        "primary_key_columns": ["id"],
                    },
                    {
                        "id": events["id"],
                        "should_sync": True,
                        "sync_type": "append",
                        "incremental_field": "id",
                        "incremental_field_type": "integer",
                    },
                ],
            },
        )
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        synced = await call(
            client,
            "external-data-sources-reload",
            {"id": created["id"], "wait_seconds": 60},
            progress_callback=on_progress,
        )
        wait = synced["wait"]
        assert wait["finished"] is True, wait
        assert {j["schema"]: j["status"] for j in wait["jobs"]} == {
            "orders": "Completed",
            "events": "Completed",
        }
        assert progress
        assert progress[-1] == 2.0
        assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_orders") == [(300,)]
        assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_events") == [(200,)]

        # Incremental: update 10 rows and insert 5 upstream; the merge has no duplicates.
        upstream.execute(
            "UPDATE orders SET amount = -1, updated_at = now() WHERE id <= 10;"
            "INSERT INTO orders SELECT g, g, now() FROM generate_series(301, 305) g;"
            "INSERT INTO events SELECT g, 'click', now() FROM generate_series(201, 250) g;"
        )
        merged = await call(
            client, "external-data-schemas-reload", {"id": orders["id"], "wait_seconds": 60}
        )
        assert merged["wait"]["finished"] is True
        assert merged["wait"]["jobs"][0]["status"] == "Completed"
        assert warehouse_rows(
            app,
            "SELECT count(*), count(DISTINCT id), sum((amount = -1)::int) "
            "FROM shop_postgres_orders",
        ) == [(305, 305, 10)]
        appended = await call(
            client, "external-data-schemas-reload", {"id": events["id"], "wait_seconds": 60}
        )
        assert appended["wait"]["finished"] is True
        assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_events") == [(250,)]

        # delete_data keeps the schema; resync brings every row back.
        await call(client, "external-data-schemas-delete-data", {"id": events["id"]})
        emptied = await call(client, "external-data-schemas-retrieve", {"id": events["id"]})
        assert emptied["table"] is None
        assert emptied["should_sync"] is True
        resynced = await call(
            client, "external-data-schemas-resync", {"id": events["id"], "wait_seconds": 60}
        )
        assert resynced["wait"]["finished"] is True
        assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_events") == [(250,)]

        # Rediscovery after adding one table and dropping another upstream.
        upstream.execute("CREATE TABLE refunds (id int PRIMARY KEY); DROP TABLE events;")
        found = await call(client, "external-data-sources-refresh-schemas", {"id": created["id"]})
        assert found["added"] == 1
        assert found["total_tables_seen"] == 2
        jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
        assert all(j["status"] == "Completed" for j in jobs["results"])
        assert upstream.creds.password not in json.dumps([jobs, source])


async def test_agent_cancels_a_running_sync_and_finds_everything_after_a_restart(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE big (id int PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 40000) g;"
    )
    payload = upstream.payload([{"name": "big", "should_sync": False}])
    async with agent(tmp_path) as (client, app):
        source_id = (
            await call(
                client,
                "external-data-sources-create",
                {"source_type": "Postgres", "payload": payload},
            )
        )["id"]
        schema_id = (await call(client, "external-data-schemas-list", {"search": "big"}))[
            "results"
        ][0]["id"]
        first = await enable_and_sync(client, schema_id)
        assert first["wait"]["finished"] is True
        assert warehouse_rows(app, "SELECT count(*) FROM postgres_big") == [(40000,)]

    # After a restart, a sync that waits on a lock upstream is still running when the agent
    # cancels it.
    upstream.execute("INSERT INTO big SELECT g, 'new' FROM generate_series(40001, 50000) g;")
    async with agent(tmp_path) as (client, app):
        jobs = await call(client, "external-data-sources-jobs", {"id": source_id})
        assert [j["status"] for j in jobs["results"]] == ["Completed"]
        with upstream.locked("big"):
            await call(client, "external-data-schemas-reload", {"id": schema_id})
            await upstream.export_waits()
            schema = await call(client, "external-data-schemas-retrieve", {"id": schema_id})
            assert schema["status"] == "Running"
            # The cancel returns once the sync has stopped.
            await call(client, "external-data-schemas-cancel", {"id": schema_id})
        jobs = await call(client, "external-data-sources-jobs", {"id": source_id})
        assert jobs["results"][0]["status"] == "Failed"
        assert jobs["results"][0]["latest_error"] == "Sync cancelled by user"
        # The cancelled sync never touched the published table.
        assert warehouse_rows(app, "SELECT count(*) FROM postgres_big") == [(40000,)]


async def test_agent_following_the_connect_postgres_prompt_syncs_only_the_chosen_tables(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, g, now() FROM generate_series(1, 40) g;"
        "CREATE TABLE page_views (seq bigint, url text, seen_at timestamptz NOT NULL);"
        "INSERT INTO page_views SELECT g, '/p', now() FROM generate_series(1, 25) g;"
        "CREATE TABLE audit_log (line text);"
        "CREATE TABLE users (id int PRIMARY KEY, name text);"
        "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 5) g;"
    )
    creds = upstream.creds
    chosen = {"orders", "page_views"}  # what the user answers at step 3
    async with agent(tmp_path) as (client, app):
        prompt = await client.get_prompt(
            "connect-postgres", {"host": creds.host, "database": creds.database, "prefix": "app_"}
        )
        content = prompt.messages[0].content
        assert isinstance(content, types.TextContent)
        steps = content.text
        # Step 2: the wizard says which fields to ask for; the user gives exactly those.
        assert "external-data-sources-wizard" in steps
        wizard = await call(client, "external-data-sources-wizard", {"source_type": "Postgres"})
        given = creds.job_inputs()
        fields = wizard["Postgres"]["fields"]
        connection = {f["name"]: given[f["name"]] for f in fields if f["name"] in given}
        assert {f["name"] for f in fields if f.get("required")} <= set(connection)
        # Step 3: discovery, nothing created.
        assert "external-data-sources-db-schema" in steps
        discovered = await call(
            client,
            "external-data-sources-db-schema",
            {"source_type": "Postgres", "payload": connection},
        )
        tables = {t["table"]: t for t in discovered["results"]}
        assert set(tables) == {"orders", "page_views", "audit_log", "users"}
        assert (await call(client, "external-data-sources-list", {}))["count"] == 0
        # Step 4: a sync type per chosen table, from its discovery entry.
        schemas = []
        for name in sorted(chosen):
            table = tables[name]
            cursor = next(
                (f for f in table["incremental_fields"] if f["field"].endswith("_at")), None
            )
            entry: dict[str, object] = {"name": name, "should_sync": True}
            if cursor and table["detected_primary_keys"]:
                entry |= {
                    "sync_type": "incremental",
                    "incremental_field": cursor["field"],
                    "incremental_field_type": cursor["field_type"],
                    "primary_key_columns": table["detected_primary_keys"],
                }
            elif cursor:
                entry |= {
                    "sync_type": "append",
                    "incremental_field": cursor["field"],
                    "incremental_field_type": cursor["field_type"],
                }
            else:
                entry["sync_type"] = "full_refresh"
            schemas.append(entry)
        # Step 5: create with the chosen tables listed.
        assert "Never omit schemas" in steps
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "app_",
                "payload": {**connection, "schemas": schemas},
            },
        )

        # Step 6: the first syncs start by themselves; watch the jobs.
        async def settled() -> list[dict[str, object]] | None:
            jobs = (await call(client, "external-data-sources-jobs", {"id": created["id"]}))[
                "results"
            ]
            done = len(jobs) == len(chosen) and all(j["status"] != "Running" for j in jobs)
            return jobs if done else None

        jobs = await eventually(settled, within=60)
        assert {j["status"] for j in jobs} == {"Completed"}
        listed = await call(client, "external-data-schemas-list", {})
        syncing = {s["name"]: s["sync_type"] for s in listed["results"] if s["should_sync"]}
        assert syncing == {"orders": "incremental", "page_views": "append"}
        assert {s["name"] for s in listed["results"]} == chosen
        warehouse = {
            name
            for (name,) in warehouse_rows(
                app, "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'app_%'"
            )
        }
        assert warehouse == {"app_postgres_orders", "app_postgres_page_views"}
