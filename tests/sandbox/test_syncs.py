"""Real syncs from an embedded PostgreSQL into the sandbox's DuckDB warehouse, over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox

from .conftest import (
    API,
    Upstream,
    client_for,
    create_source,
    schema_by_name,
    wait_for_jobs,
    wait_for_running,
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
    assert sorted(s["name"] for s in source["schemas"]) == ["customers", "orders"]
    assert schema_by_name(source, "customers")["should_sync"] is False
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

    # Enabling the second schema with a PATCH starts its first sync.
    customers = schema_by_name(source, "customers")
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
    # Only the changed rows (plus the boundary row of the cursor) travel again.
    assert jobs[0]["rows_synced"] <= 4
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
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g;"
    )
    async with open_sandbox(tmp_path, demo=False) as app, client_for(app) as client:
        source = await create_source(
            client, upstream, [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}]
        )
        await wait_for_jobs(client, source["id"], 1)
        # Slow the next sync down (seconds per 2,000 rows) so the cancel lands midway.
        app.state.sandbox.engine.sync_delay = 0.05
        schema_id = schema_by_name(source, "big")["id"]
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        await wait_for_running(client, source["id"])
        # The running job shows its progress before it ends.
        with anyio.fail_after(30):
            while True:
                jobs = (
                    await client.get(f"{API}/external_data_sources/{source['id']}/jobs/")
                ).json()
                if jobs[0]["rows_synced"] > 0:
                    break
                await anyio.sleep(0.05)
        assert jobs[0]["status"] == "Running"
        cancelled = await client.post(f"{API}/external_data_schemas/{schema_id}/cancel/")
        assert cancelled.status_code == 200
        jobs = await wait_for_jobs(client, source["id"], 2)
        assert jobs[0]["status"] == "Failed"
        assert jobs[0]["latest_error"] == "Sync cancelled by user"
        assert warehouse_rows(app, "SELECT count(*) FROM postgres_big") == [(200000,)]
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
    source = await create_source(
        client, upstream, [{"name": "customers", "should_sync": True, "sync_type": "full_refresh"}]
    )
    await wait_for_jobs(client, source["id"], 1)
    schema_id = schema_by_name(source, "customers")["id"]
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
        client, upstream, [{"name": "orders", "should_sync": False, "sync_type": "full_refresh"}]
    )
    upstream.execute("CREATE TABLE refunds (id int PRIMARY KEY); DROP TABLE customers;")
    response = await client.post(f"{API}/external_data_sources/{source['id']}/refresh_schemas/")
    assert response.status_code == 200
    assert response.json() == {"added": 1, "deleted": 1, "total_tables_seen": 2}
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
    ]
    assert body["incremental_available"] is True
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
    source = await create_source(
        client, upstream, [{"name": "customers", "should_sync": True, "sync_type": "full_refresh"}]
    )
    await wait_for_jobs(client, source["id"], 1)
    upstream.execute("DROP TABLE customers")
    await client.post(f"{API}/external_data_sources/{source['id']}/reload/")
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Failed"
    assert jobs[0]["latest_error"] == "Table customers no longer exists in the source"
    body = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert body["status"] == "Failed"
    assert body["latest_error"] == jobs[0]["latest_error"]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_customers") == [(50,)]


async def test_deleting_a_source_stops_its_running_sync(tmp_path: Path, upstream: Upstream) -> None:
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 100000) g;"
    )
    async with open_sandbox(tmp_path, demo=False, sync_delay=0.05) as app, client_for(app) as c:
        source = await create_source(
            c, upstream, [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}]
        )
        await wait_for_running(c, source["id"])
        # The API answers while a sync holds a worker thread.
        with anyio.fail_after(10):
            assert (await c.get(f"{API}/external_data_schemas/")).status_code == 200
        assert (await c.delete(f"{API}/external_data_sources/{source['id']}/")).status_code == 204
        assert not app.state.sandbox.engine.is_running(source["schemas"][0]["id"])
        tables = warehouse_rows(app, "SELECT count(*) FROM duckdb_tables()")
        assert tables == [(1,)]  # only the sandbox's own cursor-state table


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
    engine = app.state.sandbox.engine
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
    await client.patch(
        f"{API}/external_data_schemas/{schema_id}/", json={"sync_frequency": "never"}
    )
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
