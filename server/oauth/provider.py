"""The MCP side of OAuth: the SDK's ``OAuthAuthorizationServerProvider``, which the SDK's
``/authorize``, ``/token``, ``/register`` and ``/revoke`` handlers call (they do the checks:
PKCE, redirect URIs, client authentication). It keeps this server's own clients, codes and
tokens, each bound to the server's resource URL (``<public URL>/mcp``).

No token passthrough (the MCP authorization specification forbids it): an MCP client gets this
server's own tokens, and each person's PostHog token stays here, in their grant.

Clients are registered dynamically, or described by a client ID metadata document (cimd.py).
A revoked token (``/revoke``) ends its grant: every token of that sign-in stops working. A code
or refresh token used twice ends its grant too (RFC 9700: a replay is the sign of a stolen
token). A token's calls are held to its scopes (the grant's :meth:`~.upstream.Grant.caller`).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl, ValidationError

from ..config import Settings
from .cimd import DocumentFetcher, DocumentRefused, is_document_url, redirect_uri_problem
from .consent import CONSENT_PATH, PENDING_SECONDS
from .upstream import GRANT_SECONDS, Grant, Grants

log = logging.getLogger("posthog_warehouse_mcp.oauth")

REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
CLIENT_SECONDS = 365 * 24 * 3600
# A registered client that never gets a token is forgotten after a day.
UNUSED_CLIENT_SECONDS = 24 * 3600
DOCUMENT_CACHE_SECONDS = 3600
REFUSED_CACHE_SECONDS = 60


def _same_resource(given: str, ours: str) -> bool:
    try:
        return str(AnyHttpUrl(given)).rstrip("/") == str(AnyHttpUrl(ours)).rstrip("/")
    except ValidationError:
        return False


class Provider:
    """The SDK's ``OAuthAuthorizationServerProvider``, over the vault, with PostHog upstream
    (the people's grants)."""

    def __init__(self, settings: Settings, grants: Grants, fetcher: DocumentFetcher) -> None:
        public = settings.mcp_public_url or ""
        self.settings = settings
        self.grants = grants
        self.vault = grants.vault
        self.upstream = grants.upstream
        self.fetcher = fetcher
        self.public = public
        self.resource = f"{public}/mcp"
        self.scopes = grants.upstream.scopes
        self.token_seconds = settings.mcp_oauth_token_seconds

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

    # Authorization: the request kept, the person sent to this server's consent page.

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

    # Codes and tokens.

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        """What one of this server's codes grants (still unused). A code used again ends the
        sign-in it made (RFC 9700 §4.5: whoever replays it may have stolen it)."""
        found = await self._live("code", authorization_code, client)
        if found is None:
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

    async def _live(
        self, kind: str, secret: str, client: OAuthClientInformationFull
    ) -> dict[str, Any] | None:
        """The record of `client`'s unused code or refresh token (`kind`); one used already
        ends the sign-in it belongs to."""
        found = await self.vault.get(kind, secret)
        if found is None:
            spent = await self.vault.get(f"spent-{kind}", secret)
            if spent is not None:
                log.warning("a used spent-%s was presented again: its sign-in is ended", kind)
                await self.grants.end(str(spent["grant"]))
            return None
        return found if found["client_id"] == client.client_id else None

    async def _spend(self, kind: str, secret: str, grant: str, seconds: float) -> None:
        """Use up a code or refresh token (`kind`), remembering its sign-in for `seconds`, so
        that :meth:`_live` ends it when the token comes again.

        Raises:
            TokenError: it was used already.
        """
        if await self.vault.take(kind, secret) is None:
            what = "authorization code" if kind == "code" else "refresh token"
            raise TokenError("invalid_grant", f"this {what} was used already")
        await self.vault.put(f"spent-{kind}", secret, {"grant": grant}, seconds)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        """Tokens for a code, once."""
        grant = str(authorization_code.subject)
        await self._spend("code", authorization_code.code, grant, GRANT_SECONDS)
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
        found = await self._live("refresh", refresh_token, client)
        if found is None:
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
        grant = str(refresh_token.subject)
        await self._spend("refresh", refresh_token.token, grant, REFRESH_TOKEN_SECONDS)
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
            await self.grants.end(token.subject)

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
        return await self.grants.get(grant_id)
