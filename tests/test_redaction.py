"""Redaction is exact: a known secret is removed where it stands as a whole token in messages,
errors and logs, whatever its length, and never from inside a longer name or from data; what
only looks like a credential (a wizard's `secret: true`, a setting's value) stays as it is."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.sandbox.connectors import source_configs
from posthog_warehouse_mcp.server.cli import RedactingFilter
from posthog_warehouse_mcp.tools import redact
from posthog_warehouse_mcp.tools.redact import REDACTED, redact_text, remember_secrets
from tests.support import SCHEMA_ID, SOURCE, Recorder, Seen, connect, text_of

pytestmark = pytest.mark.anyio

CREATE = "external-data-sources-create"


@pytest.fixture(autouse=True)
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets these tests register (common words among them) stay out of other tests."""
    monkeypatch.setattr(redact, "_known", redact.KnownSecrets())


def create_args(host: str = "db.example.com", **fields: Any) -> dict[str, Any]:
    payload = {"host": host, "user": "app", "database": "app", "schemas": [], **fields}
    return {"source_type": "Postgres", "payload": payload}


def bind(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> dict[str, str]:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv(f"{name}_HOSTS", "db.example.com")
    return {"env": name}


async def test_a_short_secret_echoed_by_upstream_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = bind(monkeypatch, "POSTHOG_SECRET_SHORT", "ab3d5")
    recorder = Recorder(
        respond=lambda r, s: JSONResponse({"detail": "Schema ab3d5 does not exist"}, 400)
    )
    async with connect(recorder) as client:
        result = await client.call_tool(CREATE, create_args(password=ref))
    assert recorder.seen[0].body["payload"]["password"] == "ab3d5"
    assert "ab3d5" not in text_of(result)
    assert f"Schema {REDACTED} does not exist" in text_of(result)


async def test_a_common_word_secret_never_mangles_data_or_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = bind(monkeypatch, "POSTHOG_SECRET_PG", "postgres")
    rows = [["postgres", "my_postgres_db", "postgres.app.orders"]]

    def respond(request: Request, seen: Seen) -> Response:
        if seen.path.endswith("query/"):
            return JSONResponse({"columns": ["a", "b", "c"], "results": rows})
        if seen.method == "GET":
            schema = {"id": SCHEMA_ID, "name": "postgres_customers", "should_sync": True}
            source = {
                **SOURCE,
                "prefix": "postgres_",
                "latest_error": "could not log in with postgres as the password",
                "schemas": [{**schema, "table": {"id": "t1", "name": "postgres.app.x"}}],
            }
            return JSONResponse({"count": 1, "next": None, "previous": None, "results": [source]})
        return JSONResponse({"id": "0b7d8c3e-2f4a-4c1e-9a6b-5d3e2f1a0c9b"}, status_code=201)

    recorder = Recorder(respond=respond)
    async with connect(recorder) as client:
        created = await client.call_tool(CREATE, create_args(password=ref))
        assert created.is_error is False, text_of(created)
        query = await client.call_tool("execute-sql", {"query": "SELECT 'postgres'"})
        listed = await client.call_tool("external-data-sources-list", {})
    assert query.structured_content is not None
    assert query.structured_content["results"] == rows
    assert listed.structured_content is not None
    source = listed.structured_content["results"][0]
    assert source["prefix"] == "postgres_"
    assert source["schemas"][0]["name"] == "postgres_customers"
    assert source["schemas"][0]["table"]["name"] == "postgres.app.x"
    # Where a secret can appear (a message), it is removed as a whole word.
    assert source["latest_error"] == f"could not log in with {REDACTED} as the password"


async def test_the_wizards_secret_flags_and_placeholders_are_shown_as_they_are() -> None:
    wizard = source_configs()
    recorder = Recorder(respond=lambda r, s: JSONResponse(wizard))
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-sources-wizard", {"source_type": "Postgres"})
    shown = result.structured_content
    assert shown is not None
    fields = {f["name"]: f for f in shown["Postgres"]["fields"]}
    assert fields["password"]["secret"] is True
    assert fields["host"]["secret"] is False
    assert fields["connection_string"]["placeholder"] == (
        "postgresql://user:password@localhost:5432/database"
    )
    assert REDACTED not in json.dumps(shown)


async def test_the_references_off_hint_names_the_setting_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = bind(monkeypatch, "POSTHOG_SECRET_PG", "a-long-secret-value")
    async with connect(Recorder(), mcp_transport="http") as client:
        result = await client.call_tool(CREATE, create_args(password=ref))
    assert "POSTHOG_SECRET_REFS=on" in text_of(result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Schema ab3d5 does not exist", f"Schema {REDACTED} does not exist"),
        ("'ab3d5'", f"'{REDACTED}'"),
        ("password=ab3d5&x=1", f"password={REDACTED}&x=1"),
        ("xab3d5 ab3d5x ab3d5_1 1ab3d5", "xab3d5 ab3d5x ab3d5_1 1ab3d5"),
        ("my_postgres_db postgres.app.orders", f"my_postgres_db {REDACTED}.app.orders"),
        ("postgres_customers", "postgres_customers"),
        ("POSTHOG_SECRET_REFS=on", "POSTHOG_SECRET_REFS=on"),
        ('{"secret": true, "name": "password"}', '{"secret": true, "name": "password"}'),
        ("POSTHOG_SECRET_PG_HOSTS=db.example.com", "POSTHOG_SECRET_PG_HOSTS=db.example.com"),
        ("POSTHOG_SECRET_PG=hunter2", f"POSTHOG_SECRET_PG={REDACTED}"),
    ],
)
def test_known_values_are_redacted_as_whole_tokens(text: str, expected: str) -> None:
    remember_secrets(["ab3d5", "postgres"])
    assert redact_text(text) == expected


def test_a_secret_that_starts_or_ends_with_punctuation_is_still_found() -> None:
    remember_secrets(["-----BEGIN KEY-----xyz", "p@ss!"])
    assert redact_text("key: a-----BEGIN KEY-----xyz.") == f"key: a{REDACTED}."
    assert redact_text("tried p@ss!word") == f"tried {REDACTED}word"


def test_log_lines_lose_short_secrets_too(caplog: pytest.LogCaptureFixture) -> None:
    remember_secrets(["ab3d5"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connect with %s", ("ab3d5",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"connect with {REDACTED}"


def test_posthog_oauth_tokens_are_redacted() -> None:
    access = "pha_" + "Ab3-d5_" * 5
    refresh = "phr_" + "Zy9xW8" * 5
    assert redact_text(f"token {access} then {refresh}.", known=False) == (
        f"token {REDACTED} then {REDACTED}."
    )


def test_the_oauth_encryption_keys_are_never_shown() -> None:
    from cryptography.fernet import Fernet

    from posthog_warehouse_mcp.server.app import create_server
    from tests.support import settings

    key = Fernet.generate_key().decode()
    oauth = {"mcp_transport": "http", "mcp_oauth": True, "personal_api_key": None}
    create_server(settings(**oauth, mcp_public_url="https://mcp.example.com", oauth_keys=key))
    assert redact_text(f"decrypting with {key} failed") == f"decrypting with {REDACTED} failed"
