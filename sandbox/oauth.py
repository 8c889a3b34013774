"""PostHog's OAuth provider, as the sandbox plays it: the same paths, scopes and answers, with a
consent page, so that an OAuth client (the MCP server in hosted mode) runs its whole flow
locally.

What PostHog serves (``posthog/api/oauth/``), and the sandbox with it:

- ``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata, with
  ``client_id_metadata_document_supported`` (PostHog accepts client ID metadata documents
  without registration) and ``code_challenge_methods_supported: ["S256"]``;
- ``GET /oauth/authorize/``: the consent page (the sandbox has one user, always signed in, and
  one project, ``1``); ``POST /oauth/authorize/``: the page's answer, a redirect to the
  client's ``redirect_uri`` with ``code`` and ``state`` (PostHog's own consent screen posts JSON
  from its web app and follows the ``redirect_to`` it gets back: the same outcome);
- ``POST /oauth/token/``: ``authorization_code`` (PKCE S256 required, as PostHog enforces) and
  ``refresh_token`` (rotating: the old refresh token stops working), answered
  ``{access_token, token_type, expires_in, refresh_token, scope, scoped_teams,
  scoped_organizations}``; access tokens begin ``pha_`` and refresh tokens ``phr_``, as
  PostHog's do;
- ``POST /oauth/revoke/`` (RFC 7009): revokes the token and the grant's other tokens;
- ``POST /oauth/register/`` (RFC 7591) for clients that register dynamically;
- ``GET /api/users/@me/``: who the token belongs to, and their current project.

A client ID that is a URL is a client ID metadata document, fetched when the client first
asks (no redirects, at most 5 KB, within 5 s: PostHog's limits). PostHog fetches only HTTPS
URLs on public addresses; the sandbox, which serves this machine only, also fetches
``http://`` URLs on loopback addresses, so that a server under test on 127.0.0.1 can be the
client.

Tokens are kept in this process's memory, by their SHA-256 (never as given). The sandbox does
not check scopes on API requests (it does not for personal API keys either).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..loopback.hosts import is_loopback
from ..loopback.pages import render
from .access import ENVIRONMENT_ID

# PostHog's scopes an OAuth client may ask for (posthog/scopes.py, less those not self-serve).
SCOPES = (
    "openid",
    "profile",
    "email",
    "introspection",
    "external_data_source:read",
    "external_data_source:write",
    "warehouse_table:read",
    "warehouse_view:read",
    "warehouse_view:write",
    "query:read",
    "project:read",
    "organization:read",
    "user:read",
)
# PostHog gives dynamically registered and CIMD clients week-long access tokens.
ACCESS_SECONDS = 7 * 24 * 3600
REFRESH_SECONDS = 30 * 24 * 3600
CODE_SECONDS = 600
CONSENT_SECONDS = 600
CIMD_MAX_BYTES = 5 * 1024
CIMD_TIMEOUT_SECONDS = 5.0
ORGANIZATION_ID = "018f0000-0000-7000-8000-000000000001"
USER = {
    "uuid": "018f0000-0000-7000-8000-0000000000a1",
    "distinct_id": "sandbox-user",
    "email": "sandbox@localhost",
    "first_name": "Sandbox",
}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _error(error: str, description: str, status: int = 400) -> JSONResponse:
    """RFC 6749 §5.2's error answer, as PostHog's token and revocation endpoints give it."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


