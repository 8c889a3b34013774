"""`query/` over the DuckDB warehouse: HogQL translated to DuckDB, PostHog's answers and error
bodies, and the locks: nothing but one SELECT over the warehouse's own tables runs, nothing
outside the warehouse is read or written, and a query never disturbs a running sync."""

from __future__ import annotations

from typing import Any

import anyio
import duckdb
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.hogql import Catalog, QueryError, compile_query
from tests.sandbox.support import (
    API,
    Upstream,
    create_source,
    gate,
    reload_and_wait,
    schema_by_name,
    synced,
    wait_for_jobs,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

QUERY = f"{API}/query/"
ORDERS_SQL = """
CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(12,2), big bigint,
                     updated_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, CASE WHEN g % 4 = 0 THEN 'refunded' ELSE 'paid' END, g * 1.25,
       9007199254740993 + g, timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 200) g;
"""


async def hogql(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post(QUERY, json={"query": {"kind": "HogQLQuery", "query": query}})


async def test_hogql_runs_translated_and_answers_as_posthog(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    await synced(client, upstream, "orders")
    counted = await hogql(
        client, "SELECT count(), countIf(status = 'refunded') AS refunded FROM postgres.orders"
    )
    assert counted.status_code == 200, counted.text
    body = counted.json()
    assert body["columns"] == ["count()", "refunded"]
    assert body["results"] == [[200, 50]]
    # Without a LIMIT of its own, PostHog pages the answer: 100 rows and hasMore.
    paged = (await hogql(client, "SELECT id FROM postgres_orders ORDER BY id")).json()
    assert (len(paged["results"]), paged["hasMore"], paged["limit"]) == (100, True, 100)
    limited = (await hogql(client, "SELECT * FROM postgres.orders ORDER BY id LIMIT 2")).json()
    assert "hasMore" not in limited
    types = dict(limited["types"])
    assert types["amount"] == "Decimal(12, 2)"
    assert types["updated_at"] == "DateTime64(6, 'UTC')"
    row = dict(zip(limited["columns"], limited["results"][0], strict=True))
    assert row["updated_at"] == "2025-01-01T00:01:00Z"
    assert row["big"] == 9007199254740994  # JSON numbers, exact in Python
    assert row["amount"] == 1.25


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("SELECT nope FROM postgres.orders", "Unable to resolve field: nope"),
        (
            "SELECT * FROM postgres.order",
            "Unknown table `postgres.order`. Did you mean: postgres.orders or postgres_orders "
            "(source ",
        ),
        ("INSERT INTO postgres_orders VALUES (1)", "Only SELECT queries are allowed, not INSERT."),
        ("UPDATE postgres_orders SET status = 'x'", "Only SELECT queries are allowed, not UPDATE."),
        ("DELETE FROM postgres_orders", "Only SELECT queries are allowed, not DELETE."),
        ("DROP TABLE postgres_orders", "Only SELECT queries are allowed, not DROP."),
        ("ATTACH '/tmp/x.db' AS x", "Only SELECT queries are allowed"),
        ("COPY postgres_orders TO '/tmp/out.csv'", "Only SELECT queries are allowed, not COPY."),
        ("PRAGMA database_list", "Only SELECT queries are allowed"),
        ("SELECT 1; DROP TABLE postgres_orders", "Only one statement is allowed per query."),
        ("SELECT * FROM read_csv('/etc/passwd')", "Table functions are not allowed"),
        ("SELECT * FROM read_text('/etc/hostname')", "Table functions are not allowed"),
        ("SELECT * FROM query('SELECT 1')", "Table functions are not allowed"),
        (
            "SELECT (SELECT count() FROM read_csv('/etc/passwd')) AS n",
            "Table functions are not allowed",
        ),
        ("SELECT * FROM generate_series(1, 3)", "Table functions are not allowed"),
        ("SELEC 1", "Syntax error"),
    ],
)
async def test_what_is_refused_changes_and_reads_nothing(
    sandbox: tuple[Starlette, httpx.AsyncClient],
    upstream: Upstream,
    query: str,
    detail: str,
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    await synced(client, upstream, "orders")
    response = await hogql(client, query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["type"], body["code"], body["attr"]) == (
        "validation_error",
        "hogql_query_error",
        None,
    )
    assert body["detail"].startswith(detail), body["detail"]
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_orders") == [(200,)]
    assert not await anyio.Path("/tmp/out.csv").exists()


async def test_a_deleted_tables_name_is_unknown_and_never_answered_with_another_sources(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    mine, mine_schema = await synced(client, upstream, "orders")
    schema = {"name": "orders", "should_sync": True, "sync_type": "full_refresh"}
    shop = await create_source(client, upstream, [schema], prefix="shop_", description="Shop DB")
    await wait_for_jobs(client, shop["id"], 1)
    deleted = await client.delete(f"{API}/external_data_schemas/{mine_schema}/delete_data/")
    assert deleted.status_code == 200

    # PostHog deletes the table with its data: the name is unknown, as before the first sync.
    for name in ("postgres.orders", "postgres_orders"):
        response = await hogql(client, f"SELECT count() FROM {name}")
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail == (
            f"Unknown table `{name}`. It is table orders of source {mine['id']}, which holds no "
            "data now: it was not synced since it was created or since its data was deleted "
            "(external-data-schemas-delete-data). Sync it to query it "
            "(external-data-schemas-reload)."
        )
        assert "shop" not in detail  # the other source's orders is not offered in its place
    # A name close to another source's table is answered with that table's source.
    typo = (await hogql(client, "SELECT count() FROM postgres.shop.order")).json()["detail"]
    assert typo == (
        "Unknown table `postgres.shop.order`. Did you mean: postgres.shop.orders "
        f'(source {shop["id"]}, "Shop DB")?'
    )
    still = await hogql(client, "SELECT count() FROM postgres.shop.orders")
    assert still.json()["results"] == [[200]]

    await reload_and_wait(client, mine["id"], mine_schema, 2)
    again = await hogql(client, "SELECT count() FROM postgres.orders")
    assert again.status_code == 200, again.text
    assert again.json()["results"] == [[200]]


async def test_a_table_not_synced_yet_says_why_its_name_is_unknown(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL + "CREATE TABLE refunds (id int PRIMARY KEY);")
    source = await create_source(
        client,
        upstream,
        [
            {"name": "orders", "should_sync": True, "sync_type": "full_refresh"},
            {"name": "refunds", "should_sync": False},
        ],
    )
    await wait_for_jobs(client, source["id"], 1)
    detail = (await hogql(client, "SELECT * FROM postgres.refunds")).json()["detail"]
    assert detail == (
        f"Unknown table `postgres.refunds`. It is table refunds of source {source['id']}, which "
        "holds no data now: it is not synced. Turn its sync on (should_sync) to import it "
        "(external-data-schemas-partial-update)."
    )
    assert schema_by_name(source, "refunds")["table"] is None


def test_close_names_are_grouped_by_table_and_named_by_source() -> None:
    catalog = Catalog(
        tables={
            "postgres.orders": "postgres_orders",
            "postgres_orders": "postgres_orders",
            "postgres.shop.orders": "shop_postgres_orders",
            "shop_postgres_orders": "shop_postgres_orders",
        },
        owners={"postgres_orders": "source a", "shop_postgres_orders": "source b"},
        empty={"mysql.orders": "It is table orders of source c, which holds no data now."},
    )
    with pytest.raises(QueryError) as raised:
        compile_query("SELECT * FROM postgres.order", catalog, default_limit=1, max_limit=1)
    assert str(raised.value) == (
        "Unknown table `postgres.order`. Did you mean: postgres.orders or postgres_orders "
        "(source a), postgres.shop.orders or shop_postgres_orders (source b)?"
    )
    with pytest.raises(QueryError) as raised:
        compile_query("SELECT * FROM mysql.orders", catalog, default_limit=1, max_limit=1)
    assert str(raised.value) == (
        "Unknown table `mysql.orders`. It is table orders of source c, which holds no data now."
    )
    with pytest.raises(QueryError, match=r"^Unknown table `nothing_like_it`\.$"):
        compile_query("SELECT * FROM nothing_like_it", catalog, default_limit=1, max_limit=1)


async def test_duckdb_itself_refuses_files_and_writes(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    """The locks behind the parse check: what a query could still try is refused by DuckDB."""
    app, _ = sandbox
    cursor = app.state.services.warehouse.cursor()
    for statement in (
        "SELECT * FROM read_text('/etc/hostname')",
        "COPY (SELECT 1) TO '/tmp/sandbox-escape.csv'",
        "ATTACH '/tmp/sandbox-escape.db'",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "INSTALL httpfs",
    ):
        with pytest.raises(duckdb.Error):
            cursor.execute(statement)
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    with pytest.raises(duckdb.Error, match="read-only"):
        cursor.execute("CREATE TABLE sneaky (x int)")
    cursor.execute("ROLLBACK")
    assert not await anyio.Path("/tmp/sandbox-escape.csv").exists()


async def test_a_query_during_a_sync_neither_blocks_it_nor_sees_half_a_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(ORDERS_SQL)
    source, schema_id = await synced(client, upstream, "orders")
    upstream.execute(
        "INSERT INTO orders SELECT g, 'paid', 1, 1, now() FROM generate_series(201, 300) g"
    )
    with gate(app, "publish") as held:
        reload = await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        assert reload.status_code == 200
        await held.reached()
        # The sync has its rows and waits to publish: a query sees the table as it was.
        with anyio.fail_after(10):
            during = await hogql(client, "SELECT count() FROM postgres.orders")
        assert during.json()["results"] == [[200]]
    jobs = await wait_for_jobs(client, source["id"], 2)
    assert jobs[0]["status"] == "Completed"
    after = await hogql(client, "SELECT count() FROM postgres.orders")
    assert after.json()["results"] == [[300]]


async def test_database_schema_lists_the_synced_tables(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    await synced(client, upstream, "orders")
    response = await client.post(QUERY, json={"query": {"kind": "DatabaseSchemaQuery"}})
    tables: dict[str, Any] = response.json()["tables"]
    assert list(tables) == ["postgres.orders"]
    orders = tables["postgres.orders"]
    assert orders["type"] == "data_warehouse"
    assert orders["search_aliases"] == ["postgres_orders"]
    assert orders["row_count"] == 200
    assert {k: f["type"] for k, f in orders["fields"].items()} == {
        "id": "integer",
        "status": "string",
        "amount": "decimal",
        "big": "integer",
        "updated_at": "datetime",
    }
    assert orders["source"]["source_type"] == "Postgres"
    unknown = await client.post(QUERY, json={"query": {"kind": "TrendsQuery"}})
    assert unknown.status_code == 400
