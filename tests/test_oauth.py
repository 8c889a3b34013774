"""Sign in with PostHog (``--oauth``): the official MCP client's OAuth support against this
server, which signs the person in at a PostHog stand-in built from the sandbox's OAuth provider
(sandbox/oauth.py: PostHog's paths, consent page and answers) and calls PostHog as them.

Each test runs two loopback servers and a full sign-in; those beyond the first flow, the
metadata and the document fetcher's refusals are in the slow set. Through the balancer and
replicas with the real sandbox: tests/sandbox/test_replicas.py.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.auth import OAuthClientProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.sandbox.oauth import OAuthProvider
from posthog_warehouse_mcp.server.cimd import DocumentFetcher, DocumentRefused
from posthog_warehouse_mcp.server.oauth import OAuth, Vault
from posthog_warehouse_mcp.server.transports import http_app
from tests.signin import (
    CLIENT_REDIRECT,
    Person,
    Storage,
    call_tool,
    innermost,
    oauth_client,
    revoke,
)
from tests.support import SCHEMA, SCHEMA_ID, free_port, serve, settings

pytestmark = pytest.mark.anyio

EMPTY_PAGE = {"count": 0, "next": None, "previous": None, "results": []}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
LIST = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "external-data-sources-list", "arguments": {"limit": 1}},
}


@dataclass
class PostHog:
    """A PostHog stand-in: the sandbox's OAuth provider, and an API that takes its tokens and
    records who called what."""

    provider: OAuthProvider = field(default_factory=OAuthProvider)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, bearer)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (method, bearer)

    def app(self) -> Starlette:
        async def api(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not self.provider.accepts(token):
                return JSONResponse({"detail": "Invalid access token."}, status_code=401)
            self.seen.append((request.url.path, token))
            if request.method != "GET":
                self.changed.append((request.method, token))
                return Response(status_code=204)
            return JSONResponse(
                SCHEMA if "/external_data_schemas/" in request.url.path else EMPTY_PAGE
            )

        methods = ["GET", "POST", "PATCH", "DELETE"]
        routes = [*self.provider.routes(), Route("/api/{rest:path}", api, methods=methods)]
        return Starlette(routes=routes)


@dataclass
class Deployment:
    url: str
    posthog: PostHog
    posthog_url: str
    oauth: OAuth


@asynccontextmanager
async def deployment(
    fetcher: DocumentFetcher | None = None, **overrides: Any
) -> AsyncIterator[Deployment]:
    """A PostHog stand-in and this server (stateless HTTP, --oauth) at a known public URL."""
    posthog = PostHog()
    async with serve(posthog.app()) as posthog_url:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        config = settings(
            mcp_transport="http",
            mcp_stateless=True,
            mcp_oauth=True,
            mcp_public_url=public,
            personal_api_key=None,
            environment_id=None,
            host=posthog_url,
            **overrides,
        )
        config.check()
        app = http_app(config, fetcher=fetcher)
        async with serve(app, port=port) as url:
            yield Deployment(url, posthog, posthog_url, app.state.oauth)


async def list_sources(url: str, auth: OAuthClientProvider) -> dict[str, Any]:
    return await call_tool(url, auth, "external-data-sources-list", {"limit": 1})


async def post_mcp(url: str, token: str | None) -> httpx.Response:
    headers = {**HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{url}/mcp", json=LIST, headers=headers)


async def test_the_mcp_client_signs_in_with_posthog_and_calls_as_that_person() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        answer = await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        anonymous = await post_mcp(hosted.url, None)
    assert answer["results"] == []
    assert storage.tokens is not None and storage.client is not None
    ours = storage.tokens.access_token
    # The call went to PostHog with the person's PostHog token (never this server's token),
    # in the project they chose on PostHog's consent page.
    [(path, bearer)] = hosted.posthog.seen
    assert path == "/api/environments/1/external_data_sources/"
    assert bearer.startswith("pha_") and bearer != ours
    # Discovery: a 401 names the RFC 9728 document, which names this server as the issuer.
    assert anonymous.status_code == 401
    metadata_url = f"{hosted.url}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in anonymous.headers["www-authenticate"]


async def test_protected_resource_and_server_metadata_name_this_deployment() -> None:
    async with deployment() as hosted, httpx.AsyncClient() as http:
        resource = (await http.get(f"{hosted.url}/.well-known/oauth-protected-resource/mcp")).json()
        server = (await http.get(f"{hosted.url}/.well-known/oauth-authorization-server")).json()
        document = (await http.get(f"{hosted.url}/oauth/client-metadata.json")).json()
        foreign = await http.get(
            f"{hosted.url}/.well-known/oauth-authorization-server", headers={"Host": "evil.test"}
        )
    assert resource["resource"] == f"{hosted.url}/mcp"
    assert resource["authorization_servers"] == [f"{hosted.url}"]
    assert "external_data_source:read" in resource["scopes_supported"]
    assert server["issuer"] == hosted.url
    assert server["client_id_metadata_document_supported"] is True
    assert "none" in server["token_endpoint_auth_methods_supported"]
    assert server["code_challenge_methods_supported"] == ["S256"]
    # This server's own client ID metadata document, which PostHog fetches.
    assert document["client_id"] == f"{hosted.url}/oauth/client-metadata.json"
    assert document["redirect_uris"] == [f"{hosted.url}/oauth/callback"]
    assert foreign.status_code == 400


@pytest.mark.slow
async def test_wrong_audience_expired_and_revoked_tokens_are_refused() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        assert storage.tokens is not None and storage.client is not None
        token = storage.tokens.access_token
        vault: Vault = hosted.oauth.provider.vault
        record = await vault.get("access", token)
        assert record is not None
        # The same sign-in's tokens, minted for another resource, and expired.
        other = {**record, "resource": "http://127.0.0.1:1/mcp"}
        await vault.put("access", "for-another-audience", other, 600)
        expired = {**record, "expires_at": int(time.time()) - 5}
        await vault.put("access", "expired-token", expired, 600)
        works = await post_mcp(hosted.url, token)
        wrong_audience = await post_mcp(hosted.url, "for-another-audience")
        too_old = await post_mcp(hosted.url, "expired-token")
        async with httpx.AsyncClient() as http:
            revoked = await revoke(http, hosted.url, storage, token)
        after = await post_mcp(hosted.url, token)
    assert works.status_code == 200, works.text
    assert revoked.status_code == 200, revoked.text
    for refused in (wrong_audience, too_old, after):
        assert refused.status_code == 401
        assert "resource_metadata=" in refused.headers["www-authenticate"]
        assert token not in refused.text
    # Revoking ended the sign-in at PostHog too.
    assert not any(grant.alive for grant in _grants(hosted.posthog))


def _grants(posthog: PostHog) -> list[Any]:
    return [issued.grant for issued in posthog.provider.tokens.values()]


@pytest.mark.slow
async def test_a_person_who_declines_at_posthog_gets_no_token() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url, allow=False), Storage()
        with pytest.raises(ExceptionGroup) as failed:
            await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
    assert "access_denied" in repr(innermost(failed.value))
    assert storage.tokens is None
    assert hosted.posthog.seen == []


@pytest.mark.slow
async def test_an_expiring_posthog_token_is_refreshed_once_for_concurrent_calls() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        assert storage.tokens is not None
        token = storage.tokens.access_token
        provider = hosted.oauth.provider
        record = await provider.vault.get("access", token)
        assert record is not None
        grant = await provider.vault.get("grant", record["grant"])
        assert grant is not None
        first_posthog_token = grant["access_token"]
        await provider.vault.put("grant", grant["id"], {**grant, "expires_at": time.time()}, 600)
        answers: list[httpx.Response] = []

        async def call() -> None:
            answers.append(await post_mcp(hosted.url, token))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(call)
        refreshed = await provider.vault.get("grant", grant["id"])
    assert [a.status_code for a in answers] == [200] * 6
    assert refreshed is not None and refreshed["access_token"] != first_posthog_token
    assert hosted.posthog.provider.refreshes == 1
    bearers = {bearer for _, bearer in hosted.posthog.seen[1:]}
    assert bearers == {refreshed["access_token"]}


@pytest.mark.slow
async def test_posthog_tokens_are_kept_encrypted_and_older_keys_still_open_them() -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with deployment(oauth_keys=old) as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        records = hosted.oauth.provider.vault.records
        kept = [v for v, _ in getattr(records, "_kept").values()]  # noqa: B009
    pha = [token for _, token in hosted.posthog.seen]
    assert pha and not any(token in value for value in kept for token in pha)
    # The records a rotated deployment reads: the new key first, the old one still opens.
    rotated = OAuth.build(
        settings(mcp_oauth=True, mcp_public_url="http://127.0.0.1:1", oauth_keys=f"{new},{old}"),
        records,
    )
    assert storage.tokens is not None
    found = await rotated.provider.load_access_token(storage.tokens.access_token)
    assert found is not None and found.subject is not None


@pytest.mark.slow
async def test_the_approval_page_answers_only_the_signed_in_person_in_their_browser() -> None:
    async with deployment(confirm="human") as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        auth = oauth_client(hosted.url, person, storage)
        held = await call_tool(
            hosted.url, auth, "external-data-schemas-delete-data", {"id": SCHEMA_ID}
        )
        assert "approve_at" in held, held
        link = held["approve_at"]
        assert link.startswith(f"{hosted.url}/approve/") and hosted.posthog.changed == []
        other = Person(hosted.posthog_url)
        await list_sources(hosted.url, oauth_client(hosted.url, other, Storage()))
        approve = {"name": SCHEMA["name"], "decision": "approve"}
        origin = {"origin": hosted.url}
        async with httpx.AsyncClient() as stranger:
            anonymous = [
                await stranger.get(link),
                await stranger.post(link, data=approve, headers=origin),
            ]
        async with httpx.AsyncClient(cookies=other.cookies) as browser:
            another_person = [
                await browser.get(link),
                await browser.post(link, data=approve, headers=origin),
            ]
        assert hosted.posthog.changed == []
        async with httpx.AsyncClient(cookies=person.cookies) as browser:
            shown = await browser.get(link)
            approved = await browser.post(link, data=approve, headers=origin)
    assert [a.status_code for a in anonymous] == [401, 401]
    assert "Sign in first" in anonymous[0].text
    assert [a.status_code for a in another_person] == [403, 403]
    assert shown.status_code == 200
    assert approved.status_code == 200 and "sent once" in approved.text, approved.text
    # Sent once, as the person who made the call (their PostHog token).
    [(method, bearer)] = hosted.posthog.changed
    assert method == "DELETE" and bearer.startswith("pha_")
    assert bearer in {token for _, token in hosted.posthog.seen[:2]}


# Client ID metadata documents, served over loopback TLS by a test CA.


@dataclass
class Documents:
    url: str
    fetcher: DocumentFetcher


@asynccontextmanager
async def documents(
    tmp_path: Path, routes: dict[str, Callable[[str], Awaitable[Response]]]
) -> AsyncIterator[Documents]:
    import trustme  # the dev extra's test CA; only these tests need it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key, chain = tmp_path / "key.pem", tmp_path / "chain.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    base: list[str] = []

    def endpoint(
        make: Callable[[str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            return await make(base[0])

        return answer

    app = Starlette(routes=[Route(path, endpoint(make)) for path, make in routes.items()])
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve(app, ssl_keyfile=str(key), ssl_certfile=str(chain)) as url:
        base.append(url)
        yield Documents(url, DocumentFetcher(allow_loopback=True, verify=context))


def client_document(path: str, **extra: Any) -> Callable[[str], Awaitable[Response]]:
    async def make(base: str) -> Response:
        body = {"client_id": f"{base}{path}", "client_name": "A CIMD client"}
        body["redirect_uris"] = [CLIENT_REDIRECT]
        return JSONResponse({**body, **extra})

    return make


@pytest.mark.slow
async def test_a_client_named_by_its_metadata_document_signs_in(tmp_path: Path) -> None:
    routes = {"/client.json": client_document("/client.json")}
    async with documents(tmp_path, routes) as served, deployment(served.fetcher) as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        auth = oauth_client(hosted.url, person, storage, document=f"{served.url}/client.json")
        answer = await list_sources(hosted.url, auth)
    assert answer["results"] == []
    assert storage.client is not None
    assert storage.client.client_id == f"{served.url}/client.json"
    assert storage.client.client_secret is None


async def test_the_document_fetcher_refuses_what_it_must(tmp_path: Path) -> None:
    async def too_big(base: str) -> Response:
        return JSONResponse({"client_id": f"{base}/big.json", "pad": "x" * 6000})

    async def moved(base: str) -> Response:
        return Response(status_code=302, headers={"Location": f"{base}/client.json"})

    routes = {
        "/client.json": client_document("/client.json"),
        "/big.json": too_big,
        "/moved.json": moved,
        "/liar.json": client_document("/client.json"),
        "/secret.json": client_document(
            "/secret.json", token_endpoint_auth_method="client_secret_post"
        ),
    }
    async with documents(tmp_path, routes) as served:
        fetcher = served.fetcher
        strict = DocumentFetcher(verify=fetcher.verify)  # as deployed: no loopback
        good = await fetcher.fetch(f"{served.url}/client.json", scope=None)
        refusals = {}
        for name, url, by in [
            ("plain http", served.url.replace("https", "http") + "/client.json", fetcher),
            ("loopback", f"{served.url}/client.json", strict),
            ("private", "https://10.1.2.3/client.json", strict),
            ("too big", f"{served.url}/big.json", fetcher),
            ("redirect", f"{served.url}/moved.json", fetcher),
            ("not its own url", f"{served.url}/liar.json", fetcher),
            ("a secret", f"{served.url}/secret.json", fetcher),
            ("untrusted", f"{served.url}/client.json", DocumentFetcher(allow_loopback=True)),
        ]:
            with pytest.raises(DocumentRefused) as refused:
                await by.fetch(url, scope=None)
            refusals[name] = str(refused.value)
    assert good.client_id == f"{served.url}/client.json"
    assert good.token_endpoint_auth_method == "none"
    assert "https://" in refusals["plain http"]
    assert "private or loopback" in refusals["loopback"]
    assert "private or loopback" in refusals["private"]
    assert "larger than" in refusals["too big"]
    assert "answered 302" in refusals["redirect"]
    assert "not its own URL" in refusals["not its own url"]
    assert "client_secret_post" in refusals["a secret"]
    assert "could not be fetched" in refusals["untrusted"]
