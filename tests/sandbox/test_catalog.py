"""The source-type catalog (`wizard`), `webhook_info` and `connections` answer as PostHog's do."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.connectors import SUPPORTED_SOURCE_TYPES
from tests.sandbox.support import API, MySQLUpstream, Upstream, create_source, services_of

pytestmark = pytest.mark.anyio

WIZARD = f"{API}/external_data_sources/wizard/"
CONNECTIONS = f"{API}/external_data_sources/connections/"
# `SourceConfig.model_dump()` and the keys `build_source_configs` adds, in PostHog's order.
ENTRY_KEYS = [
    "caption",
    "category",
    "disabledReason",
    "docsUrl",
    "existingSource",
    "featureFlag",
    "featured",
    "fields",
    "iconClassName",
    "iconPath",
    "keywords",
    "label",
    "name",
    "permissionsCaption",
    "releaseStatus",
    "suggestedTables",
    "supportsColumnSelection",
    "unreleasedSource",
    "webhookFields",
    "webhookManualOnly",
    "webhookSetupCaption",
    "versions",
    "defaultVersion",
    "apiDocsUrl",
    "deprecatedVersions",
]
TABLE_SQL = "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1), (2);"


def unknown_types(names: str) -> dict[str, str]:
    omit = "Omit source_type to list every available type."
    return {"message": f"Unknown source_type(s): {names}. {omit}"}


async def wizard(client: httpx.AsyncClient, source_type: str | None = None) -> httpx.Response:
    params = None if source_type is None else {"source_type": source_type}
    return await client.get(WIZARD, params=params)


async def test_wizard_lists_the_connectable_types_and_the_others_as_unavailable(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    response = await wizard(client)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, max-age=600"
    configs = response.json()
    assert list(configs)[:2] == ["Postgres", "MySQL"]
    for name in ("Stripe", "Hubspot", "Zendesk", "Shopify", "Salesforce", "Snowflake", "BigQuery"):
        entry = configs[name]
        assert entry["unreleasedSource"] is True
        assert entry["fields"] == []
        assert "not available in the local sandbox" in entry["disabledReason"].lower()
    for name, entry in configs.items():
        assert list(entry) == ENTRY_KEYS, name
        assert entry["name"] == name
    postgres = configs["Postgres"]
    assert postgres["unreleasedSource"] is None
    assert postgres["disabledReason"] is None
    assert (postgres["category"], postgres["featured"], postgres["keywords"]) == (
        "Databases",
        True,
        ["postgresql", "sql"],
    )
    assert postgres["iconPath"] == "/static/services/postgres.png"
    assert postgres["docsUrl"] == "https://posthog.com/docs/cdp/sources/postgres"
    assert postgres["supportsColumnSelection"] is True
    assert (postgres["versions"], postgres["defaultVersion"]) == (["v1"], "v1")
    assert [
        (f["name"], f["type"], f.get("required"), f.get("secret")) for f in postgres["fields"]
    ] == [
        ("connection_string", "text", False, True),
        ("host", "text", True, False),
        ("port", "number", True, False),
        ("database", "text", True, False),
        ("user", "text", True, False),
        ("password", "password", True, True),
        ("schema", "text", False, False),
        ("ssh_tunnel", "ssh-tunnel", None, None),
    ]
    assert postgres["fields"][-1] == {
        "label": "Use SSH tunnel?",
        "name": "ssh_tunnel",
        "type": "ssh-tunnel",
    }
    using_ssl = next(f for f in configs["MySQL"]["fields"] if f["name"] == "using_ssl")
    assert using_ssl == {
        "caption": None,
        "converter": "str_to_bool",
        "defaultValue": "true",
        "label": "Use SSL?",
        "multiple": None,
        "name": "using_ssl",
        "options": [
            {"fields": None, "label": "Yes", "value": "true"},
            {"fields": None, "label": "No", "value": "false"},
        ],
        "required": True,
        "type": "select",
    }
    # The projects prefix (what PostHog's MCP tool calls) answers the same.
    projects = await client.get("/api/projects/1/external_data_sources/wizard/")
    assert projects.json() == configs


async def test_wizard_filters_on_the_server(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    only = await wizard(client, "Postgres")
    assert only.status_code == 200
    assert list(only.json()) == ["Postgres"]
    # Split on commas and stripped; the answer keeps the catalog's order, not the request's.
    several = await wizard(client, " Stripe , MySQL,,")
    assert list(several.json()) == ["MySQL", "Stripe"]
    assert (await wizard(client, ",")).json() == {}
    assert list((await wizard(client, "")).json()) == list((await wizard(client)).json())
    # Names are case-sensitive; every unknown one is named, sorted.
    lower = await wizard(client, "postgres")
    assert lower.status_code == 400
    assert lower.json() == unknown_types("postgres")
    mixed = await wizard(client, "Nope,Postgres, Alpha")
    assert mixed.status_code == 400
    assert mixed.json() == unknown_types("Alpha, Nope")


async def test_the_wizards_fields_are_what_create_takes(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLE_SQL)
    configs = (await wizard(client, ",".join(SUPPORTED_SOURCE_TYPES))).json()
    payloads = {
        "Postgres": upstream.payload([{"name": "orders"}]),
        "MySQL": MySQLUpstream("db.example.com", 3306, "shop", "reader", "pw").payload([]),
    }
    for source_type, payload in payloads.items():
        fields = configs[source_type]["fields"]
        required = {f["name"] for f in fields if f.get("required")}
        assert required <= set(payload), source_type
    # A payload of exactly the Postgres form's fields creates a source; the secret ones are
    # never shown again, the others are.
    fields = configs["Postgres"]["fields"]
    source = await create_source(client, upstream, [{"name": "orders"}])
    shown = set(source["job_inputs"])
    assert shown == {f["name"] for f in fields if f.get("secret") is False}
    assert not shown & {f["name"] for f in fields if f.get("secret")}


async def test_webhook_info_of_a_postgres_source(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLE_SQL)
    source = await create_source(client, upstream, [{"name": "orders"}])
    for prefix in ("environments", "projects"):
        response = await client.get(
            f"/api/{prefix}/1/external_data_sources/{source['id']}/webhook_info/"
        )
        assert response.status_code == 200
        assert response.json() == {
            "supports_webhooks": False,
            "exists": False,
            "auto_creation_blocked_reason": None,
            "hog_function": None,
            "webhook_url": None,
            "schema_mapping": {},
            "external_status": None,
        }
    missing = "00000000-0000-0000-0000-000000000000"
    unknown = await client.get(f"{API}/external_data_sources/{missing}/webhook_info/")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"


async def test_connections_lists_only_sources_usable_for_direct_queries(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    assert (await client.get(CONNECTIONS)).json() == []
    upstream.execute(TABLE_SQL)
    source = await create_source(client, upstream, [{"name": "orders"}], description="shop db")
    # An ordinary warehouse-import source is not a connection.
    response = await client.get(CONNECTIONS)
    assert response.status_code == 200
    assert response.json() == []
    # One with live queries enabled is (the API cannot set it: the store can).
    store = services_of(app).store
    with store.lock:
        store.save(replace(store.sources[source["id"]], direct_query_enabled=True))
    expected: list[dict[str, Any]] = [
        {
            "id": source["id"],
            "schema_name": "public",
            "prefix": None,
            "engine": None,
            "source_type": "Postgres",
            "access_method": "warehouse",
            "supports_hogql": False,
            "is_builtin_managed_warehouse": False,
            "description": "shop db",
        }
    ]
    assert (await client.get(CONNECTIONS)).json() == expected
    assert (await client.get("/api/projects/1/external_data_sources/connections/")).json() == (
        expected
    )
    deleted = await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert deleted.status_code == 204
    assert (await client.get(CONNECTIONS)).json() == []
