"""Destructive calls ask first, counting requests against the recording stand-in: nothing that
changes anything is sent before the person agreed, and exactly one request after. A client
that can ask (form elicitation) gets the question; one that cannot gets a preview and a token,
which is refused when wrong, expired, spent or used for another call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.tools import confirm
from posthog_warehouse_mcp.tools.models import ConfirmedIdParams
from posthog_warehouse_mcp.tools.previews import removals
from tests.cases import DESTRUCTIVE, arguments, with_plan
from tests.support import MODES, SCHEMA, SCHEMA_ID, SOURCE, Recorder, Seen, settings, text_of

pytestmark = pytest.mark.anyio

OTHER_SCHEMA = "6f1c0b5e-3f0a-4c55-9a57-5d4f4a0c2b11"
SCHEMA_WITH_TABLE = {**SCHEMA, "table": {"name": "app_postgres_orders", "row_count": 1234}}


def posthog(request: Request, seen: Seen) -> Response:
    """Reads answer the sample source, schema and no jobs; a schema's PATCH answers it, as
    PostHog does; another change answers 204."""
    if request.method == "PATCH" and "external_data_schemas" in request.url.path:
        return JSONResponse(SCHEMA_WITH_TABLE)
    if request.method != "GET":
        return Response(status_code=204)
    if request.url.path.endswith("/jobs/"):
        return JSONResponse([])
    if "webhook_info" in request.url.path:
        return JSONResponse({"supports_webhooks": True, "exists": True, "webhook_url": "https://x"})
    if "external_data_schemas" in request.url.path:
        return JSONResponse(SCHEMA_WITH_TABLE)
    return JSONResponse(SOURCE)


@asynccontextmanager
async def asking(recorder: Recorder, mode: str, **client: Any) -> AsyncIterator[Client]:
    server = create_server(
        settings(confirm="token"), transport=httpx.ASGITransport(app=recorder.app())
    )
    async with Client(server, mode=mode, **client) as mcp:
        yield mcp


def changes(recorder: Recorder) -> list[str]:
    return [s.method for s in recorder.seen if s.method != "GET"]


@MODES
@pytest.mark.parametrize("tool", sorted(DESTRUCTIVE))
async def test_without_elicitation_a_preview_and_a_token_then_one_request(
    tool: str, mode: str
) -> None:
    recorder = Recorder(respond=posthog)
    async with asking(recorder, mode) as client:
        args = await with_plan(client, arguments(tool))
        first = await client.call_tool(tool, args)
        assert first.is_error is False, text_of(first)
        answer = first.structured_content or {}
        assert answer["confirmation_required"] is True
        assert answer["preview"]["effect"]
        assert "Show the preview to the user" in answer["next"]
        assert changes(recorder) == []  # only reads so far
        second = await client.call_tool(
            tool, {**args, "confirmation_token": answer["confirmation_token"]}
        )
    assert second.is_error is False, text_of(second)
    assert len(changes(recorder)) == 1
    assert "confirmation_token" not in str(recorder.seen[-1].body or "")


@MODES
async def test_the_preview_shows_the_table_and_its_rows(mode: str) -> None:
    recorder = Recorder(respond=posthog)
    async with asking(recorder, mode) as client:
        first = await client.call_tool("external-data-schemas-delete-data", {"id": SCHEMA_ID})
    preview = (first.structured_content or {})["preview"]
    assert preview["tables"] == [
        {"name": "orders", "table": "app_postgres_orders", "rows": 1234, "sync_type": None}
    ]
    assert "re-imports every row (billed again)" in preview["undo"]


@MODES
async def test_a_token_is_refused_when_wrong_spent_expired_or_for_another_call(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(respond=posthog)
    tool = "external-data-schemas-destroy"
    async with asking(recorder, mode) as client:
        issued = await client.call_tool(tool, {"id": SCHEMA_ID})
        token = (issued.structured_content or {})["confirmation_token"]
        refusals = {
            "not one this server issued": {"id": SCHEMA_ID, "confirmation_token": token + "0"},
            "another tool or other arguments": {"id": OTHER_SCHEMA, "confirmation_token": token},
        }
        for reason, args in refusals.items():
            refused = await client.call_tool(tool, args)
            assert refused.is_error is True and reason in text_of(refused)
            assert "nothing was sent" in text_of(refused)
        retargeted = await client.call_tool(
            "external-data-schemas-delete-data", {"id": SCHEMA_ID, "confirmation_token": token}
        )
        assert "another tool or other arguments" in text_of(retargeted)
        assert changes(recorder) == []
        used = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
        assert used.is_error is False
        spent = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
        assert "used already" in text_of(spent)
        late = (await client.call_tool(tool, {"id": SCHEMA_ID})).structured_content or {}
        later = confirm.time.time() + confirm.TOKEN_SECONDS + 1
        monkeypatch.setattr(confirm.time, "time", lambda: later)
        expired = await client.call_tool(
            tool, {"id": SCHEMA_ID, "confirmation_token": late["confirmation_token"]}
        )
        assert "expired" in text_of(expired)
    assert changes(recorder) == ["DELETE"]


async def test_spent_tokens_are_forgotten_once_expired_and_stay_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = confirm.Confirmations()
    tool = "external-data-schemas-destroy"
    params = ConfirmedIdParams(id=SCHEMA_ID)
    first = tokens.issue(tool, params, caller="")
    await tokens.check(first, tool, params, caller="")
    with pytest.raises(confirm.ConfirmationRefused, match="used already"):
        await tokens.check(first, tool, params, caller="")
    later = confirm.time.time() + confirm.TOKEN_SECONDS + 1
    monkeypatch.setattr(confirm.time, "time", lambda: later)
    second = tokens.issue(tool, params, caller="")
    await tokens.check(second, tool, params, caller="")
    assert isinstance(tokens.spent, confirm.MemorySpent)
    assert len(tokens.spent._spent) == 1  # the first token's nonce went with its expiry
    with pytest.raises(confirm.ConfirmationRefused, match="expired"):
        await tokens.check(first, tool, params, caller="")


@MODES
@pytest.mark.parametrize(
    ("action", "ticked", "sent"),
    [("accept", True, 1), ("accept", False, 0), ("decline", False, 0), ("cancel", False, 0)],
)
async def test_a_client_that_can_ask_asks_and_acts_on_the_answer(
    mode: str, action: str, ticked: bool, sent: int
) -> None:
    questions: list[str] = []

    async def person(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        questions.append(params.message)
        content = {"confirm": ticked} if action == "accept" else None
        return types.ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    recorder = Recorder(respond=posthog)
    async with asking(recorder, mode, elicitation_callback=person) as client:
        result = await client.call_tool("external-data-schemas-resync", {"id": SCHEMA_ID})
    assert result.is_error is False, text_of(result)
    # 2025 connections ask with a server-to-client request during the call; 2026-07-28 ones
    # with an input-required result the client answers and retries.
    assert len(questions) == 1
    assert "app_postgres_orders" in questions[0] and "1234 rows" in questions[0]
    assert len(changes(recorder)) == sent
    if not sent:
        assert (result.structured_content or {})["confirmed"] is False


async def test_confirmations_off_act_at_once() -> None:
    recorder = Recorder(respond=posthog)
    server = create_server(
        settings(confirm="off"), transport=httpx.ASGITransport(app=recorder.app())
    )
    async with Client(server, mode="legacy") as client:
        await client.call_tool("external-data-sources-destroy", {"id": SOURCE["id"]})
    assert [s.method for s in recorder.seen] == ["DELETE"]


async def test_a_spent_token_stays_spent_after_a_restart_with_a_shared_key(
    tmp_path: Path,
) -> None:
    recorder = Recorder(respond=posthog)
    tool = "external-data-schemas-destroy"
    shared = settings(confirm="token", confirm_secret="shared-key", state_dir=tmp_path)

    def restart() -> Client:
        server = create_server(shared, transport=httpx.ASGITransport(app=recorder.app()))
        return Client(server, mode="legacy")

    async with restart() as client:
        first = await client.call_tool(tool, {"id": SCHEMA_ID})
        token = (first.structured_content or {})["confirmation_token"]
        used = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
        assert used.is_error is False, text_of(used)
    async with restart() as client:  # a new process would verify the token: the key is shared
        again = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
    assert again.is_error is True and "used already" in text_of(again)
    assert changes(recorder) == ["DELETE"]


@pytest.mark.parametrize("suffix", ["é", "\u00ff\u2603"])
async def test_a_token_with_non_ascii_characters_is_refused_as_not_ours(suffix: str) -> None:
    recorder = Recorder(respond=posthog)
    tool = "external-data-schemas-destroy"
    async with asking(recorder, "legacy") as client:
        first = await client.call_tool(tool, {"id": SCHEMA_ID})
        token = (first.structured_content or {})["confirmation_token"]
        forged = token[:-1] + suffix
        refused = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": forged})
    assert refused.is_error is True
    assert "not one this server issued" in text_of(refused) and "nothing was sent" in text_of(
        refused
    )
    assert changes(recorder) == []


async def test_without_a_record_of_spent_tokens_a_token_is_refused_and_nothing_sent(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory should be")
    recorder = Recorder(respond=posthog)
    server = create_server(
        settings(confirm="token", state_dir=blocked),
        transport=httpx.ASGITransport(app=recorder.app()),
    )
    tool = "external-data-schemas-destroy"
    async with Client(server, mode="legacy") as client:
        first = await client.call_tool(tool, {"id": SCHEMA_ID})
        token = (first.structured_content or {})["confirmation_token"]
        refused = await client.call_tool(tool, {"id": SCHEMA_ID, "confirmation_token": token})
    assert refused.is_error is True
    assert "cannot record the token as used" in text_of(refused)
    assert changes(recorder) == []


FULL_REFRESH = {
    **SCHEMA,
    "sync_type": "full_refresh",
    "table": {"name": "app_postgres_orders", "row_count": 1234, "columns": [{"name": "id"}]},
}
EMPTYING = [{"column": "id", "operator": "<", "value": 0}]


@pytest.mark.parametrize(
    ("schema", "change", "removes"),
    [
        (FULL_REFRESH, {"row_filters": EMPTYING}, "keeps only the rows that match"),
        ({**FULL_REFRESH, "sync_type": "incremental"}, {"row_filters": EMPTYING}, None),
        ({**FULL_REFRESH, "sync_type": "append"}, {"sync_type": "full_refresh"}, "appended"),
        ({**FULL_REFRESH, "sync_type": "incremental"}, {"sync_type": "xmin"}, "wiped"),
        (
            {**FULL_REFRESH, "sync_type": "incremental", "incremental_field": "updated_at"},
            {"sync_type": "incremental", "incremental_field": "created_at"},
            "new cursor column",
        ),
        (FULL_REFRESH, {"enabled_columns": []}, "columns no longer synced: id"),
        (FULL_REFRESH, {"should_sync": False, "sync_frequency": "1hour"}, None),
        ({**FULL_REFRESH, "table": None}, {"row_filters": EMPTYING}, None),
        (
            {**FULL_REFRESH, "sync_type": "cdc", "cdc_table_mode": "consolidated"},
            {"cdc_table_mode": "both"},
            "snapshot",
        ),
    ],
)
def test_what_a_settings_change_removes_follows_posthogs_rules(
    schema: dict[str, Any], change: dict[str, Any], removes: str | None
) -> None:
    found = removals(schema, change)
    if removes is None:
        assert found == []
    else:
        assert any(removes in item for item in found), found


def schema_posthog(count: tuple[int, int] | None) -> Callable[[Request, Seen], Response]:
    """Reads answer a synced full_refresh table; the query endpoint counts (total, kept)."""

    def respond(request: Request, seen: Seen) -> Response:
        if request.url.path.endswith("/query/"):
            if count is None:
                return JSONResponse({"detail": "no"}, status_code=400)
            return JSONResponse({"results": [list(count)], "columns": ["total", "kept"]})
        if request.method != "GET":
            return JSONResponse(FULL_REFRESH)
        if "external_data_schemas" in request.url.path:
            return JSONResponse(FULL_REFRESH)
        return JSONResponse({**SOURCE, "schemas": [FULL_REFRESH]})

    return respond


@MODES
@pytest.mark.parametrize(
    ("count", "asked", "removed"),
    [((1234, 0), True, 1234), ((1234, 1234), False, None), (None, True, "unknown")],
)
async def test_a_settings_change_asks_only_when_the_next_sync_removes_rows(
    mode: str, count: tuple[int, int] | None, asked: bool, removed: Any
) -> None:
    recorder = Recorder(respond=schema_posthog(count))
    args = {"id": SCHEMA_ID, "row_filters": EMPTYING}
    async with asking(recorder, mode) as client:
        first = await client.call_tool("external-data-schemas-partial-update", args)
    answer = first.structured_content or {}
    assert first.is_error is False, text_of(first)
    if asked:
        assert answer["confirmation_required"] is True
        assert str(answer["preview"]["tables"][0]["rows_removed"]).startswith(str(removed))
        assert changes(recorder) == ["POST"]  # only the count query
    else:
        assert "confirmation_required" not in answer
        assert changes(recorder) == ["POST", "PATCH"]


@MODES
async def test_a_bulk_change_asks_for_the_tables_whose_data_would_go(mode: str) -> None:
    recorder = Recorder(respond=schema_posthog((1234, 0)))
    args = {"id": SOURCE["id"], "schemas": [{"id": SCHEMA_ID, "sync_type": "xmin"}]}
    tool = "external-data-sources-bulk-update-schemas-partial-update"
    async with asking(recorder, mode) as client:
        first = await client.call_tool(tool, args)
        answer = first.structured_content or {}
        (table,) = answer["preview"]["tables"]
        assert any("wiped" in r for r in table["removes"])
        assert changes(recorder) == []
        pause = {"id": SOURCE["id"], "schemas": [{"id": SCHEMA_ID, "should_sync": False}]}
        await client.call_tool(tool, pause)
        assert changes(recorder) == ["PATCH"]
        await client.call_tool(tool, {**args, "confirmation_token": answer["confirmation_token"]})
    assert changes(recorder) == ["PATCH", "PATCH"]
