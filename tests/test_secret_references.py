"""Secret references: `{"env": "POSTHOG_SECRET_<NAME>"}` resolves from the server's environment
just before sending, and only that; the value appears in no result, error or log line. Other
names, references on an HTTP server whose operator did not turn them on, and (strict mode)
literal secrets are refused with nothing sent."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.support import CANARY_KEY, Recorder, answer, connect, text_of

pytestmark = pytest.mark.anyio

VALUE = "s3cr3t-canary-value-9f2c"
CREATE = "external-data-sources-create"
# Where the person lets the secret go (tests/test_secret_binding.py covers the binding itself).
BINDING = ("POSTHOG_SECRET_DB_PASSWORD_HOSTS", "db.example.com")


def create_args(password: Any) -> dict[str, Any]:
    return {
        "source_type": "Postgres",
        "payload": {"host": "db.example.com", "password": password, "schemas": []},
    }


async def test_a_reference_resolves_just_before_sending_and_never_comes_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostHog's error echoes what it received, as some endpoints do.
    recorder = Recorder(respond=answer(400, {"message": f"could not log in with password {VALUE}"}))
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("POSTHOG_SECRET_DB_PASSWORD", VALUE)
    monkeypatch.setenv(*BINDING)
    async with connect(recorder) as client:
        result = await client.call_tool(CREATE, create_args({"env": "POSTHOG_SECRET_DB_PASSWORD"}))
    assert recorder.seen[0].body["payload"]["password"] == VALUE
    shown = text_of(result) + json.dumps(result.structured_content)
    assert VALUE not in shown
    assert "could not log in" in shown
    assert VALUE not in caplog.text


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("POSTHOG_PERSONAL_API_KEY", "only POSTHOG_SECRET_* variables can be referenced"),
        ("POSTHOG_MCP_AUTH_TOKEN", "only POSTHOG_SECRET_* variables can be referenced"),
        ("HOME", "only POSTHOG_SECRET_* variables can be referenced"),
        ("POSTHOG_SECRET_unset_lower", "only POSTHOG_SECRET_* variables can be referenced"),
        ("POSTHOG_SECRET_NOT_SET", "POSTHOG_SECRET_NOT_SET is not set"),
    ],
)
async def test_other_names_are_refused_with_nothing_sent(
    name: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", CANARY_KEY)
    monkeypatch.delenv("POSTHOG_SECRET_NOT_SET", raising=False)
    async with connect(recorder) as client:
        result = await client.call_tool(CREATE, create_args({"env": name}))
    assert result.is_error is True
    assert reason in text_of(result)
    assert "nothing was sent" in text_of(result)
    assert CANARY_KEY not in text_of(result)
    assert recorder.seen == []


async def test_references_are_off_on_http_unless_the_operator_turns_them_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    recorder.default = (201, {"id": "0b7d8c3e-2f4a-4c1e-9a6b-5d3e2f1a0c9b"})
    monkeypatch.setenv("POSTHOG_SECRET_DB_PASSWORD", VALUE)
    monkeypatch.setenv(*BINDING)
    reference = create_args({"env": "POSTHOG_SECRET_DB_PASSWORD"})
    async with connect(recorder, mcp_transport="http") as client:
        refused = await client.call_tool(CREATE, reference)
    assert "secret references are off on this server" in text_of(refused)
    assert recorder.seen == []
    async with connect(recorder, mcp_transport="http", secret_refs="on") as client:
        sent = await client.call_tool(CREATE, reference)
    assert sent.is_error is False, text_of(sent)
    assert recorder.seen[0].body["payload"]["password"] == VALUE


async def test_strict_mode_refuses_a_literal_secret_and_accepts_a_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    recorder.default = (201, {"id": "0b7d8c3e-2f4a-4c1e-9a6b-5d3e2f1a0c9b"})
    monkeypatch.setenv("POSTHOG_SECRET_DB_PASSWORD", VALUE)
    monkeypatch.setenv(*BINDING)
    async with connect(recorder, strict_secrets=True) as client:
        literal = await client.call_tool(CREATE, create_args("hunter2-literal"))
        nested = await client.call_tool(
            "external-data-sources-partial-update",
            {
                "id": "0b7d8c3e-2f4a-4c1e-9a6b-5d3e2f1a0c9b",
                "job_inputs": {"ssh_tunnel": {"auth": {"private_key": "-----BEGIN KEY"}}},
            },
        )
        referenced = await client.call_tool(
            CREATE, create_args({"env": "POSTHOG_SECRET_DB_PASSWORD"})
        )
    assert "password holds a literal secret" in text_of(literal)
    assert "data-warehouse-source-connect-link" in text_of(literal)
    assert "private_key holds a literal secret" in text_of(nested)
    assert "hunter2-literal" not in text_of(literal)
    assert referenced.is_error is False, text_of(referenced)
    assert [s.body["payload"]["password"] for s in recorder.seen] == [VALUE]
