"""Regression tests for reviewed sync-engine and API races and sync-mode switches."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import api

from .conftest import API, Upstream, create_source, schema_by_name, wait_for_jobs, warehouse_rows

pytestmark = pytest.mark.anyio


async def _jobs(client: httpx.AsyncClient, source_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/external_data_sources/{source_id}/jobs/")
    assert response.status_code == 200
    jobs: list[dict[str, Any]] = response.json()
    return jobs


async def test_reload_right_after_completion_starts_a_new_job(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE tiny (id int PRIMARY KEY); INSERT INTO tiny VALUES (1), (2);")
    source = await create_source(
        client, upstream, [{"name": "tiny", "should_sync": True, "sync_type": "full_refresh"}]
    )
    schema_id = schema_by_name(source, "tiny")["id"]
    await wait_for_jobs(client, source["id"], 1)
    for _ in range(20):
        count = len(await _jobs(client, source["id"]))
        response = await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        assert response.status_code == 200
        with anyio.fail_after(10):
            # Poll without sleeping (the sync runs in a thread) so the next reload lands as close
            # to the finish as possible.
            while True:
                jobs = await _jobs(client, source["id"])
                if len(jobs) > count and jobs[0]["status"] == "Completed":
                    break
        response = await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        assert response.status_code == 200
        # The reload answered 200 right after "Completed": it must have started a job.
        assert len(await _jobs(client, source["id"])) == count + 2
        await wait_for_jobs(client, source["id"], count + 2)


async def test_switch_from_full_refresh_to_append_does_not_duplicate(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text);"
        "INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) AS g;"
    )
    source = await create_source(
        client, upstream, [{"name": "events", "should_sync": True, "sync_type": "full_refresh"}]
    )
    schema_id = schema_by_name(source, "events")["id"]
    await wait_for_jobs(client, source["id"], 1)
    table = "postgres_events"
    assert warehouse_rows(app, f"SELECT count(*) FROM {table}") == [(100,)]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "append", "incremental_field": "id"},
    )
    assert response.status_code == 200, response.text
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    await wait_for_jobs(client, source["id"], 2)
    sql = f"SELECT count(*), count(DISTINCT id) FROM {table}"
    assert warehouse_rows(app, sql) == [(100, 100)]
    upstream.execute("INSERT INTO events SELECT g, 'e' || g FROM generate_series(101, 110) AS g;")
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    jobs = await wait_for_jobs(client, source["id"], 3)
    assert jobs[0]["status"] == "Completed"
    assert jobs[0]["rows_synced"] == 10
    assert warehouse_rows(app, sql) == [(110, 110)]


async def test_settings_updates_do_not_overwrite_a_finishing_sync(
    sandbox: tuple[Starlette, httpx.AsyncClient],
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, client = sandbox
    upstream.execute(
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);"
        "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b VALUES (1);"
    )
    # Widen the gap between the settings copy and its application, where a sync may finish.
    original = api._time_of_day

    def slow_time_of_day(value: Any, attr: str = "sync_time_of_day") -> str | None:
        time.sleep(0.02)
        return original(value, attr)

    monkeypatch.setattr(api, "_time_of_day", slow_time_of_day)
    for round_ in range(3):
        if round_ == 0:
            source = await create_source(
                client,
                upstream,
                [
                    {"name": name, "should_sync": True, "sync_type": "full_refresh"}
                    for name in ("a", "b")
                ],
            )
        else:
            reload = f"{API}/external_data_sources/{source['id']}/reload/"
            assert (await client.post(reload)).is_success
        ids = [s["id"] for s in source["schemas"]]
        with anyio.fail_after(30):
            for step in range(1000):
                frequency = ("12hour", "24hour")[step % 2]
                settings = {"sync_frequency": frequency, "sync_time_of_day": "01:00:00"}
                bulk = await client.patch(
                    f"{API}/external_data_sources/{source['id']}/bulk_update_schemas/",
                    json={"schemas": [{"id": i, **settings} for i in ids]},
                )
                assert bulk.status_code == 200, bulk.text
                single = await client.patch(f"{API}/external_data_schemas/{ids[0]}/", json=settings)
                assert single.status_code == 200, single.text
                jobs = await _jobs(client, source["id"])
                if len(jobs) == 2 * (round_ + 1) and all(j["status"] != "Running" for j in jobs):
                    break
        for schema_id in ids:
            schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
            assert schema["status"] == "Completed", schema
            assert schema["table"] is not None, schema
            assert schema["sync_frequency"] == frequency


async def test_no_sync_publishes_a_table_for_a_source_being_deleted(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    engine = app.state.sandbox.engine
    store = app.state.sandbox.store
    upstream.execute(
        "CREATE TABLE big (id int PRIMARY KEY, name text);"
        "INSERT INTO big SELECT g, 'n' || g FROM generate_series(1, 20000) AS g;"
    )
    source = await create_source(
        client, upstream, [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}]
    )
    schema_id = schema_by_name(source, "big")["id"]
    await wait_for_jobs(client, source["id"], 1)
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    deleted = anyio.Event()

    async def delete() -> None:
        response = await client.delete(f"{API}/external_data_sources/{source['id']}/")
        assert response.status_code == 204
        deleted.set()

    async def keep_starting() -> None:
        # What a reload or the scheduler may do while the deletion waits on the running sync.
        while not deleted.is_set():
            engine.start(store.schemas[schema_id])
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(delete)
        tg.start_soon(keep_starting)
    await anyio.to_thread.run_sync(engine.join, schema_id, 30)
    assert not engine.is_running(schema_id)
    tables = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'postgres_big'"
    assert warehouse_rows(app, tables) == [(0,)]
    assert engine.start(store.schemas[schema_id]) is None
    assert store.schemas[schema_id].deleted and store.sources[source["id"]].deleted


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
    assert response.json()["incremental_field_type"] == "timestamp"
    # Both are below the old cursor's column values as numbers, and 10 is no timestamp.
    upstream.execute(
        "UPDATE items SET name = 'changed', updated_at = '2025-01-01 00:00:00+00' WHERE id = 3;"
        "INSERT INTO items VALUES (0, '2025-01-02 00:00:00+00', 'zero');"
    )
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Completed", jobs[0]
    table = "postgres_items"
    assert warehouse_rows(app, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(11, 11)]
    assert warehouse_rows(app, f"SELECT name FROM {table} WHERE id IN (0, 3) ORDER BY id") == [
        ("zero",),
        ("changed",),
    ]
    # The next sync reads from the new column's cursor.
    upstream.execute("INSERT INTO items VALUES (-1, '2025-02-01 00:00:00+00', 'late');")
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    jobs = await wait_for_jobs(client, source["id"], 3)
    assert jobs[0]["status"] == "Completed", jobs[0]
    assert jobs[0]["rows_synced"] == 2  # the boundary row is read again, then the new one
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
        [{"name": "logs", "should_sync": True, "sync_type": "append", "incremental_field": "seq"}],
    )
    schema_id = schema_by_name(source, "logs")["id"]
    await wait_for_jobs(client, source["id"], 1)
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/", json={"incremental_field": "id"}
    )
    assert response.status_code == 200, response.text
    upstream.execute("INSERT INTO logs VALUES (6, 1);")  # id 6 is far below the seq cursor 5000
    assert (await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Completed", jobs[0]
    sql = "SELECT count(*), count(DISTINCT id) FROM postgres_logs"
    assert warehouse_rows(app, sql) == [(6, 6)]


async def test_unknown_primary_key_columns_are_refused(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE pk (id int, name text);")
    source = await create_source(
        client, upstream, [{"name": "pk", "should_sync": False, "sync_type": "full_refresh"}]
    )
    schema_id = schema_by_name(source, "pk")["id"]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "incremental", "incremental_field": "id", "primary_key_columns": ["x"]},
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "validation_error"
    assert response.json()["attr"] == "primary_key_columns"
    assert "x" in response.json()["detail"]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "incremental", "incremental_field": "id", "primary_key_columns": ["id"]},
    )
    assert response.status_code == 200, response.text


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
    assert (await client.post(f"{API}/external_data_schemas/{loser_id}/reload/")).is_success
    jobs = await wait_for_jobs(client, source["id"], 3)
    assert jobs[0]["status"] == "Failed", jobs[0]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_ev") == expected


async def test_prefixes_differing_only_by_case_are_refused(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE t (id int PRIMARY KEY);")
    schemas = [{"name": "t", "should_sync": False}]
    await create_source(client, upstream, schemas, prefix="Crm_")
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload(schemas), "prefix": "crm_"},
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"message": "Prefix already exists"}


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
    types = dict(app.state.sandbox.warehouse.columns("postgres_big_numbers"))
    assert types["fixed"] == "DECIMAL(20,0)"
