"""The HTTP side of ``--oauth``: the OAuth routes (the SDK's, with this server's metadata,
consent page, callback and client document), and what wraps them and ``/mcp``: the bearer
check with :class:`SignedIn`, the per-address limit, a 503 when the store is down, and the
Host check.

Where things come from: the SDK (``mcp.server.auth``) gives the ``/authorize``, ``/token``,
``/register`` and ``/revoke`` handlers, the RFC 9728 metadata route, and the bearer middleware
with its audience check and its 401 naming the metadata (``WWW-Authenticate: Bearer ...
resource_metadata=...``); the metadata additions that say client ID metadata documents and
public clients are accepted are made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    BearerAuthBackend,
    RequireAuthMiddleware,
)
from mcp.server.auth.provider import ProviderTokenVerifier
from mcp.server.auth.routes import (
    build_metadata,
    build_resource_metadata_url,
    create_auth_routes,
    create_protected_resource_routes,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from pydantic import AnyHttpUrl
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...loopback.hosts import HostCheck, Visitors
from ...tools.confirm import StoreUnavailable
from ..callers import SIGNED_IN, Caller
from ..config import Settings
from ..limits import Limit, Limiter, Windows
from ..records import Records
from .cimd import DocumentFetcher
from .consent import CONSENT_PATH, Consent
from .provider import Provider
from .upstream import CALLBACK_PATH, CLIENT_NAME, DOCUMENT_PATH, Grants, PostHogOAuth
from .vault import Cipher, Vault

# The OAuth routes a client address may call (unauthenticated, so counted by address).
ROUTE_LIMITS = (Limit(120, 60, "a minute", "(fixed)"), Limit(1200, 3600, "an hour", "(fixed)"))


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
    the approval page's sessions (``Sessions``, server/approvals.py)."""

    provider: Provider
    consent: Consent
    # The OAuth routes' per-address limit (None: not limited).
    limiter: Limiter | None = None

    async def caller(self, request: Request) -> Caller | None:
        """The person the browser signed in as (its session cookie), with their PostHog
        credentials; None without a session, or when the sign-in has ended."""
        grant_id = await self.consent.session_grant(request)
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
        """The provider and the consent pages for `settings`, keeping their records in
        `records` and counting the OAuth routes' requests per address in `windows`."""
        vault = Vault(records, Cipher(settings.oauth_key_list))
        grants = Grants(vault, PostHogOAuth(settings, transport=transport))
        provider = Provider(settings, grants, fetcher or DocumentFetcher())
        limiter = Limiter(ROUTE_LIMITS, windows) if windows is not None else None
        return cls(provider, Consent(settings, grants), limiter)

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
            Route(CONSENT_PATH, self.consent.page, methods=["GET", "POST"]),
            Route(CALLBACK_PATH, self.consent.callback, methods=["GET"]),
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
