"""Against the sandbox: a destructive call asks first and drops nothing until confirmed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import Upstream, call, client_for, synced, warehouse_rows
from tests.support import settings

pytestmark = pytest.mark.anyio


async def test_delete_data_drops_the_table_only_after_the_token_comes_back(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 7)"
    )
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app:
        async with client_for(app) as http:
            _, schema_id = await synced(http, upstream, "orders")
        server = create_server(
            settings(environment_id="1", confirm="token"),
            transport=httpx.ASGITransport(app=app),
        )
        async with Client(server, mode="legacy") as client:
            first = await call(client, "external-data-schemas-delete-data", {"id": schema_id})
            assert first["preview"]["tables"][0]["rows"] == 7
            assert warehouse_rows(app, "SELECT count(*) FROM postgres_orders") == [(7,)]
            await call(
                client,
                "external-data-schemas-delete-data",
                {"id": schema_id, "confirmation_token": first["confirmation_token"]},
            )
            schema = await call(client, "external-data-schemas-retrieve", {"id": schema_id})
    assert schema["table"] is None


async def test_a_row_filter_that_would_empty_a_table_asks_first_with_the_rows_it_removes(
    tmp_path: Path, upstream: Upstream
) -> None:
    # The attack (F5): narrow a full_refresh table's row filter to nothing, then reload; the
    # reload's replace empties the table, with nothing asked. Now the filter change asks.
    upstream.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, plan text);"
        "INSERT INTO accounts SELECT g, CASE WHEN g % 4 = 0 THEN 'paid' ELSE 'free' END "
        "FROM generate_series(1, 40) g"
    )
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app:
        async with client_for(app) as http:
            _, schema_id = await synced(http, upstream, "accounts")
        server = create_server(
            settings(environment_id="1", confirm="token"),
            transport=httpx.ASGITransport(app=app),
        )
        emptying = {"id": schema_id, "row_filters": [{"column": "id", "operator": "<", "value": 0}]}
        async with Client(server, mode="legacy") as client:
            first = await call(client, "external-data-schemas-partial-update", emptying)
            assert first["confirmation_required"] is True
            (table,) = first["preview"]["tables"]
            assert table["rows_removed"] == 40
            assert any("row filters" in r for r in table["removes"])
            schema = await call(client, "external-data-schemas-retrieve", {"id": schema_id})
            assert not schema.get("row_filters")  # nothing was saved
            await call(
                client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60}
            )
            assert warehouse_rows(app, "SELECT count(*) FROM postgres_accounts") == [(40,)]

            # A filter that keeps 10 of 40 rows says so; with the person's token it acts.
            paid = {
                "id": schema_id,
                "row_filters": [{"column": "plan", "operator": "=", "value": "paid"}],
            }
            asked = await call(client, "external-data-schemas-partial-update", paid)
            assert asked["preview"]["tables"][0]["rows_removed"] == 30
            token = asked["confirmation_token"]
            saved = await call(
                client,
                "external-data-schemas-partial-update",
                {**paid, "confirmation_token": token},
            )
            assert saved["row_filters"] == paid["row_filters"]

            # A change that removes nothing (a pause) acts at once, as before.
            paused = await call(
                client,
                "external-data-schemas-partial-update",
                {"id": schema_id, "should_sync": False},
            )
            assert paused["should_sync"] is False
