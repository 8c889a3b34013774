"""The connect page: where a person types a source's credentials, so they never pass through
the chat (PostHog's `connect_link`, `stored_credentials` and `store_credentials`).

`connect_link/` issues a one-time token and answers a URL on the sandbox's loopback address;
the page at that URL renders the source type's form (the wizard's fields), and its POST tests the
connection, then stores the details (in the 0600 metadata store, for the sandbox's own use,
single use, 24 hours) and answers only an id. It is a `loopback.pages.OneTimePage`: it checks
its Host (no DNS rebinding) and the POST's Origin (no cross-site posts), accepts credentials
only in a POST body, and never puts a typed value back on a page.
"""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..loopback.pages import Input, OneTimePage, render
from . import drf, errors
from .connection_strings import READERS, ConnectionStringError, fill_in
from .connectors import (
    SUPPORTED_SOURCE_TYPES,
    connector,
    known_source_type,
)
from .errors import ErrorAnswer
from .routing import route
from .services import Services, job_inputs_of
from .store import Credential, iso, new_id, now

CREDENTIAL_TTL = timedelta(hours=24)
CONNECT_PAGE = OneTimePage(
    "/connect/", typed_only="Connection details are only accepted from the form."
)


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


@route("GET", "external_data_sources/connect_link/")
async def sources_connect_link(request: Request, services: Services) -> Response:
    """GET external_data_sources/connect_link/?source_type=...: a one-time page URL."""
    source_type = request.query_params.get("source_type")
    if not source_type:
        raise errors.bad_request_message("Missing required parameter: source_type")
    if not known_source_type(source_type):
        raise errors.bad_request_message(f"Unknown source_type '{source_type}'")
    if source_type not in SUPPORTED_SOURCE_TYPES:
        raise errors.not_connectable(source_type)
    if services.public_url is None:
        raise errors.bad_request_message(
            "This sandbox has no address a browser can open: run it with "
            "'posthog-warehouse-mcp --sandbox' or 'posthog-warehouse-mcp sandbox'."
        )
    token = services.connect_links.issue(source_type)
    return drf.answer(
        {
            "source_type": source_type,
            "auth_method": "credentials",
            "connect_url": CONNECT_PAGE.url(services.public_url, token),
            "instructions": instructions(source_type),
        }
    )


def _purge_expired(services: Services) -> None:
    moment = iso(now()) or ""
    for credential in list(services.store.credentials.values()):
        if credential.expires_at <= moment:
            services.store.delete_credential(credential.id)


@route("GET", "external_data_sources/stored_credentials/")
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
        ErrorAnswer: PostHog's "not found or expired" or source-type mismatch.
    """
    credential_id = payload.pop("credential_id", None)
    if not credential_id:
        return None
    _purge_expired(services)
    credential = services.store.credentials.get(str(credential_id))
    if credential is None:
        raise errors.bad_request_message(
            f"Stored credential '{credential_id}' not found or expired"
        )
    if credential.source_type != source_type:
        raise errors.bad_request_message(
            f"Stored credential '{credential_id}' is for '{credential.source_type}', not "
            f"'{source_type}'"
        )
    payload.update(credential.job_inputs)
    return credential


def peek_credential(
    services: Services, credential_id: str, source_type: str
) -> dict[str, Any] | None:
    """The connection fields of a stored, unexpired credential for `source_type`, without
    spending it (a rehearsal reads it; only a create or setup uses it up); None if none."""
    _purge_expired(services)
    credential = services.store.credentials.get(credential_id)
    if credential is None or credential.source_type != source_type:
        return None
    return dict(credential.job_inputs)


async def connect_page(request: Request, services: Services) -> Response:
    """GET and POST /connect/{token}: the form, and storing what it was given."""

    async def store(source_type: str, token: str, fields: dict[str, str]) -> Response:
        form_fields = connector(source_type).SOURCE_CONFIG["fields"]
        labels = {f["name"]: str(f.get("label") or f["name"]) for f in form_fields}
        try:
            typed = fill_in(source_type, fields, labels)
        except ConnectionStringError as exc:
            return _form(source_type, token, error=str(exc), status=400)
        missing = [
            labels[f["name"]]
            for f in form_fields
            if f.get("required") and not str(typed.get(f["name"], "")).strip()
        ]
        if missing:
            return _form(source_type, token, error=_fill_in(source_type, missing), status=400)
        job_inputs = job_inputs_of(typed)
        try:
            await services.inspect_new(source_type, job_inputs)
        except ErrorAnswer as exc:
            problem = str(exc.body.get("message") or exc.body)
            return _form(source_type, token, error=problem, status=400)
        created = now()
        credential = Credential(
            id=new_id(),
            source_type=source_type,
            job_inputs=job_inputs,
            created_at=iso(created) or "",
            expires_at=iso(created + CREDENTIAL_TTL) or "",
        )
        services.store.save(credential)
        services.connect_links.spend(token)
        return render(
            "Connection details stored",
            f"<p>Your {html.escape(source_type)} connection works and its details are stored "
            "for the next 24 hours. Go back to your assistant and tell it you are done.</p>",
            201,
        )

    return await CONNECT_PAGE.serve(
        request,
        address=services.public_url,
        tokens=services.connect_links,
        show=_form,
        act=store,
    )


def _fill_in(source_type: str, labels: list[str]) -> str:
    """What to type when required fields were left empty."""
    named = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
    if source_type in READERS:
        return f"Fill in {named}, or paste a connection string."
    return f"Fill in {named}."


def _form(source_type: str, token: str, *, error: str | None = None, status: int = 200) -> Response:
    reader = READERS.get(source_type)
    # A connection string can stand for these: the browser must let them be sent empty.
    optional = set(reader.fills) if reader is not None else set()
    inputs = []
    for spec in connector(source_type).SOURCE_CONFIG["fields"]:
        if spec.get("type") in ("ssh-tunnel",):
            continue
        secret = spec.get("secret") or spec["type"] == "password"
        inputs.append(
            Input(
                name=spec["name"],
                label=spec.get("label") or spec["name"],
                kind="number" if spec["type"] == "number" else "password" if secret else "text",
                placeholder=str(spec.get("placeholder") or ""),
                required=bool(spec.get("required")) and spec["name"] not in optional,
            )
        )
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    how = (
        " Paste a connection string, or fill in the fields; a field you fill in must agree with "
        "the connection string."
        if reader is not None
        else ""
    )
    body = (
        f"<p>Enter the connection details of your {html.escape(source_type)} database. They "
        "are checked against the database, then kept by the sandbox only, for one source "
        f"setup within 24 hours.{how}</p>{problem}"
        + CONNECT_PAGE.form(token, inputs, button="Connect")
    )
    return render(f"Connect {source_type}", body, status)
