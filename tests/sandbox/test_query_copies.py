"""Queries read copies of the published tables (the worker process cannot open the warehouse the
sandbox holds): a copy is one whole publication, written when a query first reads the table after
it, and the copies of earlier publications, of dropped tables and of a previous run are deleted."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.warehouse import Warehouse
from tests.sandbox.support import API, Upstream, client_for, reload_and_wait, synced

pytestmark = pytest.mark.anyio

ORDERS_SQL = (
    "CREATE TABLE orders (id int PRIMARY KEY, status text);"
    "INSERT INTO orders SELECT g, 'paid' FROM generate_series(1, 200) g;"
)


async def count(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        f"{API}/query/",
        json={"query": {"kind": "HogQLQuery", "query": "SELECT count() FROM postgres.orders"}},
    )


def copies(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "published").iterdir())


async def test_a_query_reads_the_last_publication_and_earlier_copies_are_deleted(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    directory = app.state.services.warehouse.path.parent
    upstream.execute(ORDERS_SQL)
    source, schema_id = await synced(client, upstream, "orders")
    assert copies(directory) == []  # a sync writes no copy: the first query does
    assert (await count(client)).json()["results"] == [[200]]
    [first] = copies(directory)
    assert first.startswith("postgres_orders.") and first.endswith(".duckdb")

    upstream.execute("INSERT INTO orders SELECT g, 'paid' FROM generate_series(201, 300) g")
    await reload_and_wait(client, source["id"], schema_id, 2)
    assert (await count(client)).json()["results"] == [[300]]
    [second] = copies(directory)
    assert second != first

    deleted = await client.delete(f"{API}/external_data_schemas/{schema_id}/delete_data/")
    assert deleted.status_code == 200
    assert copies(directory) == []
    gone = await count(client)
    assert gone.status_code == 400 and "Unknown table" in gone.json()["detail"]


@pytest.mark.slow  # a subprocess or a restart
async def test_a_restart_keeps_the_current_copies_and_deletes_the_rest(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "sandbox"
    upstream.execute(ORDERS_SQL)
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        await synced(client, upstream, "orders")
        assert (await count(client)).json()["results"] == [[200]]
    [current] = copies(directory)
    (directory / "published" / "postgres_orders.old.duckdb").write_bytes(b"")
    (directory / "published" / ".unfinished.tmp").write_bytes(b"")
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        assert copies(directory) == [current]
        assert (await count(client)).json()["results"] == [[200]]


def test_a_table_published_before_publication_ids_gets_a_copy(tmp_path: Path) -> None:
    """A warehouse written by a sandbox from before copies: its tables are queried all the same."""
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE _sandbox_sync_state (schema_id VARCHAR PRIMARY KEY, table_name VARCHAR, "
            "cursor_value VARCHAR, cursor_column VARCHAR)"
        )
        con.execute("INSERT INTO _sandbox_sync_state VALUES ('s1', 'postgres_orders', NULL, NULL)")
        con.execute("CREATE TABLE postgres_orders AS SELECT range AS id FROM range(5)")
    warehouse = Warehouse(path)
    try:
        copy = warehouse.copy_for_query("postgres_orders")
        assert copy is not None
        assert warehouse.copy_for_query("postgres_orders") == copy  # written once
        assert warehouse.copy_for_query("no_such_table") is None
    finally:
        warehouse.close()
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM postgres_orders").fetchall() == [(5,)]
