"""A plan of schema changes: what re-imports and at what cost, what PostHog refuses; applying
it: once, confirmed, refused when a table changed since, stopping at the first failure."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from mcp import Client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.server.app import create_server
from tests.support import SOURCE_ID, Recorder, Seen, settings, text_of

pytestmark = pytest.mark.anyio

ORDERS = "11111111-1111-4111-8111-111111111111"
EVENTS = "22222222-2222-4222-8222-222222222222"
USERS = "33333333-3333-4333-8333-333333333333"
PLAN = "external-data-schemas-plan"
APPLY = "external-data-schemas-apply-plan"


def schema(sid: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "name": name,
        "should_sync": True,
        "sync_type": "incremental",
        "incremental_field": "updated_at",
        "primary_key_columns": ["id"],
        "sync_frequency": "6hour",
        "table": {"name": f"app_postgres_{name}", "row_count": 1000},
        **fields,
    }


def job(name: str, rows: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"{name}-{rows}", "schema": {"name": name}, "status": "Completed",
            "rows_synced": rows, **fields}  # fmt: skip


class PostHog:
    """A source with three tables and their jobs; PATCHes change the tables, one may fail."""

    def __init__(self) -> None:
        self.schemas = {
            ORDERS: schema(ORDERS, "orders"),
            EVENTS: schema(
                EVENTS, "events", sync_type="append", table={"name": "e", "row_count": 50}
            ),
            USERS: schema(USERS, "users", sync_type="full_refresh", incremental_field=None),
        }
        # Newest first: orders changed 40 rows a sync lately; its first sync took all 1000.
        self.jobs = [job("orders", 40), job("orders", 60), job("orders", 1000)]
        self.refuse: str | None = None  # a schema id whose PATCH PostHog refuses
        self.created_at = "2026-01-01T00:00:00Z"
        self.recorder = Recorder(respond=self.respond)

    def respond(self, request: Request, seen: Seen) -> Response:
        if seen.method == "PATCH":
            sid = seen.path.rstrip("/").rsplit("/", 1)[-1]
            if sid == self.refuse:
                return JSONResponse(
                    {"type": "validation_error", "detail": "Invalid sync time", "attr": None},
                    status_code=400,
                )
            self.schemas[sid] = {**self.schemas[sid], **seen.body}
            return JSONResponse(self.schemas[sid])
        if seen.path.endswith("/jobs/"):
            return JSONResponse(self.jobs)
        source = {"id": SOURCE_ID, "source_type": "Postgres", "prefix": "app_",
                  "created_at": self.created_at,
                  "schemas": list(copy.deepcopy(self.schemas).values())}  # fmt: skip
        return JSONResponse(source)

    def patches(self) -> list[str]:
        return [
            s.path.rstrip("/").rsplit("/", 1)[-1] for s in self.recorder.seen if s.method == "PATCH"
        ]


@asynccontextmanager
async def server(upstream: PostHog, **overrides: Any) -> AsyncIterator[Client]:
    app = create_server(
        settings(**overrides), transport=httpx.ASGITransport(app=upstream.recorder.app())
    )
    async with Client(app, mode="legacy") as client:
        yield client


async def use(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert result.is_error is False, text_of(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def orders_plan(client: Client, **fields: Any) -> dict[str, Any]:
    """A plan of one change: these fields of the orders table."""
    return await use(client, PLAN, {"id": SOURCE_ID, "changes": [{"id": ORDERS, "set": fields}]})


async def test_a_plan_flags_what_reimports_with_its_rows_and_the_bill_before_and_after() -> None:
    upstream = PostHog()
    async with server(upstream) as client:
        plan = await use(
            client,
            PLAN,
            {
                "id": SOURCE_ID,
                "changes": [
                    {"id": ORDERS, "set": {"sync_type": "full_refresh"}},
                    {"id": USERS, "set": {"sync_frequency": "24hour"}},
                ],
            },
        )
    orders, users = plan["tables"]
    assert orders["reimports"] is True and orders["rows_reimported"] == 1000
    assert orders["changes"] == {"sync_type": ["incremental", "full_refresh"]}
    # Incremental: the median of the syncs after the first (40, 60) x 120 syncs a month.
    assert orders["billed_rows_per_month"]["before"]["rows"] == 50 * 120
    assert orders["billed_rows_per_month"]["after"]["rows"] == 1000 * 120
    assert users["reimports"] is False and users["rows_reimported"] == 0
    assert users["billed_rows_per_month"]["before"]["rows"] == 1000 * 120
    assert users["billed_rows_per_month"]["after"]["rows"] == 1000 * 30
    assert plan["totals"]["tables_reimported"] == 1
    assert plan["totals"]["rows_reimported"] == 1000
    assert plan["totals"]["billed_rows_per_month_after"] == 1000 * 120 + 1000 * 30
    assert plan["refused"] == [] and isinstance(plan["plan_id"], str)
    assert upstream.patches() == []  # a plan only reads


async def test_what_posthog_refuses_is_named_and_no_plan_id_is_given() -> None:
    upstream = PostHog()
    async with server(upstream) as client:
        plan = await use(
            client,
            PLAN,
            {
                "id": SOURCE_ID,
                "changes": [
                    {"id": ORDERS, "set": {"primary_key_columns": ["order_id"]}},
                    {"id": USERS, "set": {"incremental_field": "updated_at"}},
                    {"id": "44444444-4444-4444-8444-444444444444", "set": {"should_sync": False}},
                ],
            },
        )
        bad = await client.call_tool(
            PLAN, {"id": SOURCE_ID, "changes": [{"id": ORDERS, "set": {"sync_type": "daily"}}]}
        )
        nothing = await use(client, PLAN, {"id": SOURCE_ID, "match": "*"})
    reasons = [r["reason"] for r in plan["refused"]]
    assert "not a schema of this source" in reasons
    assert any(
        r.startswith("Primary key cannot be changed after data has been synced") for r in reasons
    )
    assert any("cannot be applied to a schema with sync type full_refresh" in r for r in reasons)
    assert plan["plan_id"] is None
    assert bad.is_error is True and "changes.0.set" in text_of(bad) and "sync_type" in text_of(bad)
    assert nothing["tables"] == [] and nothing["plan_id"] is None  # match without set: none
    assert upstream.recorder.seen[-1].method == "GET"
    assert upstream.patches() == []


async def test_a_plan_is_applied_once_in_order() -> None:
    upstream = PostHog()
    async with server(upstream) as client:
        plan = await use(
            client,
            PLAN,
            {"id": SOURCE_ID, "match": "*s", "set": {"sync_frequency": "1hour"}},
        )
        assert [t["name"] for t in plan["tables"]] == ["orders", "events", "users"]
        args = {"id": SOURCE_ID, "plan_id": plan["plan_id"]}
        applied = await use(client, APPLY, args)
        again = await client.call_tool(APPLY, args)
    assert [a["name"] for a in applied["applied"]] == ["orders", "events", "users"]
    assert applied["failed"] is None and applied["not_applied"] == []
    assert upstream.patches() == [ORDERS, EVENTS, USERS]
    assert all(s["sync_frequency"] == "1hour" for s in upstream.schemas.values())
    # Applied, the tables are no longer as the plan read them.
    assert again.is_error is True and "changed since the plan was made" in text_of(again)
    assert len(upstream.patches()) == 3


async def test_a_plan_acts_once_even_when_nothing_changed() -> None:
    upstream = PostHog()
    upstream.refuse = ORDERS
    async with server(upstream) as client:
        plan = await orders_plan(client, sync_frequency="1hour")
        args = {"id": SOURCE_ID, "plan_id": plan["plan_id"]}
        first = await use(client, APPLY, args)
        upstream.refuse = None
        again = await client.call_tool(APPLY, args)
    assert first["applied"] == [] and first["failed"]["name"] == "orders"
    assert again.is_error is True and "applied already" in text_of(again)
    assert upstream.patches() == [ORDERS]


async def test_a_stale_plan_is_refused_naming_the_tables_that_changed() -> None:
    upstream = PostHog()
    async with server(upstream) as client:
        plan = await orders_plan(client, sync_frequency="1hour")
        upstream.schemas[ORDERS]["sync_type"] = "append"  # changed by someone else meanwhile
        refused = await client.call_tool(APPLY, {"id": SOURCE_ID, "plan_id": plan["plan_id"]})
    assert refused.is_error is True
    assert "these tables changed since the plan was made: orders" in text_of(refused)
    assert "nothing was sent" in text_of(refused)
    assert upstream.patches() == []


async def test_a_failure_midway_stops_and_reports_what_was_and_was_not_applied() -> None:
    upstream = PostHog()
    upstream.refuse = EVENTS
    async with server(upstream) as client:
        plan = await use(
            client, PLAN, {"id": SOURCE_ID, "match": "*", "set": {"sync_frequency": "12hour"}}
        )
        result = await use(client, APPLY, {"id": SOURCE_ID, "plan_id": plan["plan_id"]})
    assert [a["name"] for a in result["applied"]] == ["orders"]
    assert result["failed"]["name"] == "events" and "Invalid sync time" in result["failed"]["error"]
    assert [n["name"] for n in result["not_applied"]] == ["users"]
    assert upstream.patches() == [ORDERS, EVENTS]


async def test_nothing_is_sent_before_the_person_agrees() -> None:
    upstream = PostHog()
    async with server(upstream, confirm="token") as client:
        plan = await orders_plan(client, sync_type="full_refresh")
        args = {"id": SOURCE_ID, "plan_id": plan["plan_id"]}
        asked = await use(client, APPLY, args)
        assert upstream.patches() == []
        assert asked["confirmation_required"] is True
        preview = asked["preview"]
        assert "1 tables re-imported in full (1000 rows, billed again)" in preview["effect"]
        assert preview["tables"][0]["changes"] == ["sync_type: incremental -> full_refresh"]
        done = await use(client, APPLY, {**args, "confirmation_token": asked["confirmation_token"]})
    assert [a["name"] for a in done["applied"]] == ["orders"]
    assert upstream.patches() == [ORDERS]


async def test_a_plan_id_is_bound_to_its_server_source_and_contents() -> None:
    upstream = PostHog()
    async with server(upstream) as client:
        plan = await orders_plan(client, sync_frequency="1hour")
        body, _, signature = plan["plan_id"].partition(".")
        forged = await client.call_tool(
            APPLY, {"id": SOURCE_ID, "plan_id": f"{body[:-2]}AA.{signature}"}
        )
        other = await client.call_tool(APPLY, {"id": ORDERS, "plan_id": plan["plan_id"]})
    async with server(upstream) as elsewhere:
        unknown = await elsewhere.call_tool(APPLY, {"id": SOURCE_ID, "plan_id": plan["plan_id"]})
    assert "not one this server issued" in text_of(forged)
    assert "made for another source" in text_of(other)
    assert "not one this server issued" in text_of(unknown)
    assert upstream.patches() == []


async def test_servers_sharing_the_confirmation_secret_verify_each_others_plans() -> None:
    upstream = PostHog()
    shared = {"confirm_secret": "a-shared-secret-of-32-characters!!"}
    async with server(upstream, **shared) as one:
        plan = await use(
            one, PLAN, {"id": SOURCE_ID, "changes": [{"id": USERS, "set": {"should_sync": False}}]}
        )
    async with server(upstream, **shared) as two:
        applied = await use(two, APPLY, {"id": SOURCE_ID, "plan_id": plan["plan_id"]})
    assert [a["name"] for a in applied["applied"]] == ["users"]


async def test_a_reimport_in_a_sources_first_week_is_free_later_billed() -> None:
    upstream = PostHog()
    change = {"id": SOURCE_ID, "changes": [{"id": ORDERS, "set": {"sync_type": "full_refresh"}}]}
    answers = []
    for created in (datetime.now(UTC) - timedelta(days=2), datetime.now(UTC) - timedelta(days=30)):
        upstream.created_at = created.isoformat()
        async with server(upstream) as client:
            answers.append(await use(client, PLAN, change))
    recent, older = answers
    assert recent["tables"][0]["reimport_billed"] is False and "free" in recent["totals"]
    assert older["tables"][0]["reimport_billed"] is True and "free" not in older["totals"]
