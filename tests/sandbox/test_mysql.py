"""The `MySQL` source against a real MariaDB: create, full refresh, incremental merge, cancel."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from tests.sandbox.support import API, MySQLUpstream, schema_by_name, wait_for_jobs, warehouse_rows

pytestmark = pytest.mark.anyio

ORDERS_SQL = (
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer varchar(50), amount decimal(10,2), "
    "note text, raw varbinary(8), updated_at datetime(6) NOT NULL)",
    "INSERT INTO orders WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
    "WHERE n < 500) SELECT n, CONCAT('c', n % 7), n * 1.5, IF(n % 10 = 0, NULL, "
    "CONCAT('say \"', n, '\",\\n')), UNHEX('0A0B'), "
    "TIMESTAMP '2025-01-01 00:00:00' + INTERVAL n MINUTE FROM g",
)


async def create_mysql_source(
    client: httpx.AsyncClient, upstream: MySQLUpstream, schemas: list[dict[str, object]]
) -> dict[str, object]:
    """Create a MySQL source and return it in full."""
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "MySQL", "payload": upstream.payload(schemas), "prefix": "my_"},
    )
    assert response.status_code == 201, response.text
    source = await client.get(f"{API}/external_data_sources/{response.json()['id']}/")
    return dict(source.json())


async def test_mysql_bad_password_is_400(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    _, client = sandbox
    payload = mysql_upstream.payload([{"name": "orders"}])
    payload["password"] = "nope"
    response = await client.post(
        f"{API}/external_data_sources/", json={"source_type": "MySQL", "payload": payload}
    )
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid user or password"}


async def test_mysql_full_refresh_then_incremental_merge(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    app, client = sandbox
    mysql_upstream.execute(*ORDERS_SQL)
    source = await create_mysql_source(
        client,
        mysql_upstream,
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
    assert "mysql-secret-pw" not in str(source)
    assert source["job_inputs"] == {
        "host": mysql_upstream.host,
        "port": mysql_upstream.port,
        "database": mysql_upstream.database,
        "user": mysql_upstream.user,
        "schema": mysql_upstream.database,
        "using_ssl": False,
    }
    orders = schema_by_name(source, "orders")
    assert orders["incremental_field_type"] == "timestamp"
    jobs = await wait_for_jobs(client, str(source["id"]), 1)
    assert (jobs[0]["status"], jobs[0]["rows_synced"]) == ("Completed", 500), jobs[0]
    table = "my_mysql_orders"
    assert warehouse_rows(
        app, f"SELECT count(*), sum(amount), count(note), min(raw) FROM {table}"
    ) == [(500, pytest.approx(187875.0), 450, "0A0B")]
    assert warehouse_rows(app, f"SELECT note FROM {table} WHERE id = 1") == [('say "1",\n',)]
    mysql_upstream.execute(
        "UPDATE orders SET amount = -1, updated_at = NOW(6) WHERE id = 7",
        "INSERT INTO orders VALUES (501, 'new', 1, '', NULL, NOW(6))",
    )
    await client.post(f"{API}/external_data_schemas/{orders['id']}/reload/")
    jobs = await wait_for_jobs(client, str(source["id"]), 2)
    assert jobs[0]["status"] == "Completed"
    assert warehouse_rows(app, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(501, 501)]
    assert warehouse_rows(app, f"SELECT amount FROM {table} WHERE id = 7") == [(-1,)]
    assert warehouse_rows(app, f"SELECT note FROM {table} WHERE id = 501") == [("",)]
    fields = await client.post(f"{API}/external_data_schemas/{orders['id']}/incremental_fields/")
    assert [f["field"] for f in fields.json()["incremental_fields"]] == ["id", "updated_at"]


async def test_mysql_cancel_kills_the_running_query(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    app, client = sandbox
    mysql_upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v varchar(40))",
        "INSERT INTO big SELECT seq, MD5(seq) FROM seq_1_to_1000",
    )
    # The export waits on the lock: only the sandbox's KILL QUERY can end it.
    with mysql_upstream.locked("big"):
        source = await create_mysql_source(
            client,
            mysql_upstream,
            [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}],
        )
        await mysql_upstream.export_waits()
        schema_id = schema_by_name(source, "big")["id"]
        cancelled = await client.post(f"{API}/external_data_schemas/{schema_id}/cancel/")
        assert cancelled.status_code == 200
        jobs = await wait_for_jobs(client, str(source["id"]), 1)
    assert (jobs[0]["status"], jobs[0]["latest_error"]) == ("Failed", "Sync cancelled by user")
    tables = warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE NOT starts_with(table_name, '_sandbox_')"
    )
    assert tables == [(0,)]


async def test_repair_cdc_on_a_mysql_source_answers_as_posthog_does(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    _, client = sandbox
    mysql_upstream.execute("CREATE TABLE notes (id int PRIMARY KEY)")
    source = await create_mysql_source(client, mysql_upstream, [{"name": "notes"}])
    response = await client.post(f"{API}/external_data_sources/{source['id']}/repair_cdc/")
    assert response.status_code == 400
    assert response.json() == {"message": "CDC is not supported for source type: MySQL"}
    # Nor xmin, which is Postgres's row version.
    notes = f"{API}/external_data_schemas/{schema_by_name(source, 'notes')['id']}/"
    xmin = await client.patch(notes, json={"sync_type": "xmin"})
    assert (xmin.status_code, xmin.json()["detail"]) == (
        400,
        "xmin replication is only available for Postgres sources.",
    )


async def test_job_rows_carry_posthogs_newest_fields(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    _, client = sandbox
    mysql_upstream.execute("CREATE TABLE tags (id int PRIMARY KEY)", "INSERT INTO tags VALUES (1)")
    source = await create_mysql_source(
        client, mysql_upstream, [{"name": "tags", "should_sync": True, "sync_type": "full_refresh"}]
    )
    (job,) = await wait_for_jobs(client, str(source["id"]), 1)
    fields = {"id", "created_at", "created_by", "finished_at", "status", "schema", "rows_synced"}
    fields |= {"latest_error", "workflow_run_id", "cdc_write_mode", "billable", "destination_ids"}
    assert set(job) == fields
    assert (job["billable"], job["cdc_write_mode"], job["destination_ids"]) == (True, None, [])
