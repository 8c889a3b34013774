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
            settings(environment_id="1", confirm_destructive=True),
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
