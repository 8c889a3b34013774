"""The sandbox answers as current PostHog does (`products/warehouse_sources/.../views/`), one
test per finding of the fidelity audit: create semantics, prefixes, settings texts, the bulk
partial commit, delete_data, cancel, and Cloud's host and TLS rules (`--cloud-rules`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.cloud_rules import INTERNAL_HOST, TLS_REQUIRED, CloudRules
from posthog_warehouse_mcp.sandbox.store import Schema, Store
from tests.sandbox.support import (
    API,
    Upstream,
    client_for,
    create_source,
    schema_by_name,
    services_of,
    synced,
    wait_for_jobs,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

SOURCES = f"{API}/external_data_sources/"
TABLES_SQL = """
CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2),
                     updated_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'refunded' ELSE 'paid' END, g,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '1 hour'
FROM generate_series(1, 30) g;
CREATE TABLE events (seq int, name text, at timestamptz NOT NULL);
INSERT INTO events SELECT g, 'e' || g, now() FROM generate_series(1, 5) g;
CREATE TABLE tags (label text);
"""


async def post_source(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(SOURCES, json={"source_type": "Postgres", **body})


async def test_omitting_schemas_enables_every_table_and_listing_creates_only_those(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    everything = await post_source(client, {"payload": upstream.creds.job_inputs()})
    assert everything.status_code == 201, everything.text
    source = (await client.get(f"{SOURCES}{everything.json()['id']}/")).json()
    settings = {s["name"]: (s["should_sync"], s["sync_type"]) for s in source["schemas"]}
    # PostHog's build_default_schemas: incremental with a cursor and a key, else append, else
    # full refresh; every table enabled.
    assert settings == {
        "orders": (True, "incremental"),
        "events": (True, "append"),
        "tags": (True, "full_refresh"),
    }
    await wait_for_jobs(client, source["id"], 3)

    chosen = [{"name": "tags", "should_sync": False}]
    listed = await post_source(client, {"payload": upstream.payload(chosen), "prefix": "chosen_"})
    assert listed.status_code == 201, listed.text
    source = (await client.get(f"{SOURCES}{listed.json()['id']}/")).json()
    assert [(s["name"], s["should_sync"], s["sync_type"]) for s in source["schemas"]] == [
        ("tags", False, None)
    ]
    not_a_list = await post_source(
        client, {"payload": {**upstream.creds.job_inputs(), "schemas": "orders"}, "prefix": "x"}
    )
    assert not_a_list.json() == {
        "message": "The 'schemas' field must be a list of the tables to sync."
    }


async def test_create_refuses_what_posthog_refuses_with_its_text(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL)
    incremental = {"name": "orders", "should_sync": True, "sync_type": "incremental"}
    cases: list[tuple[dict[str, Any], Any]] = [
        (
            {"payload": upstream.payload([incremental])},
            {"message": "Incremental schemas given do not have an incremental field set"},
        ),
        (
            {"payload": upstream.payload([{**incremental, "incremental_field": "updated_at"}])},
            {"message": "Incremental schemas given do not have an incremental field type set"},
        ),
        (
            {"payload": upstream.payload([{"name": "orders", "sync_type": "bogus"}])},
            {
                "message": "Unknown sync type: bogus. Use one of: full_refresh, incremental, "
                "append, webhook, cdc, xmin."
            },
        ),
        (
            {
                "payload": upstream.payload(
                    [
                        {
                            "name": "events",
                            "should_sync": True,
                            "sync_type": "incremental",
                            "incremental_field": "at",
                            "incremental_field_type": "datetime",
                        }
                    ]
                )
            },
            {
                "message": "Table 'events' has no primary key to sync incrementally on. Choose "
                "a primary key for it, or switch it to full table replication."
            },
        ),
        (
            {"payload": {k: v for k, v in upstream.creds.job_inputs().items() if k != "password"}},
            {"message": "Invalid source config: Required field 'password' is missing"},
        ),
        (
            {"payload": upstream.creds.job_inputs(), "prefix": "___"},
            {
                "type": "validation_error",
                "code": "invalid_input",
                "detail": "Prefix cannot consist of only underscores",
                "attr": None,
            },
        ),
        (
            {"payload": upstream.creds.job_inputs(), "prefix": "1abc"},
            {
                "type": "validation_error",
                "code": "invalid_input",
                "detail": "Prefix must contain only letters, numbers, and underscores, and start "
                "with a letter or underscore",
                "attr": None,
            },
        ),
    ]
    for body, expected in cases:
        response = await post_source(client, body)
        assert (response.status_code, response.json()) == (400, expected), body
    misspelled = await client.post(
        SOURCES, json={"source_type": "postgres", "payload": upstream.creds.job_inputs()}
    )
    assert misspelled.json() == {
        "type": "validation_error",
        "code": "invalid_choice",
        "detail": '"postgres" is not a valid choice.',
        "attr": "source_type",
    }
    assert services_of(app).store.sources == {}


async def test_a_prefix_is_needed_only_beside_an_unprefixed_source_of_the_type(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    tags = [{"name": "tags"}]
    assert (
        await post_source(client, {"payload": upstream.payload(tags), "prefix": "a_"})
    ).is_success
    # Only prefixed sources of the type exist: no prefix is fine.
    assert (await post_source(client, {"payload": upstream.payload(tags)})).is_success
    again = await post_source(client, {"payload": upstream.payload(tags)})
    assert again.json() == {
        "message": "You already have a source of this type. Add a table prefix so this "
        "connection's tables don't clash with your existing source."
    }


async def test_schema_settings_texts_and_the_bare_field_rule(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    _, orders = await synced(client, upstream, "orders")
    url = f"{API}/external_data_schemas/{orders}/"
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        (
            {"sync_frequency": "1min"},
            '"1min" is not a valid sync frequency. The fastest sync frequency is 5 minutes.',
            "sync_frequency",
        ),
        (
            {"sync_frequency": "never"},
            '"never" is not a sync frequency. To stop syncing this table, set should_sync to '
            "false.",
            "sync_frequency",
        ),
        ({"sync_time_of_day": "10:00"}, "Invalid sync time of day", None),
        (
            {"incremental_field": "updated_at", "incremental_field_type": "datetime"},
            "incremental_field, incremental_field_type cannot be applied to a schema with sync "
            "type full_refresh on its own. Include sync_type in the same request to change the "
            "sync type.",
            None,
        ),
    ]
    for body, detail, attr in cases:
        response = await client.patch(url, json=body)
        assert response.status_code == 400, body
        assert (response.json()["detail"], response.json()["attr"]) == (detail, attr), body
    # No incremental field is needed on PATCH, and none is inferred.
    switched = await client.patch(url, json={"sync_type": "incremental"})
    assert switched.status_code == 200, switched.text
    assert (switched.json()["incremental_field"], switched.json()["incremental_field_type"]) == (
        None,
        None,
    )
    # A CDC table mode is ignored on a table that is not CDC.
    assert (await client.patch(url, json={"cdc_table_mode": "both"})).status_code == 200
    timed = await client.patch(url, json={"sync_time_of_day": "10:00:00"})
    assert timed.json()["sync_time_of_day"] == "10:00:00"


async def test_xmin_is_refused_where_posthog_refuses_it(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    """PostHog runs discovery for a switch to xmin: a view has no xmin; a table needs a primary
    key, given in the same request or detected."""
    _, client = sandbox
    upstream.execute(TABLES_SQL + "CREATE VIEW paid AS SELECT * FROM orders;")
    source = await create_source(
        client,
        upstream,
        [{"name": name, "should_sync": False} for name in ("orders", "events", "paid")],
    )
    ids = {name: schema_by_name(source, name)["id"] for name in ("orders", "events", "paid")}

    async def to_xmin(name: str, **extra: Any) -> httpx.Response:
        return await client.patch(
            f"{API}/external_data_schemas/{ids[name]}/", json={"sync_type": "xmin", **extra}
        )

    view = await to_xmin("paid")
    assert (view.status_code, view.json()["attr"], view.json()["detail"]) == (
        400,
        "sync_type",
        "xmin replication is not available for table 'paid'. It requires a Postgres heap table "
        "or materialized view on PostgreSQL 13+.",
    )
    keyless = await to_xmin("events")
    assert (keyless.status_code, keyless.json()["detail"]) == (
        400,
        "xmin replication requires a primary key on table 'events'. Provide primary_key_columns "
        "or refresh schema discovery to pick one up.",
    )
    keyed = await to_xmin("events", primary_key_columns=["seq"])
    assert keyed.status_code == 200, keyed.text
    assert (keyed.json()["sync_type"], keyed.json()["primary_key_columns"]) == ("xmin", ["seq"])
    assert (await to_xmin("orders")).status_code == 200
    # The bulk update asks the source the same way.
    bulk = await client.patch(
        f"{SOURCES}{source['id']}/bulk_update_schemas/",
        json={"schemas": [{"id": ids["paid"], "sync_type": "xmin"}]},
    )
    assert bulk.status_code == 400
    assert "xmin replication is not available for table 'paid'" in bulk.json()["detail"]


async def test_bulk_update_saves_the_valid_schemas_and_names_the_others(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    source = await create_source(
        client, upstream, [{"name": "orders"}, {"name": "events"}, {"name": "tags"}]
    )
    ids = {s["name"]: s["id"] for s in source["schemas"]}
    url = f"{SOURCES}{source['id']}/bulk_update_schemas/"
    response = await client.patch(
        url,
        json={
            "schemas": [
                {"id": ids["orders"], "sync_type": "full_refresh", "sync_time_of_day": "01:00"},
                {"id": ids["tags"], "sync_type": "full_refresh", "sync_frequency": "24hour"},
                {"id": ids["events"], "incremental_field": "seq"},
            ]
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "server_error",
        "code": "bulk_schema_save_failed",
        "detail": "These schemas in the batch could not be saved: orders (Invalid sync time of "
        "day); events (incremental_field cannot be applied to a schema with sync type not set on "
        "its own. Include sync_type in the same request to change the sync type.). Any other "
        "schemas in the batch were saved successfully — retry the ones listed here.",
        "attr": None,
    }
    tags = (await client.get(f"{API}/external_data_schemas/{ids['tags']}/")).json()
    assert (tags["sync_type"], tags["sync_frequency"]) == ("full_refresh", "24hour")
    orders = (await client.get(f"{API}/external_data_schemas/{ids['orders']}/")).json()
    assert orders["sync_type"] is None
    # A field error refuses the whole batch before anything is saved.
    refused = await client.patch(
        url,
        json={
            "schemas": [
                {"id": ids["orders"], "sync_type": "full_refresh"},
                {"id": ids["events"], "sync_frequency": "1min"},
            ]
        },
    )
    assert refused.json()["attr"] == "sync_frequency"
    orders = (await client.get(f"{API}/external_data_schemas/{ids['orders']}/")).json()
    assert orders["sync_type"] is None


async def test_apply_sync_defaults_and_auto_sync_of_new_tables(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    source = await create_source(client, upstream, [{"name": "orders"}, {"name": "events"}])
    ids = {s["name"]: s["id"] for s in source["schemas"]}
    defaulted = await client.patch(
        f"{SOURCES}{source['id']}/bulk_update_schemas/",
        json={
            "schemas": [
                {"id": ids["orders"], "should_sync": True, "apply_sync_defaults": True},
                {"id": ids["events"], "apply_sync_defaults": True, "sync_frequency": "12hour"},
            ]
        },
    )
    assert defaulted.status_code == 200, defaulted.text
    by_name = {s["name"]: s for s in defaulted.json()}
    assert (
        by_name["orders"]["should_sync"],
        by_name["orders"]["sync_type"],
        by_name["orders"]["incremental_field"],
        by_name["orders"]["primary_key_columns"],
    ) == (True, "incremental", "updated_at", ["id"])
    # Defaults fill the method; enabling stays the caller's.
    assert (by_name["events"]["should_sync"], by_name["events"]["sync_type"]) == (False, "append")

    patched = await client.patch(
        f"{SOURCES}{source['id']}/",
        json={"auto_sync_new_schemas": True, "auto_sync_schema_patterns": ["raw_*"]},
    )
    assert (
        patched.json()["auto_sync_new_schemas"],
        patched.json()["auto_sync_schema_patterns"],
    ) == (
        True,
        ["raw_*"],
    )
    upstream.execute(
        "CREATE TABLE raw_clicks (id int PRIMARY KEY, at timestamptz); CREATE TABLE notes (n text)"
    )
    refreshed = await client.post(f"{SOURCES}{source['id']}/refresh_schemas/")
    assert refreshed.json() == {"added": 3, "deleted": 0, "auto_enabled": 1, "total_tables_seen": 5}
    source = (await client.get(f"{SOURCES}{source['id']}/")).json()
    clicks = schema_by_name(source, "raw_clicks")
    assert (clicks["should_sync"], clicks["sync_type"], clicks["incremental_field"]) == (
        True,
        "incremental",
        "id",  # no preferred name matches: the first candidate, as PostHog picks
    )
    assert schema_by_name(source, "notes")["should_sync"] is False


async def test_row_filters_and_lookback_shape_what_syncs(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL)
    source, orders = await synced(
        client,
        upstream,
        "orders",
        sync_type="incremental",
        incremental_field="updated_at",
        incremental_field_type="datetime",
        row_filters=[{"column": "status", "operator": "=", "value": "paid"}],
    )
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_orders") == [(20,)]
    url = f"{API}/external_data_schemas/{orders}/"
    bad = await client.patch(
        url, json={"row_filters": [{"column": "nope", "operator": "=", "value": 1}]}
    )
    assert (bad.status_code, bad.json()["detail"]) == (
        400,
        "Invalid row filter: Unknown column 'nope' for this schema",
    )
    wrong = await client.patch(
        url, json={"row_filters": [{"column": "id", "operator": "IN", "value": "1, x"}]}
    )
    assert wrong.json()["detail"] == "Invalid row filter: Expected an integer value, got 'x'"
    # Rows whose cursor was backdated below the saved one come back with a lookback window.
    upstream.execute(
        "UPDATE orders SET amount = -1, updated_at = timestamptz '2025-01-02 00:00:00+00' "
        "WHERE id = 2"
    )
    looked = await client.patch(
        url,
        json={
            "incremental_field_lookback_seconds": 86_400,
            "row_filters": [{"column": "id", "operator": "IN", "value": "1, 2, 4"}],
        },
    )
    assert looked.status_code == 200, looked.text
    assert looked.json()["incremental_field_lookback_seconds"] == 86_400
    await client.post(f"{url}reload/")
    await wait_for_jobs(client, source["id"], 2)
    assert warehouse_rows(app, "SELECT amount FROM postgres_orders WHERE id = 2") == [(-1,)]


async def test_delete_data_resets_the_table_and_cancel_repairs_a_stuck_status(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(TABLES_SQL)
    _, orders = await synced(client, upstream, "orders")
    url = f"{API}/external_data_schemas/{orders}/"
    assert (await client.delete(f"{url}delete_data/")).status_code == 200
    schema = (await client.get(url)).json()
    assert (schema["table"], schema["status"], schema["last_synced_at"], schema["should_sync"]) == (
        None,
        None,
        None,
        True,
    )
    assert (await client.post(f"{url}cancel/")).json() == {"detail": "No running sync to cancel."}
    store = services_of(app).store
    with store.lock:
        store.save(replace(store.schemas[orders], status="Running"))
    repaired = await client.post(f"{url}cancel/")
    assert (repaired.status_code, repaired.json()) == (
        200,
        {"detail": "No sync was running. The sync status has been updated."},
    )
    assert (await client.get(url)).json()["status"] == "Completed"  # its latest job's


def test_settings_current_posthog_refuses_are_migrated_on_load(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite3"
    store = Store(path)
    store.save(Schema(id="a", source_id="s", name="a", created_at="", sync_frequency="1min"))
    store.save(
        Schema(
            id="b", source_id="s", name="b", created_at="", should_sync=True, sync_frequency="never"
        )
    )
    store.close()
    reopened = Store(path)
    assert (reopened.schemas["a"].sync_frequency, reopened.schemas["a"].should_sync) == (
        "5min",
        False,
    )
    assert (reopened.schemas["b"].sync_frequency, reopened.schemas["b"].should_sync) == (
        "6hour",
        False,
    )
    reopened.close()
    # Written back: the next load reads the migrated values as they are.
    docs = sqlite3.connect(path).execute("SELECT doc FROM schemas ORDER BY id").fetchall()
    assert '"5min"' in docs[0][0] and '"6hour"' in docs[1][0]


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A sandbox enforcing Cloud's rules; its resolver calls 127.0.0.1 public, so a loopback
    Postgres reaches the TLS rule."""
    addresses = {"127.0.0.1": ["93.184.216.34"], "10.1.2.3": ["10.1.2.3"]}
    rules = CloudRules(resolver=lambda host: addresses.get(host, []))
    sandbox = open_sandbox(tmp_path / "cloud", demo=False, cloud_rules=rules)
    async with sandbox as app, client_for(app) as client:
        yield client


async def test_cloud_rules_refuse_private_hosts_and_plain_text_postgres(
    cloud: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.execute(TABLES_SQL)
    inputs = upstream.creds.job_inputs()
    expectations = [
        ("localhost", INTERNAL_HOST),
        ("10.1.2.3", INTERNAL_HOST),
        (
            "db.nowhere.invalid",
            "Couldn't resolve the host 'db.nowhere.invalid'. Check that it's spelled correctly "
            "and reachable from the public internet.",
        ),
        # "Public" here, so the connection is tried, with TLS required: the server has none.
        ("127.0.0.1", TLS_REQUIRED),
    ]
    for host, message in expectations:
        for path, body in (
            (SOURCES, {"payload": {**inputs, "host": host}}),
            (f"{SOURCES}database_schema/", {**inputs, "host": host}),
            (f"{SOURCES}setup/", {"payload": {**inputs, "host": host}}),
        ):
            response = await cloud.post(path, json={"source_type": "Postgres", **body})
            assert (response.status_code, response.json()) == (400, {"message": message}), (
                host,
                path,
            )
