"""End to end: an MCP client drives the server, which drives the sandbox, which syncs Postgres."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mcp import Client

from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import (
    API,
    Upstream,
    call,
    enable_and_sync,
    sandbox_process,
    wait_until_up,
)
from tests.support import free_port, settings, text_of

pytestmark = pytest.mark.anyio


async def test_mcp_tools_sync_a_postgres_table_through_the_in_process_sandbox(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, now() FROM generate_series(1, 500) g;"
    )
    config = settings(
        sandbox=True,
        sandbox_dir=tmp_path / "sandbox",
        demo=False,
        personal_api_key=None,
        environment_id=None,
    )
    async with Client(create_server(config)) as client:
        created = await call(
            client,
            "external-data-sources-create",
            {"source_type": "Postgres", "payload": upstream.payload([{"name": "orders"}])},
        )
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        assert "password" not in str(source)
        schema_id = source["schemas"][0]["id"]
        synced = await enable_and_sync(client, schema_id)
        assert synced["wait"]["finished"] is True, synced
        jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
        assert jobs["results"][0]["status"] == "Completed"
        assert jobs["results"][0]["rows_synced"] == 500
        cancel = await client.call_tool("external-data-schemas-cancel", {"id": schema_id})
        assert cancel.is_error is True
        assert "No running sync to cancel." in text_of(cancel)
        webhook = await client.call_tool(
            "external-data-sources-create-webhook-create", {"id": created["id"]}
        )
        assert webhook.is_error is True
        assert "does not support webhooks" in text_of(webhook)


async def test_mcp_server_talks_to_a_sandbox_over_loopback_with_a_key(tmp_path: Path) -> None:
    port = free_port()
    with sandbox_process(tmp_path / "sandbox", port, "--api-key", "phx_sandbox"):
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": "Bearer phx_sandbox"}
        ) as http:
            await wait_until_up(http)
            assert (await http.get(f"{API}/external_data_schemas/")).status_code == 200
        good = settings(
            host=f"http://127.0.0.1:{port}", personal_api_key="phx_sandbox", environment_id="1"
        )
        async with Client(create_server(good)) as client:
            listed = await call(client, "external-data-sources-list", {})
            assert listed["count"] == 0
        bad = settings(
            host=f"http://127.0.0.1:{port}", personal_api_key="phx_wrong", environment_id="1"
        )
        async with Client(create_server(bad)) as client:
            result = await client.call_tool("external-data-sources-list", {})
            assert result.is_error is True