@dataclass(frozen=True)
class Client:
    """An OAuth client: registered, or described by its metadata document."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    secret_digest: str | None = None


@dataclass
class Grant:
    """What a person agreed to: a client, scopes and projects; its tokens point at it."""

    client_id: str
    scopes: tuple[str, ...]
    scoped_teams: tuple[int, ...]
    alive: bool = True


@dataclass(frozen=True)
class Issued:
    """A token the sandbox issued: its grant and when it stops working."""

    grant: Grant
    expires_at: float
    kind: str


@dataclass
class OAuthProvider:
    """The sandbox's OAuth state: clients, pending consents, codes, grants and tokens."""

    access_seconds: float = ACCESS_SECONDS
    clients: dict[str, Client] = field(default_factory=dict)
    consents: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)
    codes: dict[str, tuple[dict[str, str], Grant, float]] = field(default_factory=dict)
    tokens: dict[str, Issued] = field(default_factory=dict)
    # Refresh tokens exchanged so far (tests count them).
    refreshes: int = 0

    def accepts(self, token: str) -> bool:
        """Whether `token` is a live access token (the API's check, beside the API key)."""
        issued = self.tokens.get(_digest(token))
        return (
            issued is not None
            and issued.kind == "access"
            and issued.grant.alive
            and issued.expires_at > time.time()
        )

    def grant_of(self, token: str) -> Grant | None:
        """The grant of a live access token."""
        issued = self.tokens.get(_digest(token))
        return issued.grant if issued is not None and self.accepts(token) else None

    def routes(self) -> list[Route]:
        """PostHog's OAuth routes."""
        return [
            Route("/.well-known/oauth-authorization-server", self.metadata, methods=["GET"]),
            Route("/oauth/authorize/", self.authorize, methods=["GET", "POST"]),
            Route("/oauth/token/", self.token, methods=["POST"]),
            Route("/oauth/revoke/", self.revoke, methods=["POST"]),
            Route("/oauth/register/", self.register, methods=["POST"]),
            Route("/api/users/@me/", self.me, methods=["GET"]),
        ]

    async def metadata(self, request: Request) -> Response:
        """RFC 8414 authorization server metadata, as PostHog's ``metadata.py`` builds it."""
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/oauth/authorize/",
                "token_endpoint": f"{base}/oauth/token/",
                "revocation_endpoint": f"{base}/oauth/revoke/",
                "registration_endpoint": f"{base}/oauth/register/",
                "scopes_supported": list(SCOPES),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "client_id_metadata_document_supported": True,
            }
        )

    # The consent page.

    async def authorize(self, request: Request) -> Response:
        """GET: the consent page for an authorization request; POST: the person's answer."""
        if request.method == "POST":
            return await self._answer(request)
        query = dict(request.query_params)
        client = await self._client(query.get("client_id", ""))
        if client is None:
            return _page_error("No OAuth application is registered with this client_id.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _page_error("The redirect_uri is not one the application registered.")
        problem = _request_problem(query)
        if problem is not None:
            return _redirect(redirect_uri, query.get("state"), error=problem)
        consent = secrets.token_urlsafe(24)
        now = time.time()
        self.consents = {k: v for k, v in self.consents.items() if v[1] > now}
        self.consents[consent] = ({**query, "client_name": client.name}, now + CONSENT_SECONDS)
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in query["scope"].split())
        body = (
            f"<p><strong>{html.escape(client.name)}</strong> wants to access your PostHog "
            f"account (sandbox user {html.escape(USER['email'])}) with these scopes:</p>"
            f"<ul>{scopes}</ul>"
            '<form method="post" action="/oauth/authorize/">'
            f'<input type="hidden" name="consent" value="{consent}">'
            '<label>Project <select name="scoped_teams">'
            f'<option value="{ENVIRONMENT_ID}">Default project ({ENVIRONMENT_ID})</option>'
            '<option value="">All projects</option></select></label>'
            '<button type="submit" name="allow" value="true">Authorize</button> '
            '<button type="submit" name="allow" value="false">Cancel</button></form>'
        )
        return render("Authorize access", body, 200)

    async def _answer(self, request: Request) -> Response:
        form = await request.form()
        entry = self.consents.pop(str(form.get("consent", "")), None)
        if entry is None or entry[1] < time.time():
            return _page_error("This authorization request has expired; start again.")
        query = entry[0]
        redirect_uri, state = query["redirect_uri"], query.get("state")
        if str(form.get("allow", "")).lower() != "true":
            return _redirect(redirect_uri, state, error="access_denied")
        team = str(form.get("scoped_teams", ""))
        grant = Grant(
            client_id=query["client_id"],
            scopes=tuple(query["scope"].split()),
            scoped_teams=(int(team),) if team.isdigit() else (),
        )
        code = secrets.token_urlsafe(32)
        self.codes[_digest(code)] = (query, grant, time.time() + CODE_SECONDS)
        return _redirect(redirect_uri, state, code=code)

    # Tokens.

    async def token(self, request: Request) -> Response:
        """``POST /oauth/token/``: a code or a refresh token for a new pair of tokens."""
        fields = await _fields(request)
        client = await self._client(fields.get("client_id", ""))
        if client is None:
            return _error("invalid_client", "Client authentication failed.", 401)
        if client.secret_digest is not None and not secrets.compare_digest(
            _digest(fields.get("client_secret", "")), client.secret_digest
        ):
            return _error("invalid_client", "Client authentication failed.", 401)
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(client, fields)
        if grant_type == "refresh_token":
            return self._refresh(client, fields)
        return _error("unsupported_grant_type", f"Unsupported grant type: {grant_type}.")

    def _exchange_code(self, client: Client, fields: dict[str, str]) -> Response:
        key = _digest(fields.get("code", ""))
        entry = self.codes.get(key)
        if entry is None or entry[2] < time.time():
            return _error("invalid_grant", "Invalid or expired authorization code.")
        query, grant, _ = entry
        # Checked before the code is used up: another client's attempt must not burn it.
        if query["client_id"] != client.client_id:
            return _error("invalid_grant", "The code was issued to another client.")
        del self.codes[key]
        if fields.get("redirect_uri") != query["redirect_uri"]:
            return _error("invalid_grant", "Mismatching redirect URI.")
        verifier = fields.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if not verifier or not secrets.compare_digest(challenge, query["code_challenge"]):
            return _error("invalid_grant", "Code verifier failed.")
        return self._issue(grant)

    def _refresh(self, client: Client, fields: dict[str, str]) -> Response:
        key = _digest(fields.get("refresh_token", ""))
        issued = self.tokens.get(key)
        if (
            issued is None
            or issued.kind != "refresh"
            or not issued.grant.alive
            or issued.expires_at < time.time()
        ):
            return _error("invalid_grant", "Invalid refresh token.")
        if issued.grant.client_id != client.client_id:
            return _error("invalid_grant", "The refresh token was issued to another client.")
        del self.tokens[key]
        self.refreshes += 1
        return self._issue(issued.grant)

    def _issue(self, grant: Grant) -> Response:
        access = "pha_" + secrets.token_urlsafe(30)
        refresh = "phr_" + secrets.token_urlsafe(30)
        now = time.time()
        self.tokens[_digest(access)] = Issued(grant, now + self.access_seconds, "access")
        self.tokens[_digest(refresh)] = Issued(grant, now + REFRESH_SECONDS, "refresh")
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": int(self.access_seconds),
                "refresh_token": refresh,
                "scope": " ".join(grant.scopes),
                "scoped_teams": list(grant.scoped_teams),
                "scoped_organizations": [],
            },
            headers={"Cache-Control": "no-store"},
        )

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: the token (and its grant's others) stop working; 200 whatever it was."""
        fields = await _fields(request)
        issued = self.tokens.get(_digest(fields.get("token", "")))
        if issued is not None and issued.grant.client_id == fields.get("client_id"):
            issued.grant.alive = False
        return Response(status_code=200)

    async def register(self, request: Request) -> Response:
        """RFC 7591 dynamic client registration (a public client unless it asks for a secret)."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error("invalid_client_metadata", "The body is not JSON.")
        uris = body.get("redirect_uris") if isinstance(body, dict) else None
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            return _error("invalid_redirect_uri", "redirect_uris must be a non-empty list.")
        method = str(body.get("token_endpoint_auth_method") or "none")
        secret = secrets.token_urlsafe(32) if method != "none" else None
        client = Client(
            client_id=secrets.token_urlsafe(24),
            name=str(body.get("client_name") or "OAuth client")[:100],
            redirect_uris=tuple(uris),
            secret_digest=_digest(secret) if secret else None,
        )
        self.clients[client.client_id] = client
        answer: dict[str, Any] = {
            "client_id": client.client_id,
            "client_name": client.name,
            "redirect_uris": list(uris),
            "token_endpoint_auth_method": method,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_id_issued_at": int(time.time()),
        }
        if secret is not None:
            answer["client_secret"] = secret
        return JSONResponse(answer, status_code=201)

    async def me(self, request: Request) -> Response:
        """``/api/users/@me/``: the token's user and current project."""
        header = request.headers.get("authorization", "")
        grant = self.grant_of(header[7:].strip()) if header.lower().startswith("bearer ") else None
        if grant is None:
            return JSONResponse(
                {
                    "type": "authentication_error",
                    "code": "authentication_failed",
                    "detail": "Invalid access token.",
                    "attr": None,
                },
                status_code=401,
            )
        team = {"id": int(ENVIRONMENT_ID), "name": "Default project"}
        organization = {"id": ORGANIZATION_ID, "name": "Sandbox"}
        return JSONResponse({**USER, "team": team, "organization": organization})

    async def _client(self, client_id: str) -> Client | None:
        if client_id in self.clients:
            return self.clients[client_id]
        if not _is_document_url(client_id):
            return None
        document = await _fetch_document(client_id)
        if document is None:
            return None
        self.clients[client_id] = document
        return document


def _request_problem(query: dict[str, str]) -> str | None:
    if query.get("response_type") != "code":
        return "unsupported_response_type"
    if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
        return "invalid_request"
    scopes = query.get("scope", "").split()
    if not scopes or any(scope not in SCOPES for scope in scopes):
        return "invalid_scope"
    return None


def _redirect(uri: str, state: str | None, **params: str) -> Response:
    if state is not None:
        params["state"] = state
    joiner = "&" if urlsplit(uri).query else "?"
    return RedirectResponse(f"{uri}{joiner}{urlencode(params)}", status_code=302)


def _page_error(text: str) -> Response:
    return render("Authorization failed", f"<p>{html.escape(text)}</p>", 400)


async def _fields(request: Request) -> dict[str, str]:
    """A token request's fields: a form, as RFC 6749 says, or JSON, as PostHog also takes."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _is_document_url(client_id: str) -> bool:
    parts = urlsplit(client_id)
    if parts.query or parts.fragment or parts.username or parts.path in ("", "/"):
        return False
    if parts.scheme == "https":
        return True
    # Not PostHog's rule: the sandbox serves this machine, and a client under test on it has
    # no certificate a browser would trust.
    return parts.scheme == "http" and is_loopback(parts.hostname or "")


async def _fetch_document(url: str) -> Client | None:
    """A client ID metadata document, as PostHog reads one (``cimd.py``), or None."""
    try:
        async with (
            httpx.AsyncClient(timeout=CIMD_TIMEOUT_SECONDS, follow_redirects=False) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as answer,
        ):
            if answer.status_code != 200:
                return None
            body = b""
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > CIMD_MAX_BYTES:
                    return None
        document = json.loads(body)
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("client_id") != url:
        return None
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        return None
    if document.get("token_endpoint_auth_method", "none") != "none":
        return None
    name = str(document.get("client_name") or "CIMD Client")[:100]
    return Client(client_id=url, name=name, redirect_uris=tuple(uris))
