"""Where a secret reference may go: only into a field PostHog's wizard marks secret, and only
toward the hosts the person bound it to (`POSTHOG_SECRET_<NAME>_HOSTS`) when they set it.
Anything else is refused before any request, naming the rule; names match whole; malformed
references, non-string credentials and oversized connection fields are refused too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.sandbox.connectors import source_configs
from posthog_warehouse_mcp.tools.redact import REDACTED, is_secret_key
from tests.support import SOURCE, SOURCE_ID, Recorder, Seen, connect, text_of

pytestmark = pytest.mark.anyio

VALUE = "Bound-canary-secret-71d0"
NAME = "POSTHOG_SECRET_DB_PASSWORD"
REF = {"env": NAME}
CREATE = "external-data-sources-create"
DB_SCHEMA = "external-data-sources-db-schema"
UPDATE = "external-data-sources-partial-update"
CREATED = {"id": "0b7d8c3e-2f4a-4c1e-9a6b-5d3e2f1a0c9b"}


def respond(request: Request, seen: Seen) -> Response:
    """PostHog: the source (host db.internal) for a retrieve, 201 for a create, else 200."""
    if seen.method == "GET":
        return JSONResponse(SOURCE)
    if seen.path.endswith("external_data_sources/"):
        return JSONResponse(CREATED, status_code=201)
    return JSONResponse({"results": []} if "database_schema" in seen.path else SOURCE)


def payload(**fields: Any) -> dict[str, Any]:
    return {"host": "db.example.com", "port": 5432, "user": "app", "database": "app", **fields}


def create(**fields: Any) -> dict[str, Any]:
    return {"source_type": "Postgres", "payload": {**payload(**fields), "schemas": []}}


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.setenv(f"{NAME}_HOSTS", "db.example.com, 10.0.0.5,*.corp.example")


async def call(tool: str, args: dict[str, Any], **settings: Any) -> tuple[str, bool, Recorder]:
    recorder = Recorder(respond=respond)
    async with connect(recorder, **settings) as client:
        result = await client.call_tool(tool, args)
    shown = text_of(result) + json.dumps(result.structured_content)
    assert VALUE not in shown
    assert REDACTED not in shown  # the refusals themselves are shown whole
    return text_of(result), bool(result.is_error), recorder


@pytest.mark.usefixtures("bound")
async def test_a_bound_reference_goes_to_a_bound_host() -> None:
    for host in ("db.example.com", "DB.Example.com.", "10.0.0.5", "eu.db.corp.example"):
        text, failed, recorder = await call(CREATE, create(host=host, password=REF))
        assert not failed, text
        assert recorder.seen[0].body["payload"]["password"] == VALUE


@pytest.mark.usefixtures("bound")
@pytest.mark.parametrize(
    "fields",
    [
        {"user": REF},
        {"database": REF},
        {"schema": REF},
        {"host": REF},
        {"schemas": [{"name": REF, "should_sync": True}]},
    ],
    ids=["user", "database", "schema", "host", "schemas-name"],
)
async def test_a_reference_in_a_field_that_is_not_secret_is_refused(
    fields: dict[str, Any],
) -> None:
    args = create(password="x")
    args["payload"].update(fields)
    text, failed, recorder = await call(CREATE, args)
    assert failed
    assert "not a secret field" in text
    assert "nothing was sent" in text
    assert recorder.seen == []


@pytest.mark.usefixtures("bound")
async def test_a_reference_in_a_nested_secret_field_resolves() -> None:
    tunnel = {
        "enabled": True,
        "host": "bastion.corp.example",
        "port": 22,
        "auth": {"selection": "password", "username": "ops", "password": REF},
    }
    text, failed, recorder = await call(CREATE, create(password="x", ssh_tunnel=tunnel))
    assert not failed, text
    assert recorder.seen[0].body["payload"]["ssh_tunnel"]["auth"]["password"] == VALUE


async def test_an_unbound_reference_is_refused_with_how_to_bind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.delenv(f"{NAME}_HOSTS", raising=False)
    # Loopback too: a local process (one a model with a shell started) can listen there.
    for host in ("db.example.com", "127.0.0.1", "localhost"):
        text, failed, recorder = await call(CREATE, create(host=host, password=REF))
        assert failed
        assert f"{NAME} is not bound to any host" in text
        assert f"{NAME}_HOSTS" in text
        assert "data-warehouse-source-connect-link" in text
        assert recorder.seen == []


@pytest.mark.usefixtures("bound")
@pytest.mark.parametrize(
    "fields",
    [
        {"host": "attacker.example"},
        {"host": "127.0.0.1"},
        {"host": "corp.example"},  # the wildcard covers subdomains only
        {"host": "db.example.com.attacker.example"},
        {"ssh_tunnel": {"enabled": True, "host": "attacker.example", "port": 22}},
        {"connection_string": "postgresql://app:x@attacker.example:5432/app"},
        {"host": "db.example.com,attacker.example"},
        {"hostname": "attacker.example"},
        {"api_url": "https://attacker.example/v1"},
    ],
    ids=[
        "host",
        "loopback",
        "wildcard-apex",
        "suffix",
        "ssh-tunnel",
        "connection-string",
        "multi-host",
        "hostname",
        "url",
    ],
)
async def test_a_reference_toward_an_unbound_host_is_refused(fields: dict[str, Any]) -> None:
    text, failed, recorder = await call(CREATE, create(password=REF, **fields))
    assert failed
    assert f"{NAME} is bound to db.example.com, 10.0.0.5, *.corp.example" in text
    assert "nothing was sent" in text
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({"host": "127.0.0.1", "port": 6543}, True),
        ({"host": "127.0.0.1", "port": "6543"}, True),
        ({"host": "127.0.0.1:6543", "port": 1}, True),  # the host's own port wins
        ({"host": "[::1]", "port": 6543}, True),
        ({"host": "127.0.0.1", "port": 6544}, False),
        ({"host": "127.0.0.1", "port": None}, False),  # no port named: not the bound one
        ({"host": "127.0.0.1", "port": "x"}, False),
        ({"host": "localhost", "port": 6543}, False),  # a name is not its address
        (
            {"host": "127.0.0.1", "port": 6543, "ssh_tunnel": {"host": "127.0.0.1", "port": 22}},
            False,
        ),
        ({"host": "127.0.0.1", "connection_string": "host=127.0.0.1 port=6543"}, False),
        (
            {"host": "127.0.0.1", "port": 6543, "connection_string": "host=127.0.0.1 port=6543"},
            True,
        ),
        (
            {"host": "127.0.0.1", "port": 6543, "connection_string": "postgres://127.0.0.1:1/x"},
            False,
        ),
    ],
)
async def test_a_binding_with_a_port_allows_that_port_only(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], allowed: bool
) -> None:
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.setenv(f"{NAME}_HOSTS", "127.0.0.1:6543,[::1]:6543")
    text, failed, recorder = await call(CREATE, create(password=REF, **fields))
    assert failed is not allowed, text
    if allowed:
        assert recorder.seen[0].body["payload"]["password"] == VALUE
    else:
        assert f"{NAME} is bound to 127.0.0.1:6543, [::1]:6543" in text
        assert recorder.seen == []


async def test_a_referenced_connection_string_is_checked_against_its_own_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NAME, f"postgresql://app:{VALUE}@attacker.example:5432/app")
    monkeypatch.setenv(f"{NAME}_HOSTS", "db.example.com")
    text, failed, recorder = await call(CREATE, create(connection_string=REF))
    assert failed
    assert "a host inside the referenced value" in text
    assert "attacker.example" not in text  # part of the secret: never named
    assert recorder.seen == []


async def test_a_service_without_a_host_field_binds_to_its_source_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTHOG_SECRET_STRIPE", VALUE)
    stripe = {
        "source_type": "Stripe",
        "payload": {
            "auth_method": {
                "selection": "api_key",
                "stripe_secret_key": {"env": "POSTHOG_SECRET_STRIPE"},
            }
        },
    }
    monkeypatch.setenv("POSTHOG_SECRET_STRIPE_HOSTS", "db.example.com")
    text, failed, recorder = await call(CREATE, stripe)
    assert failed and "names no host" in text and recorder.seen == []
    monkeypatch.setenv("POSTHOG_SECRET_STRIPE_HOSTS", "Stripe")  # a host name, not the type
    text, failed, recorder = await call(CREATE, stripe)
    assert failed and "source:<type>" in text and recorder.seen == []
    monkeypatch.setenv("POSTHOG_SECRET_STRIPE_HOSTS", "source:stripe")
    text, failed, recorder = await call(CREATE, stripe)
    assert not failed, text
    assert recorder.seen[0].body["payload"]["auth_method"]["stripe_secret_key"] == VALUE
    # A type never stands in for a host: not where the payload names one, nor as a host name.
    for binding in ("source:Postgres", "source:stripe"):
        monkeypatch.setenv("POSTHOG_SECRET_STRIPE_HOSTS", binding)
        for host in ("db.example.com", "stripe", "source"):
            ref = {"env": "POSTHOG_SECRET_STRIPE"}
            text, failed, recorder = await call(CREATE, create(host=host, password=ref))
            assert failed and recorder.seen == [], (binding, host)


async def test_a_source_update_is_checked_against_the_source_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.setenv(f"{NAME}_HOSTS", "db.internal")
    update = {"id": SOURCE_ID, "job_inputs": {"password": REF}}
    text, failed, recorder = await call(UPDATE, update)
    assert not failed, text
    assert [s.method for s in recorder.seen] == ["GET", "PATCH"]
    assert recorder.seen[1].body["job_inputs"]["password"] == VALUE
    moved = {"id": SOURCE_ID, "job_inputs": {"password": REF, "host": "attacker.example"}}
    text, failed, recorder = await call(UPDATE, moved)
    assert failed and "attacker.example" in text
    assert [s.method for s in recorder.seen] == ["GET"]


@pytest.mark.usefixtures("bound")
async def test_db_schema_with_flat_connection_fields_is_checked_too() -> None:
    args = {"source_type": "Postgres", "payload": payload(password=REF)}
    text, failed, recorder = await call(DB_SCHEMA, args)
    assert not failed, text
    assert recorder.seen[0].body["password"] == VALUE
    args = {"source_type": "Postgres", "payload": payload(host="127.0.0.1", password=REF)}
    text, failed, recorder = await call(DB_SCHEMA, args)
    assert failed and recorder.seen == []


@pytest.mark.parametrize(
    "name",
    ["POSTHOG_SECRET_NL\n", "POSTHOG_SECRET_DB_PASSWORD_HOSTS"],
    ids=["trailing-newline", "a-binding"],
)
async def test_names_match_whole_and_bindings_are_not_secrets(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTHOG_SECRET_NL\n", VALUE)
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.setenv(f"{NAME}_HOSTS", "db.example.com")
    text, failed, recorder = await call(CREATE, create(password={"env": name}))
    assert failed
    assert "nothing was sent" in text
    assert recorder.seen == []


@pytest.mark.usefixtures("bound")
@pytest.mark.parametrize(
    "password",
    [
        {"env": {"env": NAME}},
        {"env": [NAME]},
        {"env": NAME, "x": 1},
        {"ENV": NAME},
        12345,
        True,
        [VALUE],
    ],
    ids=["nested", "list", "extra-key", "upper-key", "number", "bool", "list-value"],
)
async def test_a_credential_that_is_not_text_or_an_exact_reference_is_refused(
    password: Any,
) -> None:
    text, failed, recorder = await call(CREATE, create(password=password))
    assert failed
    assert "Invalid arguments" in text and "payload" in text and "password" in text
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"host": "h" * 10_000_000}, "host"),
        ({"ssh_tunnel": {"host": "h" * 5_000}}, "ssh_tunnel.host"),
        ({"password": "p" * 200_000}, "password"),
        ({f"k{i}": "v" for i in range(1_000)}, "keys"),
    ],
    ids=["10MB-host", "nested-host", "huge-password", "many-keys"],
)
async def test_oversized_connection_fields_are_refused_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    text, failed, recorder = await call(DB_SCHEMA, {"source_type": "Postgres", "payload": fields})
    assert failed
    assert "Invalid arguments" in text and named in text
    assert len(text) < 2_000
    assert recorder.seen == []


async def test_long_fields_that_need_it_are_accepted() -> None:
    key = "-----BEGIN PRIVATE KEY-----\n" + "A" * 6_000 + "\n-----END PRIVATE KEY-----"
    manifest = json.dumps({"resources": [{"name": f"r{i}", "x": "y" * 200} for i in range(50)]})
    preview = {
        "source_type": "Custom",
        "payload": {"manifest_json": manifest},
        "resource_name": "r1",
    }
    text, _, recorder = await call("external-data-sources-preview-resource", preview)
    assert len(recorder.seen) == 1, text
    tunnel = {"ssh_tunnel": {"enabled": False, "auth": {"private_key": key}}}
    text, _, recorder = await call(DB_SCHEMA, {"source_type": "Postgres", "payload": tunnel})
    assert len(recorder.seen) == 1, text


def test_the_secret_field_rule_is_posthogs_wizard() -> None:
    # The sandbox's forms are PostHog's, verbatim: every field it marks secret takes a
    # reference, and no other.
    for source_type, config in source_configs().items():
        for field in config["fields"]:
            if field["type"] in ("input", "text", "password", "number", "textarea"):
                assert is_secret_key(field["name"]) == bool(field.get("secret")), (
                    source_type,
                    field["name"],
                )
    # PostHog's secret fields of other source types (its generated configs), and fields that
    # only look like one.
    for name in (
        "api_key", "stripe_secret_key", "private_key", "passphrase", "connection_string",
        "access_token", "auth_token", "api_token", "client_secret", "secret_key",
        "personal_access_token", "deploy_key", "application_key", "consumer_secret",
        "consumer_key", "encryption_key", "client_private_key", "service_account_secret",
        "server_token", "secret_token", "app_api_key", "paddle_api_key", "auth_password",
    ):  # fmt: skip
        assert is_secret_key(name), name
    for name in ("host", "user", "database", "schema", "port", "credential_id", "prefix"):
        assert not is_secret_key(name), name
