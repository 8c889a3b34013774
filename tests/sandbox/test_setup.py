"""`database_schema/`, `setup/`, `update_webhook_inputs/` and `preview_resource/` against real
upstream databases, with PostHog's answers and error texts."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.discovery import RLS_WARNING_MESSAGE
from tests.sandbox.support import (
    API,
    MySQLUpstream,
    Upstream,
    schema_by_name,
    wait_for_jobs,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

SOURCES = f"{API}/external_data_sources"
DB_SCHEMA = f"{SOURCES}/database_schema/"
SETUP = f"{SOURCES}/setup/"
TABLES_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount int, updated_at timestamp NOT NULL,
                     created_at timestamptz);
INSERT INTO orders SELECT g, g, timestamp '2025-01-01' + g * interval '1 hour', now()
FROM generate_series(1, 30) g;
CREATE TABLE events (name text, created_at timestamptz NOT NULL);
INSERT INTO events VALUES ('a', now()), ('b', now());
CREATE TABLE tags (label text);
INSERT INTO tags VALUES ('x');
"""
SECRET_REF = (
    "Unresolved secret reference(s) for: password. These fields are still `{'secretRef': ...}` "
    "objects — PostHog cannot resolve them. Resolve the secret to its real value before calling "
    "(or collect credentials via data-warehouse-source-connect-link and pass the resulting "
    "credential_id instead)."
)
ENTRY_KEYS = [
    "table",
    "label",
    "should_sync",
    "incremental_fields",
    "incremental_available",
    "append_available",
    "cdc_available",
    "xmin_available",
    "incremental_field",
    "sync_type",
    "rows",
    "supports_webhooks",
    "webhook_only",
    "description",
    "should_sync_default",
    "available_columns",
    "detected_primary_keys",
    "permission_error",
    "rls_warning",
]


