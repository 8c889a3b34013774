"""The person's part of a sign-in, in their browser: this server's consent page naming the MCP
client, the hop on to PostHog's consent, and PostHog's redirect back (the callback), which
keeps the grant and sends the client a code of this server's own.

The consent page names the client (its name, where the code goes, its metadata URL); PostHog's
names only this server. Once approved, a browser remembers the client (a sealed cookie) and is
not asked again. The answer must come from this page (its Origin, and a one-time token in both
the form and a cookie), and the callback answers only the browser that began the sign-in (no
login CSRF). The callback also gives the browser a session, for the approval page.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import construct_redirect_uri
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...loopback.hosts import origin_of
from ...loopback.pages import render
from ...tools.confirm import StoreUnavailable
from ..config import Settings
from ..records import digest
from .cimd import is_document_url
from .upstream import Grants, UpstreamRefused

log = logging.getLogger("posthog_warehouse_mcp.oauth")

CONSENT_PATH = "/oauth/consent"
SESSION_COOKIE = "posthog_mcp_session"
# The consent form's one-time token (double submit: the form and this cookie must agree).
CONSENT_COOKIE = "posthog_mcp_consent"
# The clients this browser approved, sealed.
APPROVED_COOKIE = "posthog_mcp_approved"
# Which browser began a sign-in: the callback answers that browser only (no login CSRF).
SIGNIN_COOKIE = "posthog_mcp_signin"
PENDING_SECONDS = 600
CODE_SECONDS = 300
SESSION_SECONDS = 12 * 3600
APPROVED_SECONDS = 30 * 24 * 3600
APPROVED_MAX = 20


def _signin_cookie(state: str) -> str:
    """One cookie per sign-in under way, so that two begun in one browser both finish."""
    return f"{SIGNIN_COOKIE}_{digest(state)[:16]}"


def _to_client(uri: str, **params: str | None) -> RedirectResponse:
    return RedirectResponse(
        construct_redirect_uri(uri, **params),
        status_code=302,
        headers={"Cache-Control": "no-store"},
    )


def _page(title: str, text: str, status: int) -> Response:
    return render(title, f"<p>{text}</p>", status)


def _unavailable() -> Response:
    return _page("Not available now", "The server cannot reach its store.", 503)


def _expired() -> Response:
    return _page("Sign-in expired", "This sign-in was used or has expired.", 400)


class Consent:
    """The sign-in's pages, over the pending requests the provider's ``authorize`` keeps
    (provider.py): the consent page, and the callback that turns PostHog's code into a grant
    and this server's code."""

    def __init__(self, settings: Settings, grants: Grants) -> None:
        public = settings.mcp_public_url or ""
        self.grants = grants
        self.vault = grants.vault
        self.upstream = grants.upstream
        self.public = public
        self.secure_cookie = public.startswith("https://")

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

    async def _pending(self, state: str, *, take: bool = False) -> dict[str, Any] | Response:
        """The sign-in's pending request (removed, with `take`), or the page saying why not."""
        try:
            if not state:
                pending = None
            elif take:
                pending = await self.vault.take("pending", state)
            else:
                pending = await self.vault.get("pending", state)
        except StoreUnavailable:
            return _unavailable()
        return _expired() if pending is None else pending

    async def page(self, request: Request) -> Response:
        """This server's consent page: GET shows which client asks (or goes on to PostHog for
        a client this browser approved before); POST, from the page only, is the answer."""
        state = (
            str((await request.form()).get("request", ""))
            if request.method == "POST"
            else request.query_params.get("request", "")
        )
        pending = await self._pending(state)
        if isinstance(pending, Response):
            return pending
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
                "pending", state, {**pending, "browser": digest(browser)}, PENDING_SECONDS
            )
        except StoreUnavailable:
            return _unavailable()
        if not kept:
            return _expired()
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
        pending = await self._pending(state, take=True)
        if isinstance(pending, Response):
            return pending
        browser = request.cookies.get(self.cookie(_signin_cookie(state)), "")
        if not browser or not secrets.compare_digest(
            digest(browser), str(pending.get("browser", ""))
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
            grant = await self.grants.sign_in(code, str(pending["verifier"]))
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

    async def session_grant(self, request: Request) -> str | None:
        """The grant of the browser's session (the approval page), or None."""
        cookie = request.cookies.get(SESSION_COOKIE)
        found = await self.vault.get("session", cookie) if cookie else None
        return str(found["grant"]) if found is not None else None
