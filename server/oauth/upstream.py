"""PostHog's side of a sign-in: this server as PostHog's OAuth client, and each person's grant
(their PostHog tokens) kept in the vault and refreshed.

This server is a client ID metadata document client of PostHog: it serves its own document at
``/oauth/client-metadata.json`` and uses that URL as its ``client_id`` (a public client: PKCE,
no secret), so no registration with PostHog is needed. PostHog is asked for the scopes the MCP
client asked for, and ``user:read``, to learn who the person is: their held calls are bound to
their PostHog user and project, not to one sign-in. With PostHog's region-agnostic OAuth
server, the person's region is found by asking each Cloud region who the token is.

A PostHog token that is about to expire is refreshed by one instance (a lock in the store:
``oauth:refreshing:<grant>``, released only by its owner); the others wait for it and use the
new one, or take the lock themselves when its holder gave up. A grant revoked meanwhile stays
revoked: a refresh under way does not write it back.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from ...tools.client import tls_context
from ...tools.confirm import StoreUnavailable
from ...tools.table import ENDPOINTS
from ..callers import Caller
from ..config import HOST_SHORTCUTS, OAUTH_PROXY, Settings
from ..filters import enabled
from .vault import Vault

log = logging.getLogger("posthog_warehouse_mcp.oauth")

CALLBACK_PATH = "/oauth/callback"
DOCUMENT_PATH = "/oauth/client-metadata.json"
CLIENT_NAME = "PostHog warehouse MCP"
# Asked of PostHog beside the client's scopes: /api/users/@me/ says who signed in.
WHOAMI_SCOPE = "user:read"
GRANT_SECONDS = 30 * 24 * 3600
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


def scopes_for(settings: Settings) -> list[str]:
    """The PostHog scopes the offered tools need (a read-only server asks for reads only)."""
    found = {scope for row in ENDPOINTS if enabled(settings, row) for scope in row.scopes}
    return sorted(found)


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
            timeout=UPSTREAM_TIMEOUT,
            transport=self.transport,
            follow_redirects=False,
            verify=tls_context(),  # the process's one context, not the CA bundle read again
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


@dataclass(frozen=True)
class Grants:
    """The people's grants, kept in the vault: made from PostHog's code, used with a PostHog
    token that is not about to expire, and ended."""

    vault: Vault
    upstream: PostHogOAuth

    async def sign_in(self, code: str, verifier: str) -> Grant:
        """The grant PostHog's code makes: the person's tokens, their region and who they are,
        kept.

        Raises:
            UpstreamRefused: PostHog refused the code, or no region knows its token.
            StoreUnavailable: the store cannot be reached.
        """
        tokens = await self.upstream.exchange(code, verifier)
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
        return grant

    async def get(self, grant_id: str) -> Grant | None:
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

    async def end(self, grant_id: str) -> None:
        """Forget the grant, and revoke its PostHog token."""
        found = await self.vault.take("grant", grant_id)
        if found is not None:
            grant = Grant.of(found)
            await self.upstream.revoke(grant.refresh_token or grant.access_token)