async def db_schema(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(DB_SCHEMA, json=body)


def by_table(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["table"]: e for e in entries}


async def test_database_schema_discovers_tables_without_storing_them(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL + "ANALYZE orders;")
    response = await db_schema(client, {"source_type": "Postgres", **upstream.creds.job_inputs()})
    assert response.status_code == 200, response.text
    tables = by_table(response.json())
    assert sorted(tables) == ["events", "orders", "tags"]
    orders = tables["orders"]
    assert list(orders) == ENTRY_KEYS
    timestamp = {"type": "timestamp", "field_type": "timestamp"}
    assert orders == {
        "table": "orders",
        "label": None,
        "should_sync": False,
        "incremental_fields": [
            {"label": "id", "type": "integer", "field": "id", "field_type": "integer"},
            {"label": "amount", "type": "integer", "field": "amount", "field_type": "integer"},
            {"label": "updated_at", "field": "updated_at", **timestamp},
            {"label": "created_at", "field": "created_at", **timestamp},
            {"label": "xmin", "type": "xid", "field": "xmin", "field_type": "xid"},
        ],
        "incremental_available": True,
        "append_available": True,
        "cdc_available": True,
        "xmin_available": True,
        "incremental_field": "id",
        "sync_type": None,
        "rows": 30,
        "supports_webhooks": False,
        "webhook_only": False,
        "description": None,
        "should_sync_default": True,
        "available_columns": [
            {"field": "id", "label": "id", "type": "bigint", "nullable": False},
            {"field": "amount", "label": "amount", "type": "integer", "nullable": True},
            {
                "field": "updated_at",
                "label": "updated_at",
                "type": "timestamp without time zone",
                "nullable": False,
            },
            {
                "field": "created_at",
                "label": "created_at",
                "type": "timestamp with time zone",
                "nullable": True,
            },
        ],
        "detected_primary_keys": ["id"],
        "permission_error": None,
        "rls_warning": None,
    }
    # No key: append only; never analysed: no estimate.
    events = tables["events"]
    assert events["detected_primary_keys"] is None
    assert (events["incremental_available"], events["append_available"]) == (False, True)
    assert events["rows"] is None
    assert (events["cdc_available"], events["xmin_available"]) == (False, True)
    # No cursor column: xmin alone, which PostHog then names as the table's incremental field.
    assert [f["field"] for f in tables["tags"]["incremental_fields"]] == ["xmin"]
    assert tables["tags"]["incremental_field"] == "xmin"
    assert services_empty(app)
    # The projects prefix answers the same.
    again = await client.post(
        "/api/projects/1/external_data_sources/database_schema/",
        json={"source_type": "Postgres", **upstream.creds.job_inputs()},
    )
    assert again.status_code == 200
    assert by_table(again.json())["orders"] == orders


async def test_database_schema_offers_xmin_on_tables_and_materialized_views_only(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(
        TABLES_SQL
        + """
        CREATE VIEW recent AS SELECT * FROM orders;
        CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM orders;
        CREATE TABLE parts (id int, day date, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
        """
    )
    response = await db_schema(client, {"source_type": "Postgres", **upstream.creds.job_inputs()})
    assert response.status_code == 200, response.text
    offered = {
        name: (entry["cdc_available"], entry["xmin_available"])
        for name, entry in by_table(response.json()).items()
    }
    # PostHog's rules: CDC needs a primary key; xmin a relation with tuples of its own (not a
    # view, and not a partitioned parent, whose children each have their own).
    assert offered == {
        "orders": (True, True),
        "events": (False, True),
        "tags": (False, True),
        "recent": (False, False),
        "totals": (False, True),
        "parts": (True, False),
    }


def services_empty(app: Starlette) -> bool:
    services = app.state.services
    return not services.store.sources and not services.store.schemas


async def test_database_schema_and_setup_see_permissions_and_row_level_security(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    role = f"r_{uuid.uuid4().hex[:10]}"
    upstream.execute(
        TABLES_SQL
        + f"""
        CREATE ROLE {role} LOGIN PASSWORD 'pw';
        GRANT SELECT ON orders, events, tags TO {role};
        CREATE TABLE private (id int PRIMARY KEY);
        ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
        CREATE POLICY low ON orders FOR SELECT TO {role} USING (id <= 10);
        """
    )
    reader = replace(upstream.creds, user=role, password="pw")
    response = await db_schema(client, {"source_type": "Postgres", **reader.job_inputs()})
    assert response.status_code == 200, response.text
    tables = by_table(response.json())
    assert tables["orders"]["rls_warning"] == RLS_WARNING_MESSAGE
    assert tables["events"]["rls_warning"] is None
    assert tables["private"]["permission_error"] == (
        "The connection's role lacks SELECT permission on private."
    )
    assert tables["private"]["should_sync_default"] is False
    assert tables["orders"]["permission_error"] is None
    # The owner (a superuser) reads every row: no warning.
    owner = await db_schema(client, {"source_type": "Postgres", **upstream.creds.job_inputs()})
    assert by_table(owner.json())["orders"]["rls_warning"] is None

    created = await client.post(
        SETUP, json={"source_type": "Postgres", "payload": reader.job_inputs()}
    )
    assert created.status_code == 201, created.text
    source = (await client.get(f"{SOURCES}/{created.json()['id']}/")).json()
    assert schema_by_name(source, "private")["should_sync"] is False
    await wait_for_jobs(client, source["id"], 3)
    orders = schema_by_name(source, "orders")
    assert orders["should_sync"] is True
    refreshed = (await client.get(f"{API}/external_data_schemas/{orders['id']}/")).json()
    assert refreshed["status"] == "Completed"
    assert refreshed["table"]["row_count"] == 10  # what the policy lets the role read


async def test_database_schema_errors(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    creds = upstream.creds.job_inputs()
    cases: list[tuple[dict[str, Any], str]] = [
        (creds, "Missing required parameter: source_type"),
        ({"source_type": "", **creds}, "Missing required parameter: source_type"),
        ({"source_type": "Postgres", **creds, "password": {"secretRef": "pw"}}, SECRET_REF),
        ({"source_type": "Nope", **creds}, "Unknown source_type 'Nope'"),
        (
            {"source_type": "Stripe", "stripe_secret_key": "sk"},
            "The Stripe source isn't available to connect yet. Choose a different source, or "
            "contact support if you were expecting it.",
        ),
        ({"source_type": "Postgres", **creds, "password": "wrong"}, "Invalid user or password"),
        (
            {"source_type": "Postgres", **creds, "database": "no_such_db"},
            "Database does not exist",
        ),
        (
            {"source_type": "Postgres", **creds, "schema": "nowhere"},
            "Schema nowhere does not exist",
        ),
    ]
    for body, text in cases:
        response = await db_schema(client, body)
        assert (response.status_code, response.json()) == (400, {"message": text}), body


async def test_setup_enables_every_table_with_default_sync_types(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL)
    response = await client.post(
        SETUP,
        json={
            "source_type": "Postgres",
            "payload": upstream.creds.job_inputs(),
            "prefix": "shop_",
            "description": "the shop",
            "direct_query_enabled": False,
        },
    )
    assert response.status_code == 201, response.text
    assert list(response.json()) == ["id"]
    source = (await client.get(f"{SOURCES}/{response.json()['id']}/")).json()
    assert (source["prefix"], source["description"]) == ("shop_", "the shop")
    assert app.state.services.store.sources[source["id"]].created_via == "mcp"
    settings = {
        s["name"]: (
            s["should_sync"],
            s["sync_type"],
            s["incremental_field"],
            s["incremental_field_type"],
            s["primary_key_columns"],
        )
        for s in source["schemas"]
    }
    assert settings == {
        "orders": (True, "incremental", "updated_at", "timestamp", ["id"]),
        "events": (True, "append", "created_at", "timestamp", None),
        "tags": (True, "full_refresh", None, None, None),
    }
    jobs = await wait_for_jobs(client, source["id"], 3)
    assert {j["status"] for j in jobs} == {"Completed"}
    assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_orders") == [(30,)]
    assert warehouse_rows(app, "SELECT count(*) FROM shop_postgres_events") == [(2,)]

    clash = await client.post(
        SETUP,
        json={"source_type": "Postgres", "payload": upstream.creds.job_inputs(), "prefix": "shop_"},
    )
    assert (clash.status_code, clash.json()) == (
        400,
        {
            "message": "Another source of this type already uses the prefix 'shop_'. Choose a "
            "different prefix so this connection's tables don't clash."
        },
    )
    assert len(app.state.services.store.sources) == 1


async def test_setup_errors(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    creds = upstream.creds.job_inputs()

    async def setup(body: dict[str, Any]) -> tuple[int, Any]:
        response = await client.post(SETUP, json=body)
        return response.status_code, response.json()

    assert await setup({"source_type": "Nope", "payload": creds}) == (
        400,
        {
            "type": "validation_error",
            "code": "invalid_choice",
            "detail": '"Nope" is not a valid choice.',
            "attr": "source_type",
        },
    )
    status, body = await setup({"payload": creds})
    assert (status, body["code"], body["attr"]) == (400, "required", "source_type")
    status, body = await setup({"source_type": "Postgres", "payload": creds, "prefix": "p" * 101})
    assert (status, body["code"], body["attr"]) == (400, "max_length", "prefix")
    secret = {**creds, "password": {"secretRef": "pw"}}
    assert await setup({"source_type": "Postgres", "payload": secret}) == (
        400,
        {"message": SECRET_REF},
    )
    stored = {"credential_id": "abc"}
    assert await setup({"source_type": "Postgres", "payload": stored}) == (
        400,
        {"message": "Stored credential 'abc' not found or expired"},
    )
    assert await setup({"source_type": "Postgres", "payload": {**creds, "password": "no"}}) == (
        400,
        {"message": "Invalid user or password"},
    )
    # The database is empty.
    assert await setup({"source_type": "Postgres", "payload": creds}) == (
        400,
        {"message": "No tables found for this source. Check the credentials and permissions."},
    )


async def test_update_webhook_inputs_and_preview_resource_are_400(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE t (id int PRIMARY KEY);")
    body = {"source_type": "Postgres", "payload": upstream.creds.job_inputs()}
    created = (await client.post(f"{SOURCES}/setup/", json=body)).json()
    url = f"{SOURCES}/{created['id']}/update_webhook_inputs/"
    no_webhooks = {"message": "This source type does not support webhooks"}
    for body in ({}, {"inputs": {"signing_secret": "s"}}):
        response = await client.post(url, json=body)
        assert (response.status_code, response.json()) == (400, no_webhooks)
    missing = await client.post(f"{SOURCES}/nope/update_webhook_inputs/", json={})
    assert missing.status_code == 404

    preview = f"{SOURCES}/preview_resource/"
    for source_type in ("Postgres", "MySQL", "Stripe"):
        response = await client.post(
            preview, json={"source_type": source_type, "payload": {}, "resource_name": "t"}
        )
        assert response.status_code == 400
        assert response.json() == {
            "message": f"Preview is not supported for source type '{source_type}'."
        }
    bad = await client.post(preview, json={"source_type": "Nope", "resource_name": "t"})
    assert bad.json()["detail"] == '"Nope" is not a valid choice.'


async def test_mysql_database_schema_estimates_rows(
    sandbox: tuple[Starlette, httpx.AsyncClient], mysql_upstream: MySQLUpstream
) -> None:
    _, client = sandbox
    mysql_upstream.execute(
        "CREATE TABLE items (id int PRIMARY KEY, updated_at datetime NOT NULL)",
        "INSERT INTO items VALUES (1, NOW()), (2, NOW()), (3, NOW())",
        "ANALYZE TABLE items",
    )
    body = {"source_type": "MySQL", **mysql_upstream.payload([])}
    del body["schemas"]
    response = await db_schema(client, body)
    assert response.status_code == 200, response.text
    (items,) = response.json()
    assert (items["table"], items["rows"], items["detected_primary_keys"]) == ("items", 3, ["id"])
    assert items["incremental_field"] == "id"
    assert items["rls_warning"] is None
    # MySQL has no xmin, and no CDC in PostHog.
    assert (items["cdc_available"], items["xmin_available"]) == (False, None)
    assert "xmin" not in [f["field"] for f in items["incremental_fields"]]
