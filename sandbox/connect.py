"""The connect page: where a person types a source's credentials, so they never pass through
the chat (PostHog's `connect_link`, `stored_credentials` and `store_credentials`).

`connect_link/` issues a one-time token and answers a URL on the sandbox's loopback address;
the page at that URL renders the source type's form (the wizard's fields), and its POST tests the
connection, then stores the details (in the 0600 metadata store, for the sandbox's own use,
single use, 24 hours) and answers only an id. The page checks its Host (no DNS rebinding) and
the POST's Origin (no cross-site posts), accepts credentials only in a POST body, and never puts
a typed value back on a page.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import drf, errors
from .connectors import (
    SUPPORTED_SOURCE_TYPES,
    connector,
    known_source_type,
)
from .errors import ApiError
from .services import Services, job_inputs_of
from .store import Credential, iso, new_id, now

CREDENTIAL_TTL = timedelta(hours=24)
LINK_TTL_SECONDS = 3600.0
PAGE_PREFIX = "/connect/"


@dataclass
class ConnectLinks:
    """The one-time page tokens the sandbox has handed out: source type and expiry by token."""

    _links: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, source_type: str) -> str:
        """A new token for a page that connects `source_type`."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._links[token] = (source_type, time.monotonic() + LINK_TTL_SECONDS)
        return token

    def source_type(self, token: str) -> str | None:
        """The source type of a live token, or None (unknown, used or expired)."""
        with self._lock:
            link = self._links.get(token)
        if link is None or link[1] < time.monotonic():
            return None
        return link[0]

    def use(self, token: str) -> None:
        """Spend a token: its page stored its credentials."""
        with self._lock:
            self._links.pop(token, None)


def instructions(source_type: str) -> str:
    """PostHog's instructions for the agent, with the sandbox in place of PostHog."""
    return (
        f"Share this link with the user. They enter their {source_type} connection details "
        "directly in the sandbox — never ask them to paste credentials or tokens into the chat. "
        "The page only stores the connection details; it does not create the source. Once the "
        "user confirms they're done, find the stored credential id via "
        f"data-warehouse-stored-credentials-list (source_type='{source_type}', newest first) and "
        'call data-warehouse-source-setup with {"credential_id": <id>} in the payload. Stored '
        "credentials are single-use and expire after 24 hours."
    )


async def sources_connect_link(request: Request, services: Services) -> Response:
    """GET external_data_sources/connect_link/?source_type=...: a one-time page URL."""
    source_type = request.query_params.get("source_type")
    if not source_type:
        raise errors.message("Missing required parameter: source_type")
    if not known_source_type(source_type):
        raise errors.message(f"Unknown source_type '{source_type}'")
    if source_type not in SUPPORTED_SOURCE_TYPES:
        raise errors.not_connectable(source_type)
    if services.public_url is None:
        raise errors.message(
            "This sandbox has no address a browser can open: run it with "
            "'posthog-warehouse-mcp --sandbox' or 'posthog-warehouse-mcp sandbox'."
        )
    token = services.connect_links.issue(source_type)
    return drf.answer(
        {
            "source_type": source_type,
            "auth_method": "credentials",
            "connect_url": f"{services.public_url}{PAGE_PREFIX}{token}",
            "instructions": instructions(source_type),
        }
    )


def _purge_expired(services: Services) -> None:
    moment = iso(now()) or ""
    for credential in list(services.store.credentials.values()):
        if credential.expires_at <= moment:
            services.store.delete_credential(credential.id)


async def sources_stored_credentials(request: Request, services: Services) -> Response:
    """GET external_data_sources/stored_credentials/: metadata of the unused, unexpired
    credentials, newest first (never their values)."""
    _purge_expired(services)
    wanted = request.query_params.get("source_type")
    found = sorted(
        (c for c in services.store.credentials.values() if not wanted or c.source_type == wanted),
        key=lambda c: c.created_at,
        reverse=True,
    )
    return drf.answer(
        [
            {
                "credential_id": c.id,
                "source_type": c.source_type,
                "created_at": c.created_at,
                "expires_at": c.expires_at,
            }
            for c in found
        ]
    )


