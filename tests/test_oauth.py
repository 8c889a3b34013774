"""Sign in with PostHog (``--oauth``): the official MCP client's OAuth support against this
server, which signs the person in at a PostHog stand-in built from the sandbox's OAuth provider
(sandbox/oauth.py: PostHog's paths, consent page and answers) and calls PostHog as them.

Each test runs two loopback servers and a full sign-in; those beyond the first flow, the
metadata and the document fetcher's refusals are in the slow set. Through the balancer and
replicas with the real sandbox: tests/sandbox/test_replicas.py.
"""

from __future__ import annotations

import gzip
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from mcp.client.auth import OAuthClientProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.sandbox.oauth import OAuthProvider
from posthog_warehouse_mcp.server.config import Settings
from posthog_warehouse_mcp.server.oauth import OAuth
from posthog_warehouse_mcp.server.oauth.cimd import DocumentFetcher, DocumentRefused
from posthog_warehouse_mcp.server.oauth.vault import Vault
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


def hosted_settings(public: str, **overrides: Any) -> Settings:
    """This server as deployed with --oauth (stateless HTTP) at `public`."""
    return settings(
        mcp_transport="http",
        mcp_stateless=True,
        mcp_oauth=True,
        mcp_public_url=public,
        personal_api_key=None,
        environment_id=None,
        **overrides,
    )


@asynccontextmanager
async def deployment(
    fetcher: DocumentFetcher | None = None, **overrides: Any
) -> AsyncIterator[Deployment]:
    """A PostHog stand-in and this server (stateless HTTP, --oauth) at a known public URL."""
    posthog = PostHog()
    async with serve(posthog.app()) as posthog_url:
        port = free_port()
        config = hosted_settings(f"http://127.0.0.1:{port}", host=posthog_url, **overrides)
        config.check()
        app = http_app(config, fetcher=fetcher)
        async with serve(app, port=port) as url:
            yield Deployment(url, posthog, posthog_url, app.state.oauth)


async def list_sources(url: str, auth: OAuthClientProvider) -> dict[str, Any]:
    return await call_tool(url, auth, "external-data-sources-list", {"limit": 1})


