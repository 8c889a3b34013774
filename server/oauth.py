"""Sign in with PostHog: the server as an OAuth authorization server and protected resource for
MCP clients, and as an OAuth client of PostHog (``--oauth``).

No token passthrough (the MCP authorization specification forbids it): an MCP client gets this
server's own tokens, bound to its resource URL (``<public URL>/mcp``), and each person's PostHog
token stays here, encrypted, and is used for their calls only.

The flow, once per person and client::

    MCP client --/authorize--> this server --302--> PostHog /oauth/authorize/ (consent)
    PostHog --302--> this server /oauth/callback: code exchanged (PKCE) for the person's
        PostHog tokens; their region found; the grant kept, encrypted
    this server --302--> the client's redirect_uri with this server's own code
    MCP client --/token--> this server's access and refresh tokens

Where things come from:

- the SDK (``mcp.server.auth``): the ``/authorize``, ``/token``, ``/register`` and ``/revoke``
  handlers and their checks (PKCE, redirect URIs, client authentication), the RFC 9728
  metadata route, and the bearer middleware with its audience check and its 401 naming the
  metadata (``WWW-Authenticate: Bearer ... resource_metadata=...``). :class:`Provider` is the
  SDK's provider protocol;
- hand-written here, because the SDK has neither: the upstream leg to PostHog (the redirect,
  the callback, the code exchange, refresh, revocation), the keeping of grants, and the
  metadata additions that say client ID metadata documents are accepted (the fetcher is
  server/cimd.py). This server is itself a client ID metadata document client of PostHog:
  it serves its own document at ``/oauth/client-metadata.json`` and uses that URL as its
  ``client_id``, so no registration with PostHog is needed.

What is kept, in the deployment's store (Redis with ``POSTHOG_REDIS_URL``, else memory),
each record under a SHA-256 of its secret (a token is never a key) and encrypted with
Fernet (``POSTHOG_OAUTH_KEYS``, newest first; older keys still decrypt, so keys rotate):

==========================  ===========================================  =============
record                      holds                                        lives
==========================  ===========================================  =============
``oauth:pending:<state>``   the client's authorization request            10 minutes
``oauth:grant:<id>``        the person's PostHog tokens, region, project  30 days
``oauth:code:<code>``       what this server's code grants                5 minutes
``oauth:access:<token>``    client, grant, scopes, audience               the token's
``oauth:refresh:<token>``   client, grant, scopes, audience               30 days
``oauth:session:<cookie>``  the browser's grant (the approval page)       12 hours
``oauth:client:<id>``       a dynamically registered client               1 year
==========================  ===========================================  =============

A PostHog token that is about to expire is refreshed by one instance (a lock in the store:
``oauth:refreshing:<grant>``); the others wait for it and use the new one. A revoked token
(``/revoke``) ends its grant: every token of that sign-in stops working.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    BearerAuthBackend,
    RequireAuthMiddleware,
)
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    ProviderTokenVerifier,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import (
    build_metadata,
    build_resource_metadata_url,
    create_auth_routes,
    create_protected_resource_routes,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl, ValidationError
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.pages import render
from ..tools.confirm import StoreUnavailable
from ..tools.table import ENDPOINTS
from .callers import SIGNED_IN, Caller
from .cimd import DocumentFetcher, DocumentRefused, is_document_url
from .config import HOST_SHORTCUTS, OAUTH_PROXY, Settings
from .filters import enabled
from .records import Records

log = logging.getLogger("posthog_warehouse_mcp.oauth")

CALLBACK_PATH = "/oauth/callback"
DOCUMENT_PATH = "/oauth/client-metadata.json"
SESSION_COOKIE = "posthog_mcp_session"
CLIENT_NAME = "PostHog warehouse MCP"

PENDING_SECONDS = 600
CODE_SECONDS = 300
REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
GRANT_SECONDS = 30 * 24 * 3600
SESSION_SECONDS = 12 * 3600
CLIENT_SECONDS = 365 * 24 * 3600
DOCUMENT_CACHE_SECONDS = 3600
# A PostHog token with less left than this is refreshed before it is used.
REFRESH_MARGIN_SECONDS = 60.0
# How long one instance may hold a grant's refresh lock, and how long the others wait.
LOCK_SECONDS = 30.0
WAIT_SECONDS = 15.0
UPSTREAM_TIMEOUT = 15.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def scopes_for(settings: Settings) -> list[str]:
    """The PostHog scopes the offered tools need (a read-only server asks for reads only)."""
    found = {scope for row in ENDPOINTS if enabled(settings, row) for scope in row.scopes}
    return sorted(found)


class Cipher:
    """Fernet encryption of what the store keeps; the first key encrypts, every key decrypts.

    Without keys (one process, nothing shared), a key is made for this process: its grants
    end with it.
    """

    def __init__(self, keys: list[str]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        self._fernet = MultiFernet([Fernet(k) for k in keys] or [Fernet(Fernet.generate_key())])

    def seal(self, value: dict[str, Any]) -> str:
        """`value` as JSON, encrypted."""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, text: str) -> dict[str, Any] | None:
        """What :meth:`seal` sealed; None when no key opens it (a retired key's record)."""
        from cryptography.fernet import InvalidToken

        try:
            found = json.loads(self._fernet.decrypt(text.encode()))
        except (InvalidToken, ValueError):
            log.warning("an OAuth record could not be decrypted with POSTHOG_OAUTH_KEYS")
            return None
        return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class Vault:
    """Records kept encrypted, each under a digest of its secret."""

    records: Records
    cipher: Cipher

    async def put(self, kind: str, secret: str, value: dict[str, Any], seconds: float) -> None:
        """Keep `value` for `seconds`.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        await self.records.hold(self._key(kind, secret), self.cipher.seal(value), seconds)

    async def get(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, left in place."""
        found = await self.records.peek(self._key(kind, secret))
        return self.cipher.open(found) if found is not None else None

    async def take(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, removed (of two takers, one gets it)."""
        found = await self.records.take(self._key(kind, secret))
        return self.cipher.open(found) if found is not None else None

    async def claim(self, kind: str, secret: str, seconds: float) -> bool:
        """A lock on `secret`'s record of `kind`; :meth:`release` ends it early."""
        return await self.records.claim(self._key(kind, secret), seconds)

    async def release(self, kind: str, secret: str) -> None:
        """End a lock."""
        await self.records.take(self._key(kind, secret))

    @staticmethod
    def _key(kind: str, secret: str) -> str:
        return f"oauth:{kind}:{_digest(secret)}"


@dataclass(frozen=True)
class Grant:
    """A person's sign-in: their PostHog tokens, where their API is, which project."""

    id: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    api_base: str
    environment: str
    scopes: list[str]

    def caller(self, path_prefix: str) -> Caller:
        """How their calls reach PostHog."""
        return Caller(
            api_key=self.access_token,
            base_path=f"{self.api_base}/api/{path_prefix}/{self.environment}/",
            identity=f"oauth:{self.id}",
        )

    @classmethod
    def of(cls, found: dict[str, Any]) -> Grant:
        """A grant from its record."""
        return cls(
            id=str(found["id"]),
            access_token=str(found["access_token"]),
            refresh_token=found.get("refresh_token"),
            expires_at=float(found["expires_at"]),
            api_base=str(found["api_base"]),
            environment=str(found["environment"]),
            scopes=list(found["scopes"]),
        )


class UpstreamRefused(Exception):
    """PostHog refused a code or a refresh token (the person must sign in again)."""


class PostHogOAuth:
    """This server as PostHog's OAuth client: a public client (PKCE, no secret) named by its
    client ID metadata document."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        public = settings.mcp_public_url or ""
        self.settings = settings
        self.server = settings.oauth_server
        self.client_id = public + DOCUMENT_PATH
        self.redirect_uri = public + CALLBACK_PATH
        self.scopes = scopes_for(settings)
        self.transport = transport

    def document(self) -> dict[str, Any]:
        """This server's client ID metadata document, which PostHog fetches."""
        return {
            "client_id": self.client_id,
            "client_name": CLIENT_NAME,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }

    def authorize_url(self, state: str, challenge: str) -> str:
        """PostHog's consent page for one sign-in."""
        query = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.server}/oauth/authorize/?{urlencode(query)}"

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=UPSTREAM_TIMEOUT, transport=self.transport, follow_redirects=False
        )

    async def _token(self, fields: dict[str, str]) -> dict[str, Any]:
        try:
            async with self._http() as http:
                answer = await http.post(f"{self.server}/oauth/token/", data=fields)
        except httpx.HTTPError as exc:
            raise UpstreamRefused(
                f"PostHog's token endpoint could not be reached ({exc})"
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise UpstreamRefused(f"PostHog answered {answer.status_code} ({error or 'no error'})")
        return body

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """PostHog's tokens for a code.

        Raises:
            UpstreamRefused: PostHog refused it or could not be reached.
        """
        return await self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New PostHog tokens for a refresh token (PostHog rotates them).

        Raises:
            UpstreamRefused: PostHog refused it or could not be reached.
        """
        return await self._token(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            }
        )

    async def revoke(self, token: str) -> None:
        """Revoke a PostHog token (best effort: the grant is forgotten here either way)."""
        try:
            async with self._http() as http:
                await http.post(
                    f"{self.server}/oauth/revoke/",
                    data={"token": token, "client_id": self.client_id},
                )
        except httpx.HTTPError as exc:
            log.warning("PostHog's revocation endpoint could not be reached: %s", exc)

    async def api_base(self, access_token: str) -> str:
        """Where this person's PostHog API is: with PostHog's region-agnostic OAuth server,
        the Cloud region whose ``/api/users/@me/`` knows the token; otherwise the PostHog
        host."""
        if self.server != OAUTH_PROXY:
            return self.settings.host
        headers = {"Authorization": f"Bearer {access_token}"}
        async with self._http() as http:
            for region in ("us", "eu"):
                base = HOST_SHORTCUTS[region]
                try:
                    answer = await http.get(f"{base}/api/users/@me/", headers=headers)
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    return base
        return self.settings.host


def _environment(tokens: dict[str, Any]) -> str:
    """The project the person chose on PostHog's consent page (one scoped team), or their
    current one."""
    teams = tokens.get("scoped_teams")
    if isinstance(teams, list) and len(teams) == 1 and str(teams[0]).isdigit():
        return str(teams[0])
    return "@current"


class Provider:
    """The SDK's ``OAuthAuthorizationServerProvider``, over the vault, with PostHog upstream."""

    def __init__(
        self,
        settings: Settings,
        vault: Vault,
        upstream: PostHogOAuth,
        fetcher: DocumentFetcher,
    ) -> None:
        public = settings.mcp_public_url or ""
        self.settings = settings
        self.vault = vault
        self.upstream = upstream
        self.fetcher = fetcher
        self.resource = f"{public}/mcp"
        self.scopes = upstream.scopes
        self.token_seconds = settings.mcp_oauth_token_seconds
        self.secure_cookie = public.startswith("https://")

    # Clients.

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        """A registered client, or the one a client ID metadata document describes."""
        if is_document_url(client_id):
            cached = await self.vault.get("document", client_id)
            if cached is not None:
                return OAuthClientInformationFull.model_validate(cached)
            try:
                client = await self.fetcher.fetch(client_id, scope=" ".join(self.scopes))
            except DocumentRefused as exc:
                log.info("client metadata document refused: %s", exc)
                return None
            await self.vault.put(
                "document", client_id, client.model_dump(mode="json"), DOCUMENT_CACHE_SECONDS
            )
            return client
        found = await self.vault.get("client", client_id)
        return OAuthClientInformationFull.model_validate(found) if found is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        """Keep a dynamically registered client (its secret, if any, encrypted)."""
        await self.vault.put(
            "client", client_info.client_id, client_info.model_dump(mode="json"), CLIENT_SECONDS
        )

    # Authorization: to PostHog and back.

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Keep the client's request; send the person to PostHog's consent page."""
        if params.resource is not None and not _same_resource(params.resource, self.resource):
            raise AuthorizeError("invalid_target", f"this server's resource is {self.resource}")
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        pending = {
            "client_id": client.client_id,
            "redirect_uri": str(params.redirect_uri),
            "explicit": params.redirect_uri_provided_explicitly,
            "code_challenge": params.code_challenge,
            "state": params.state,
            "scopes": params.scopes or self.scopes,
            "resource": self.resource,
            "verifier": verifier,
        }
        await self.vault.put("pending", state, pending, PENDING_SECONDS)
        return self.upstream.authorize_url(state, challenge)

    async def callback(self, request: Request) -> Response:
        """PostHog's redirect back: exchange its code, keep the grant, give the client a code
        of this server's own (and the browser a session, for the approval page)."""
        state = request.query_params.get("state", "")
        try:
            pending = await self.vault.take("pending", state) if state else None
        except StoreUnavailable:
            return _page("Not available now", "The server cannot reach its store.", 503)
        if pending is None:
            return _page("Sign-in expired", "This sign-in was used or has expired.", 400)
        back = str(pending["redirect_uri"])
        client_state = pending.get("state")
        code = request.query_params.get("code")
        if request.query_params.get("error") or not code:
            return _to_client(back, error="access_denied", state=client_state)
        try:
            tokens = await self.upstream.exchange(code, str(pending["verifier"]))
            grant = Grant(
                id=secrets.token_urlsafe(24),
                access_token=str(tokens["access_token"]),
                refresh_token=tokens.get("refresh_token"),
                expires_at=time.time() + float(tokens.get("expires_in") or 3600),
                api_base=await self.upstream.api_base(str(tokens["access_token"])),
                environment=_environment(tokens),
                scopes=str(tokens.get("scope") or "").split(),
            )
            await self.vault.put("grant", grant.id, asdict(grant), GRANT_SECONDS)
            ours = secrets.token_urlsafe(32)
            record = {
                key: pending[key]
                for key in ("client_id", "redirect_uri", "explicit", "code_challenge", "scopes")
            }
            record.update(grant=grant.id, resource=pending["resource"])
            record["expires_at"] = time.time() + CODE_SECONDS
            await self.vault.put("code", ours, record, CODE_SECONDS)
            session = secrets.token_urlsafe(32)
            await self.vault.put("session", session, {"grant": grant.id}, SESSION_SECONDS)
        except UpstreamRefused as exc:
            log.warning("PostHog sign-in failed: %s", exc)
            return _to_client(back, error="access_denied", state=client_state)
        except StoreUnavailable:
            return _to_client(back, error="temporarily_unavailable", state=client_state)
        response = _to_client(back, code=ours, state=client_state)
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_SECONDS,
            httponly=True,
            secure=self.secure_cookie,
            samesite="lax",
        )
        return response

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        """What one of this server's codes grants (still unused)."""
        found = await self.vault.get("code", authorization_code)
        if found is None or found["client_id"] != client.client_id:
            return None
        return AuthorizationCode(
            code=authorization_code,
            scopes=list(found["scopes"]),
            expires_at=float(found["expires_at"]),
            client_id=str(found["client_id"]),
            code_challenge=str(found["code_challenge"]),
            redirect_uri=AnyUrl(str(found["redirect_uri"])),
            redirect_uri_provided_explicitly=bool(found["explicit"]),
            resource=str(found["resource"]),
            subject=str(found["grant"]),
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        """Tokens for a code, once."""
        if await self.vault.take("code", authorization_code.code) is None:
            raise TokenError("invalid_grant", "this authorization code was used already")
        return await self._issue(
            client.client_id,
            str(authorization_code.subject),
            authorization_code.scopes,
            authorization_code.resource or self.resource,
        )

    async def _issue(
        self, client_id: str, grant: str, scopes: list[str], resource: str
    ) -> OAuthToken:
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        expires_at = int(time.time() + self.token_seconds)
        record = {"client_id": client_id, "grant": grant, "scopes": scopes, "resource": resource}
        await self.vault.put(
            "access", access, {**record, "expires_at": expires_at}, self.token_seconds
        )
        await self.vault.put("refresh", refresh, record, REFRESH_TOKEN_SECONDS)
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.token_seconds,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        """A live refresh token of this client's."""
        found = await self.vault.get("refresh", refresh_token)
        if found is None or found["client_id"] != client.client_id:
            return None
        if await self.vault.get("grant", str(found["grant"])) is None:
            return None
        return RefreshToken(
            token=refresh_token,
            client_id=str(found["client_id"]),
            scopes=list(found["scopes"]),
            resource=str(found["resource"]),
            subject=str(found["grant"]),
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        """New tokens for a refresh token, which is used up (rotation)."""
        if await self.vault.take("refresh", refresh_token.token) is None:
            raise TokenError("invalid_grant", "this refresh token was used already")
        return await self._issue(
            client.client_id,
            str(refresh_token.subject),
            scopes or refresh_token.scopes,
            refresh_token.resource or self.resource,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        """A live access token, whose sign-in has not been revoked."""
        try:
            found = await self.vault.get("access", token)
            if found is None or await self.vault.get("grant", str(found["grant"])) is None:
                return None
        except StoreUnavailable:
            return None
        return AccessToken(
            token=token,
            client_id=str(found["client_id"]),
            scopes=list(found["scopes"]),
            expires_at=int(found["expires_at"]),
            resource=str(found["resource"]),
            subject=str(found["grant"]),
        )

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        """End the token's sign-in: every token of it stops working, and PostHog's token is
        revoked too."""
        kind = "access" if isinstance(token, AccessToken) else "refresh"
        await self.vault.take(kind, token.token)
        if token.subject is None:
            return
        found = await self.vault.take("grant", token.subject)
        if found is not None:
            grant = Grant.of(found)
            await self.upstream.revoke(grant.refresh_token or grant.access_token)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        """Not offered: a person signs in with PostHog."""
        raise TokenError("unsupported_grant_type", "sign in with PostHog (authorization_code)")

    # The person's PostHog token, for their calls.

    async def grant(self, grant_id: str) -> Grant | None:
        """The sign-in's grant with a PostHog token that is not about to expire (refreshed
        once across instances when it is), or None when the person must sign in again.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        found = await self.vault.get("grant", grant_id)
        if found is None:
            return None
        grant = Grant.of(found)
        if grant.expires_at - time.time() > REFRESH_MARGIN_SECONDS:
            return grant
        return await self._refreshed(grant)

    async def _refreshed(self, seen: Grant) -> Grant | None:
        if not await self.vault.claim("refreshing", seen.id, LOCK_SECONDS):
            # Another instance refreshes it: wait for the grant it writes.
            with anyio.move_on_after(WAIT_SECONDS):
                while True:
                    await anyio.sleep(0.05)
                    found = await self.vault.get("grant", seen.id)
                    if found is None:
                        return None
                    if float(found["expires_at"]) != seen.expires_at:
                        return Grant.of(found)
            return seen
        try:
            found = await self.vault.get("grant", seen.id)
            if found is None:
                return None
            grant = Grant.of(found)
            if grant.expires_at != seen.expires_at or grant.refresh_token is None:
                return grant  # refreshed meanwhile, or cannot be
            try:
                tokens = await self.upstream.refresh(grant.refresh_token)
            except UpstreamRefused as exc:
                log.warning("a PostHog token could not be refreshed: %s", exc)
                if "invalid_grant" in str(exc):
                    await self.vault.take("grant", grant.id)
                    return None
                return grant
            fresh = Grant(
                id=grant.id,
                access_token=str(tokens["access_token"]),
                refresh_token=tokens.get("refresh_token") or grant.refresh_token,
                expires_at=time.time() + float(tokens.get("expires_in") or 3600),
                api_base=grant.api_base,
                environment=grant.environment,
                scopes=str(tokens.get("scope") or " ".join(grant.scopes)).split(),
            )
            await self.vault.put("grant", grant.id, asdict(fresh), GRANT_SECONDS)
            return fresh
        finally:
            await self.vault.release("refreshing", seen.id)

    async def session_grant(self, request: Request) -> str | None:
        """The grant of the browser's session (the approval page), or None."""
        cookie = request.cookies.get(SESSION_COOKIE)
        found = await self.vault.get("session", cookie) if cookie else None
        return str(found["grant"]) if found is not None else None


def _same_resource(given: str, ours: str) -> bool:
    try:
        return str(AnyHttpUrl(given)).rstrip("/") == str(AnyHttpUrl(ours)).rstrip("/")
    except ValidationError:
        return False


def _to_client(uri: str, **params: str | None) -> RedirectResponse:
    return RedirectResponse(
        construct_redirect_uri(uri, **params),
        status_code=302,
        headers={"Cache-Control": "no-store"},
    )


def _page(title: str, text: str, status: int) -> Response:
    return render(title, f"<p>{text}</p>", status)


class SignedIn:
    """After the SDK's bearer check: the signed-in person's PostHog credentials, put on the
    request for the tool handlers, or a 401 naming the resource metadata when their sign-in
    is gone (revoked, or PostHog refused to refresh it)."""

    def __init__(self, app: ASGIApp, provider: Provider, *, metadata_url: str) -> None:
        self.app = app
        self.provider = provider
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if scope["type"] != "http" or not isinstance(user, AuthenticatedUser):
            await self.app(scope, receive, send)
            return
        try:
            grant = await self.provider.grant(str(user.access_token.subject))
        except StoreUnavailable:
            response: Response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": "store unreachable"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        if grant is None:
            response = JSONResponse(
                {"error": "invalid_token", "error_description": "Sign in with PostHog again."},
                status_code=401,
                headers={
                    "WWW-Authenticate": 'Bearer error="invalid_token", '
                    'error_description="Sign in with PostHog again.", '
                    f'resource_metadata="{self.metadata_url}"'
                },
            )
            await response(scope, receive, send)
            return
        scope[SIGNED_IN] = grant.caller(self.provider.settings.path_prefix)
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class PublicHost:
    """The OAuth routes answer only requests for the deployment's own host (its public URL's,
    or one of ``--allowed-hosts``): no DNS rebinding. Their Origin is not checked: the token,
    registration and revocation endpoints serve browser-based clients of any origin (CORS, as
    the SDK sets them up), and carry no cookie; the callback is a top-level navigation."""

    hosts: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> PublicHost:
        """The hosts `settings` name."""
        public = urlsplit(settings.mcp_public_url or "").netloc
        return cls(frozenset([public, *settings.mcp_allowed_hosts]))

    def allows(self, host: str) -> bool:
        """Whether a Host header names this deployment."""
        for pattern in self.hosts:
            if host == pattern:
                return True
            if pattern.endswith(":*") and host.rpartition(":")[0] == pattern[:-2]:
                return True
        return False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app`, answering only this deployment's hosts."""
        return _HostChecked(app, self)


class _HostChecked:
    """An ASGI app behind :class:`PublicHost` (a class: Starlette would take a function for a
    request handler)."""

    def __init__(self, app: ASGIApp, hosts: PublicHost) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.hosts.allows(
            Request(scope).headers.get("host", "")
        ):
            response = JSONResponse({"detail": "Invalid Host header."}, status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class OAuth:
    """Everything ``--oauth`` adds to the HTTP app: its routes, the guard around ``/mcp``, and
    the approval page's sessions (:class:`~.approvals.Sessions`)."""

    provider: Provider

    async def caller(self, request: Request) -> Caller | None:
        """The person the browser signed in as (its session cookie), with their PostHog
        credentials; None without a session, or when the sign-in has ended."""
        grant_id = await self.provider.session_grant(request)
        grant = await self.provider.grant(grant_id) if grant_id else None
        return grant.caller(self.provider.settings.path_prefix) if grant else None

    @classmethod
    def build(
        cls,
        settings: Settings,
        records: Records,
        *,
        fetcher: DocumentFetcher | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OAuth:
        """The provider for `settings`, keeping its records in `records`."""
        vault = Vault(records, Cipher(settings.oauth_key_list))
        upstream = PostHogOAuth(settings, transport=transport)
        return cls(Provider(settings, vault, upstream, fetcher or DocumentFetcher()))

    @property
    def metadata_url(self) -> str:
        """The RFC 9728 document's URL (``/.well-known/oauth-protected-resource/mcp``)."""
        return str(build_resource_metadata_url(AnyHttpUrl(self.provider.resource)))

    def routes(self) -> list[Route]:
        """The SDK's authorization server and resource metadata routes, with this server's
        own metadata document, callback and client document."""
        provider = self.provider
        # The SDK's settings model keeps a path-less issuer as given (no "/" added): issuers
        # are compared as exact strings (RFC 8414).
        issuer = AuthSettings(
            issuer_url=provider.settings.mcp_public_url or "",
            resource_server_url=provider.resource,
            validate_token_resource=True,
        ).issuer_url
        registration = ClientRegistrationOptions(
            enabled=True, valid_scopes=provider.scopes, default_scopes=provider.scopes
        )
        revocation = RevocationOptions(enabled=True)
        sdk = create_auth_routes(
            provider,
            issuer,
            client_registration_options=registration,
            revocation_options=revocation,
        )
        metadata = build_metadata(issuer, None, registration, revocation)
        # Public clients (PKCE, no secret) and client ID metadata documents are accepted too;
        # the SDK's document names only the secret-based methods.
        metadata.client_id_metadata_document_supported = True
        metadata.token_endpoint_auth_methods_supported = [
            "none",
            "client_secret_post",
            "client_secret_basic",
        ]
        body = metadata.model_dump(mode="json", exclude_none=True)

        async def authorization_server(request: Request) -> Response:
            return JSONResponse(body, headers={"Cache-Control": "public, max-age=3600"})

        document = provider.upstream.document()

        async def client_document(request: Request) -> Response:
            return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})

        kept = [r for r in sdk if r.path != "/.well-known/oauth-authorization-server"]
        return [
            Route("/.well-known/oauth-authorization-server", authorization_server, methods=["GET"]),
            *kept,
            *create_protected_resource_routes(
                AnyHttpUrl(provider.resource),
                [issuer],
                scopes_supported=provider.scopes,
                resource_name=CLIENT_NAME,
            ),
            Route(CALLBACK_PATH, provider.callback, methods=["GET"]),
            Route(DOCUMENT_PATH, client_document, methods=["GET"]),
        ]

    def guard(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the SDK's bearer check (this server's tokens, for its resource only)
        and :class:`SignedIn`."""
        inner = SignedIn(app, self.provider, metadata_url=self.metadata_url)
        required = RequireAuthMiddleware(
            AuthContextMiddleware(inner), [], AnyHttpUrl(self.metadata_url)
        )
        backend = BearerAuthBackend(
            ProviderTokenVerifier(self.provider),
            resource_server_url=AnyHttpUrl(self.provider.resource),
        )
        return AuthenticationMiddleware(required, backend=backend)