def take_credential(
    services: Services, source_type: str, payload: dict[str, Any]
) -> Credential | None:
    """Merge a stored credential into a create or setup payload that names one (PostHog's
    `_resolve_stored_credential`): its values win over the payload's. The caller deletes it
    once the source exists.

    Raises:
        ApiError: PostHog's "not found or expired" or source-type mismatch.
    """
    credential_id = payload.pop("credential_id", None)
    if not credential_id:
        return None
    _purge_expired(services)
    credential = services.store.credentials.get(str(credential_id))
    if credential is None:
        raise errors.message(f"Stored credential '{credential_id}' not found or expired")
    if credential.source_type != source_type:
        raise errors.message(
            f"Stored credential '{credential_id}' is for '{credential.source_type}', not "
            f"'{source_type}'"
        )
    payload.update(credential.job_inputs)
    return credential


async def connect_page(request: Request, services: Services) -> Response:
    """GET and POST /connect/{token}: the form, and storing what it was given."""
    expected = urlsplit(services.public_url or "")
    if request.headers.get("host") != expected.netloc:
        return _page("Not available", "<p>This page is only served on its own address.</p>", 400)
    token = request.path_params["token"]
    source_type = services.connect_links.source_type(token)
    if source_type is None:
        return _page(
            "Link not valid",
            "<p>This link was used already or has expired. Ask your assistant for a new one.</p>",
            404,
        )
    if request.method == "GET":
        if request.query_params:
            return _page(
                "Not accepted", "<p>Connection details are only accepted from the form.</p>", 400
            )
        return _form(source_type, token)
    origin = f"{expected.scheme}://{expected.netloc}"
    if request.headers.get("origin") != origin:
        return _page("Not accepted", "<p>The form must be sent from this page.</p>", 403)
    form = await request.form()
    job_inputs = job_inputs_of({k: v for k, v in form.items() if isinstance(v, str) and v != ""})
    try:
        await services.inspect_new(source_type, job_inputs)
    except ApiError as exc:
        return _form(source_type, token, error=str(exc.body.get("message") or exc.body), status=400)
    created = now()
    credential = Credential(
        id=new_id(),
        source_type=source_type,
        job_inputs=job_inputs,
        created_at=iso(created) or "",
        expires_at=iso(created + CREDENTIAL_TTL) or "",
    )
    services.store.save(credential)
    services.connect_links.use(token)
    return _page(
        "Connection details stored",
        f"<p>Your {html.escape(source_type)} connection works and its details are stored for "
        "the next 24 hours. Go back to your assistant and tell it you are done.</p>",
        201,
    )


def _form(source_type: str, token: str, *, error: str | None = None, status: int = 200) -> Response:
    rows = []
    for spec in connector(source_type).SOURCE_CONFIG["fields"]:
        if spec.get("type") in ("ssh-tunnel",):
            continue
        name = html.escape(spec["name"])
        label = html.escape(spec.get("label") or spec["name"])
        kind = "password" if spec.get("secret") or spec["type"] == "password" else "text"
        if spec["type"] == "number":
            kind = "number"
        required = " required" if spec.get("required") else ""
        placeholder = html.escape(str(spec.get("placeholder") or ""))
        rows.append(
            f'<label>{label}<input name="{name}" type="{kind}" placeholder="{placeholder}"'
            f' autocomplete="off"{required}></label>'
        )
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        f"<p>Enter the connection details of your {html.escape(source_type)} database. They "
        "are checked against the database, then kept by the sandbox only, for one source "
        f"setup within 24 hours.</p>{problem}"
        f'<form method="post" action="{PAGE_PREFIX}{html.escape(token)}">{"".join(rows)}'
        '<button type="submit">Connect</button></form>'
    )
    return _page(f"Connect {source_type}", body, status)


def _page(title: str, body: str, status: int) -> Response:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:32em;"
        "margin:3em auto}label{display:block;margin:.6em 0}input{display:block;width:100%}"
        ".error{color:#b00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    headers = {
        "Cache-Control": "no-store",
        # same-origin, not no-referrer: with no-referrer a browser posts the form with
        # "Origin: null", which the Origin check could not tell from a foreign page.
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'",
    }
    return HTMLResponse(document, status_code=status, headers=headers)
