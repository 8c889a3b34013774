"""A wait longer than the server's cap: the call returns within the cap with the running jobs
and how to keep waiting, progress keeps coming, and external-data-sources-jobs-wait sees the
syncs finish."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import Upstream, call, gate
from tests.support import settings

pytestmark = pytest.mark.anyio

CAP = 1.5


async def test_a_sync_slower_than_the_cap_is_followed_in_two_calls(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);"
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 50) g;"
    )
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app:
        config = settings(environment_id="1", wait_cap_seconds=CAP)
        server = create_server(config, transport=httpx.ASGITransport(app=app))
        async with Client(server, mode="legacy") as client:
            created = await call(
                client,
                "external-data-sources-create",
                {
                    "source_type": "Postgres",
                    "payload": upstream.payload([{"name": "orders", "should_sync": False}]),
                },
            )
            source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
            schema_id = source["schemas"][0]["id"]
            await call(
                client,
                "external-data-schemas-partial-update",
                {"id": schema_id, "sync_type": "full_refresh"},
            )
            progress: list[str] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            with gate(app, "publish") as held:
                first = await call(
                    client,
                    "external-data-schemas-reload",
                    {"id": schema_id, "wait_seconds": 600},
                    progress_callback=on_progress,
                )
                # It answered while the sync is held at publish: within the cap, not the 600 s.
                await held.reached()
                assert first["wait"]["finished"] is False
                assert [j["status"] for j in first["wait"]["jobs"]] == ["Running"]
                assert "external-data-sources-jobs-wait" in first["wait"]["hint"]
                assert f"at most {CAP:g} s per call" in first["wait"]["hint"]
                assert progress and "syncs finished" in progress[-1]
            # The gate is open: the sync publishes; the resumed wait sees it finish.
            resumed = await call(
                client,
                "external-data-sources-jobs-wait",
                {"id": created["id"], "schemas": ["orders"], "wait_seconds": 60},
            )
    assert resumed["wait"]["finished"] is True
    assert [(j["status"], j["rows_synced"]) for j in resumed["results"]] == [("Completed", 50)]
