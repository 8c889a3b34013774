"""No credential leaves the server: not the API key, not the secrets a caller sends.

A broad run (every tool, valid and invalid arguments, every error status, upstream answers that
echo the request and its Authorization header) is scanned: every content text, structured
content and isError text, every log record at DEBUG, and the stderr of a stdio subprocess at
``--log-level DEBUG``.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.stdio import stdio_client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.tools.client import RetryPolicy
from posthog_warehouse_mcp.tools.errors import AuthenticationFailed, PermissionDenied
from posthog_warehouse_mcp.tools.output import dumps
from posthog_warehouse_mcp.tools.redact import REDACTED, SECRET_KEY_PARTS, redact_text
from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS
from tests.cases import arguments
from tests.support import (
    CANARY_KEY,
    SAMPLE_BODIES,
    Recorder,
    Responder,
    Seen,
    connect_with,
    serve,
    settings,
    stdio_server,
    text_of,
)

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=2, total_wait=1.0, wait_initial=0.001, wait_max=0.002)

# What a caller sends as credentials; none of it may come back.
CALLER_SECRETS = {
    "password": "hunter2-Canary-pw",
    "client_secret": "sk_live_CanarySecret42",
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----CanaryPrivKey",
    "passphrase": "canary passphrase words",
    "api_key": "ak_CanaryVendorKey99",
    "token": "tok_CanaryAccessToken77",
    "stripe_secret_key": "rk_live_CanaryRestricted",
}
SECRETS = [CANARY_KEY, *CALLER_SECRETS.values()]
SECRET_JOB_INPUTS = {
    "host": "db.internal",
    "user": "app",
    **{k: v for k, v in CALLER_SECRETS.items() if k != "api_key"},
    "ssh_tunnel": {"enabled": True, "auth": {"private_key": CALLER_SECRETS["private_key"]}},
}


def with_secrets(tool: str) -> dict[str, Any]:
    """Valid arguments for ``tool``, carrying credentials wherever the tool takes any."""
    args = arguments(tool)
    if tool == "external-data-sources-create":
        args["payload"] = {**args["payload"], **SECRET_JOB_INPUTS}
    if tool == "external-data-sources-partial-update":
        args["job_inputs"] = SECRET_JOB_INPUTS
    if tool == "external-data-sources-create-webhook-create":
        args["inputs"] = {"signing_secret": CALLER_SECRETS["client_secret"]}
    return args


def invalid_variants(tool: str) -> list[dict[str, Any]]:
    """Wrong arguments that carry secrets in the places an error message might quote."""
    valid = with_secrets(tool)
    return [
        {**valid, "api_key": CANARY_KEY, "password": CALLER_SECRETS["password"]},
        {**valid, "id": CANARY_KEY},
        {**valid, "id": CALLER_SECRETS["password"]},
        {"id": [CALLER_SECRETS["token"]], "limit": CALLER_SECRETS["api_key"]},
        {**valid, "job_inputs": f"password={CALLER_SECRETS['password']}"},
        {**valid, "payload": CALLER_SECRETS["passphrase"], "search": {"token": CANARY_KEY}},
        {"authorization": f"Bearer {CANARY_KEY}"},
    ]


def echo(status: int, shape: str) -> Responder:
    """An upstream error that quotes the request: its body and its Authorization header."""

    def respond(request: Request, seen: Seen) -> Response:
        raw = json.dumps(seen.body) if seen.body is not None else ""
        auth = seen.headers.get("authorization", "")
        quoted = f"{raw} (sent with {auth}) {request.url}"
        bodies: dict[str, Any] = {
            "detail": {"detail": f"Invalid request {quoted}"},
            "message": {"message": f"Could not use {quoted}", "request": seen.body, "auth": auth},
            "typed": {
                "type": "validation_error",
                "code": "invalid_input",
                "detail": f"Invalid payload: {quoted}",
                "attr": "payload",
            },
            "field": {"payload": [f"Invalid: {raw}"], "password": [f"bad {auth}"]},
            "python": {
                "detail": f"Invalid job_inputs {seen.body!r} headers {dict(seen.headers)!r}"
            },
            "success-false": {"success": False, "error": f"vendor refused {quoted}"},
        }
        # A proxy that echoes the key in a header: httpcore logs response headers at DEBUG.
        headers = {"Retry-After": "0", "X-Echo-Authorization": auth}
        if shape == "html":
            page = f"<html><pre>HTTP_AUTHORIZATION = {auth}\nbody = {raw}</pre></html>"
            return Response(page, status_code=status, media_type="text/html", headers=headers)
        if shape == "text":
            return Response(f"Bad Request: {quoted}", status_code=status, headers=headers)
        return JSONResponse(bodies[shape], status_code=status, headers=headers)

    return respond


ERRORS: list[tuple[int, str]] = [
    (400, "detail"),
    (400, "message"),
    (400, "typed"),
    (400, "field"),
    (400, "python"),
    (400, "text"),
    (401, "detail"),
    (403, "typed"),
    (404, "detail"),
    (405, "message"),
    (409, "detail"),
    (429, "detail"),
    (500, "html"),
    (502, "html"),
    (503, "text"),
    (504, "python"),
    (200, "success-false"),
    (200, "html"),
]


def echoing_result(tool: str) -> Responder:
    """A successful answer that echoes credentials under secret-named keys."""

    def respond(request: Request, seen: Seen) -> Response:
        status, body = SAMPLE_BODIES[BY_NAME[tool].response]
        leaked = {"job_inputs": SECRET_JOB_INPUTS, **{k: v for k, v in CALLER_SECRETS.items()}}
        leaked["authorization"] = seen.headers.get("authorization", "")
        leaked["connection_string"] = "postgres://app:hunter2-Canary-pw@db/x"
        if CALLER_SECRETS["password"] in json.dumps(seen.body):
            # The caller's own password, echoed in free text under an innocent key.
            leaked["latest_error"] = f"could not log in as app with {CALLER_SECRETS['password']}"
        if isinstance(body, list):
            body = [{**item, **leaked} for item in body]
        elif isinstance(body, dict) and isinstance(body.get("results"), list):
            body = {**body, "results": [{**item, **leaked} for item in body["results"]]}
        elif isinstance(body, dict):
            body = {**body, **leaked}
        else:
            status, body = 200, leaked
        return JSONResponse(body, status_code=200 if status == 204 else status)

    return respond


@dataclass
class Scan:
    """Everything the server said, to be searched for secrets."""

    outputs: set[str] = field(default_factory=set)
    log_lines: set[str] = field(default_factory=set)
    calls: int = 0

    def result(self, result: types.CallToolResult) -> None:
        self.calls += 1
        for item in result.content:
            self.outputs.add(getattr(item, "text", "") or dumps(item.model_dump()))
        if result.structured_content is not None:
            self.outputs.add(dumps(result.structured_content))

    def records(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter()
        for record in records:
            line = record.getMessage()
            if record.exc_info:
                line += "\n" + formatter.formatException(record.exc_info)
            self.log_lines.add(line)

    def leaks(self, secrets: list[str]) -> dict[tuple[str, str], str]:
        """One example per (secret, output or log) that contains it."""
        found: dict[tuple[str, str], str] = {}
        for where, texts in (("output", self.outputs), ("log", self.log_lines)):
            for text in texts:
                for secret in secrets:
                    if secret in text:
                        at = text.index(secret)
                        found.setdefault((secret, where), text[max(0, at - 150) : at + 60])
        return found


def in_memory(respond: Responder) -> AbstractAsyncContextManager[Client]:
    """A client whose server has the canary key and a fast-retrying adapter."""
    transport = httpx.ASGITransport(app=Recorder(respond=respond).app())
    return connect_with(settings(timeout=5), retry=FAST, transport=transport)


async def test_no_secret_in_any_output_or_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """The tool list, and every tool (and alias) answered, and given each invalid variant."""
    caplog.set_level(logging.DEBUG)
    scan = Scan()
    async with in_memory(echoing_result("external-data-sources-list")) as client:
        scan.outputs.add(dumps((await client.list_tools()).model_dump()))
    expected = 0
    for row in ENDPOINTS:
        async with in_memory(echoing_result(row.name)) as client:
            scan.result(await client.call_tool(row.name, with_secrets(row.name)))
            for alias in row.aliases:
                scan.result(await client.call_tool(alias, with_secrets(row.name)))
            for args in invalid_variants(row.name):
                result = await client.call_tool(row.name, args)
                scan.result(result)
                assert result.is_error is True
        expected += 1 + len(row.aliases) + len(invalid_variants(row.name))
    scan.records(caplog.records)
    print(f"secrets scan: {scan.calls} calls, {len(scan.outputs)} distinct outputs")
    assert scan.calls == expected > 2 * len(ENDPOINTS)
    assert scan.leaks(SECRETS) == {}


@pytest.mark.parametrize(("status", "shape"), ERRORS)
async def test_no_secret_in_any_error_output_or_log_line(
    status: int, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every tool, answered with each of PostHog's error shapes (one shape a test, so the
    workers share them out)."""
    caplog.set_level(logging.DEBUG)
    scan = Scan()
    async with in_memory(echo(status, shape)) as client:
        for row in ENDPOINTS:
            result = await client.call_tool(row.name, with_secrets(row.name))
            scan.result(result)
            assert result.is_error is True, (status, shape, row.name)
    scan.records(caplog.records)
    assert scan.calls == len(ENDPOINTS)
    assert scan.leaks(SECRETS) == {}


