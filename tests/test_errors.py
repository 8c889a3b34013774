"""Upstream failures become isError results a model can act on, never exceptions."""

from __future__ import annotations

from typing import Any

import pytest

from posthog_warehouse_mcp.tools.errors import BadRequest, NotFound
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.cases import CASES, LOCAL, PLAN_ID, READ_SCOPED, arguments, with_plan
from tests.support import CANARY_KEY, MODES, SOURCE_ID, Recorder, answer, connect, text_of

pytestmark = pytest.mark.anyio


@MODES
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"message": "Prefix already exists"}, ["400", "Prefix already exists"]),
        (400, {"detail": "No running sync to cancel."}, ["No running sync to cancel."]),
        (
            400,
            {
                "type": "validation_error",
                "code": "invalid",
                "detail": "Invalid sync time of day",
                "attr": "sync_time_of_day",
            },
            ["Invalid sync time of day", "field: sync_time_of_day"],
        ),
        (
            401,
            {
                "type": "authentication_error",
                "code": "authentication_failed",
                "detail": "Personal API key found in request Authorization header is invalid.",
                "attr": None,
            },
            ["POSTHOG_PERSONAL_API_KEY", "region", "eu.posthog.com"],
        ),
        (
            403,
            {
                "type": "authentication_error",
                "code": "permission_denied",
                "detail": "API key missing required scope 'external_data_source:write'",
            },
            ["external_data_source:write", "scope"],
        ),
        (404, {"detail": "Not found."}, ["404", "not found", "Check the id"]),
        (
            429,
            {"type": "throttled_error", "detail": "Request was throttled."},
            ["429", "Retry after"],
        ),
        (500, {"detail": "A server error occurred."}, ["500", "PostHog's side"]),
    ],
)
async def test_error_statuses_become_actionable_tool_errors(
    status: int, body: Any, expected: list[str], mode: str
) -> None:
    recorder = Recorder(respond=answer(status, body))
    async with connect(recorder, mode=mode) as client:
        # POST: never retried, so each status is seen once.
        result = await client.call_tool("external-data-sources-reload", {"id": SOURCE_ID})
    assert result.is_error is True
    text = text_of(result)
    for part in expected:
        assert part in text, text
    assert CANARY_KEY not in text
    assert len(recorder.seen) == 1


async def test_success_false_is_a_tool_error() -> None:
    recorder = Recorder(
        respond=answer(
            200, {"success": False, "error": "Stripe refused the key", "webhook_url": None}
        )
    )
    async with connect(recorder) as client:
        result = await client.call_tool(
            "external-data-sources-create-webhook-create", {"id": SOURCE_ID}
        )
    assert result.is_error is True
    assert "Stripe refused the key" in text_of(result)


async def test_html_error_page_is_summarised_not_dumped() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>" + b"x" * 5000 + b"</body></html>"
    recorder = Recorder(respond=answer(502, raw=page))
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-reload", {"id": SOURCE_ID})
    text = text_of(result)
    assert result.is_error is True
    assert "502" in text
    assert "Bad Gateway" in text
    assert "<html>" not in text
    assert len(text) < 600


async def test_malformed_json_is_a_tool_error() -> None:
    recorder = Recorder(respond=answer(200, raw=b"{not json"))
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
    assert result.is_error is True
    assert "not JSON" in text_of(result)


async def test_wrong_shape_is_a_tool_error_not_a_client_crash() -> None:
    recorder = Recorder(respond=answer(200, {"count": "many", "results": "nope"}))
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-list", {})
    assert result.is_error is True
    assert "documented shape" in text_of(result)


async def test_echoed_credentials_are_redacted_in_errors() -> None:
    recorder = Recorder(
        respond=answer(400, {"message": f"Bad key {CANARY_KEY}; dsn postgres://u:hunter2@db/x"})
    )
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-reload", {"id": SOURCE_ID})
    text = text_of(result)
    assert CANARY_KEY not in text
    assert "hunter2" not in text
    assert "[redacted]" in text


async def test_credentials_in_upstream_results_are_redacted_by_key_name() -> None:
    source = {
        "id": SOURCE_ID,
        "job_inputs": {
            "host": "db",
            "password": "hunter2",
            "ssh_tunnel": {"auth": {"private_key": "-----BEGIN KEY-----", "username": "me"}},
        },
    }
    recorder = Recorder(respond=answer(200, source))
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
    inputs = result.structured_content["job_inputs"]
    assert inputs["password"] == "[redacted]"
    assert inputs["ssh_tunnel"]["auth"] == {"private_key": "[redacted]", "username": "me"}
    assert inputs["host"] == "db"
    assert "hunter2" not in text_of(result)


@pytest.mark.parametrize(
    ("message", "attr", "expected"),
    [
        ("Not found.", None, "PostHog answered 404: Not found."),
        ("Invalid prefix", "prefix", "PostHog answered 404: Invalid prefix (field: prefix)."),
        ("Syncing... try later", None, "PostHog answered 404: Syncing... try later."),
        ("No such path ../x", None, "PostHog answered 404: No such path ../x."),
        ("Wait...", None, "PostHog answered 404: Wait..."),
    ],
)
def test_posthog_messages_keep_their_own_punctuation(
    message: str, attr: str | None, expected: str
) -> None:
    assert NotFound(message, status=404, attr=attr).describe() == expected
    hinted = BadRequest(message, status=400, attr=attr).describe()
    assert hinted == expected.replace("404", "400") + " " + BadRequest.hint


@pytest.mark.parametrize("tool", sorted(set(CASES) - LOCAL))
async def test_a_403_names_the_scope_the_tool_needs(tool: str) -> None:
    refused = answer(403, {"detail": "You do not have permission."})
    recorder = Recorder(respond=refused)
    async with connect(recorder) as client:
        args = arguments(tool)
        if args.get("plan_id") == PLAN_ID:  # the plan is made before the key loses its scopes
            recorder.answer_as(BY_NAME[tool])
            args = await with_plan(client, args)
            recorder.respond = refused
        result = await client.call_tool(tool, args)
    assert result.is_error is True
    if tool == "data-warehouse-data-health-issues-retrieve":
        needs = "the scopes warehouse_view:read and external_data_source:read,"
    elif tool in ("execute-sql", "read-data-warehouse-schema"):
        needs = "the scope query:read,"
    else:
        needs = f"the scope external_data_source:{'read' if tool in READ_SCOPED else 'write'},"
    assert f"needs a key with {needs}" in text_of(result)
