"""What the tools send, refuse and show as current PostHog expects, against the recording
stand-in: inputs PostHog refuses are refused before sending with its reason, partial results
stay visible, and Cloud's preconditions come with what to do."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cases import arguments
from tests.support import SCHEMA_ID, SOURCE_ID, Recorder, answer, connect, text_of

pytestmark = pytest.mark.anyio

ENABLED_INCREMENTAL = {
    "name": "orders",
    "should_sync": True,
    "sync_type": "incremental",
    "incremental_field": "updated_at",
}


@pytest.mark.parametrize(
    ("tool", "args", "reason"),
    [
        (
            "external-data-schemas-partial-update",
            {"id": SCHEMA_ID, "sync_time_of_day": "10:00"},
            "Invalid sync time of day",
        ),
        (
            "external-data-schemas-partial-update",
            {"id": SCHEMA_ID, "sync_frequency": "1min"},
            '"1min" is not a valid sync frequency. The fastest sync frequency is 5 minutes.',
        ),
        (
            "external-data-schemas-partial-update",
            {"id": SCHEMA_ID, "sync_frequency": "never"},
            '"never" is not a sync frequency. To stop syncing this table, set should_sync to '
            "false.",
        ),
        (
            "external-data-sources-bulk-update-schemas-partial-update",
            {"id": SOURCE_ID, "schemas": [{"id": SCHEMA_ID, "sync_frequency": "never"}]},
            "set should_sync to false",
        ),
        (
            "external-data-sources-create",
            {"source_type": "Postgres", "payload": {"schemas": [ENABLED_INCREMENTAL]}},
            "Incremental schemas given do not have an incremental field type set",
        ),
        (
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "payload": {"schemas": [{**ENABLED_INCREMENTAL, "incremental_field": None}]},
            },
            "Incremental schemas given do not have an incremental field set",
        ),
        (
            "external-data-sources-create",
            {"source_type": "Postgres", "payload": {"schemas": "orders"}},
            "The 'schemas' field must be a list of the tables to sync.",
        ),
        (
            "external-data-sources-create",
            {"source_type": "Postgres", "payload": {}, "prefix": "___"},
            "Prefix cannot consist of only underscores",
        ),
        (
            "data-warehouse-source-setup",
            {"source_type": "Postgres", "payload": {}, "prefix": "1abc"},
            "Prefix must contain only letters, numbers, and underscores, and start with a "
            "letter or underscore",
        ),
    ],
)
async def test_inputs_posthog_refuses_are_refused_before_sending(
    tool: str, args: dict[str, Any], reason: str
) -> None:
    recorder = Recorder()
    async with connect(recorder) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error is True
    assert reason in text_of(result)
    assert "nothing was sent" in text_of(result)
    assert recorder.seen == []


async def test_what_posthog_accepts_is_sent_as_given() -> None:
    recorder = Recorder()
    recorder.default = (201, {"id": SOURCE_ID})
    chosen = {**ENABLED_INCREMENTAL, "incremental_field_type": "datetime"}
    async with connect(recorder) as client:
        result = await client.call_tool(
            "external-data-sources-create",
            {"source_type": "Postgres", "payload": {"host": "db", "schemas": [chosen]}},
        )
    assert result.is_error is False, text_of(result)
    assert recorder.seen[0].body["payload"]["schemas"] == [chosen]


@pytest.mark.parametrize(
    ("tool", "body", "kept", "step"),
    [
        (
            "external-data-sources-create-webhook-create",
            {
                "success": False,
                "webhook_url": "https://us.posthog.com/public/webhooks/abc",
                "error": "The API key cannot create webhooks",
                "pending_inputs": ["signing_secret"],
            },
            {"webhook_url", "pending_inputs"},
            "add webhook_url in the provider's dashboard",
        ),
        (
            "external-data-sources-delete-webhook-create",
            {"success": False, "external_deleted": False, "error": "Stripe refused"},
            {"external_deleted"},
            "delete it in the provider's dashboard",
        ),
    ],
)
async def test_a_partial_success_keeps_posthogs_answer_for_the_model(
    tool: str, body: dict[str, Any], kept: set[str], step: str
) -> None:
    recorder = Recorder(respond=answer(200, body))
    async with connect(recorder) as client:
        result = await client.call_tool(tool, arguments(tool))
    assert result.is_error is True
    assert result.structured_content is not None
    assert kept <= set(result.structured_content)
    text = text_of(result)
    assert body["error"] in text and step in text
    for key in kept:
        assert key in text


async def test_clouds_host_refusal_says_what_to_ask_the_user() -> None:
    message = (
        "This host points to an internal or private IP address, which PostHog can't reach. Use "
        "a host that's reachable from the public internet. If your database isn't publicly "
        "reachable, connect through an SSH tunnel."
    )
    recorder = Recorder(respond=answer(400, {"message": message}))
    async with connect(recorder) as client:
        result = await client.call_tool(
            "external-data-sources-db-schema", arguments("external-data-sources-db-schema")
        )
    text = text_of(result)
    assert message in text
    assert "Ask the user for a public host" in text


async def test_a_connection_string_alone_is_refused_with_where_it_is_read() -> None:
    message = "Invalid source config: Required field 'host' is missing"
    recorder = Recorder(respond=answer(400, {"message": message}))
    async with connect(recorder) as client:
        result = await client.call_tool(
            "external-data-sources-db-schema", arguments("external-data-sources-db-schema")
        )
    text = text_of(result)
    assert result.is_error is True
    assert message in text
    assert "never reads connection_string" in text
    assert "data-warehouse-source-connect-link" in text


async def test_a_partly_saved_bulk_update_is_reported_as_posthog_words_it() -> None:
    detail = (
        "These schemas in the batch could not be saved: orders (Invalid sync time of day). Any "
        "other schemas in the batch were saved successfully — retry the ones listed here."
    )
    recorder = Recorder(
        respond=answer(
            400,
            {
                "type": "server_error",
                "code": "bulk_schema_save_failed",
                "detail": detail,
                "attr": None,
            },
        )
    )
    tool = "external-data-sources-bulk-update-schemas-partial-update"
    async with connect(recorder) as client:
        result = await client.call_tool(tool, arguments(tool))
    assert result.is_error is True
    assert detail in text_of(result)
    assert len(recorder.seen) == 1  # a 400 is never retried
