"""Through MCP against a PostgreSQL with wal_level `logical`: check CDC, create a CDC source,
change rows upstream, sync, and read the result with execute-sql in each `cdc_table_mode`; a
slot dropped by hand is named by the audit and mended by repair-cdc; deleting the source drops
its slot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.sandbox.support import Upstream, agent, call

pytestmark = pytest.mark.anyio

CURRENT = "SELECT id, amount, note FROM postgres.shop.orders WHERE NOT _ph_deleted ORDER BY id"
# The columns PostHog's CDC gives each table (`cdc/batcher.py`), and SCD2's on the change log.
CDC_COLUMNS = ["_ph_cdc_op", "_ph_cdc_timestamp", "_ph_cdc_seq", "_ph_deleted", "_ph_deleted_at"]
LOG_COLUMNS = [*CDC_COLUMNS, "valid_from", "valid_to"]
# The tables each mode writes, as execute-sql names them, and their columns after the data's.
TABLES = {
    "consolidated": {"postgres.shop.orders": CDC_COLUMNS},
    "cdc_only": {"postgres.shop.orders_cdc": LOG_COLUMNS},
    "both": {"postgres.shop.orders": CDC_COLUMNS, "postgres.shop.orders_cdc": LOG_COLUMNS},
}
# Upstream, every change to `orders` is also written to `orders_audit` by a trigger, in the
# transaction that makes it: the change log a CDC table must end up holding. The audit table is
# not in the source's publication.
AUDITED_TABLE_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount int, note text);
CREATE TABLE orders_audit (
    xact bigint DEFAULT pg_current_xact_id()::text::bigint, op text, id bigint, amount int,
    note text
);
CREATE FUNCTION audit_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO orders_audit (op, id, amount, note) VALUES ('D', OLD.id, OLD.amount, OLD.note);
    ELSE
        INSERT INTO orders_audit (op, id, amount, note)
        VALUES (left(TG_OP, 1), NEW.id, NEW.amount, NEW.note);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION audit_orders();
INSERT INTO orders SELECT g, g * 10, 'n' || g FROM generate_series(1, 5) g;
"""
# One transaction each, so commit order orders the log (a transaction's changes share
# `_ph_cdc_seq`, its commit position): inserts, updates and deletes, a key deleted and
# inserted again, a NULL written, several rows in one statement.
CHANGES = [
    "INSERT INTO orders VALUES (6, 60, 'six')",
    "UPDATE orders SET amount = amount + 1 WHERE id IN (1, 6)",
    "DELETE FROM orders WHERE id = 2",
    "UPDATE orders SET note = NULL WHERE id = 3",
    "DELETE FROM orders WHERE id = 6",
    "INSERT INTO orders VALUES (6, 66, 'again')",
    "UPDATE orders SET note = 'last' WHERE id = 6",
]


def upstream_rows(upstream: Upstream) -> list[list[Any]]:
    return [
        list(row) for row in upstream.execute("SELECT id, amount, note FROM orders ORDER BY id")
    ]


def upstream_log(upstream: Upstream) -> list[list[Any]]:
    """Every change upstream in commit order (the snapshot's rows as inserts), with whether it
    is its key's last: the change log's rows, `valid_to IS NULL` for the last."""
    rows = upstream.execute(
        "SELECT id, amount, note, op, op = 'D', "
        "row_number() OVER (PARTITION BY id ORDER BY xact DESC) = 1 "
        "FROM orders_audit ORDER BY xact, id"
    )
    return [list(row) for row in rows]


async def sql(client: Client, query: str) -> dict[str, Any]:
    return await call(client, "execute-sql", {"query": query})


async def warehouse_rows(client: Client, table: str = "postgres.shop.orders") -> list[list[Any]]:
    query = f"SELECT id, amount, note FROM {table} WHERE NOT _ph_deleted ORDER BY id"
    if table.endswith("_cdc"):  # the log's current rows: each key's open version
        query = query.replace("WHERE", "WHERE valid_to IS NULL AND")
    return list((await sql(client, query))["results"])


async def warehouse_log(client: Client, table: str) -> list[list[Any]]:
    query = (
        "SELECT id, amount, note, _ph_cdc_op, _ph_deleted, valid_to IS NULL "
        f"FROM {table} ORDER BY _ph_cdc_seq, id"
    )
    return list((await sql(client, query))["results"])


def slots(upstream: Upstream) -> list[tuple[Any, ...]]:
    return upstream.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
    )