async def test_upstream_error_echoing_the_request_is_redacted_by_key_name() -> None:
    async with in_memory(echo(400, "python")) as client:
        result = await client.call_tool(
            "external-data-sources-create", with_secrets("external-data-sources-create")
        )
    message = text_of(result)
    assert result.is_error is True
    assert "PostHog answered 400" in message
    assert "'password': '[redacted]'" in message
    assert "'host': 'db.internal'" in message  # the rest of the echo stays readable
    for secret in SECRETS:
        assert secret not in message


async def test_upstream_result_with_job_inputs_credentials_is_redacted() -> None:
    tool = "external-data-sources-partial-update"
    async with in_memory(echoing_result(tool)) as client:
        result = await client.call_tool(tool, with_secrets(tool))
    assert result.is_error is False
    inputs = result.structured_content["job_inputs"]
    assert inputs["host"] == "db.internal"
    for key in ("password", "client_secret", "private_key", "passphrase", "token"):
        assert inputs[key] == "[redacted]", key
    assert inputs["ssh_tunnel"]["auth"]["private_key"] == "[redacted]"
    assert result.structured_content["connection_string"] == "[redacted]"


async def test_caller_password_echoed_in_free_text_is_redacted_by_value() -> None:
    tool = "external-data-sources-partial-update"
    async with in_memory(echoing_result(tool)) as client:
        result = await client.call_tool(tool, with_secrets(tool))
    latest_error = result.structured_content["latest_error"]
    assert latest_error == "could not log in as app with [redacted]"


