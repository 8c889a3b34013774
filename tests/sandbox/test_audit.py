"""The health audit against a sandbox seeded with each problem (a refused credential and a stale
table written into the sandbox's files before it starts, a table left Running with no sync),
and against a healthy one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.store import Store, iso
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import Upstream, call, client_for, services_of, wait_for_jobs
from tests.support import settings

pytestmark = pytest.mark.anyio

TABLES_SQL = """
CREATE TABLE orders (id int PRIMARY KEY, total int);
INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g;
CREATE TABLE tags (id int PRIMARY KEY, label text);
CREATE TABLE notes (id int PRIMARY KEY, body text);
"""


@asynccontextmanager
async def agent_in(directory: Path) -> AsyncIterator[tuple[Client, Any]]:
    async with open_sandbox(directory, demo=False) as app:
        server = create_server(settings(environment_id="1"), transport=httpx.ASGITransport(app=app))
        async with Client(server, mode="legacy") as client:
            yield client, app


async def create_synced(
    client: Client, upstream: Upstream, prefix: str, tables: list[str]
) -> dict[str, Any]:
    schemas = [{"name": t, "should_sync": True, "sync_type": "full_refresh"} for t in tables]
    created = await call(
        client,
        "external-data-sources-create",
        {"source_type": "Postgres", "prefix": prefix, "payload": upstream.payload(schemas)},
    )
    await call(client, "external-data-sources-reload", {"id": created["id"], "wait_seconds": 60})
    return await call(client, "external-data-sources-retrieve", {"id": created["id"]})


async def test_the_audit_finds_each_seeded_problem_with_its_next_step(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(TABLES_SQL)
    directory = tmp_path / "sandbox"
    async with agent_in(directory) as (client, _):
        shop = await create_synced(client, upstream, "shop_", ["orders"])
        crm = await create_synced(client, upstream, "crm_", ["tags", "notes"])
        healthy = await call(client, "external-data-sources-audit", {})
        assert healthy["findings"] == []
        assert healthy["checked"]["sources"] == 2
    # Written into the sandbox's files while it is stopped: a password that no longer works, and
    # a table whose last sync is three days old on an hourly schedule.
    store = Store(directory / "metadata.sqlite3")
    source = store.sources[shop["id"]]
    store.save(replace(source, job_inputs={**source.job_inputs, "password": "rotated-away"}))
    tags = next(s for s in store.schemas.values() if s.name == "tags")
    stale_at = iso(datetime.now(UTC) - timedelta(days=3))
    store.save(replace(tags, sync_frequency="1hour", last_synced_at=stale_at))
    store.close()
    async with agent_in(directory) as (client, app):
        orders = shop["schemas"][0]["id"]
        failed = await call(
            client, "external-data-schemas-reload", {"id": orders, "wait_seconds": 60}
        )
        assert failed["wait"]["jobs"][0]["status"] == "Failed"
        # A status left Running with no sync (the sandbox clears those when it starts, so this
        # one is set while it runs).
        notes = next(s["id"] for s in crm["schemas"] if s["name"] == "notes")
        live = services_of(app).store
        with live.lock:
            live.save(replace(live.schemas[notes], status="Running"))
        report = await call(client, "external-data-sources-audit", {})
    found = {f["kind"]: f for f in report["findings"]}
    assert set(found) == {"failed", "stale", "stuck"}, report["findings"]
    assert "shop_" in found["failed"]["where"] and "orders" in found["failed"]["where"]
    assert "data-warehouse-source-connect-link" in found["failed"]["next"]
    assert "external-data-sources-partial-update" in found["failed"]["next"]
    # Each finding names its ids, which the next step's tools take.
    assert found["failed"]["schema_id"] == orders
    assert found["failed"]["source_id"] == shop["id"]
    assert found["stuck"]["schema_id"] == notes
    assert "tags" in found["stale"]["where"]
    assert found["stale"]["next"].startswith("external-data-schemas-reload")
    assert "notes" in found["stuck"]["where"]
    assert found["stuck"]["next"].startswith("external-data-schemas-cancel")
    assert "Not resync" in found["stuck"]["next"]
    assert report["checked"]["data_health"] == {"checked": True}


async def test_a_cdc_table_that_stopped_syncing_is_named_as_holding_back_the_slots_wal(
    tmp_path: Path, logical_upstream: Upstream
) -> None:
    logical_upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);"
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g"
    )
    schema = {"name": "orders", "should_sync": True, "sync_type": "cdc"}
    payload = logical_upstream.payload([schema], cdc_enabled=True)
    async with agent_in(tmp_path / "sandbox") as (client, app):
        created = await call(
            client,
            "external-data-sources-create",
            {"source_type": "Postgres", "prefix": "shop_", "payload": payload},
        )
        async with client_for(app) as http:
            await wait_for_jobs(http, created["id"], 1)  # the snapshot the create started
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        assert (await call(client, "external-data-sources-audit", {}))["findings"] == []
        # Changes the slot keeps while the table's last sync grows old on an hourly schedule.
        logical_upstream.execute("UPDATE orders SET total = total + 1")
        (held,) = logical_upstream.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
            "FROM pg_replication_slots WHERE database = current_database()"
        )[0]
        assert held > 0
        live = services_of(app).store
        orders = source["schemas"][0]["id"]
        with live.lock:
            stale_at = iso(datetime.now(UTC) - timedelta(days=3))
            live.save(
                replace(live.schemas[orders], sync_frequency="1hour", last_synced_at=stale_at)
            )
        report = await call(client, "external-data-sources-audit", {})
        await call(client, "external-data-sources-destroy", {"id": created["id"]})
    found = {f["kind"]: f for f in report["findings"]}
    assert set(found) == {"stale", "cdc_wal"}, report["findings"]
    assert found["cdc_wal"]["source_id"] == created["id"]
    assert "orders" in found["cdc_wal"]["cause"]
    assert "10240 MB" in found["cdc_wal"]["affects"]
