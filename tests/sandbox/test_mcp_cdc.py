"""Through MCP against a PostgreSQL with wal_level `logical`: check CDC, create a CDC source,
change rows upstream, sync, and read the result with execute-sql; a slot dropped by hand is
named by the audit and mended by repair-cdc; deleting the source drops its slot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.sandbox.support import Upstream, agent, call

pytestmark = pytest.mark.anyio

CURRENT = "SELECT id, amount, note FROM postgres.shop.orders WHERE NOT _ph_deleted ORDER BY id"


def upstream_rows(upstream: Upstream) -> list[list[Any]]:
    return [
        list(row) for row in upstream.execute("SELECT id, amount, note FROM orders ORDER BY id")
    ]


async def warehouse_rows(client: Client) -> list[list[Any]]:
    return list((await call(client, "execute-sql", {"query": CURRENT}))["results"])


def slots(upstream: Upstream) -> list[tuple[Any, ...]]:
    return upstream.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
    )


@pytest.mark.slow(seconds=8)
async def test_agent_syncs_a_cdc_table_and_repairs_its_lost_slot(
    tmp_path: Path, logical_upstream: Upstream
) -> None:
    logical_upstream.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount int, note text);"
        "INSERT INTO orders SELECT g, g * 10, 'n' || g FROM generate_series(1, 5) g"
    )
    connection = logical_upstream.payload([])
    connection.pop("schemas")
    async with agent(tmp_path) as (client, _app):
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
        schema = {"name": "orders", "should_sync": True, "sync_type": "cdc"}
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "shop_",
                "payload": logical_upstream.payload([schema], cdc_enabled=True),
            },
        )
        source_id = created["id"]
        await call(client, "external-data-sources-reload", {"id": source_id, "wait_seconds": 60})
        assert await warehouse_rows(client) == upstream_rows(logical_upstream)
        schema_id = (await call(client, "external-data-schemas-list", {"search": "orders"}))[
            "results"
        ][0]["id"]

        logical_upstream.execute(
            "INSERT INTO orders VALUES (6, 60, 'six'); UPDATE orders SET amount = 0 WHERE id = 1;"
            "DELETE FROM orders WHERE id = 2"
        )
        reload = {"id": schema_id, "wait_seconds": 60}
        synced = await call(client, "external-data-schemas-reload", reload)
        assert synced["wait"]["jobs"][0]["status"] == "Completed"
        assert await warehouse_rows(client) == upstream_rows(logical_upstream)

        # The slot is dropped behind PostHog's back: the sync fails, the audit names the repair.
        ((slot,),) = slots(logical_upstream)
        logical_upstream.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        logical_upstream.execute("UPDATE orders SET note = 'lost' WHERE id = 3")
        failed = await call(client, "external-data-schemas-reload", reload)
        assert failed["wait"]["jobs"][0]["status"] == "Failed"
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
