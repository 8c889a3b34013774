"""`data_warehouse/data_health_issues/`: a really failed sync, a table stale against its
frequency and a table marked Running with no sync, in PostHog's shape and order."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.store import iso, now
from tests.sandbox.support import (
    API,
    Upstream,
    create_source,
    schema_by_name,
    services_of,
    synced,
    wait_for_jobs,
)

pytestmark = pytest.mark.anyio

HEALTH = f"{API}/data_warehouse/data_health_issues/"
TABLES_SQL = """
CREATE TABLE orders (id int PRIMARY KEY);
CREATE TABLE events (id int PRIMARY KEY);
CREATE TABLE tags (id int PRIMARY KEY);
"""


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(HEALTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["count"] == len(body["results"])
    return body


def edit_schema(app: Starlette, schema_id: str, **changes: Any) -> None:
    """Change a schema's stored state, as time passing or a lost worker would."""
    store = services_of(app).store
    with store.lock:
        store.save(replace(store.schemas[schema_id], **changes))


async def test_a_failed_sync_is_an_issue_until_the_table_is_disabled(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    assert await health(client) == {"results": [], "count": 0}
    source, orders = await synced(client, upstream, "orders")
    assert await health(client) == {"results": [], "count": 0}
    synced_at = (await client.get(f"{API}/external_data_schemas/{orders}/")).json()
    upstream.execute("DROP TABLE orders")
    await client.post(f"{API}/external_data_schemas/{orders}/reload/")
    await wait_for_jobs(client, source["id"], 2)
    assert await health(client) == {
        "results": [
            {
                "id": orders,
                "name": "orders",
                "type": "external_data_sync",
                "source_type": "Postgres",
                "status": "failed",
                "error": "Table orders no longer exists in the source",
                # PostHog's failed_at is the table's last successful sync.
                "failed_at": synced_at["last_synced_at"],
                "url": f"/data-warehouse/sources/{source['id']}",
            }
        ],
        "count": 1,
    }
    disabled = await client.patch(
        f"{API}/external_data_schemas/{orders}/", json={"should_sync": False}
    )
    assert disabled.status_code == 200, disabled.text
    assert await health(client) == {"results": [], "count": 0}


async def test_stale_and_stuck_tables_are_issues_newest_first(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL)
    enabled = {"should_sync": True, "sync_type": "full_refresh"}
    source = await create_source(
        client, upstream, [{"name": name, **enabled} for name in ("orders", "events", "tags")]
    )
    await wait_for_jobs(client, source["id"], 3)
    orders, events, tags = (schema_by_name(source, n)["id"] for n in ("orders", "events", "tags"))
    for schema_id in (orders, events, tags):
        hourly = await client.patch(
            f"{API}/external_data_schemas/{schema_id}/", json={"sync_frequency": "1hour"}
        )
        assert hourly.status_code == 200, hourly.text
    moment = now()
    # Within twice the frequency is on time; beyond it is stale.
    edit_schema(app, orders, last_synced_at=iso(moment - timedelta(minutes=110)))
    assert await health(client) == {"results": [], "count": 0}
    three_hours = iso(moment - timedelta(hours=3))
    five_hours = iso(moment - timedelta(hours=5))
    edit_schema(app, orders, last_synced_at=five_hours)
    edit_schema(app, events, last_synced_at=three_hours)
    edit_schema(app, tags, status="Running")
    tags_synced = (await client.get(f"{API}/external_data_schemas/{tags}/")).json()
    body = await health(client)
    assert [(i["name"], i["status"], i["failed_at"]) for i in body["results"]] == [
        ("tags", "stuck", tags_synced["last_synced_at"]),
        ("events", "stale", three_hours),
        ("orders", "stale", five_hours),
    ]
    assert body["results"][1]["error"] == (
        f"Stale: last synced at {three_hours}, but set to sync every 1hour"
    )
    assert body["results"][0]["error"] == "Marked Running, but no sync of this table is running"
    # A disabled table is never stale.
    edit_schema(app, orders, should_sync=False)
    assert [i["name"] for i in (await health(client))["results"]] == ["tags", "events"]
