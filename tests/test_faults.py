"""A misbehaving PostHog on loopback: every fault is a clear tool error, and the server survives.

Two kinds of upstream: the recording Starlette stand-in served by uvicorn (statuses, bodies,
headers) and a raw TCP server (connection resets, answers that never come, bodies that trickle).
Retries are made fast with a small :class:`RetryPolicy`; stamina's retry hook records the waits it
schedules, so Retry-After is checked without measuring time.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import stamina.instrumentation
from anyio.abc import SocketAttribute, SocketStream
from mcp import Client
from starlette.requests import Request
from starlette.responses import Response

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.tools.client import RetryPolicy
from posthog_warehouse_mcp.tools.table import ENDPOINTS
from tests.cases import CASES, LOCAL, NEVER_RETRIED, READ_THEN_WRITE, arguments
from tests.support import (
    CANARY_KEY,
    MODES,
    SCHEMA_ID,
    SOURCE,
    SOURCE_ID,
    Recorder,
    Responder,
    Seen,
    answer,
    connect_with,
    free_port,
    serve,
    settings,
    text_of,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
# Waits of a millisecond or two: the backoff itself is checked with a policy of its own.
FAST = RetryPolicy(attempts=3, total_wait=5.0, wait_initial=0.001, wait_max=0.002)
# Generous bound for one call: every attempt times out, plus every retry wait, plus slack for
# a loaded 2-core machine. It proves a call comes back; it does not measure speed.
CALL_BOUND = FAST.attempts * TIMEOUT + FAST.total_wait + 10

READ = "external-data-sources-retrieve"


def mcp_client(
    upstream: str, *, upstream_timeout: float = TIMEOUT, retry: RetryPolicy = FAST, **options: Any
) -> AbstractAsyncContextManager[Client]:
    """An in-memory MCP client whose server talks over loopback HTTP to ``upstream``."""
    config = settings(host=upstream, timeout=upstream_timeout)
    return connect_with(config, retry=retry, **options)


def script(*answers: Responder) -> Responder:
    """Answer the n-th request with the n-th answer (the last one repeats)."""
    calls: list[int] = []

    def respond(request: Request, seen: Seen) -> Response:
        calls.append(1)
        return answers[min(len(calls), len(answers)) - 1](request, seen)

    return respond


OK_SOURCE = answer(200, SOURCE)


@dataclass
class Waits:
    """What stamina scheduled: one entry per retry."""

    scheduled: list[float] = field(default_factory=list)


@pytest.fixture
def waits() -> Iterator[Waits]:
    record = Waits()

    def hook(details: stamina.instrumentation.RetryDetails) -> None:
        record.scheduled.append(details.wait_for)

    stamina.instrumentation.set_on_retry_hooks([hook])
    try:
        yield record
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)


# ------------------------------------------------------------------ HTTP faults on loopback

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body>" + b"nginx " * 2000 + b"</body>"
)

# name -> (upstream answer, text the error must contain, requests a GET makes under FAST)
HTTP_FAULTS: dict[str, tuple[Responder, list[str], int]] = {
    "500 json": (answer(500, {"detail": "A server error occurred."}), ["500", "PostHog's side"], 1),
    "502 html": (answer(502, raw=HTML_502), ["502", "Bad Gateway"], 3),
    "503 retry-after": (
        answer(503, {"detail": "Service unavailable"}, headers={"Retry-After": "0"}),
        ["503"],
        3,
    ),
    "504": (answer(504, raw=b"upstream timed out"), ["504"], 3),
    "429": (answer(429, {"detail": "Request was throttled."}), ["429", "Retry after"], 3),
    "malformed json": (answer(200, raw=b'{"id": "x", '), ["not JSON"], 1),
    "wrong shape": (answer(200, {"results": "nope"}), ["documented shape"], 1),
    "detail shape": (answer(404, {"detail": "Not found."}), ["404", "Check the id"], 1),
    "message shape": (answer(400, {"message": "Prefix already exists"}), ["Prefix already"], 1),
    "type/code/detail/attr shape": (
        answer(
            400,
            {
                "type": "validation_error",
                "code": "invalid_input",
                "detail": "This field must be unique.",
                "attr": "prefix",
            },
        ),
        ["This field must be unique", "field: prefix"],
        1,
    ),
    "401 wrong region": (
        answer(401, {"type": "authentication_error", "detail": "Invalid API key."}),
        ["POSTHOG_HOST", "region"],
        1,
    ),
    "403 scope": (
        answer(403, {"detail": "API key missing required scope 'external_data_source:read'"}),
        ["external_data_source:read"],
        1,
    ),
    "html 200": (answer(200, raw=b"<html>login</html>"), ["not JSON"], 1),
    "json nested 100k deep": (answer(200, raw=b"[" * 100_000 + b"]" * 100_000), ["not JSON"], 1),
    "json nested 500 deep": (
        answer(200, raw=b'{"id": "x", "a": ' + b"[" * 500 + b"]" * 500 + b"}"),
        ["nested more than"],
        1,
    ),
    "400 nested 100k deep": (answer(400, raw=b"[" * 100_000 + b"]" * 100_000), ["400"], 1),
}


async def test_every_http_fault_is_a_clear_tool_error_and_the_next_call_succeeds() -> None:
    # One server and one MCP session through every fault: it has to survive all of them.
    recorder = Recorder()
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        for fault, (faulty, expected, requests) in HTTP_FAULTS.items():
            recorder.seen.clear()
            recorder.respond = script(*[faulty] * requests, OK_SOURCE)
            with anyio.fail_after(CALL_BOUND):
                failed = await client.call_tool(READ, {"id": SOURCE_ID})
                after = await client.call_tool(READ, {"id": SOURCE_ID})
            message = text_of(failed)
            assert failed.is_error is True, fault
            for part in expected:
                assert part in message, (fault, message)
            assert "Traceback" not in message, fault
            assert CANARY_KEY not in message, fault
            assert len(message) < 1000, fault
            assert len(recorder.seen) == requests + 1, fault
            assert after.is_error is False, fault
            assert after.structured_content["id"] == SOURCE_ID


async def test_success_false_body_is_a_tool_error_over_http() -> None:
    recorder = Recorder(
        respond=script(
            answer(200, {"success": False, "error": "Webhook already exists", "webhook_url": None})
        )
    )
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        result = await client.call_tool(
            "external-data-sources-create-webhook-create", {"id": SOURCE_ID}
        )
    assert result.is_error is True
    assert "Webhook already exists" in text_of(result)
    assert len(recorder.seen) == 1


async def test_non_idempotent_post_is_sent_exactly_once() -> None:
    answers = {
        "502": answer(502, raw=HTML_502),
        "503": answer(503, {"detail": "down"}, headers={"Retry-After": "0"}),
        "504": answer(504, raw=b""),
        "429": answer(429, {"detail": "Request was throttled."}, headers={"Retry-After": "0"}),
    }
    recorder = Recorder()
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        for fault, faulty in answers.items():
            recorder.respond = script(faulty)
            for tool in sorted(NEVER_RETRIED):
                recorder.seen.clear()
                with anyio.fail_after(CALL_BOUND):
                    result = await client.call_tool(tool, arguments(tool))
                assert result.is_error is True, (fault, tool)
                assert [(s.method, s.path) for s in recorder.seen] == [("POST", CASES[tool].path)]


async def test_every_tool_except_the_non_idempotent_posts_is_retried() -> None:
    recorder = Recorder(respond=script(answer(503, {"detail": "down"})))
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        # Not the tools that send nothing to PostHog, nor apply-plan, whose plan cannot be made
        # while every request fails (its read is the retrieve row's, retried there).
        for row in (r for r in ENDPOINTS if r.name not in LOCAL | READ_THEN_WRITE):
            recorder.seen.clear()
            with anyio.fail_after(CALL_BOUND):
                result = await client.call_tool(row.name, arguments(row.name))
            assert result.is_error is True, row.name
            expected = 1 if row.name in NEVER_RETRIED else FAST.attempts
            assert len(recorder.seen) == expected, row.name
            assert {s.method for s in recorder.seen} == {row.method}


async def test_retry_after_is_honoured_for_429_and_503(waits: Waits) -> None:
    recorder = Recorder(
        respond=script(
            answer(429, {"detail": "Request was throttled."}, headers={"Retry-After": "0.2"}),
            answer(503, {"detail": "down"}, headers={"Retry-After": "0.1"}),
            OK_SOURCE,
        )
    )
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        with anyio.fail_after(CALL_BOUND):
            result = await client.call_tool(READ, {"id": SOURCE_ID})
    assert result.is_error is False
    assert len(recorder.seen) == 3
    assert waits.scheduled == pytest.approx([0.2, 0.1])


async def test_retry_after_beyond_the_retry_budget_is_reported_not_waited(waits: Waits) -> None:
    recorder = Recorder(
        respond=script(
            answer(429, {"detail": "Request was throttled."}, headers={"Retry-After": "3600"}),
            answer(503, {"detail": "maintenance"}, headers={"Retry-After": "3600"}),
        )
    )
    async with serve(recorder.app()) as upstream, mcp_client(upstream) as client:
        with anyio.fail_after(CALL_BOUND):
            throttled = await client.call_tool(READ, {"id": SOURCE_ID})
            down = await client.call_tool(READ, {"id": SOURCE_ID})
    assert throttled.is_error is True
    assert "Retry after 3600 seconds" in text_of(throttled)
    assert down.is_error is True
    assert "3600" in text_of(down), text_of(down)
    assert len(recorder.seen) == 2
    assert waits.scheduled == []


async def test_backoff_is_exponential_capped_and_jittered(waits: Waits) -> None:
    policy = RetryPolicy(attempts=5, total_wait=5.0, wait_initial=0.01, wait_max=0.08)
    recorder = Recorder(respond=script(answer(502, raw=b"bad gateway")))
    async with serve(recorder.app()) as upstream, mcp_client(upstream, retry=policy) as client:
        with anyio.fail_after(CALL_BOUND + 5):
            result = await client.call_tool(READ, {"id": SOURCE_ID})
    assert result.is_error is True
    assert len(recorder.seen) == policy.attempts
    assert len(waits.scheduled) == policy.attempts - 1
    # stamina waits wait_initial * 2**(n-1) plus up to 1 s of jitter, capped at wait_max.
    for n, wait in enumerate(waits.scheduled, start=1):
        floor = min(policy.wait_max, policy.wait_initial * 2 ** (n - 1))
        assert floor - 1e-9 <= wait <= policy.wait_max + 1e-9, waits.scheduled


async def test_retries_stop_when_the_total_wait_is_spent() -> None:
    policy = RetryPolicy(attempts=50, total_wait=0.3, wait_initial=0.1, wait_max=0.1)
    recorder = Recorder(respond=script(answer(503, {"detail": "down"})))
    async with serve(recorder.app()) as upstream, mcp_client(upstream, retry=policy) as client:
        with anyio.fail_after(CALL_BOUND):
            result = await client.call_tool(READ, {"id": SOURCE_ID})
    assert result.is_error is True
    # 0.3 s of budget holds at most a few 0.1 s waits, never the 49 the attempts would allow.
    assert 1 <= len(recorder.seen) < 10


@pytest.mark.slow
async def test_ten_megabyte_answer_is_capped_to_the_output_budget() -> None:
    item = {**SOURCE, "description": "d" * 1000}
    page = {"count": 10_000, "next": None, "previous": None, "results": [item] * 8_000}
    body = json.dumps(page).encode()
    assert len(body) > 10_000_000
    recorder = Recorder(
        respond=script(answer(200, raw=body, headers={"Content-Type": "application/json"}))
    )
    async with (
        serve(recorder.app()) as upstream,
        mcp_client(upstream, upstream_timeout=10) as client,
    ):
        with anyio.fail_after(60):
            result = await client.call_tool("external-data-sources-list", {})
            after = await client.call_tool("external-data-sources-list", {"limit": 1})
    assert result.is_error is False
    out = result.structured_content
    assert out is not None and out["truncated"] is True
    assert len(text_of(result).encode()) <= 80_000
    assert "results cut from 8000" in " ".join(out["truncation"]["cut"])
    assert after.is_error is False


async def test_answer_over_the_response_limit_is_refused_not_buffered() -> None:
    body = b'{"id": "' + b"x" * 3 * 1024 * 1024 + b'"}'
    recorder = Recorder(respond=script(answer(200, raw=body), OK_SOURCE))
    limit = 1024 * 1024
    async with (
        serve(recorder.app()) as upstream,
        mcp_client(upstream, max_response_bytes=limit) as client,
    ):
        with anyio.fail_after(CALL_BOUND):
            result = await client.call_tool(READ, {"id": SOURCE_ID})
            after = await client.call_tool(READ, {"id": SOURCE_ID})
    assert result.is_error is True
    assert "larger than 1 MB" in text_of(result)
    assert after.is_error is False


# ------------------------------------------------------------------ socket-level faults


@dataclass
class RawUpstream:
    """A raw TCP upstream: what it received, when the first request came and when its peers
    went away."""

    url: str = ""
    requests: list[str] = field(default_factory=list)
    received: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)


Behaviour = Callable[[SocketStream, RawUpstream], Awaitable[None]]


async def read_request(stream: SocketStream) -> str | None:
    """Read one request head and its body; return the request line (None on EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive()
    return head.split(b"\r\n")[0].decode()


async def wait_for_eof(stream: SocketStream, upstream: RawUpstream) -> None:
    try:
        while await stream.receive():
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        pass
    upstream.closed.set()


async def reset(stream: SocketStream, upstream: RawUpstream) -> None:
    """Accept the request, then reset the connection (RST, not a clean close)."""
    sock = stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def never_answer(stream: SocketStream, upstream: RawUpstream) -> None:
    await wait_for_eof(stream, upstream)


async def trickle(stream: SocketStream, upstream: RawUpstream) -> None:
    """Send a 200 whose body arrives one byte at a time, each well within the read timeout."""
    body = json.dumps(SOURCE).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    try:
        await stream.send(head.encode() + b"\r\n\r\n")
        for byte in body:
            await stream.send(bytes([byte]))
            await anyio.sleep(SOCKET_TIMEOUT / 5)
    except (anyio.BrokenResourceError, OSError):
        upstream.closed.set()


async def half_body_then_close(stream: SocketStream, upstream: RawUpstream) -> None:
    """Promise a body and hang up halfway through it."""
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500")
    await stream.send(b'\r\n\r\n{"id": "0b5e6f1c')
    await stream.aclose()


@asynccontextmanager
async def raw_upstream(behaviour: Behaviour) -> AsyncIterator[RawUpstream]:
    """Serve ``behaviour`` for every request on a loopback port."""
    upstream = RawUpstream()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            line = await read_request(stream)
            if line is None:
                return
            upstream.requests.append(line)
            upstream.received.set()
            await behaviour(stream, upstream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(SocketAttribute.local_port)
        upstream.url = f"http://127.0.0.1:{port}"
        try:
            yield upstream
        finally:
            tg.cancel_scope.cancel()


# Only faulty upstreams get this shorter timeout; healthy calls keep TIMEOUT.
SOCKET_TIMEOUT = 0.25
BROKEN = "broke before PostHog finished answering"
# (behaviour, text the error must contain); the faults that end in a timeout wait it out on
# every attempt, so they run with the slow tests (a timeout is also checked on the fast path).
SOCKET_FAULTS = [
    pytest.param(reset, BROKEN, id="connection reset"),
    pytest.param(never_answer, "within the timeout", id="no answer", marks=pytest.mark.slow),
    pytest.param(trickle, "within the timeout", id="trickling body", marks=pytest.mark.slow),
    pytest.param(half_body_then_close, BROKEN, id="body cut short"),
]


@pytest.mark.parametrize(("behaviour", "expected"), SOCKET_FAULTS)
async def test_socket_fault_is_a_tool_error_within_the_timeout(
    behaviour: Behaviour, expected: str
) -> None:
    healthy = Recorder(respond=script(OK_SOURCE))
    async with raw_upstream(behaviour) as upstream, serve(healthy.app()) as good:
        async with mcp_client(upstream.url, upstream_timeout=SOCKET_TIMEOUT) as client:
            with anyio.fail_after(CALL_BOUND):
                read = await client.call_tool(READ, {"id": SOURCE_ID})
            reads = len(upstream.requests)
            with anyio.fail_after(CALL_BOUND):
                create = await client.call_tool(
                    "external-data-sources-create", arguments("external-data-sources-create")
                )
            creates = len(upstream.requests) - reads
        # The server process is fine: a fresh client to a healthy upstream works.
        async with mcp_client(good) as client:
            after = await client.call_tool(READ, {"id": SOURCE_ID})
    for result in (read, create):
        assert result.is_error is True
        assert expected in text_of(result), text_of(result)
        assert "Traceback" not in text_of(result)
    # A create that may have reached PostHog is never retried, and the model is told to check.
    assert "may have reached PostHog" in text_of(create)
    assert "may have reached PostHog" not in text_of(read)
    assert reads == FAST.attempts
    assert creates == 1
    assert after.is_error is False


async def test_settings_timeout_bounds_a_call_on_the_production_path() -> None:
    # No injected client: create_server opens its own adapter from Settings, as the CLI does.
    async with raw_upstream(never_answer) as upstream:
        server = create_server(settings(host=upstream.url, timeout=0.3))
        async with Client(server, mode="legacy") as client:
            with anyio.fail_after(10):
                result = await client.call_tool("external-data-sources-reload", {"id": SOURCE_ID})
    assert result.is_error is True
    assert "within the timeout" in text_of(result)
    assert len(upstream.requests) == 1


async def test_same_session_recovers_after_a_socket_fault() -> None:
    async with raw_upstream(reset) as upstream, mcp_client(upstream.url) as client:
        with anyio.fail_after(CALL_BOUND):
            first = await client.call_tool(READ, {"id": SOURCE_ID})
            second = await client.call_tool("external-data-schemas-retrieve", {"id": SCHEMA_ID})
    assert first.is_error is True and second.is_error is True
    assert BROKEN in text_of(second)


async def test_connection_refused_is_a_tool_error() -> None:
    async with mcp_client(f"http://127.0.0.1:{free_port()}") as client:
        with anyio.fail_after(CALL_BOUND):
            result = await client.call_tool(READ, {"id": SOURCE_ID})
    assert result.is_error is True
    assert "could not reach 127.0.0.1" in text_of(result)


@MODES
async def test_cancelling_a_tool_call_cancels_the_upstream_request(mode: str) -> None:
    # A long timeout: only the cancellation can end the upstream request.
    async with (
        raw_upstream(never_answer) as upstream,
        mcp_client(upstream.url, upstream_timeout=60, mode=mode) as client,
    ):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await client.call_tool(READ, {"id": SOURCE_ID})

                tg.start_soon(call)
                await upstream.received.wait()
                tg.cancel_scope.cancel()
            # The server hung up on the upstream while the client session stays open.
            await upstream.closed.wait()
            listed = await client.list_tools()
    assert len(upstream.requests) == 1
    assert listed.tools
