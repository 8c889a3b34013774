"""Sign in with PostHog: the server as an OAuth authorization server and protected resource for
MCP clients, and as an OAuth client of PostHog (``--oauth``).

No token passthrough (the MCP authorization specification forbids it): an MCP client gets this
server's own tokens, bound to its resource URL (``<public URL>/mcp``), and each person's PostHog
token stays here, encrypted, and is used for their calls only.

The flow, once per person and client::

    MCP client --/authorize--> this server --302--> /oauth/consent: this server's own page
        naming the client (its name, where the code goes, its metadata URL); once approved,
        a browser remembers the client (a sealed cookie) and is not asked again
    this server --302--> PostHog /oauth/authorize/ (PostHog's consent, naming this server)
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
``oauth:client:<id>``       a dynamically registered client               1 day; 1 year
                                                                          once it has a
                                                                          token
``oauth:document:<url>``    a fetched client ID metadata document         1 hour
``oauth:refused:<url>``     why a document was refused                    1 minute
``oauth:refreshing:<id>``   the refresh lock of a grant (its owner)       30 seconds
==========================  ===========================================  =============

Each sealed value names the key it was kept under, and is refused under any other: someone
who can write to the store cannot copy a person's record under a token of their own.

A PostHog token that is about to expire is refreshed by one instance (a lock in the store:
``oauth:refreshing:<grant>``, released only by its owner); the others wait for it and use the
new one, or take the lock themselves when its holder gave up. A revoked token (``/revoke``)
ends its grant: every token of that sign-in stops working, and a refresh under way does not
write it back. A code or refresh token used twice ends its grant too (RFC 9700: a replay is
the sign of a stolen token).

The calls a token makes are held to its scopes: a tool whose row needs a scope the token
lacks is a tool error naming it. PostHog is asked for the scopes the client asked for (or was
registered with), and ``user:read``, to learn who the person is: their held calls are bound to
their PostHog user and project, not to one sign-in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
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
    RegistrationError,
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..loopback.hosts import HostCheck, Visitors, origin_of
from ..loopback.pages import render
from ..tools.confirm import StoreUnavailable
from ..tools.table import ENDPOINTS
from .callers import SIGNED_IN, Caller
from .cimd import DocumentFetcher, DocumentRefused, is_document_url, redirect_uri_problem
from .config import HOST_SHORTCUTS, OAUTH_PROXY, Settings
from .filters import enabled
from .limits import Limit, Limiter, Windows
from .records import Records

log = logging.getLogger("posthog_warehouse_mcp.oauth")

CALLBACK_PATH = "/oauth/callback"
CONSENT_PATH = "/oauth/consent"
DOCUMENT_PATH = "/oauth/client-metadata.json"
SESSION_COOKIE = "posthog_mcp_session"
# The consent form's one-time token (double submit: the form and this cookie must agree).
CONSENT_COOKIE = "posthog_mcp_consent"
# The clients this browser approved, sealed.
APPROVED_COOKIE = "posthog_mcp_approved"
# Which browser began a sign-in: the callback answers that browser only (no login CSRF).
SIGNIN_COOKIE = "posthog_mcp_signin"
CLIENT_NAME = "PostHog warehouse MCP"
# Asked of PostHog beside the client's scopes: /api/users/@me/ says who signed in.
WHOAMI_SCOPE = "user:read"

PENDING_SECONDS = 600
CODE_SECONDS = 300
REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
GRANT_SECONDS = 30 * 24 * 3600
SESSION_SECONDS = 12 * 3600
CLIENT_SECONDS = 365 * 24 * 3600
# A registered client that never gets a token is forgotten after a day.
UNUSED_CLIENT_SECONDS = 24 * 3600
DOCUMENT_CACHE_SECONDS = 3600
REFUSED_CACHE_SECONDS = 60
APPROVED_SECONDS = 30 * 24 * 3600
APPROVED_MAX = 20
# The OAuth routes a client address may call (unauthenticated, so counted by address).
ROUTE_LIMITS = (Limit(120, 60, "a minute", "(fixed)"), Limit(1200, 3600, "an hour", "(fixed)"))
# A PostHog token with less left than this is refreshed before it is used.
REFRESH_MARGIN_SECONDS = 60.0
# How long one instance may hold a grant's refresh lock, and how long the others wait.
LOCK_SECONDS = 30.0
WAIT_SECONDS = 15.0
# A waiter looks at the grant and the lock this often at first, backing off to the most.
POLL_SECONDS = 0.05
POLL_MAX_SECONDS = 0.5
PUT_ATTEMPTS = 3
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
    """Records kept encrypted, each under a digest of its secret and bound to that key (the
    sealed value names it; a value copied under another key does not open)."""

    records: Records
    cipher: Cipher

    async def put(self, kind: str, secret: str, value: dict[str, Any], seconds: float) -> None:
        """Keep `value` for `seconds`.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        key = self._key(kind, secret)
        await self.records.hold(key, self._seal(key, value), seconds)

    async def replace(self, kind: str, secret: str, value: dict[str, Any], seconds: float) -> bool:
        """Keep `value` for `seconds` only over a live record; whether it did (a record taken
        meanwhile, a revoked grant, stays gone).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        key = self._key(kind, secret)
        return await self.records.replace(key, self._seal(key, value), seconds)

    async def get(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, left in place."""
        key = self._key(kind, secret)
        found = await self.records.peek(key)
        return self._open(key, found) if found is not None else None

    async def take(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, removed (of two takers, one gets it)."""
        key = self._key(kind, secret)
        found = await self.records.take(key)
        return self._open(key, found) if found is not None else None

    async def claim(self, kind: str, secret: str, owner: str, seconds: float) -> bool:
        """A lock on `secret`'s record of `kind`, held by `owner`; :meth:`release` ends it."""
        return await self.records.claim(self._key(kind, secret), owner, seconds)

    async def locked(self, kind: str, secret: str) -> bool:
        """Whether someone holds the lock."""
        return await self.records.peek(self._key(kind, secret)) is not None

    async def release(self, kind: str, secret: str, owner: str) -> None:
        """End `owner`'s lock (another's, after `owner`'s expired, is left alone)."""
        await self.records.release(self._key(kind, secret), owner)

    def _seal(self, key: str, value: dict[str, Any]) -> str:
        return self.cipher.seal({"key": key, "value": value})

    def _open(self, key: str, text: str) -> dict[str, Any] | None:
        found = self.cipher.open(text)
        if found is None or found.get("key") != key or not isinstance(found.get("value"), dict):
            if found is not None:
                log.warning("an OAuth record was found under a key it was not kept under")
            return None
        return dict(found["value"])

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
    # Their PostHog user's uuid: who they are, whichever client or sign-in.
    user: str

    def caller(self, path_prefix: str, *, scopes: list[str] | None = None) -> Caller:
        """How their calls reach PostHog; `scopes`, the token's, bound what they may call."""
        allowed = None
        if scopes is not None:
            allowed = frozenset(scopes) & frozenset(self.scopes) if self.scopes else scopes
        return Caller(
            api_key=self.access_token,
            base_path=f"{self.api_base}/api/{path_prefix}/{self.environment}/",
            identity=f"oauth:{self.user}:{self.environment}",
            scopes=frozenset(allowed) if allowed is not None else None,
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
            user=str(found["user"]),
        )


class UpstreamRefused(Exception):
    """PostHog refused a code or a refresh token, or could not be reached; ``error`` is the
    OAuth error code it answered (``invalid_grant``: the person must sign in again), or
    ``temporarily_unavailable`` when it did not answer."""

    def __init__(self, message: str, *, error: str = "temporarily_unavailable") -> None:
        super().__init__(message)
        self.error = error


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
        # Where a region-agnostic sign-in may live (tests: loopback stand-ins).
        self.regions = [HOST_SHORTCUTS["us"], HOST_SHORTCUTS["eu"]]

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

    def authorize_url(self, state: str, challenge: str, scopes: list[str]) -> str:
        """PostHog's consent page for one sign-in, asking for `scopes` (and who they are)."""
        query = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(sorted({*scopes, WHOAMI_SCOPE})),
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
            code = str(error) if error else "temporarily_unavailable"
            if answer.status_code >= 500:
                code = "temporarily_unavailable"
            raise UpstreamRefused(
                f"PostHog answered {answer.status_code} ({error or 'no error'})", error=code
            )
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

    async def whoami(self, access_token: str) -> tuple[str, str]:
        """Where this person's PostHog API is and who they are (their user's uuid): the
        ``/api/users/@me/`` that knows the token, the PostHog host's or, with PostHog's
        region-agnostic OAuth server, a Cloud region's.

        Raises:
            UpstreamRefused: no candidate answered for the token (``temporarily_unavailable``:
                a guess could send every call to the wrong region for the grant's life).
        """
        bases = self.regions if self.server == OAUTH_PROXY else [self.settings.host]
        headers = {"Authorization": f"Bearer {access_token}"}
        async with self._http() as http:
            for base in bases:
                try:
                    answer = await http.get(f"{base}/api/users/@me/", headers=headers)
                    body = answer.json() if answer.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    continue
                if isinstance(body, dict) and body.get("uuid"):
                    return base, str(body["uuid"])
        raise UpstreamRefused("no PostHog region knows this sign-in's token")


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
        self.public = public
        self.resource = f"{public}/mcp"
        self.scopes = upstream.scopes
        self.token_seconds = settings.mcp_oauth_token_seconds
        self.secure_cookie = public.startswith("https://")

    # Clients.

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        """A registered client, or the one a client ID metadata document describes (a refused
        document is remembered for a minute: not fetched again for each request)."""
        if is_document_url(client_id):
            cached = await self.vault.get("document", client_id)
            if cached is not None:
                return OAuthClientInformationFull.model_validate(cached)
            if await self.vault.get("refused", client_id) is not None:
                return None
            try:
                client = await self.fetcher.fetch(client_id, scope=" ".join(self.scopes))
            except DocumentRefused as exc:
                log.info("client metadata document refused: %s", exc)
                await self.vault.put("refused", client_id, {"why": str(exc)}, REFUSED_CACHE_SECONDS)
                return None
            await self.vault.put(
                "document", client_id, client.model_dump(mode="json"), DOCUMENT_CACHE_SECONDS
            )
            return client
        found = await self.vault.get("client", client_id)
        return OAuthClientInformationFull.model_validate(found) if found is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        """Keep a dynamically registered client (its secret, if any, encrypted), for a day
        until it gets a token.

        Raises:
            RegistrationError: a redirect URI that is not https://, http:// on loopback, or a
                private-use scheme.
        """
        for uri in client_info.redirect_uris or []:
            problem = redirect_uri_problem(str(uri))
            if problem is not None:
                raise RegistrationError("invalid_redirect_uri", problem)
        await self.vault.put(
            "client",
            client_info.client_id,
            {**client_info.model_dump(mode="json"), "used": False},
            UNUSED_CLIENT_SECONDS,
        )

    async def _client_used(self, client_id: str) -> None:
        """A registered client got a token: keep it for the year."""
        if is_document_url(client_id):
            return
        found = await self.vault.get("client", client_id)
        if found is not None and not found.get("used"):
            await self.vault.replace("client", client_id, {**found, "used": True}, CLIENT_SECONDS)

    # Authorization: this server's consent, then PostHog and back.

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Keep the client's request; send the person to this server's consent page, which
        names the client (PostHog's names only this server)."""
        if params.resource is not None and not _same_resource(params.resource, self.resource):
            raise AuthorizeError("invalid_target", f"this server's resource is {self.resource}")
        problem = redirect_uri_problem(str(params.redirect_uri))
        if problem is not None:
            raise AuthorizeError("invalid_request", problem)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        registered = client.scope.split() if client.scope else self.scopes
        scopes = [s for s in (params.scopes or registered) if s in self.scopes]
        pending = {
            "client_id": client.client_id,
            "client_name": client.client_name or client.client_id,
            "redirect_uri": str(params.redirect_uri),
            "explicit": params.redirect_uri_provided_explicitly,
            "code_challenge": params.code_challenge,
            "state": params.state,
            "scopes": scopes,
            "resource": self.resource,
            "verifier": verifier,
        }
        await self.vault.put("pending", state, pending, PENDING_SECONDS)
        return f"{self.public}{CONSENT_PATH}?{urlencode({'request': state})}"

    def cookie(self, name: str) -> str:
        """A cookie's name: ``__Host-`` (Secure, this host only, no subdomain may set it) over
        HTTPS; browsers refuse that prefix on plain HTTP (loopback tests)."""
        return f"__Host-{name}" if self.secure_cookie else name

    def _set_cookie(self, response: Response, name: str, value: str, seconds: int) -> None:
        response.set_cookie(
            self.cookie(name),
            value,
            max_age=seconds,
            path="/",
            httponly=True,
            secure=self.secure_cookie,
            samesite="lax",
        )

    def _approved(self, request: Request) -> list[str]:
        found = request.cookies.get(self.cookie(APPROVED_COOKIE))
        opened = self.vault.cipher.open(found) if found else None
        if opened is None or opened.get("key") != APPROVED_COOKIE:
            return []
        return [str(c) for c in opened.get("clients") or []]

    async def consent(self, request: Request) -> Response:
        """This server's consent page: GET shows which client asks (or goes on to PostHog for
        a client this browser approved before); POST, from the page only, is the answer."""
        state = (
            str((await request.form()).get("request", ""))
            if request.method == "POST"
            else request.query_params.get("request", "")
        )
        try:
            pending = await self.vault.get("pending", state) if state else None
        except StoreUnavailable:
            return _page("Not available now", "The server cannot reach its store.", 503)
        if pending is None:
            return _page("Sign-in expired", "This sign-in was used or has expired.", 400)
        if request.method == "GET":
            if pending["client_id"] in self._approved(request):
                return await self._to_posthog(request, state, pending)
            return self._consent_page(state, pending)
        # A form post from this page only: its Origin, and the token this browser was given.
        form = await request.form()
        token = str(form.get("token", ""))
        cookie = request.cookies.get(self.cookie(CONSENT_COOKIE), "")
        if request.headers.get("origin") != origin_of(self.public) or not (
            token and cookie and secrets.compare_digest(token, cookie)
        ):
            return _page("Not accepted", "The answer must come from this server's page.", 403)
        if form.get("decision") != "allow":
            with contextlib.suppress(StoreUnavailable):
                await self.vault.take("pending", state)
            return _to_client(
                str(pending["redirect_uri"]), error="access_denied", state=pending.get("state")
            )
        response = await self._to_posthog(request, state, pending)
        approved = [pending["client_id"], *self._approved(request)]
        approved = list(dict.fromkeys(approved))[:APPROVED_MAX]
        sealed = self.vault.cipher.seal({"key": APPROVED_COOKIE, "clients": approved})
        self._set_cookie(response, APPROVED_COOKIE, sealed, APPROVED_SECONDS)
        response.delete_cookie(self.cookie(CONSENT_COOKIE), path="/", secure=self.secure_cookie)
        return response

    def _consent_page(self, state: str, pending: dict[str, Any]) -> Response:
        token = secrets.token_urlsafe(24)
        client_id = str(pending["client_id"])
        redirect = urlsplit(str(pending["redirect_uri"]))
        where = redirect.netloc or f"{redirect.scheme}:"
        rows = [
            f"<p><strong>{html.escape(str(pending['client_name']))}</strong> asks to use "
            "PostHog's data warehouse as you, through this server.</p><ul>",
            f"<li>Its answer goes to <strong>{html.escape(where)}</strong></li>",
        ]
        if is_document_url(client_id):
            rows.append(f"<li>It is described at {html.escape(client_id)}</li>")
        else:
            rows.append(f"<li>Registered here as {html.escape(client_id)}</li>")
        scopes = ", ".join(html.escape(s) for s in pending["scopes"]) or "none"
        rows.append(f"<li>Scopes: {scopes}</li></ul>")
        rows.append(
            "<p>Allow only a client you are setting up now. PostHog asks next, naming this "
            "server.</p>"
            f'<form method="post" action="{CONSENT_PATH}">'
            f'<input type="hidden" name="request" value="{html.escape(state)}">'
            f'<input type="hidden" name="token" value="{token}">'
            '<button type="submit" name="decision" value="allow">Allow</button> '
            '<button type="submit" name="decision" value="deny">Deny</button></form>'
        )
        response = render("Allow this client?", "".join(rows), 200)
        self._set_cookie(response, CONSENT_COOKIE, token, PENDING_SECONDS)
        return response

    async def _to_posthog(self, request: Request, state: str, pending: dict[str, Any]) -> Response:
        """On to PostHog's consent, with a cookie naming this browser as the one that began
        the sign-in."""
        browser = secrets.token_urlsafe(24)
        try:
            kept = await self.vault.replace(
                "pending", state, {**pending, "browser": _digest(browser)}, PENDING_SECONDS
            )
        except StoreUnavailable:
            return _page("Not available now", "The server cannot reach its store.", 503)
        if not kept:
            return _page("Sign-in expired", "This sign-in was used or has expired.", 400)
        verifier = str(pending["verifier"])
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        response = RedirectResponse(
            self.upstream.authorize_url(state, challenge, list(pending["scopes"])),
            status_code=302,
            headers={"Cache-Control": "no-store"},
        )
        self._set_cookie(response, _signin_cookie(state), browser, PENDING_SECONDS)
        return response

    async def callback(self, request: Request) -> Response:
        """PostHog's redirect back, in the browser that began the sign-in: exchange its code,
        keep the grant, give the client a code of this server's own (and the browser a
        session, for the approval page)."""
        state = request.query_params.get("state", "")
        try:
            pending = await self.vault.take("pending", state) if state else None
        except StoreUnavailable:
            return _page("Not available now", "The server cannot reach its store.", 503)
        if pending is None:
            return _page("Sign-in expired", "This sign-in was used or has expired.", 400)
        browser = request.cookies.get(self.cookie(_signin_cookie(state)), "")
        if not browser or not secrets.compare_digest(
            _digest(browser), str(pending.get("browser", ""))
        ):
            return _page(
                "Not this browser",
                "This sign-in was begun in another browser; nothing was signed in. Start again "
                "from your MCP client.",
                403,
            )
        back = str(pending["redirect_uri"])
        client_state = pending.get("state")
        code = request.query_params.get("code")
        if request.query_params.get("error") or not code:
            return _to_client(back, error="access_denied", state=client_state)
        try:
            tokens = await self.upstream.exchange(code, str(pending["verifier"]))
            api_base, user = await self.upstream.whoami(str(tokens["access_token"]))
            grant = Grant(
                id=secrets.token_urlsafe(24),
                access_token=str(tokens["access_token"]),
                refresh_token=tokens.get("refresh_token"),
                expires_at=time.time() + float(tokens.get("expires_in") or 3600),
                api_base=api_base,
                environment=_environment(tokens),
                scopes=str(tokens.get("scope") or "").split(),
                user=user,
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
            error = "temporarily_unavailable" if exc.error == "temporarily_unavailable" else None
            return _to_client(back, error=error or "access_denied", state=client_state)
        except StoreUnavailable:
            return _to_client(back, error="temporarily_unavailable", state=client_state)
        response = _to_client(back, code=ours, state=client_state)
        response.delete_cookie(
            self.cookie(_signin_cookie(state)), path="/", secure=self.secure_cookie
        )
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
        """What one of this server's codes grants (still unused). A code used again ends the
        sign-in it made (RFC 9700 §4.5: whoever replays it may have stolen it)."""
        found = await self.vault.get("code", authorization_code)
        if found is None:
            await self._replayed("spent-code", authorization_code)
            return None
        if found["client_id"] != client.client_id:
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

    async def _replayed(self, kind: str, secret: str) -> None:
        spent = await self.vault.get(kind, secret)
        if spent is not None:
            log.warning("a used %s was presented again: its sign-in is ended", kind)
            await self._end(str(spent["grant"]))

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        """Tokens for a code, once."""
        if await self.vault.take("code", authorization_code.code) is None:
            raise TokenError("invalid_grant", "this authorization code was used already")
        grant = str(authorization_code.subject)
        await self.vault.put("spent-code", authorization_code.code, {"grant": grant}, GRANT_SECONDS)
        await self._client_used(client.client_id)
        return await self._issue(
            client.client_id,
            grant,
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
        """A live refresh token of this client's (one used already ends its sign-in)."""
        found = await self.vault.get("refresh", refresh_token)
        if found is None:
            await self._replayed("spent-refresh", refresh_token)
            return None
        if found["client_id"] != client.client_id:
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
        grant = str(refresh_token.subject)
        await self.vault.put(
            "spent-refresh", refresh_token.token, {"grant": grant}, REFRESH_TOKEN_SECONDS
        )
        return await self._issue(
            client.client_id,
            grant,
            scopes or refresh_token.scopes,
            refresh_token.resource or self.resource,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        """A live access token, whose sign-in has not been revoked.

        Raises:
            StoreUnavailable: the store cannot be reached (answered 503, not "sign in again").
        """
        found = await self.vault.get("access", token)
        if found is None or await self.vault.get("grant", str(found["grant"])) is None:
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
        if token.subject is not None:
            await self._end(token.subject)

    async def _end(self, grant_id: str) -> None:
        found = await self.vault.take("grant", grant_id)
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
        """`seen`, refreshed by this instance or another. A waiter watches the grant and the
        lock: a new token is used; a lock gone without one (its holder failed or ended) is
        claimed by the waiter, which refreshes itself."""
        owner = secrets.token_urlsafe(16)
        pause = POLL_SECONDS
        with anyio.move_on_after(WAIT_SECONDS):
            while not await self.vault.claim("refreshing", seen.id, owner, LOCK_SECONDS):
                await anyio.sleep(pause)
                pause = min(pause * 2, POLL_MAX_SECONDS)
                found = await self.vault.get("grant", seen.id)
                if found is None:
                    return None
                if float(found["expires_at"]) != seen.expires_at:
                    return Grant.of(found)
            try:
                return await self._refresh_held(seen)
            finally:
                await self.vault.release("refreshing", seen.id, owner)
        return seen  # the holder neither finished nor let go: PostHog may still take it

    async def _refresh_held(self, seen: Grant) -> Grant | None:
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
            if exc.error == "invalid_grant":
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
            user=grant.user,
        )
        # PostHog has rotated the refresh token: losing the new one would end the sign-in.
        for attempt in range(PUT_ATTEMPTS):
            try:
                # Only over the grant still there: one revoked meanwhile stays revoked.
                if not await self.vault.replace("grant", grant.id, asdict(fresh), GRANT_SECONDS):
                    await self.upstream.revoke(fresh.refresh_token or fresh.access_token)
                    return None
                return fresh
            except StoreUnavailable:
                if attempt == PUT_ATTEMPTS - 1:
                    raise
                await anyio.sleep(POLL_SECONDS * (attempt + 1))
        return None  # not reached: the last attempt returns or raises

    async def session_grant(self, request: Request) -> str | None:
        """The grant of the browser's session (the approval page), or None."""
        cookie = request.cookies.get(SESSION_COOKIE)
        found = await self.vault.get("session", cookie) if cookie else None
        return str(found["grant"]) if found is not None else None


def _signin_cookie(state: str) -> str:
    """One cookie per sign-in under way, so that two begun in one browser both finish."""
    return f"{SIGNIN_COOKIE}_{_digest(state)[:16]}"


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
            await _store_down()(scope, receive, send)
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
        scope[SIGNED_IN] = grant.caller(
            self.provider.settings.path_prefix, scopes=list(user.access_token.scopes)
        )
        await self.app(scope, receive, send)


def _store_down() -> Response:
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "store unreachable"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


class StoreDown:
    """A store that cannot be reached is a 503 with ``Retry-After``, never a 401 (which tells
    a client to sign the person in again) or a 500: around the bearer check and the OAuth
    routes, whose SDK handlers let the provider's errors through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except StoreUnavailable:
            if started or scope["type"] != "http":
                raise
            await _store_down()(scope, receive, send)


class PerAddress:
    """The OAuth routes' limit per client address (they are unauthenticated, and write to the
    store): past it, 429 with ``Retry-After``. Counted in the deployment's store, as the
    per-caller limits are (server/limits.py)."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        refused = await self.limiter.check(f"oauth-ip:{address}")
        if refused is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "error": "temporarily_unavailable",
                "error_description": f"Too many requests; retry in {refused.retry_after} s.",
            },
            status_code=429,
            headers={"Retry-After": str(refused.retry_after)},
        )
        await response(scope, receive, send)


@dataclass(frozen=True)
class PublicHost:
    """The OAuth routes answer only requests for the deployment's own host (its public URL's,
    or one of ``--allowed-hosts``): no DNS rebinding. Their Origin is not checked here: the
    token, registration and revocation endpoints serve browser-based clients of any origin
    (CORS, as the SDK sets them up), and carry no cookie; the callback is a top-level
    navigation; the consent page checks its own form's Origin. The check is the loopback
    listeners' (loopback/hosts.py)."""

    hosts: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> PublicHost:
        """The hosts `settings` name."""
        public = urlsplit(settings.mcp_public_url or "").netloc
        return cls(frozenset([public, *settings.mcp_allowed_hosts]))

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app`, answering only this deployment's hosts."""
        return HostCheck(app, Visitors(self.hosts, check_origin=False))


@dataclass
class OAuth:
    """Everything ``--oauth`` adds to the HTTP app: its routes, the guard around ``/mcp``, and
    the approval page's sessions (:class:`~.approvals.Sessions`)."""

    provider: Provider
    # The OAuth routes' per-address limit (None: not limited).
    limiter: Limiter | None = None

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
        windows: Windows | None = None,
    ) -> OAuth:
        """The provider for `settings`, keeping its records in `records` and counting the
        OAuth routes' requests per address in `windows`."""
        vault = Vault(records, Cipher(settings.oauth_key_list))
        upstream = PostHogOAuth(settings, transport=transport)
        limiter = Limiter(ROUTE_LIMITS, windows) if windows is not None else None
        return cls(Provider(settings, vault, upstream, fetcher or DocumentFetcher()), limiter)

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
            Route(CONSENT_PATH, provider.consent, methods=["GET", "POST"]),
            Route(CALLBACK_PATH, provider.callback, methods=["GET"]),
            Route(DOCUMENT_PATH, client_document, methods=["GET"]),
        ]

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """An OAuth route's app, limited per address, with the store's outages a 503."""
        app = StoreDown(app)
        return PerAddress(app, self.limiter) if self.limiter is not None else app

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
        return StoreDown(AuthenticationMiddleware(required, backend=backend))