@pytest.mark.parametrize("part", SECRET_KEY_PARTS)
def test_every_credential_key_name_is_redacted_in_echoed_text(part: str) -> None:
    value = "Val-ue_123456"
    forms = [
        f'{{"{part}": "{value}", "host": "db"}}',
        f"{{'{part}': '{value}', 'host': 'db'}}",
        f"GET /x?{part}={value}&host=db",
        f"X-{part.replace('_', '-')}: {value}",
        f'{{"db_{part.upper()}":"{value}"}}',
    ]
    for form in forms:
        out = redact_text(form)
        assert value not in out, out
        assert REDACTED in out
        assert "host" in out or "db_" in out or "X-" in out


@pytest.mark.parametrize(
    "prose",
    [
        AuthenticationFailed.hint,
        PermissionDenied.hint,
        "Personal API key found in request Authorization header is invalid.",
        "API key missing required scope 'external_data_source:write'",
        "Request was throttled. Expected available in 3 seconds.",
        "PostHog answered 400: Invalid sync time of day (field: sync_time_of_day).",
    ],
)
def test_redaction_leaves_messages_without_credentials_alone(prose: str) -> None:
    assert redact_text(prose) == prose


@pytest.mark.slow
async def test_stdio_debug_log_never_shows_a_secret(tmp_path: Path) -> None:
    # A cross-section of the error matrix (the whole of it runs in memory above), skipping
    # statuses the server retries with its default, real-time waits.
    stdio_errors = [(400, "python"), (400, "text"), (401, "detail"), (409, "detail")]
    stdio_errors += [(500, "html"), (200, "success-false"), (200, "html")]
    modes = iter([("200", "ok"), *[(str(s), shape) for s, shape in stdio_errors]])
    current: dict[str, Any] = {"mode": ("200", "ok")}

    def respond(request: Request, seen: Seen) -> Response:
        status, shape = current["mode"]
        if shape == "ok":
            return echoing_result(current["tool"])(request, seen)
        return echo(int(status), shape)(request, seen)

    recorder = Recorder(respond=respond)
    scan = Scan()
    stderr = tmp_path / "stderr.log"
    async with serve(recorder.app()) as upstream:
        params = stdio_server(upstream, "--log-level", "DEBUG")
        with stderr.open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                for mode in modes:
                    current["mode"] = mode
                    for row in ENDPOINTS:
                        current["tool"] = row.name
                        scan.result(await session.call_tool(row.name, with_secrets(row.name)))
                    scan.result(
                        await session.call_tool(
                            "external-data-sources-retrieve",
                            invalid_variants("external-data-sources-retrieve")[0],
                        )
                    )
    lines = stderr.read_text().splitlines()
    scan.log_lines.update(lines)
    distinct = {line.split(" ", 2)[-1] for line in lines}  # without the timestamp
    print(f"stdio scan: {scan.calls} calls, {len(lines)} stderr lines, {len(distinct)} distinct")
    assert any("DEBUG" in line for line in lines)
    # The echoed key did reach the log, redacted: the scan is not looking at nothing.
    assert any("x-echo-authorization" in line and REDACTED in line for line in lines)
    assert len(recorder.seen) > 0
    assert scan.leaks([CANARY_KEY]) == {}
    assert scan.leaks(SECRETS) == {}
