"""The sandbox answers like PostHog: status codes, bodies, pagination, auth, secrets, and the
validation of settings."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.api import check_auth
from posthog_warehouse_mcp.sandbox.errors import ErrorAnswer
from tests.sandbox.support import (
    API,
    Upstream,
    client_for,
    create_source,
    schema_by_name,
    wait_for_jobs,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

NOT_FOUND = {"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None}
TABLES_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount int, updated_at timestamp NOT NULL);
INSERT INTO orders SELECT g, g, timestamp '2025-01-01' + g * interval '1 hour'
FROM generate_series(1, 30) g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'a'), (2, 'b');
"""


@pytest.fixture
async def source(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> dict[str, Any]:
    """A source with both tables synced once."""
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    created = await create_source(
        client,
        upstream,
        [
            {"name": "orders", "should_sync": True, "sync_type": "full_refresh"},
            {"name": "customers", "should_sync": True, "sync_type": "full_refresh"},
        ],
    )
    await wait_for_jobs(client, created["id"], 2)
    return created


async def test_unknown_ids_and_environments_are_404(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    missing = "00000000-0000-0000-0000-000000000000"
    for path in (
        f"{API}/external_data_sources/{missing}/",
        f"{API}/external_data_schemas/{missing}/",
        f"{API}/external_data_sources/{missing}/jobs/",
        "/api/environments/2/external_data_sources/",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND
    cancel = await client.post(f"{API}/external_data_schemas/{missing}/cancel/")
    assert cancel.status_code == 404


async def test_current_is_an_alias_of_the_only_environment(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    for prefix in ("environments", "projects"):
        response = await client.get(f"/api/{prefix}/@current/external_data_sources/")
        assert response.status_code == 200
        assert response.json()["count"] == 0


async def test_post_to_schemas_collection_is_405(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    response = await client.post(f"{API}/external_data_schemas/", json={"name": "x"})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_wrong_or_missing_key_is_401_with_posthogs_body(tmp_path: Path) -> None:
    async with open_sandbox(tmp_path, demo=False, api_key="phx_right") as app:
        async with client_for(app, authorization="Bearer phx_wrong") as client:
            response = await client.get(f"{API}/external_data_sources/")
            assert response.status_code == 401
            assert response.json() == {
                "type": "authentication_error",
                "code": "authentication_failed",
                "detail": "Personal API key found in request Authorization header is invalid.",
                "attr": None,
            }
        async with client_for(app) as client:
            response = await client.get(f"{API}/external_data_sources/")
            assert response.status_code == 401
            assert response.json()["type"] == "authentication_error"
        async with client_for(app, authorization="Bearer phx_right") as client:
            response = await client.get(f"{API}/external_data_sources/")
            assert response.status_code == 200


def _depth(traceback: TracebackType | None) -> int:
    depth = 0
    while traceback is not None:
        depth, traceback = depth + 1, traceback.tb_next
    return depth


async def test_auth_errors_are_new_each_time_so_their_tracebacks_do_not_grow(
    tmp_path: Path,
) -> None:
    # A shared exception instance, raised again on every wrong key, grew its traceback (and the
    # frames it keeps alive) by a few frames a request: 119 MB to 348 MB over 40,000 requests.
    request = Request({"type": "http", "headers": [(b"authorization", b"Bearer phx_wrong")]})
    raised = []
    for _ in range(3):
        with pytest.raises(ErrorAnswer) as caught:
            check_auth(request, "phx_right")
        raised.append(caught.value)
    assert len({id(exc) for exc in raised}) == 3
    assert {_depth(exc.__traceback__) for exc in raised} == {_depth(raised[0].__traceback__)}
    # Through the app: after many refusals no 401 is left holding a long traceback.
    async with open_sandbox(tmp_path, demo=False, api_key="phx_right") as app:
        for headers in ({"authorization": "Bearer phx_wrong"}, {}):
            async with client_for(app, **headers) as client:
                for _ in range(200):
                    response = await client.get(f"{API}/external_data_sources/")
                    assert response.status_code == 401
    gc.collect()
    live = [o for o in gc.get_objects() if isinstance(o, ErrorAnswer) and o.status == 401]
    assert all(_depth(exc.__traceback__) <= 5 for exc in live), [
        _depth(exc.__traceback__) for exc in live
    ]


async def test_projects_prefix_serves_the_same_api(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    env = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    project = await client.get(f"/api/projects/1/external_data_sources/{source['id']}/")
    assert project.status_code == 200
    assert project.json() == env


async def test_schema_list_paginates_and_searches(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    first = (await client.get(f"{API}/external_data_schemas/", params={"limit": 1})).json()
    assert first["count"] == 2
    assert len(first["results"]) == 1
    assert first["previous"] is None
    assert first["next"].startswith("http://sandbox/api/environments/1/external_data_schemas/?")
    second = (await client.get(first["next"])).json()
    assert len(second["results"]) == 1
    assert second["next"] is None
    assert second["previous"] is not None
    assert {first["results"][0]["id"], second["results"][0]["id"]} == {
        s["id"] for s in source["schemas"]
    }
    found = (await client.get(f"{API}/external_data_schemas/", params={"search": "ORD"})).json()
    assert [s["name"] for s in found["results"]] == ["orders"]
    default = (await client.get(f"{API}/external_data_schemas/")).json()
    assert default["next"] is None
    assert len(default["results"]) == 2


async def test_source_search_matches_type_and_prefix(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any], upstream: Upstream
) -> None:
    _, client = sandbox
    second = await create_source(client, upstream, [{"name": "customers"}], prefix="crm_")
    by_type = await client.get(f"{API}/external_data_sources/", params={"search": "postgres"})
    assert by_type.json()["count"] == 2
    by_prefix = await client.get(f"{API}/external_data_sources/", params={"search": "crm"})
    assert [s["id"] for s in by_prefix.json()["results"]] == [second["id"]]
    duplicate = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload([{"name": "orders"}])},
    )
    assert duplicate.status_code == 400
    assert duplicate.json() == {
        "message": "You already have a source of this type. Add a table prefix so this "
        "connection's tables don't clash with your existing source."
    }


async def test_no_password_in_any_response(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any], upstream: Upstream
) -> None:
    _, client = sandbox
    schema_id = source["schemas"][0]["id"]
    responses = [
        await client.get(f"{API}/external_data_sources/"),
        await client.get(f"{API}/external_data_sources/{source['id']}/"),
        await client.get(f"{API}/external_data_sources/{source['id']}/jobs/"),
        await client.get(f"{API}/external_data_schemas/"),
        await client.get(f"{API}/external_data_schemas/{schema_id}/"),
        await client.patch(
            f"{API}/external_data_sources/{source['id']}/", json={"description": "d"}
        ),
        await client.patch(
            f"{API}/external_data_sources/{source['id']}/revenue_analytics_config/",
            json={"enabled": False},
        ),
    ]
    for response in responses:
        assert response.status_code == 200
        assert upstream.creds.password not in response.text
        assert "password" not in response.text
    assert responses[1].json()["job_inputs"] == {
        "host": upstream.creds.host,
        "port": upstream.creds.port,
        "database": upstream.creds.database,
        "user": upstream.creds.user,
        "schema": "public",
    }


async def test_webhooks_are_refused_for_postgres(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    for action in ("create_webhook", "delete_webhook"):
        response = await client.post(f"{API}/external_data_sources/{source['id']}/{action}/")
        assert response.status_code == 400
        assert response.json() == {"message": "This source type does not support webhooks"}


async def test_revenue_analytics_config_is_persisted_and_returns_the_source(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    assert source["revenue_analytics_config"] == {
        "enabled": False,
        "include_invoiceless_charges": True,
    }
    url = f"{API}/external_data_sources/{source['id']}/revenue_analytics_config/"
    response = await client.patch(url, json={"enabled": True, "include_invoiceless_charges": False})
    assert response.status_code == 200
    assert response.json()["id"] == source["id"]
    assert response.json()["schemas"]
    again = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert again["revenue_analytics_config"] == {
        "enabled": True,
        "include_invoiceless_charges": False,
    }


async def test_jobs_filters_by_schema_and_time(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    url = f"{API}/external_data_sources/{source['id']}/jobs/"
    jobs = (await client.get(url)).json()
    assert len(jobs) == 2
    assert jobs[0]["created_at"] >= jobs[1]["created_at"]
    assert set(jobs[0]) >= {
        "id",
        "status",
        "rows_synced",
        "created_at",
        "finished_at",
        "latest_error",
        "schema",
    }
    assert set(jobs[0]["schema"]) == {
        "id",
        "name",
        "label",
        "should_sync",
        "last_synced_at",
        "sync_type",
    }
    only = (await client.get(url, params={"schemas": "orders"})).json()
    assert [j["schema"]["name"] for j in only] == ["orders"]
    both = (await client.get(url, params=[("schemas", "orders"), ("schemas", "customers")])).json()
    assert len(both) == 2
    newest = jobs[0]["created_at"]
    assert (await client.get(url, params={"after": newest})).json() == []
    assert len((await client.get(url, params={"before": newest})).json()) == 1
    bad = await client.get(url, params={"after": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["detail"] == "after and before must be ISO 8601 timestamps."


async def test_deletes_answer_204_and_hide_the_objects(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    app, client = sandbox
    schema = schema_by_name(source, "customers")
    deleted = await client.delete(f"{API}/external_data_schemas/{schema['id']}/")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"{API}/external_data_schemas/{schema['id']}/")).status_code == 404
    gone = await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert gone.status_code == 204
    assert (await client.get(f"{API}/external_data_sources/{source['id']}/")).status_code == 404
    listed = (await client.get(f"{API}/external_data_schemas/")).json()
    assert listed["count"] == 0
    tables = warehouse_rows(
        app, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'postgres_%'"
    )
    assert tables == [(0,)]


async def test_validation_errors_use_drf_shape(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    schema_id = schema_by_name(source, "orders")["id"]
    url = f"{API}/external_data_schemas/{schema_id}/"
    bad_type = await client.patch(url, json={"sync_type": "webhook"})
    assert bad_type.status_code == 400
    assert bad_type.json()["type"] == "validation_error"
    assert bad_type.json()["attr"] == "sync_type"
    assert "full_refresh" in bad_type.json()["detail"]
    # CDC needs a source created with CDC enabled (its slot and publication).
    no_cdc = await client.patch(url, json={"sync_type": "cdc"})
    assert (no_cdc.status_code, no_cdc.json()["attr"], no_cdc.json()["detail"]) == (
        400,
        "sync_type",
        "CDC must be enabled on the source before selecting it as a sync type.",
    )
    bad_choice = await client.patch(url, json={"sync_type": "sometimes"})
    assert bad_choice.json()["code"] == "invalid_choice"
    freq = await client.patch(url, json={"sync_frequency": "2hour"})
    assert (freq.status_code, freq.json()["attr"]) == (400, "sync_frequency")
    assert freq.json()["detail"] == (
        '"2hour" is not a valid sync frequency. The fastest sync frequency is 5 minutes.'
    )
    tod = await client.patch(url, json={"sync_time_of_day": "25:00"})
    assert (tod.json()["detail"], tod.json()["attr"]) == (
        "Time has wrong format. Use one of these formats instead: hh:mm[:ss[.uuuuuu]].",
        "sync_time_of_day",
    )
    ok = await client.patch(
        url,
        json={
            "sync_type": "incremental",
            "incremental_field": "updated_at",
            "incremental_field_type": "timestamp",
            "sync_frequency": "1hour",
            "sync_time_of_day": "03:30:00",
            "enabled_columns": ["id", "updated_at"],
        },
    )
    assert ok.status_code == 200
    body = ok.json()
    assert (body["sync_type"], body["incremental_field_type"], body["sync_frequency"]) == (
        "incremental",
        "timestamp",
        "1hour",
    )
    assert body["incremental"] is True
    assert body["source"]["source_type"] == "Postgres"
    missing = await client.post(f"{API}/external_data_sources/", json={"payload": {}})
    assert missing.json() == {
        "type": "validation_error",
        "code": "required",
        "detail": "This field is required.",
        "attr": "source_type",
    }


async def test_other_source_types_are_refused_naming_what_is_supported(
    sandbox: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Stripe", "payload": {"stripe_secret_key": "sk_x"}},
    )
    assert response.status_code == 400
    assert "Postgres" in response.json()["message"]


async def test_form_encoded_bodies_are_accepted(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    response = await client.patch(
        f"{API}/external_data_sources/{source['id']}/", data={"description": "from curl -d"}
    )
    assert response.status_code == 200
    assert response.json()["description"] == "from curl -d"
    # PostHog's doc examples send `-d key=value` under a JSON content type.
    mislabelled = await client.patch(
        f"{API}/external_data_sources/{source['id']}/revenue_analytics_config/",
        content=b"enabled=true",
        headers={"content-type": "application/json"},
    )
    assert mislabelled.status_code == 200
    assert mislabelled.json()["revenue_analytics_config"]["enabled"] is True
    # Body-less actions ignore whatever the example sends.
    schema_id = source["schemas"][0]["id"]
    reload = await client.post(
        f"{API}/external_data_schemas/{schema_id}/reload/",
        content=b'name="string"',
        headers={"content-type": "application/json"},
    )
    assert reload.status_code == 200


async def test_bulk_update_schemas_is_all_or_nothing(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    url = f"{API}/external_data_sources/{source['id']}/bulk_update_schemas/"
    ids = [s["id"] for s in source["schemas"]]
    bad = await client.patch(
        url,
        json={
            "schemas": [
                {"id": ids[0], "sync_frequency": "24hour"},
                {"id": ids[1], "sync_type": "x"},
            ]
        },
    )
    assert bad.status_code == 400
    unchanged = (await client.get(f"{API}/external_data_schemas/{ids[0]}/")).json()
    assert unchanged["sync_frequency"] == "6hour"
    dup = await client.patch(url, json={"schemas": [{"id": ids[0]}, {"id": ids[0]}]})
    assert dup.json()["detail"] == "Schema updates must contain unique ids"
    ok = await client.patch(
        url, json={"schemas": [{"id": i, "sync_frequency": "24hour"} for i in ids]}
    )
    assert ok.status_code == 200
    assert [s["sync_frequency"] for s in ok.json()] == ["24hour", "24hour"]


async def test_source_response_has_posthogs_fields(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    body = (await client.get(f"{API}/external_data_sources/{source['id']}/")).json()
    assert set(body) == {
        "id",
        "created_at",
        "created_by",
        "created_via",
        "status",
        "source_type",
        "latest_error",
        "prefix",
        "description",
        "access_method",
        "engine",
        "last_run_at",
        "schemas",
        "job_inputs",
        "revenue_analytics_config",
        "direct_query_enabled",
        "auto_sync_new_schemas",
        "auto_sync_schema_patterns",
        "user_access_level",
        "supports_webhooks",
        "supports_column_selection",
    }
    schema = body["schemas"][0]
    assert schema["source"] is None
    assert schema["table"]["name"].startswith("postgres_")
    assert set(schema["table"]) == {"id", "name", "columns", "row_count"}
    assert json.dumps(body)  # plain JSON all the way down


async def test_job_inputs_patch_keeps_omitted_secrets_and_checks_new_ones(
    sandbox: tuple[Starlette, httpx.AsyncClient], source: dict[str, Any]
) -> None:
    _, client = sandbox
    url = f"{API}/external_data_sources/{source['id']}/"
    wrong = await client.patch(url, json={"job_inputs": {"password": "wrong"}})
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "Invalid user or password"
    moved = await client.patch(url, json={"job_inputs": {"host": "localhost"}})
    assert moved.json()["detail"] == (
        "Changing the connection host requires re-entering your credentials."
    )
    same = await client.patch(url, json={"job_inputs": {"schema": "public"}, "prefix": "new_"})
    assert same.status_code == 200
    assert same.json()["prefix"] is None  # PostHog keeps a warehouse source's prefix
    reload = await client.post(f"{url}reload/")
    assert reload.status_code == 200
    jobs = await wait_for_jobs(client, source["id"], 4)
    assert [j["status"] for j in jobs] == ["Completed"] * 4


async def test_incremental_without_a_primary_key_is_refused(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE logs (line text, at timestamptz NOT NULL)")
    source = await create_source(client, upstream, [{"name": "logs"}])
    url = f"{API}/external_data_schemas/{source['schemas'][0]['id']}/"
    refused = await client.patch(url, json={"sync_type": "incremental", "incremental_field": "at"})
    assert refused.status_code == 400
    assert refused.json()["attr"] == "primary_key_columns"
    appended = await client.patch(url, json={"sync_type": "append", "incremental_field": "at"})
    assert appended.status_code == 200


async def test_create_accepts_curl_style_form_fields(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    payload = upstream.payload([{"name": "orders", "should_sync": "false"}])
    response = await client.post(
        f"{API}/external_data_sources/",
        data={"source_type": "Postgres", "payload": json.dumps(payload), "prefix": "curl_"},
    )
    assert response.status_code == 201, response.text
    source = (await client.get(f"{API}/external_data_sources/{response.json()['id']}/")).json()
    assert source["prefix"] == "curl_"
    assert not any(s["should_sync"] for s in source["schemas"])


async def test_unknown_primary_key_columns_are_refused(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE pk (id int, name text);")
    source = await create_source(
        client, upstream, [{"name": "pk", "should_sync": False, "sync_type": "full_refresh"}]
    )
    schema_id = schema_by_name(source, "pk")["id"]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "incremental", "incremental_field": "id", "primary_key_columns": ["x"]},
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "validation_error"
    assert response.json()["attr"] == "primary_key_columns"
    assert "x" in response.json()["detail"]
    response = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "incremental", "incremental_field": "id", "primary_key_columns": ["id"]},
    )
    assert response.status_code == 200, response.text


async def test_prefixes_are_compared_exactly(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute("CREATE TABLE t (id int PRIMARY KEY);")
    schemas = [{"name": "t", "should_sync": False}]
    await create_source(client, upstream, schemas, prefix="Crm_")
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload(schemas), "prefix": "crm_"},
    )
    # Current PostHog compares prefixes exactly: a prefix differing by case is another prefix.
    assert response.status_code == 201, response.text
    again = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload(schemas), "prefix": "crm_"},
    )
    assert again.json() == {
        "message": "Another source of this type already uses the prefix 'crm_'. Choose a "
        "different prefix so this connection's tables don't clash."
    }
