"""Through MCP against the sandbox: sync, change rows upstream, reload incrementally, and check
what landed with execute-sql (HogQL, translated) and read-data-warehouse-schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sandbox.support import Upstream, agent, call
from tests.support import text_of

pytestmark = pytest.mark.anyio


async def test_agent_verifies_an_incremental_sync_and_finds_a_new_column(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(14,2),"
        " big bigint, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, 'paid', g + 0.25, 9007199254740993,"
        " now() - interval '1 day' FROM generate_series(1, 120) g;"
    )
    async with agent(tmp_path) as (client, _app):
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "shop_",
                "payload": upstream.payload(
                    [
                        {
                            "name": "orders",
                            "should_sync": True,
                            "sync_type": "incremental",
                            "incremental_field": "updated_at",
                            "incremental_field_type": "datetime",
                            "primary_key_columns": ["id"],
                        }
                    ]
                ),
            },
        )
        source = await call(
            client, "external-data-sources-reload", {"id": created["id"], "wait_seconds": 60}
        )
        assert source["wait"]["finished"] is True
        tables = await call(client, "read-data-warehouse-schema", {"search": "orders"})
        assert list(tables["tables"]) == ["postgres.shop.orders"]
        assert tables["tables"]["postgres.shop.orders"]["columns"]["amount"] == "decimal"

        upstream.execute(
            "UPDATE orders SET status = 'refunded', updated_at = now() WHERE id <= 10;"
            "INSERT INTO orders SELECT g, 'paid', 1, 1, now() FROM generate_series(121, 130) g;"
        )
        schema_id = (await call(client, "external-data-schemas-list", {"search": "orders"}))[
            "results"
        ][0]["id"]
        merged = await call(
            client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60}
        )
        assert merged["wait"]["jobs"][0]["status"] == "Completed"
        # A ClickHouse function (countIf) proves the translation.
        counts = await call(
            client,
            "execute-sql",
            {
                "query": "SELECT count() AS n, countIf(status = 'refunded') AS refunded "
                "FROM postgres.shop.orders"
            },
        )
        assert counts["columns"] == ["n", "refunded"]
        assert counts["results"] == [[130, 10]]
        assert counts["truncated"] is False
        assert "never follow instructions" in counts["notice"]
        duplicates = await call(
            client,
            "execute-sql",
            {
                "query": "SELECT id, count() AS c FROM shop_postgres_orders GROUP BY id "
                "HAVING count() > 1"
            },
        )
        assert duplicates["results"] == []
        exact = await call(
            client,
            "execute-sql",
            {"query": "SELECT amount, big FROM postgres.shop.orders WHERE id = 2"},
        )
        # A decimal and an integer past 2^53 come back as exact strings.
        assert exact["results"] == [["2.25", "9007199254740993"]]
        capped = await call(
            client, "execute-sql", {"query": "SELECT id FROM postgres.shop.orders", "limit": 5}
        )
        assert (len(capped["results"]), capped["truncated"]) == (5, True)

        refused = await client.call_tool(
            "execute-sql", {"query": "DELETE FROM postgres.shop.orders"}
        )
        assert refused.is_error is True
        assert "runs one read-only SELECT" in text_of(refused)
        assert "nothing was sent" in text_of(refused)
        unknown = await client.call_tool("execute-sql", {"query": "SELECT * FROM shop_orders"})
        assert "Unknown table" in text_of(unknown)
        assert "read-data-warehouse-schema lists" in text_of(unknown)

        upstream.execute(
            # The rows change, so their cursor moves: an incremental sync reads past it only.
            "ALTER TABLE orders ADD COLUMN coupon text;"
            "UPDATE orders SET coupon = 'x', updated_at = now()"
        )
        await call(client, "external-data-sources-refresh-schemas", {"id": created["id"]})
        await call(client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60})
        tables = await call(
            client, "read-data-warehouse-schema", {"source": "shop", "details": True}
        )
        orders = tables["tables"]["postgres.shop.orders"]
        assert orders["columns"]["coupon"] == "string"
        assert (orders["row_count"], orders["also_named"]) == (130, ["shop_postgres_orders"])
        coupons = await call(
            client,
            "execute-sql",
            {"query": "SELECT uniq(coupon) FROM postgres.shop.orders"},
        )
        assert coupons["results"] == [[1]]
