"""The sandbox's PostHog OAuth provider (sandbox/oauth.py) answers as PostHog does: its
metadata, the consent page, PKCE, single-use codes, rotating refresh tokens, revocation, and
the refusals in RFC 6749's shapes. In process (no sandbox started, no network)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.oauth import OAuthProvider

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8010"
REDIRECT = "http://127.0.0.1:9/callback"
VERIFIER = "a-pkce-verifier-that-is-long-enough-0123456789abcdef"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


@asynccontextmanager
async def posthog() -> AsyncIterator[tuple[httpx.AsyncClient, OAuthProvider]]:
    provider = OAuthProvider()
    app = Starlette(routes=provider.routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http, provider


async def register(http: httpx.AsyncClient) -> str:
    answer = await http.post(
        "/oauth/register/", json={"client_name": "test", "redirect_uris": [REDIRECT]}
    )
    assert answer.status_code == 201, answer.text
    assert "client_secret" not in answer.json()  # a public client unless it asks for one
    return str(answer.json()["client_id"])


def authorize_query(client_id: str, **overrides: str) -> str:
    query = {
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "external_data_source:read query:read",
        "state": "the-state",
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
        **overrides,
    }
    return "/oauth/authorize/?" + urlencode(query)


async def consent(http: httpx.AsyncClient, client_id: str, *, allow: bool = True) -> str:
    """The code the consent page's Authorize (or Cancel) leads to."""
    page = await http.get(authorize_query(client_id))
    assert page.status_code == 200, page.text
    assert "external_data_source:read" in page.text
    found = re.search(r'name="consent" value="([^"]+)"', page.text)
    assert found is not None
    decided = await http.post(
        "/oauth/authorize/",
        data={"consent": found[1], "allow": str(allow).lower(), "scoped_teams": "1"},
    )
    assert decided.status_code == 302
    location = decided.headers["location"]
    assert location.startswith(REDIRECT)
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["the-state"]
    return query["code"][0] if allow else query["error"][0]


async def token(http: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await http.post("/oauth/token/", data=fields)


async def test_metadata_is_posthogs() -> None:
    async with posthog() as (http, _):
        found: dict[str, Any] = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert found["issuer"] == BASE
    assert found["authorization_endpoint"] == f"{BASE}/oauth/authorize/"
    assert found["token_endpoint"] == f"{BASE}/oauth/token/"
    assert found["revocation_endpoint"] == f"{BASE}/oauth/revoke/"
    assert found["code_challenge_methods_supported"] == ["S256"]
    assert found["client_id_metadata_document_supported"] is True
    assert "external_data_source:write" in found["scopes_supported"]


async def test_a_code_with_its_verifier_gives_posthogs_tokens_once() -> None:
    async with posthog() as (http, provider):
        client = await register(http)
        code = await consent(http, client)
        exchange = {"grant_type": "authorization_code", "client_id": client, "code": code}
        exchange["redirect_uri"] = REDIRECT
        wrong = await token(http, **exchange, code_verifier="not-the-verifier")
        code = await consent(http, client)
        exchange["code"] = code
        issued = await token(http, **exchange, code_verifier=VERIFIER)
        again = await token(http, **exchange, code_verifier=VERIFIER)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["access_token"].startswith("pha_")
    assert body["refresh_token"].startswith("phr_")
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "external_data_source:read query:read"
    assert body["scoped_teams"] == [1]
    assert provider.accepts(body["access_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_refresh_tokens_rotate_and_revocation_ends_the_grant() -> None:
    async with posthog() as (http, provider):
        client = await register(http)
        code = await consent(http, client)
        first = (
            await token(
                http,
                grant_type="authorization_code",
                client_id=client,
                code=code,
                redirect_uri=REDIRECT,
                code_verifier=VERIFIER,
            )
        ).json()
        refresh = {"grant_type": "refresh_token", "client_id": client}
        second = await token(http, **refresh, refresh_token=first["refresh_token"])
        reused = await token(http, **refresh, refresh_token=first["refresh_token"])
        new = second.json()
        revoked = await http.post(
            "/oauth/revoke/", data={"token": new["refresh_token"], "client_id": client}
        )
        me = await http.get(
            "/api/users/@me/", headers={"Authorization": f"Bearer {new['access_token']}"}
        )
    assert second.status_code == 200 and new["access_token"] != first["access_token"]
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert provider.refreshes == 1
    assert revoked.status_code == 200
    assert not provider.accepts(new["access_token"])
    assert not provider.accepts(first["access_token"])
    assert me.status_code == 401


async def test_refusals_name_the_problem_where_posthog_would() -> None:
    async with posthog() as (http, _):
        client = await register(http)
        unknown = await http.get(authorize_query("no-such-client"))
        bad_redirect = await http.get(authorize_query(client, redirect_uri="http://evil.test/"))
        bad_scope = await http.get(authorize_query(client, scope="external_data_source:read *"))
        no_pkce = await http.get(authorize_query(client, code_challenge_method="plain"))
        declined = await consent(http, client, allow=False)
        unknown_client = await token(http, grant_type="authorization_code", client_id="nobody")
    assert unknown.status_code == 400 and "No OAuth application" in unknown.text
    assert bad_redirect.status_code == 400
    for refused, error in ((bad_scope, "invalid_scope"), (no_pkce, "invalid_request")):
        assert refused.status_code == 302
        assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == [error]
    assert declined == "access_denied"
    assert unknown_client.status_code == 401
    assert unknown_client.json()["error"] == "invalid_client"