async def create_cdc_source(client: Client, upstream: Upstream, mode: str) -> tuple[str, str]:
    """Through MCP: check CDC on `orders`, create a PostHog-managed CDC source syncing it in
    `mode`, wait for its snapshot; return the source's and the table's ids."""
    connection = upstream.payload([])
    connection.pop("schemas")
    check = await call(
        client,
        "external-data-sources-check-cdc-prerequisites-create",
        {
            "source_type": "Postgres",
            "payload": connection,
            "tables": ["orders"],
            "cdc_management_mode": "posthog",
        },
    )
    assert check == {"valid": True, "errors": []}
    schema = {"name": "orders", "should_sync": True, "sync_type": "cdc", "cdc_table_mode": mode}
    created = await call(
        client,
        "external-data-sources-create",
        {
            "source_type": "Postgres",
            "prefix": "shop_",
            "payload": upstream.payload([schema], cdc_enabled=True),
        },
    )
    source_id = created["id"]
    await call(client, "external-data-sources-reload", {"id": source_id, "wait_seconds": 60})
    listed = await call(client, "external-data-schemas-list", {"search": "orders"})
    return source_id, listed["results"][0]["id"]


async def resync(client: Client, schema_id: str) -> dict[str, Any]:
    """Sync one CDC table through MCP and wait for its job; return the job."""
    synced = await call(
        client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60}
    )
    job: dict[str, Any] = synced["wait"]["jobs"][0]
    return job


@pytest.mark.slow(seconds=8)
@pytest.mark.parametrize("mode", list(TABLES))
async def test_execute_sql_shows_the_upstream_rows_or_the_change_log_in_each_cdc_table_mode(
    tmp_path: Path, logical_upstream: Upstream, mode: str
) -> None:
    logical_upstream.execute(AUDITED_TABLE_SQL)
    async with agent(tmp_path) as (client, _app):
        source_id, schema_id = await create_cdc_source(client, logical_upstream, mode)
        for change in CHANGES:
            logical_upstream.execute(change)
        job = await resync(client, schema_id)
        assert (job["status"], job["rows_synced"]) == ("Completed", 8)  # CHANGES' row changes

        for table, cdc_columns in TABLES[mode].items():
            # PostHog's column names, after the table's own.
            empty = await sql(client, f"SELECT * FROM {table} LIMIT 0")
            assert empty["columns"] == ["id", "amount", "note", *cdc_columns]
            # Whichever the mode, each table's live rows are exactly the upstream ones...
            assert await warehouse_rows(client, table) == upstream_rows(logical_upstream)
            # ...and the change log holds every change, once, in commit order.
            if table.endswith("_cdc"):
                assert await warehouse_log(client, table) == upstream_log(logical_upstream)
        # The mode's tables and no other, as read-data-warehouse-schema lists them.
        listed = await call(client, "read-data-warehouse-schema", {"search": "orders"})
        assert {name: list(t["columns"]) for name, t in listed["tables"].items()} == {
            name: ["id", "amount", "note", *columns] for name, columns in TABLES[mode].items()
        }

        # A sync with nothing new changes nothing.
        assert (await resync(client, schema_id))["rows_synced"] == 0
        for table in TABLES[mode]:
            assert await warehouse_rows(client, table) == upstream_rows(logical_upstream)
        await call(client, "external-data-sources-destroy", {"id": source_id})


@pytest.mark.slow(seconds=8)
async def test_agent_syncs_a_cdc_table_and_repairs_its_lost_slot(
    tmp_path: Path, logical_upstream: Upstream
) -> None:
    logical_upstream.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount int, note text);"
        "INSERT INTO orders SELECT g, g * 10, 'n' || g FROM generate_series(1, 5) g"
    )
    async with agent(tmp_path) as (client, _app):
        source_id, schema_id = await create_cdc_source(client, logical_upstream, "consolidated")
        assert await warehouse_rows(client) == upstream_rows(logical_upstream)

        logical_upstream.execute(
            "INSERT INTO orders VALUES (6, 60, 'six'); UPDATE orders SET amount = 0 WHERE id = 1;"
            "DELETE FROM orders WHERE id = 2"
        )
        assert (await resync(client, schema_id))["status"] == "Completed"
        assert await warehouse_rows(client) == upstream_rows(logical_upstream)

        # The slot is dropped behind PostHog's back: the sync fails, the audit names the repair.
        ((slot,),) = slots(logical_upstream)
        logical_upstream.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        logical_upstream.execute("UPDATE orders SET note = 'lost' WHERE id = 3")
        assert (await resync(client, schema_id))["status"] == "Failed"
        report = await call(client, "external-data-sources-audit", {})
        assert [(f["kind"], f.get("source_id")) for f in report["findings"]] == [
            ("cdc_slot_lost", source_id)
        ]
        assert report["findings"][0]["next"].startswith("external-data-sources-repair-cdc-create")

        repaired = await call(client, "external-data-sources-repair-cdc-create", {"id": source_id})
        assert repaired == {"success": True, "schemas_reset": 1}
        await call(client, "external-data-sources-reload", {"id": source_id, "wait_seconds": 60})
        assert slots(logical_upstream) == [(slot,)]
        assert await warehouse_rows(client) == upstream_rows(logical_upstream)
        assert (await call(client, "external-data-sources-audit", {}))["findings"] == []

        await call(client, "external-data-sources-destroy", {"id": source_id})
    assert slots(logical_upstream) == []
    assert logical_upstream.execute("SELECT pubname FROM pg_publication") == []
