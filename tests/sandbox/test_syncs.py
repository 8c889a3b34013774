"""Real syncs from an embedded PostgreSQL into the sandbox's DuckDB warehouse, over HTTP; and
the engine's interleavings with cancels, deletes and settings, forced through its hook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.engine import DATA_DELETED
from tests.sandbox.support import (
    API,
    Upstream,
    client_for,
    create_source,
    gate,
    jobs_of,
    log_lines,
    reload_and_wait,
    schema_by_name,
    services_of,
    sync_log,
    synced,
    wait_for_jobs,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

ORDERS_SQL = """
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer text,
    amount numeric(10, 2),
    paid boolean,
    note text,
    updated_at timestamptz NOT NULL
);
INSERT INTO orders
SELECT g, 'c' || (g % 50), g * 1.25, g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'n,"' || g END,
       timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, 1000) AS g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers SELECT g, 'name ' || g FROM generate_series(1, 50) AS g;
"""


async def test_create_with_bad_credentials_is_400(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    payload = upstream.payload([{"name": "orders", "should_sync": True}])
    payload["password"] = "wrong"
    response = await client.post(
        f"{API}/external_data_sources/", json={"source_type": "Postgres", "payload": payload}
    )
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid user or password"}
    listed = await client.get(f"{API}/external_data_sources/")
    assert listed.json()["count"] == 0


async def test_create_discovers_tables_and_full_refresh_loads_them(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source = await create_source(
        client,
        upstream,
        [{"name": "orders", "should_sync": True, "sync_type": "full_refresh"}],
        prefix="shop_",
    )
    # As in PostHog, only the listed tables become schemas; refresh_schemas adds the others.
    assert [s["name"] for s in source["schemas"]] == ["orders"]
    jobs = await wait_for_jobs(client, source["id"], 1)
    assert [(j["status"], j["rows_synced"], j["schema"]["name"]) for j in jobs] == [
        ("Completed", 1000, "orders")
    ]
    schema = (await client.get(f"{API}/external_data_schemas/{jobs[0]['schema']['id']}/")).json()
    assert schema["status"] == "Completed"
    assert schema["table"]["name"] == "shop_postgres_orders"
    assert schema["table"]["row_count"] == 1000
    rows = warehouse_rows(
        app,
        "SELECT count(*), sum(amount), count(note), min(note) FROM shop_postgres_orders",
    )
    assert rows == [(1000, pytest.approx(625625.0), 900, 'n,"1')]
    source = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert source["status"] == "Completed"
    assert source["last_run_at"] == jobs[0]["created_at"]

    # The unlisted table appears with refresh_schemas, not enabled; enabling it starts a sync.
    refreshed = await client.post(f"{API}/external_data_sources/{source['id']}/refresh_schemas/")
    assert refreshed.json() == {"added": 1, "deleted": 0, "auto_enabled": 0, "total_tables_seen": 2}
    source = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    customers = schema_by_name(source, "customers")
    assert (customers["should_sync"], customers["sync_type"]) == (False, None)
    patched = await client.patch(
        f"{API}/external_data_schemas/{customers['id']}/",
        json={"should_sync": True, "sync_type": "full_refresh"},
    )
    assert patched.status_code == 200
    await wait_for_jobs(client, source["id"], 2)
    assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_customers") == [(50,)]


async def test_incremental_reload_merges_updates_and_inserts(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source = await create_source(
        client,
        upstream,
        [
            {
                "name": "orders",
                "should_sync": True,
                "sync_type": "incremental",
                "incremental_field": "updated_at",
                "incremental_field_type": "timestamp",
            }
        ],
    )
    await wait_for_jobs(client, source["id"], 1)
    upstream.execute(
        "UPDATE orders SET amount = -1, updated_at = now() WHERE id IN (5, 500);"
        "INSERT INTO orders VALUES (1001, 'new', 9.99, true, 'fresh', now());"
    )
    reloaded = await client.post(f"{API}/external_data_sources/{source['id']}/reload/")
    assert reloaded.status_code == 200
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Completed"
    # Only the changed rows travel again.
    assert jobs[0]["rows_synced"] == 3
    table = "postgres_orders"
    assert warehouse_rows(app, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [
        (1001, 1001)
    ]
    assert warehouse_rows(app, f"SELECT id FROM {table} WHERE amount = -1 ORDER BY id") == [
        (5,),
        (500,),
    ]
    assert warehouse_rows(app, f"SELECT note FROM {table} WHERE id = 1001") == [("fresh",)]


async def test_append_adds_only_rows_past_the_cursor(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE events (id bigint, name text);"
        "INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) g;"
    )
    source = await create_source(
        client,
        upstream,
        [
            {
                "name": "events",
                "should_sync": True,
                "sync_type": "append",
                "incremental_field": "id",
                "incremental_field_type": "integer",
            }
        ],
    )
    await wait_for_jobs(client, source["id"], 1)
    upstream.execute("INSERT INTO events SELECT g, 'e' || g FROM generate_series(101, 120) g")
    schema_id = schema_by_name(source, "events")["id"]
    assert (
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
    ).status_code == 200
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["rows_synced"] == 20
    assert warehouse_rows(app, "SELECT count(*), max(id) FROM postgres_events") == [(120, 120)]


async def test_cancel_stops_a_running_sync_and_keeps_the_previous_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 10000) g;"
    )
    source, schema_id = await synced(client, upstream, "big")
    with gate(app, "progress") as held:
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        await held.reached()
        # The running job shows its progress before it ends.
        jobs = await jobs_of(client, source["id"])
        assert jobs[0]["status"] == "Running"
        assert jobs[0]["rows_synced"] > 0
        # The cancel lands midway: the held sync goes on only once it is cancelled.
        cancelled = await client.post(f"{API}/external_data_schemas/{schema_id}/cancel/")
        assert cancelled.status_code == 200
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Failed"
    assert jobs[0]["latest_error"] == "Sync cancelled by user"
    # Its log: started, the columns and the cursor it read with, then the cancel, a warning.
    log = await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"])
    assert [level for level, _ in log_lines(log)] == ["WARNING", "DEBUG", "DEBUG", "INFO"]
    assert log_lines(log)[0] == (
        "WARNING",
        "Sync cancelled by user; nothing from this sync was published",
    )
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_big") == [(10000,)]
    assert warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_staging_%'"
    ) == [(0,)]
    again = await client.post(f"{API}/external_data_schemas/{schema_id}/cancel/")
    assert again.status_code == 400
    assert again.json() == {"detail": "No running sync to cancel."}


async def test_delete_data_drops_the_table_and_resync_reimports(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source, schema_id = await synced(client, upstream, "customers")
    deleted = await client.delete(f"{API}/external_data_schemas/{schema_id}/delete_data/")
    assert deleted.status_code == 200
    schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
    assert schema["table"] is None
    assert schema["should_sync"] is True
    assert warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'postgres_customers'"
    ) == [(0,)]
    resync = await client.post(f"{API}/external_data_schemas/{schema_id}/resync/")
    assert resync.status_code == 200
    await wait_for_jobs(client, source["id"], 2)
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_customers") == [(50,)]


async def test_refresh_schemas_sees_added_and_dropped_tables(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    source = await create_source(
        client,
        upstream,
        [
            {"name": "orders", "should_sync": False, "sync_type": "full_refresh"},
            {"name": "customers", "should_sync": False},
        ],
    )
    upstream.execute("CREATE TABLE refunds (id int PRIMARY KEY); DROP TABLE customers;")
    response = await client.post(f"{API}/external_data_sources/{source['id']}/refresh_schemas/")
    assert response.status_code == 200
    assert response.json() == {"added": 1, "deleted": 1, "auto_enabled": 0, "total_tables_seen": 2}
    source = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert sorted(s["name"] for s in source["schemas"]) == ["orders", "refunds"]


async def test_incremental_fields_introspects_the_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    source = await create_source(client, upstream, [{"name": "orders", "should_sync": False}])
    schema_id = schema_by_name(source, "orders")["id"]
    response = await client.post(f"{API}/external_data_schemas/{schema_id}/incremental_fields/")
    assert response.status_code == 200
    body = response.json()
    assert [(f["field"], f["field_type"]) for f in body["incremental_fields"]] == [
        ("id", "integer"),
        ("updated_at", "timestamp"),
        ("xmin", "xid"),
    ]
    assert body["incremental_available"] is True
    # CDC is told only on a source with CDC enabled; xmin on every Postgres table.
    assert (body["cdc_available"], body["xmin_available"]) == (None, True)
    assert body["detected_primary_keys"] == ["id"]
    assert {c["field"] for c in body["available_columns"]} == {
        "id",
        "customer",
        "amount",
        "paid",
        "note",
        "updated_at",
    }


async def test_restart_keeps_sources_schemas_jobs_and_tables(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(ORDERS_SQL)
    async with open_sandbox(tmp_path, demo=False) as app, client_for(app) as client:
        source = await create_source(
            client, upstream, [{"name": "orders", "should_sync": True, "sync_type": "full_refresh"}]
        )
        await wait_for_jobs(client, source["id"], 1)
        await client.patch(
            f"{API}/external_data_sources/{source['id']}/revenue_analytics_config/",
            json={"enabled": True},
        )
        before = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    async with open_sandbox(tmp_path, demo=False) as app, client_for(app) as client:
        after = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
        assert after == before
        jobs = (await client.get(f"{API}/external_data_sources/{source['id']}/jobs/")).json()
        assert [j["status"] for j in jobs] == ["Completed"]
        assert warehouse_rows(app, "SELECT count(*) FROM postgres_orders") == [(1000,)]


async def test_a_failed_sync_keeps_the_previous_table_and_reports_the_error(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source, _ = await synced(client, upstream, "customers")
    upstream.execute("DROP TABLE customers")
    await client.post(f"{API}/external_data_sources/{source['id']}/reload/")
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Failed"
    assert jobs[0]["latest_error"] == "Table customers no longer exists in the source"
    body = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert body["status"] == "Failed"
    assert body["latest_error"] == jobs[0]["latest_error"]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_customers") == [(50,)]


async def test_deleting_a_source_stops_its_running_sync(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000) g;"
    )
    # The export waits on the lock until the deletion cancels its query.
    with upstream.locked("big"):
        source = await create_source(
            client, upstream, [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}]
        )
        await upstream.export_waits()
        # The API answers while a sync holds a worker thread.
        with anyio.fail_after(10):
            assert (await client.get(f"{API}/external_data_schemas/")).status_code == 200
        deleted = await client.delete(f"{API}/external_data_sources/{source['id']}/")
        assert deleted.status_code == 204
    assert not services_of(app).engine.is_running(source["schemas"][0]["id"])
    tables = warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE NOT starts_with(table_name, '_sandbox_')"
    )
    assert tables == [(0,)]  # only the sandbox's own state tables


async def test_schedules_start_syncs_when_due(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source = await create_source(
        client, upstream, [{"name": "customers", "should_sync": True, "sync_type": "full_refresh"}]
    )
    jobs = await wait_for_jobs(client, source["id"], 1)
    schema_id = jobs[0]["schema"]["id"]
    engine = services_of(app).engine
    last = datetime.fromisoformat(jobs[0]["created_at"].replace("Z", "+00:00"))
    await client.patch(f"{API}/external_data_schemas/{schema_id}/", json={"sync_frequency": "5min"})
    assert engine.due(last + timedelta(minutes=4)) == []
    assert [s.id for s in engine.due(last + timedelta(minutes=5))] == [schema_id]
    await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_frequency": "24hour", "sync_time_of_day": "03:00:00"},
    )
    anchor = datetime.combine(last.date() + timedelta(days=1), time(3), tzinfo=UTC)
    assert engine.due(anchor - timedelta(minutes=1)) == []
    assert [s.id for s in engine.due(anchor)] == [schema_id]
    # Current PostHog has no "never": stopping a schedule is should_sync false.
    await client.patch(f"{API}/external_data_schemas/{schema_id}/", json={"should_sync": False})
    assert engine.due(anchor + timedelta(days=30)) == []


async def test_enabled_columns_and_chosen_primary_key_shape_the_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE visits (id int, page text, secret text, seen_at timestamptz NOT NULL);"
        "INSERT INTO visits SELECT g, '/p' || g, 'hidden', now() FROM generate_series(1, 30) g;"
    )
    source = await create_source(
        client,
        upstream,
        [
            {
                "name": "visits",
                "should_sync": True,
                "sync_type": "incremental",
                "incremental_field": "seen_at",
                "incremental_field_type": "timestamp",
                "primary_key_columns": ["id"],
                "enabled_columns": ["page"],
            }
        ],
    )
    await wait_for_jobs(client, source["id"], 1)
    columns = warehouse_rows(app, "SELECT column_name FROM (DESCRIBE postgres_visits)")
    # The key and the cursor always travel, whatever the column selection.
    assert sorted(c for (c,) in columns) == ["id", "page", "seen_at"]
    upstream.execute("UPDATE visits SET page = '/changed', seen_at = now() WHERE id = 3")
    await client.post(f"{API}/external_data_sources/{source['id']}/reload/")
    await wait_for_jobs(client, source["id"], 2)
    assert warehouse_rows(app, "SELECT count(*), count(DISTINCT id) FROM postgres_visits") == [
        (30, 30)
    ]
    assert warehouse_rows(app, "SELECT page FROM postgres_visits WHERE id = 3") == [("/changed",)]


async def test_switch_from_full_refresh_to_append_does_not_duplicate(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text);"
        "INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) AS g;"
    )
    source, schema_id = await synced(client, upstream, "events")
    table = "postgres_events"
    assert warehouse_rows(app, f"SELECT count(*) FROM {table}") == [(100,)]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "append", "incremental_field": "id"},
    )
    assert response.status_code == 200, response.text
    await reload_and_wait(client, source["id"], schema_id, 2)
    sql = f"SELECT count(*), count(DISTINCT id) FROM {table}"
    assert warehouse_rows(app, sql) == [(100, 100)]
    upstream.execute("INSERT INTO events SELECT g, 'e' || g FROM generate_series(101, 110) AS g;")
    jobs = await reload_and_wait(client, source["id"], schema_id, 3)
    assert jobs[0]["status"] == "Completed"
    assert jobs[0]["rows_synced"] == 10
    assert warehouse_rows(app, sql) == [(110, 110)]


async def test_changing_the_incremental_field_does_not_reuse_the_old_cursor(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE items (id int PRIMARY KEY, updated_at timestamptz NOT NULL, name text);"
        "INSERT INTO items SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 day',"
        " 'n' || g FROM generate_series(1, 10) AS g;"
    )
    source = await create_source(
        client,
        upstream,
        [
            {
                "name": "items",
                "should_sync": True,
                "sync_type": "incremental",
                "incremental_field": "id",
                "incremental_field_type": "integer",
            }
        ],
    )
    schema_id = schema_by_name(source, "items")["id"]
    jobs = await wait_for_jobs(client, source["id"], 1)
    assert jobs[0]["status"] == "Completed", jobs[0]
    url = f"{API}/external_data_schemas/{schema_id}/"
    # A text column cannot be a cursor, whatever type the request claims for it.
    for body in (
        {"incremental_field": "name"},
        {"incremental_field": "name", "incremental_field_type": "integer"},
    ):
        response = await client.patch(url, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "validation_error"
        assert response.json()["attr"] == "incremental_field"
    response = await client.patch(url, json={"incremental_field": "updated_at"})
    assert response.status_code == 200, response.text
    # PostHog never infers the type: it stays what was stored until the request sets it.
    assert response.json()["incremental_field_type"] == "integer"
    response = await client.patch(url, json={"incremental_field_type": "timestamp"})
    assert response.json()["incremental_field_type"] == "timestamp"
    # Both are below the old cursor's column values as numbers, and 10 is no timestamp.
    upstream.execute(
        "UPDATE items SET name = 'changed', updated_at = '2025-01-01 00:00:00+00' WHERE id = 3;"
        "INSERT INTO items VALUES (0, '2025-01-02 00:00:00+00', 'zero');"
    )
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    assert jobs[0]["status"] == "Completed", jobs[0]
    table = "postgres_items"
    assert warehouse_rows(app, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(11, 11)]
    assert warehouse_rows(app, f"SELECT name FROM {table} WHERE id IN (0, 3) ORDER BY id") == [
        ("zero",),
        ("changed",),
    ]
    # The next sync reads from the new column's cursor.
    upstream.execute("INSERT INTO items VALUES (-1, '2025-02-01 00:00:00+00', 'late');")
    jobs = await reload_and_wait(client, source["id"], schema_id, 3)
    assert jobs[0]["status"] == "Completed", jobs[0]
    assert jobs[0]["rows_synced"] == 1  # only the new one: the boundary row is not read again
    assert warehouse_rows(app, f"SELECT count(*) FROM {table}") == [(12,)]


async def test_append_switching_cursor_column_replaces_instead_of_skipping(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE logs (id int PRIMARY KEY, seq bigint NOT NULL);"
        "INSERT INTO logs SELECT g, g * 1000 FROM generate_series(1, 5) AS g;"
    )
    source = await create_source(
        client,
        upstream,
        [
            {
                "name": "logs",
                "should_sync": True,
                "sync_type": "append",
                "incremental_field": "seq",
                "incremental_field_type": "integer",
            }
        ],
    )
    schema_id = schema_by_name(source, "logs")["id"]
    await wait_for_jobs(client, source["id"], 1)
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/", json={"incremental_field": "id"}
    )
    assert response.status_code == 200, response.text
    upstream.execute("INSERT INTO logs VALUES (6, 1);")  # id 6 is far below the seq cursor 5000
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    assert jobs[0]["status"] == "Completed", jobs[0]
    sql = "SELECT count(*), count(DISTINCT id) FROM postgres_logs"
    assert warehouse_rows(app, sql) == [(6, 6)]


async def test_two_tables_never_write_the_same_warehouse_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        'CREATE TABLE "Ev" (id int PRIMARY KEY); INSERT INTO "Ev" VALUES (1), (2), (3);'
        "CREATE TABLE ev (id int PRIMARY KEY); INSERT INTO ev VALUES (10);"
    )
    source = await create_source(
        client,
        upstream,
        [{"name": name, "should_sync": True, "sync_type": "full_refresh"} for name in ("Ev", "ev")],
    )
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert sorted(j["status"] for j in jobs) == ["Completed", "Failed"], jobs
    winner = next(j for j in jobs if j["status"] == "Completed")["schema"]["name"]
    loser = next(j for j in jobs if j["status"] == "Failed")
    assert "postgres_ev already belongs to another table" in loser["latest_error"]
    expected = [(3,)] if winner == "Ev" else [(1,)]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_ev") == expected
    # Syncing the loser again still leaves the winner's table alone.
    loser_id = loser["schema"]["id"]
    jobs = await reload_and_wait(client, source["id"], loser_id, 3)
    assert jobs[0]["status"] == "Failed", jobs[0]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_ev") == expected


async def test_numeric_without_scale_keeps_every_digit(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE big_numbers (id int PRIMARY KEY, fixed numeric(20), free numeric);"
        "INSERT INTO big_numbers VALUES"
        " (1, 12345678901234567890, 123456789012345678901234567890.0123456789),"
        " (2, NULL, NULL);"
    )
    source = await create_source(
        client,
        upstream,
        [{"name": "big_numbers", "should_sync": True, "sync_type": "full_refresh"}],
    )
    jobs = await wait_for_jobs(client, source["id"], 1)
    assert jobs[0]["status"] == "Completed", jobs[0]
    sql = "SELECT fixed::VARCHAR, free::VARCHAR FROM postgres_big_numbers ORDER BY id"
    assert warehouse_rows(app, sql) == [
        ("12345678901234567890", "123456789012345678901234567890.0123456789"),
        (None, None),
    ]
    types = dict(services_of(app).warehouse.columns("postgres_big_numbers"))
    assert types["fixed"] == "DECIMAL(20,0)"


# ---- interleavings, each forced through the engine's hook (tests/sandbox/support.py Gate)


async def test_reload_right_after_a_sync_finishes_starts_a_new_job(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute("CREATE TABLE tiny (id int PRIMARY KEY); INSERT INTO tiny VALUES (1), (2);")
    source, schema_id = await synced(client, upstream, "tiny")
    reload = f"{API}/external_data_schemas/{schema_id}/reload/"
    with gate(app, "finished") as held:
        assert (await client.post(reload)).status_code == 200
        await held.reached()
        # The job shows Completed while its sync thread has not ended yet.
        assert [j["status"] for j in await jobs_of(client, source["id"])] == ["Completed"] * 2
        assert (await client.post(reload)).status_code == 200
        # The reload answered 200 right after "Completed": it must have started a job.
        assert len(await jobs_of(client, source["id"])) == 3
    jobs = await wait_for_jobs(client, source["id"], 3)
    assert [j["status"] for j in jobs] == ["Completed"] * 3


@pytest.mark.parametrize("kind", ["single", "bulk"])
async def test_settings_updates_keep_what_a_sync_finishing_meanwhile_wrote(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream, kind: str
) -> None:
    app, client = sandbox
    engine = services_of(app).engine
    upstream.execute(
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);"
        "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b VALUES (1);"
    )
    source = await create_source(
        client,
        upstream,
        [{"name": name, "should_sync": True, "sync_type": "full_refresh"} for name in ("a", "b")],
    )
    await wait_for_jobs(client, source["id"], 2)
    ids = [s["id"] for s in source["schemas"]]
    settings = {"sync_frequency": "24hour", "sync_time_of_day": "01:00:00"}
    if kind == "bulk":
        url = f"{API}/external_data_sources/{source['id']}/bulk_update_schemas/"
        payload: dict[str, Any] = {"schemas": [{"id": i, **settings} for i in ids]}
    else:
        url, payload = f"{API}/external_data_schemas/{ids[0]}/", settings
    with gate(app, "publish") as held:
        assert (await client.post(f"{API}/external_data_sources/{source['id']}/reload/")).is_success
        await held.reached(2)

        async def body_during_which_the_syncs_finish() -> AsyncIterator[bytes]:
            raw = json.dumps(payload).encode()
            yield raw[:1]
            held.open()
            for schema_id in ids:
                await anyio.to_thread.run_sync(engine.join, schema_id, 30)
            yield raw[1:]

        response = await client.patch(
            url,
            content=body_during_which_the_syncs_finish(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
    await wait_for_jobs(client, source["id"], 4)
    for schema_id in ids if kind == "bulk" else ids[:1]:
        schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
        assert schema["status"] == "Completed", schema
        assert schema["table"]["row_count"] == 1, schema
        assert schema["sync_frequency"] == "24hour"


async def test_no_sync_starts_for_a_source_being_deleted(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    services = services_of(app)
    upstream.execute(
        "CREATE TABLE big (id int PRIMARY KEY, name text);"
        "INSERT INTO big SELECT g, 'n' || g FROM generate_series(1, 1000) AS g;"
    )
    source, schema_id = await synced(client, upstream, "big")

    async def delete() -> None:
        response = await client.delete(f"{API}/external_data_sources/{source['id']}/")
        assert response.status_code == 204

    with gate(app, "finished", hold_cancelled=True) as held, upstream.locked("big"):
        assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
        await upstream.export_waits()
        async with anyio.create_task_group() as tg:
            tg.start_soon(delete)
            # The deletion cancelled the sync, which has left the engine but not ended yet:
            # what a reload or the scheduler would try now. (Whether the deletion's answer has
            # gone out by then depends on when its join saw the run: either way is fine.)
            await held.reached()
            assert services.engine.start(schema_id) is None
            held.open()
    assert not services.engine.is_running(schema_id)
    tables = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'postgres_big'"
    assert warehouse_rows(app, tables) == [(0,)]
    assert services.engine.start(schema_id) is None
    assert services.store.schemas[schema_id].deleted
    assert services.store.sources[source["id"]].deleted


async def assert_schema_matches_warehouse(
    app: Starlette, client: httpx.AsyncClient, schema_id: str, table: str
) -> None:
    """The schema shows a table exactly when the warehouse has it, with its row count."""
    schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
    exists = warehouse_rows(
        app, f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{table}'"
    )
    if schema["table"] is None:
        assert exists == [(0,)], schema
    else:
        assert exists == [(1,)], schema
        count = warehouse_rows(app, f"SELECT count(*) FROM {table}")
        assert count == [(schema["table"]["row_count"],)], schema


async def _append_source(client: httpx.AsyncClient, upstream: Upstream) -> tuple[str, str]:
    """An `append` source of 100 events, synced once; then 20 more events upstream."""
    upstream.execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text);"
        "INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) g;"
    )
    source, schema_id = await synced(
        client,
        upstream,
        "events",
        sync_type="append",
        incremental_field="id",
        incremental_field_type="integer",
    )
    upstream.execute("INSERT INTO events SELECT g, 'e' || g FROM generate_series(101, 120) g")
    return source["id"], schema_id


async def test_delete_data_during_a_sync_lets_it_run_and_resets_the_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    source_id, schema_id = await _append_source(client, upstream)
    with gate(app, "publish") as held:
        assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
        await held.reached()
        deleted = await client.delete(f"{API}/external_data_schemas/{schema_id}/delete_data/")
        assert deleted.status_code == 200
        # As in PostHog: the table, its status and last sync are reset; the sync is not cancelled.
        schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
        assert (schema["table"], schema["status"], schema["last_synced_at"]) == (None, None, None)
        assert services_of(app).engine.is_running(schema_id)
    jobs = await wait_for_jobs(client, source_id, 2)
    # It read the deleted table's cursor: its 20 rows alone would be a wrong table.
    assert (jobs[0]["status"], jobs[0]["latest_error"]) == ("Failed", DATA_DELETED)
    await assert_schema_matches_warehouse(app, client, schema_id, "postgres_events")
    assert warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'postgres_events'"
    ) == [(0,)]


# clear_data is the drop that delete_data, destroy and source deletion share; a sync that read
# the table's cursor before it must not publish.


async def test_rows_past_a_deleted_cursor_are_not_published_and_the_next_sync_has_them_all(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    services = services_of(app)
    source_id, schema_id = await _append_source(client, upstream)
    with gate(app, "publish") as held:
        assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
        await held.reached()
        await services.clear_data(schema_id)
    jobs = await wait_for_jobs(client, source_id, 2)
    # Publishing the 20 rows past the old cursor would make a 20-row table, and skip the 100
    # deleted rows for good.
    assert (jobs[0]["status"], jobs[0]["latest_error"]) == ("Failed", DATA_DELETED)
    await assert_schema_matches_warehouse(app, client, schema_id, "postgres_events")
    assert services.warehouse.cursor_value(schema_id, "id") is None
    jobs = await reload_and_wait(client, source_id, schema_id, 3)
    assert (jobs[0]["status"], jobs[0]["rows_synced"]) == ("Completed", 120)
    await assert_schema_matches_warehouse(app, client, schema_id, "postgres_events")
    assert warehouse_rows(app, "SELECT count(*), min(id) FROM postgres_events") == [(120, 1)]


async def test_a_full_refresh_running_through_a_data_delete_publishes_a_whole_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source, schema_id = await synced(client, upstream, "customers")
    with gate(app, "publish") as held:
        assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
        await held.reached()
        await services_of(app).clear_data(schema_id)
        await assert_schema_matches_warehouse(app, client, schema_id, "postgres_customers")
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Completed"
    await assert_schema_matches_warehouse(app, client, schema_id, "postgres_customers")
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_customers") == [(50,)]
