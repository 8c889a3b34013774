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
