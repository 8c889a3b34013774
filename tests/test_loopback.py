"""The loopback floor: tokens compared as bytes, one-time tokens, and the listeners that use
them refusing a token they cannot read rather than failing on it."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from posthog_warehouse_mcp.loopback.hosts import Visitors, is_loopback, listener_hosts
from posthog_warehouse_mcp.loopback.limits import FailureLimit
from posthog_warehouse_mcp.loopback.tokens import OneTimeTokens, tokens_match
from posthog_warehouse_mcp.sandbox.listener import TokenGuard
from posthog_warehouse_mcp.server.auth import BearerAuth

pytestmark = pytest.mark.anyio

NON_ASCII = "Bearer s\u00e9same".encode()  # as a client sends it: UTF-8 bytes


def test_a_non_ascii_token_is_a_mismatch_not_an_error() -> None:
    assert tokens_match("token", "token")
    assert not tokens_match("s\u00e9same", "token")
    assert not tokens_match("\ud800", "token")  # not even encodable as UTF-8 without help
    assert tokens_match("s\u00e9same", "s\u00e9same")


def test_a_one_time_token_is_spent_once_and_expires() -> None:
    now = [100.0]
    tokens: OneTimeTokens[str] = OneTimeTokens(60, clock=lambda: now[0])
    spent, kept = tokens.issue("Postgres"), tokens.issue("MySQL")
    assert tokens.get(spent) == "Postgres" and tokens.get("unknown") is None
    assert tokens.spend(spent) and not tokens.spend(spent)
    assert tokens.get(spent) is None
    now[0] += 61
    assert tokens.get(kept) is None and not tokens.spend(kept)


def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/", _ok)])


@pytest.mark.parametrize(
    ("guarded", "host"),
    [
        (BearerAuth(APP, token="token", forward_key=False), "127.0.0.1"),
        (TokenGuard(APP, "token", 8000), "127.0.0.1:8000"),
    ],
)
async def test_a_listener_refuses_a_non_ascii_bearer_token(guarded: ASGIApp, host: str) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url=f"http://{host}"
    ) as client:
        refused = await client.get("/", headers={"Authorization": NON_ASCII})
        answered = await client.get("/", headers={"Authorization": "Bearer token"})
    assert (refused.status_code, answered.status_code) == (401, 200)


def test_failures_past_the_limit_wait_for_the_window_to_end() -> None:
    now = [1000.0]
    limit = FailureLimit(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert limit.retry_after("127.0.0.1") is None
        limit.fail("127.0.0.1")
    assert limit.retry_after("127.0.0.1") == 60
    assert limit.retry_after("another") is None  # counted per key
    now[0] += 45
    assert limit.retry_after("127.0.0.1") == 15
    now[0] += 15
    assert limit.retry_after("127.0.0.1") is None  # a new window


def test_a_failure_limit_forgets_old_keys_rather_than_grow() -> None:
    now = [0.0]
    limit = FailureLimit(1, 10, clock=lambda: now[0], keys=100)
    for n in range(1000):
        limit.fail(f"k{n}")
    assert len(limit) <= 100
    assert limit.retry_after("k999") == 10  # the newest are kept


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ({"Host": "127.0.0.1:8000"}, None),
        ({"Host": "localhost:8000"}, None),
        ({"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}, None),
        ({"Host": "evil.example:8000"}, 400),
        ({"Host": "127.0.0.1:8001"}, 400),
        ({"Host": "127.0.0.1:8000.evil.example"}, 400),
        ({}, 400),
        ({"Host": "127.0.0.1:8000", "Origin": "http://evil.example"}, 403),
        ({"Host": "127.0.0.1:8000", "Origin": "null"}, 403),
        ({"Host": "127.0.0.1:8000", "Origin": "https://127.0.0.1:8000"}, 403),
    ],
)
def test_a_loopback_listener_answers_only_its_own_host_and_origin(
    headers: dict[str, str], refusal: int | None
) -> None:
    allowed = Visitors(listener_hosts(8000))
    problem = allowed.refusal({k.lower(): v for k, v in headers.items()})
    assert (problem[0] if problem else None) == refusal


@pytest.mark.parametrize(
    ("address", "host", "allowed"),
    [
        ("::1", "[::1]:8010", True),
        ("0.0.0.0", "127.0.0.1:8010", True),
        ("0.0.0.0", "0.0.0.0:8010", False),
        ("10.0.0.5", "10.0.0.5:8010", True),
        ("10.0.0.5", "10.0.0.6:8010", False),
    ],
)
def test_a_listener_answers_to_the_address_it_is_bound_to(
    address: str, host: str, allowed: bool
) -> None:
    assert (host in listener_hosts(8010, address)) is allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.5.0.1", True), ("localhost", True), ("::1", True)],
        *[("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("x", False)],
    ],
)
def test_which_bind_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