async def expiring_sign_in(hosted: Deployment) -> tuple[Storage, dict[str, Any]]:
    """A person signed in whose PostHog token is due for a refresh: the client's storage and
    the grant's record as it was."""
    person, storage = Person(hosted.posthog_url), Storage()
    await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
    assert storage.tokens is not None
    vault = hosted.oauth.provider.vault
    record = await vault.get("access", storage.tokens.access_token)
    assert record is not None
    grant = await vault.get("grant", record["grant"])
    assert grant is not None
    await vault.put("grant", grant["id"], {**grant, "expires_at": time.time()}, 600)
    return storage, grant


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
        storage, grant = await expiring_sign_in(hosted)
        assert storage.tokens is not None
        token = storage.tokens.access_token
        provider = hosted.oauth.provider
        first_posthog_token = grant["access_token"]
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
        # The sandbox has one PostHog user: "another person" is that user in another project,
        # whose held calls are not this one's (a call is bound to a user and a project).
        other = Person(hosted.posthog_url, project="")
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
    tmp_path: Path,
    routes: dict[str, Callable[[str], Awaitable[Response]]],
    seen: list[Request] | None = None,
) -> AsyncIterator[Documents]:
    import trustme  # the dev extra's test CA; only these tests need it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "docs.test")
    key, chain = tmp_path / "key.pem", tmp_path / "chain.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    base: list[str] = []

    def endpoint(
        make: Callable[[str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            if seen is not None:
                seen.append(request)
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

    async def compressed(base: str) -> Response:
        body = gzip.compress(
            b'{"client_id": "' + base.encode() + b'/zip.json"' + b" " * 900_000 + b"}"
        )
        return Response(
            body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def resolves_to(*addresses: str) -> Callable[[str, int], Awaitable[list[str]]]:
        async def resolve(host: str, port: int) -> list[str]:
            return list(addresses)

        return resolve

    routes = {
        "/client.json": client_document("/client.json"),
        "/big.json": too_big,
        "/moved.json": moved,
        "/liar.json": client_document("/client.json"),
        "/secret.json": client_document(
            "/secret.json", token_endpoint_auth_method="client_secret_post"
        ),
        "/evil.json": client_document("/evil.json", redirect_uris=["javascript://x/%0aalert(1)"]),
        "/zip.json": compressed,
    }
    seen: list[Request] = []
    async with documents(tmp_path, routes, seen) as served:
        fetcher = served.fetcher
        strict = DocumentFetcher(verify=fetcher.verify)  # as deployed: no loopback
        shared = DocumentFetcher(
            verify=fetcher.verify, resolve=await resolves_to("100.100.100.200")
        )
        tunnelled = DocumentFetcher(
            verify=fetcher.verify, resolve=await resolves_to("2002:a9fe:a9fe::")
        )
        good = await fetcher.fetch(f"{served.url}/client.json", scope=None)
        refusals = {}
        for name, url, by in [
            ("plain http", served.url.replace("https", "http") + "/client.json", fetcher),
            ("loopback", "https://127.0.0.1/client.json", strict),
            ("private", "https://10.1.2.3/client.json", strict),
            ("another port", f"{served.url}/client.json", strict),
            ("shared address", "https://metadata.example/client.json", shared),
            ("6to4", "https://metadata.example/client.json", tunnelled),
            ("bad redirect", f"{served.url}/evil.json", fetcher),
            ("compressed", f"{served.url}/zip.json", fetcher),
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
    assert "port 443" in refusals["another port"]
    assert "private or loopback" in refusals["shared address"]
    assert "private or loopback" in refusals["6to4"]
    assert "redirect_uri" in refusals["bad redirect"]
    assert "compressed" in refusals["compressed"]
    # Compression was not asked for: what arrives is what is counted against the cap.
    assert {r.headers.get("accept-encoding") for r in seen} == {"identity"}
    assert "larger than" in refusals["too big"]
    assert "answered 302" in refusals["redirect"]
    assert "not its own URL" in refusals["not its own url"]
    assert "client_secret_post" in refusals["a secret"]
    assert "could not be fetched" in refusals["untrusted"]


# The security review's findings (issue 25's follow-up): each test fails without its fix.


async def register(
    http: httpx.AsyncClient, url: str, redirect: str, **extra: Any
) -> httpx.Response:
    body = {"client_name": "Evil client", "redirect_uris": [redirect], **extra}
    return await http.post(f"{url}/register", json=body)


def authorize_query(client_id: str, redirect: str, **extra: str) -> dict[str, str]:
    return {
        "client_id": client_id,
        "redirect_uri": redirect,
        "response_type": "code",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "state": "client-state",
        **extra,
    }


async def test_a_client_is_named_on_this_servers_consent_page_before_posthog_asks() -> None:
    redirect = "https://evil.example/cb"
    async with deployment() as hosted, httpx.AsyncClient() as browser:
        plain_http = await register(browser, hosted.url, "http://evil.example/cb")
        registered = await register(browser, hosted.url, redirect)
        client_id = registered.json()["client_id"]
        query = authorize_query(client_id, redirect, scope="external_data_source:read")
        started = await browser.get(f"{hosted.url}/authorize", params=query)
        consent_url = started.headers["location"]
        page = await browser.get(consent_url)
        request = parse_qs(urlsplit(consent_url).query)["request"][0]
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token is not None
        allow = {"request": request, "token": token[1], "decision": "allow"}
        consent = f"{hosted.url}/oauth/consent"
        cross_site = await browser.post(
            consent, data=allow, headers={"Origin": "https://evil.example"}
        )
        async with httpx.AsyncClient() as other_browser:  # no consent cookie
            forged = await other_browser.post(consent, data=allow, headers={"Origin": hosted.url})
        allowed = await browser.post(consent, data=allow, headers={"Origin": hosted.url})
    assert plain_http.status_code == 400  # redirect URIs: https, or http on loopback only
    assert registered.status_code == 201, registered.text
    # Not straight to PostHog (whose page names only this server): this server's page first.
    assert started.status_code == 302
    assert consent_url.startswith(f"{hosted.url}/oauth/consent?")
    assert page.status_code == 200
    assert "Evil client" in page.text and "evil.example" in page.text
    assert cross_site.status_code == 403 and forged.status_code == 403
    assert allowed.status_code == 302
    to_posthog = allowed.headers["location"]
    assert to_posthog.startswith(f"{hosted.posthog_url}/oauth/authorize/")
    # PostHog is asked for the scopes the client asked for (and who the person is), no more.
    assert parse_qs(urlsplit(to_posthog).query)["scope"] == ["external_data_source:read user:read"]


@pytest.mark.slow
async def test_redirect_uris_must_be_https_loopback_http_or_a_private_scheme() -> None:
    async with deployment() as hosted, httpx.AsyncClient() as http:
        refused = [
            await register(http, hosted.url, uri)
            for uri in ("http://evil.example/cb", "javascript://x/%0aalert(1)", "data:,x")
        ]
        accepted = [
            await register(http, hosted.url, uri)
            for uri in ("https://app.example/cb", "http://127.0.0.1:8/cb", "com.example.app:/cb")
        ]
    assert [r.status_code for r in refused] == [400, 400, 400]
    assert all(r.json()["error"] == "invalid_redirect_uri" for r in refused)
    assert [r.status_code for r in accepted] == [201, 201, 201]


@pytest.mark.slow
async def test_a_browser_remembers_the_clients_it_approved() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        again = Storage()
        again.client = storage.client
        await list_sources(hosted.url, oauth_client(hosted.url, person, again))
        stranger = Person(hosted.posthog_url)
        other = Storage()
        other.client = storage.client
        await list_sources(hosted.url, oauth_client(hosted.url, stranger, other))
    assert len(person.consent_pages) == 1  # the second sign-in went straight on to PostHog
    assert len(stranger.consent_pages) == 1  # another browser is asked


@pytest.mark.slow
async def test_a_token_calls_only_the_tools_its_scopes_allow() -> None:
    update = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "external-data-schemas-partial-update",
            "arguments": {"id": SCHEMA_ID, "should_sync": False},
        },
    }
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        assert storage.tokens is not None
        vault: Vault = hosted.oauth.provider.vault
        record = await vault.get("access", storage.tokens.access_token)
        assert record is not None
        # The same sign-in, with a token granted reads only.
        reads = {**record, "scopes": ["external_data_source:read"]}
        await vault.put("access", "a-read-only-token", reads, 600)
        read = await post_mcp(hosted.url, "a-read-only-token")
        headers = {**HEADERS, "Authorization": "Bearer a-read-only-token"}
        async with httpx.AsyncClient() as http:
            write = await http.post(f"{hosted.url}/mcp", json=update, headers=headers)
    assert read.status_code == 200 and not read.json()["result"]["isError"]
    answer = write.json()["result"]
    assert answer["isError"] is True
    assert "external_data_source:write" in answer["content"][0]["text"]
    assert hosted.posthog.changed == []


@pytest.mark.slow
async def test_the_callback_answers_only_the_browser_that_began_the_sign_in() -> None:
    async with deployment() as hosted, httpx.AsyncClient() as attacker:
        registered = await register(attacker, hosted.url, CLIENT_REDIRECT)
        query = authorize_query(registered.json()["client_id"], CLIENT_REDIRECT)
        started = await attacker.get(f"{hosted.url}/authorize", params=query)
        person = Person(hosted.posthog_url)
        to_posthog = await person.approve(attacker, started.headers["location"])
        consent = await attacker.get(to_posthog.headers["location"])
        found = re.search(r'name="consent" value="([^"]+)"', consent.text)
        assert found is not None
        decided = await attacker.post(
            f"{hosted.posthog_url}/oauth/authorize/",
            data={"consent": found[1], "allow": "true", "scoped_teams": "1"},
        )
        callback = decided.headers["location"]
        # The attacker's own sign-in, finished in the victim's browser (login CSRF).
        async with httpx.AsyncClient() as victim:
            answered = await victim.get(callback)
    assert answered.status_code == 403
    assert "code=" not in answered.headers.get("location", "")


@pytest.mark.slow
async def test_a_revoke_during_a_refresh_is_not_undone() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    async with deployment() as hosted:
        storage, grant = await expiring_sign_in(hosted)
        assert storage.tokens is not None
        token = storage.tokens.access_token
        provider = hosted.oauth.provider
        refresh = provider.upstream.refresh

        async def slow_refresh(refresh_token: str) -> dict[str, Any]:
            # PostHog has answered with new tokens; the revoke comes before they are kept.
            tokens = await refresh(refresh_token)
            entered.set()
            await gate.wait()
            return tokens

        provider.upstream.refresh = slow_refresh  # type: ignore[method-assign]
        answers: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                answers.append(await post_mcp(hosted.url, token))

            tg.start_soon(call)
            await entered.wait()
            async with httpx.AsyncClient() as http:
                revoked = await revoke(http, hosted.url, storage, token)
            gate.set()
        after = await provider.vault.get("grant", grant["id"])
        later = await post_mcp(hosted.url, token)
    assert revoked.status_code == 200
    assert after is None
    assert later.status_code == 401
    # The refreshed PostHog token was revoked too, not left alive.
    assert not any(g.alive for g in _grants(hosted.posthog))


async def test_an_unreachable_store_is_a_503_not_sign_in_again(tmp_path: Path) -> None:
    from posthog_warehouse_mcp.server.limits import MemoryWindows
    from posthog_warehouse_mcp.server.shared import RedisStore, Shared
    from posthog_warehouse_mcp.server.store import SqliteSpent

    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    shared = Shared(SqliteSpent(tmp_path), MemoryWindows(), records=down)
    public = f"http://127.0.0.1:{free_port()}"
    app = http_app(hosted_settings(public), shared=shared)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=public) as http:
        answer = await http.post(
            "/mcp", json=LIST, headers={**HEADERS, "Authorization": "Bearer x"}
        )
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"


@pytest.mark.slow
async def test_a_refresh_lock_let_go_without_a_new_token_is_taken_by_a_waiter() -> None:
    async with deployment() as hosted:
        _, grant = await expiring_sign_in(hosted)
        provider = hosted.oauth.provider
        # Another instance holds the lock, then gives up without refreshing.
        assert await provider.vault.claim("refreshing", grant["id"], "another-instance", 30)
        found: list[Any] = []
        with anyio.fail_after(5):  # well inside the 15 s a waiter would have waited
            async with anyio.create_task_group() as tg:

                async def use() -> None:
                    found.append(await provider.grant(grant["id"]))

                tg.start_soon(use)
                await anyio.sleep(0.2)
                # Another's release leaves the lock alone; the owner's ends it.
                await provider.vault.release("refreshing", grant["id"], "not-the-owner")
                assert await provider.vault.locked("refreshing", grant["id"])
                await provider.vault.release("refreshing", grant["id"], "another-instance")
    assert found[0].access_token != grant["access_token"]
    assert hosted.posthog.provider.refreshes == 1


@pytest.mark.slow
async def test_a_replayed_code_ends_the_sign_in_it_made() -> None:
    async with deployment() as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        assert storage.tokens is not None and storage.client is not None
        async with httpx.AsyncClient() as http:
            replay = await http.post(
                f"{hosted.url}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": person.codes[-1],
                    "redirect_uri": CLIENT_REDIRECT,
                    "client_id": storage.client.client_id,
                    "client_secret": storage.client.client_secret or "",
                    "code_verifier": "x" * 43,
                },
            )
        after = await post_mcp(hosted.url, storage.tokens.access_token)
    assert replay.status_code == 400
    assert after.status_code == 401


@pytest.mark.slow
async def test_a_person_approves_their_held_call_after_signing_in_again() -> None:
    async with deployment(confirm="human") as hosted:
        person = Person(hosted.posthog_url)
        auth = oauth_client(hosted.url, person, Storage())
        held = await call_tool(
            hosted.url, auth, "external-data-schemas-delete-data", {"id": SCHEMA_ID}
        )
        link = held["approve_at"]
        # The same person signs in again, with another client: a new sign-in, a new session.
        await list_sources(hosted.url, oauth_client(hosted.url, person, Storage()))
        approve = {"name": SCHEMA["name"], "decision": "approve"}
        async with httpx.AsyncClient(cookies=person.cookies) as browser:
            approved = await browser.post(link, data=approve, headers={"origin": hosted.url})
    assert approved.status_code == 200, approved.text
    assert [method for method, _ in hosted.posthog.changed] == ["DELETE"]


@pytest.mark.slow
async def test_refreshing_a_token_does_not_reset_the_rate_limit() -> None:
    async with deployment(mcp_rate_limit_per_minute=3) as hosted:
        person, storage = Person(hosted.posthog_url), Storage()
        await list_sources(hosted.url, oauth_client(hosted.url, person, storage))
        assert storage.tokens is not None and storage.client is not None
        first = [await post_mcp(hosted.url, storage.tokens.access_token) for _ in range(3)]
        async with httpx.AsyncClient() as http:
            refreshed = await http.post(
                f"{hosted.url}/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": storage.tokens.refresh_token or "",
                    "client_id": storage.client.client_id,
                    "client_secret": storage.client.client_secret or "",
                },
            )
        after = await post_mcp(hosted.url, refreshed.json()["access_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert [a.status_code for a in first][-1] == 429  # the sign-in's call counted too
    assert after.status_code == 429


async def test_no_region_answering_is_a_temporary_failure_not_a_guess() -> None:
    from posthog_warehouse_mcp.server.oauth.upstream import PostHogOAuth, UpstreamRefused

    async def refuse(request: Request) -> Response:
        return JSONResponse({"detail": "Invalid access token."}, status_code=401)

    app = Starlette(routes=[Route("/api/users/@me/", refuse)])
    config = settings(mcp_oauth=True, mcp_public_url="http://127.0.0.1:1", oauth_host="oauth")
    upstream = PostHogOAuth(config, transport=httpx.ASGITransport(app=app))
    upstream.regions = ["http://us.test", "http://eu.test"]
    with pytest.raises(UpstreamRefused) as refused:
        await upstream.whoami("pha_token")
    assert refused.value.error == "temporarily_unavailable"


async def test_a_record_copied_under_another_key_does_not_open() -> None:
    from posthog_warehouse_mcp.server.oauth.vault import Cipher
    from posthog_warehouse_mcp.server.records import MemoryRecords

    records = MemoryRecords()
    vault = Vault(records, Cipher([]))
    await vault.put("access", "victims-token", {"grant": "theirs"}, 600)
    sealed = await records.peek(Vault._key("access", "victims-token"))
    assert sealed is not None
    await records.hold(Vault._key("access", "my-token"), sealed, 600)
    assert await vault.get("access", "victims-token") == {"grant": "theirs"}
    assert await vault.get("access", "my-token") is None


@pytest.mark.slow
async def test_the_oauth_routes_are_limited_per_address_and_unused_clients_expire() -> None:
    async with deployment() as hosted, httpx.AsyncClient() as http:
        answers = [await register(http, hosted.url, CLIENT_REDIRECT) for _ in range(121)]
        records = hosted.oauth.provider.vault.records
        kept = getattr(records, "_kept")  # noqa: B009
        client_id = answers[0].json()["client_id"]
        _, until = kept[Vault._key("client", client_id)]
    assert [a.status_code for a in answers[:120]] == [201] * 120
    assert answers[120].status_code == 429 and "retry-after" in answers[120].headers
    assert until - time.monotonic() <= 24 * 3600


async def test_the_document_is_fetched_from_the_address_that_was_checked(tmp_path: Path) -> None:
    async def named(base: str) -> Response:
        port = urlsplit(base).port
        body = {"client_id": f"https://docs.test:{port}/named.json", "client_name": "Named"}
        return JSONResponse({**body, "redirect_uris": [CLIENT_REDIRECT]})

    async with documents(tmp_path, {"/named.json": named}) as served:
        port = urlsplit(served.url).port

        # These names resolve only through the fetcher's resolver: a fetch that resolved the
        # name again when connecting (where DNS could answer otherwise) would not reach them.
        async def resolve(host: str, at: int) -> list[str]:
            return ["127.0.0.1"] if host.endswith(".test") else []

        fetcher = DocumentFetcher(
            allow_loopback=True, verify=served.fetcher.verify, resolve=resolve
        )
        client = await fetcher.fetch(f"https://docs.test:{port}/named.json", scope=None)
        with pytest.raises(DocumentRefused) as unnamed:
            # The certificate is still checked against the name (not issued for this one).
            await fetcher.fetch(f"https://other.test:{port}/named.json", scope=None)
    assert client.client_name == "Named"
    assert "could not be fetched" in str(unnamed.value)


def test_mcp_answers_the_public_urls_host_behind_a_wildcard_bind() -> None:
    from posthog_warehouse_mcp.server.transports import security

    checks = security(hosted_settings("https://mcp.example.com", mcp_host="0.0.0.0"))
    assert "mcp.example.com" in (checks.allowed_hosts or [])
    assert "https://mcp.example.com" in (checks.allowed_origins or [])
