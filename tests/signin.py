"""Signing in as a person would: the official MCP client's OAuth support (its storage, its
redirect and callback handlers) and a browser that follows the redirects and answers the
sandbox's PostHog consent page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp_types import CallToolResult
from pydantic import AnyUrl

# Where the MCP client says it takes the code back; nothing listens there (the browser below
# stops at the redirect and hands the code to the client).
CLIENT_REDIRECT = "http://127.0.0.1:9/callback"


class Storage:
    """The MCP client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class Person:
    """A browser that follows the sign-in: this server's /authorize, PostHog's consent page
    (choosing a project), back through this server's callback to the client's redirect."""

    posthog: str
    allow: bool = True
    # The project chosen on PostHog's consent page ("": all projects, so @current).
    project: str = "1"
    asked: list[str] = field(default_factory=list)
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)
    # The server's own consent pages this browser was shown (not for a client it approved).
    consent_pages: list[str] = field(default_factory=list)
    # The codes this server gave the client (a test may replay one).
    codes: list[str] = field(default_factory=list)

    async def approve(self, browser: httpx.AsyncClient, url: str) -> httpx.Response:
        """This server's consent page for the client: allowed, from the page (its Origin and
        its one-time token); a client this browser approved before goes straight on."""
        page = await browser.get(url)
        if page.status_code == 302:
            return page
        assert page.status_code == 200, page.text
        self.consent_pages.append(page.text)
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        request = re.search(r'name="request" value="([^"]+)"', page.text)
        assert token is not None and request is not None
        parts = urlsplit(url)
        return await browser.post(
            f"{parts.scheme}://{parts.netloc}{parts.path}",
            data={"request": request[1], "token": token[1], "decision": "allow"},
            headers={"Origin": f"{parts.scheme}://{parts.netloc}"},
        )

    async def open(self, url: str) -> None:
        self.asked.append(url)

    async def answer(self) -> AuthorizationCodeResult:
        async with httpx.AsyncClient(cookies=self.cookies) as browser:
            to_posthog = await browser.get(self.asked[-1])
            assert to_posthog.status_code == 302, to_posthog.text
            if "/oauth/consent" in to_posthog.headers["location"]:
                to_posthog = await self.approve(browser, to_posthog.headers["location"])
            assert to_posthog.status_code == 302, to_posthog.text
            consent = await browser.get(to_posthog.headers["location"])
            assert consent.status_code == 200, consent.text
            found = re.search(r'name="consent" value="([^"]+)"', consent.text)
            assert found is not None
            decided = await browser.post(
                f"{self.posthog}/oauth/authorize/",
                data={
                    "consent": found[1],
                    "allow": str(self.allow).lower(),
                    "scoped_teams": self.project,
                },
            )
            back = await browser.get(decided.headers["location"])
            assert back.status_code == 302, back.text
            self.cookies.update(browser.cookies)
        query = parse_qs(urlsplit(back.headers["location"]).query)
        if "error" in query:
            raise PermissionError(query["error"][0])
        self.codes.append(query["code"][0])
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])


def oauth_client(
    url: str,
    person: Person,
    storage: Storage,
    *,
    document: str | None = None,
    scope: str | None = None,
) -> OAuthClientProvider:
    """The SDK's OAuth support for an MCP client at `url` (registering with `scope`, when
    given)."""
    return OAuthClientProvider(
        server_url=f"{url}/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="test client", redirect_uris=[AnyUrl(CLIENT_REDIRECT)], scope=scope
        ),
        storage=storage,
        redirect_handler=person.open,
        callback_handler=person.answer,
        client_metadata_url=document,
    )


def innermost(exc: BaseException) -> BaseException:
    """The first exception inside nested exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def call_tool(
    url: str, auth: OAuthClientProvider, name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """One tool call by the official MCP client at ``url/mcp``, signing in as it needs to."""
    result = await tool_result(url, auth, name, arguments)
    assert not result.is_error, result
    return dict(result.structured_content or {})


async def tool_result(
    url: str, auth: OAuthClientProvider, name: str, arguments: dict[str, Any]
) -> CallToolResult:
    """The result of one tool call, a tool error included."""
    async with (
        httpx2.AsyncClient(auth=auth, timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        return await client.call_tool(name, arguments)


async def revoke(http: httpx.AsyncClient, url: str, storage: Storage, token: str) -> httpx.Response:
    """Revoke `token` at the server at `url` (RFC 7009), as the client it was issued to."""
    assert storage.client is not None
    return await http.post(
        f"{url}/revoke",
        data={
            "token": token,
            "client_id": storage.client.client_id,
            "client_secret": storage.client.client_secret or "",
        },
    )
