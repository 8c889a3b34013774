"""Errors from the PostHog API, normalised once.

    PostHogError                      anything that went wrong talking to PostHog
    ├── APIError                      PostHog answered with an error status
    │   ├── BadRequest                400: PostHog's message and field
    │   ├── NotSucceeded              200 {"success": false}: partly done, answer kept
    │   ├── AuthenticationFailed      401: wrong key, or key for the other region
    │   ├── PermissionDenied          403: missing scope or project access
    │   ├── NotFound                  404: unknown id (or environment)
    │   ├── MethodNotAllowed          405
    │   ├── RateLimited               429: carries ``retry_after``
    │   └── ServerError               5xx
    ├── TransportError                no answer: connection refused/reset, timeout
    │   └── BackendUnavailable        the local sandbox cannot serve at all (not retried)
    └── MalformedResponse             an answer that is not the JSON PostHog sends

    NothingSent                       refused here, before any request (a plan that cannot
                                      be applied, a rehearsal that cannot run)

PostHog uses four error-body shapes (``{"detail"}``, ``{"message"}``,
``{type, code, detail, attr}`` and ``200 {"success": false, "error"}``);
:func:`error_from_response` reads all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .redact import redact_text

if TYPE_CHECKING:
    import httpx


class NothingSent(ValueError):
    """A call refused by this server before anything reached PostHog; the message says why
    and what to do instead."""


class PostHogError(Exception):
    """Base of every failure the adapter reports; ``details`` is what of PostHog's answer the
    model should still see (an error result's structured content)."""

    hint: ClassVar[str] = ""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details: dict[str, Any] | None = None

    def describe(self) -> str:
        """Return the text a model reads: what failed and what to do next."""
        text = self.message
        return f"{text} {self.hint}".strip() if self.hint else text


class APIError(PostHogError):
    """PostHog answered with an error status."""

    def __init__(
        self, message: str, *, status: int, attr: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.attr = attr
        self.code = code

    def next_step(self) -> str:
        """What the model should do about it (the class's ``hint``)."""
        return self.hint

    def describe(self) -> str:
        """Return status, PostHog's message, the field it names, and the next step."""
        field = f" (field: {self.attr})" if self.attr else ""
        # PostHog's messages usually end with a full stop; add one only where they don't.
        end = "" if not field and self.message.endswith((".", "!", "?")) else "."
        step = self.next_step()
        hint = f" {step}" if step else ""
        return f"PostHog answered {self.status}: {self.message}{field}{end}{hint}"


class BadRequest(APIError):
    """400: PostHog refused the request; its message says why (and, for a few known refusals,
    what to do next)."""

    hint = "Fix the arguments named in the message and call again."

    def next_step(self) -> str:
        """The general hint, or what to do about one of Cloud's source preconditions."""
        for needle, step in KNOWN_REFUSALS:
            if needle in self.message:
                return step
        return self.hint


# What to do about a refusal, by a phrase of PostHog's text: Cloud's preconditions for a new
# source's connection, and a query naming what does not exist.
KNOWN_REFUSALS = (
    (
        "internal or private IP",
        "PostHog Cloud connects over the internet: localhost and private-network hosts cannot "
        "be reached. Ask the user for a public host (with PostHog's egress IPs allowed), or an "
        "SSH tunnel (ssh_tunnel in the payload).",
    ),
    (
        "encrypted connection",
        "PostHog requires TLS for new Postgres sources: the user must enable SSL on the server, "
        "or connect through an SSH tunnel.",
    ),
    (
        "Required field 'host' is missing",
        "PostHog's API connects with the form's fields and never reads connection_string (its "
        "web form splits the string in the browser). Send the user "
        "data-warehouse-source-connect-link, whose page reads a connection string, or give host, "
        "port, database, user and password.",
    ),
    (
        "Couldn't resolve the host",
        "Check the host name with the user; it must resolve on the public internet.",
    ),
    (
        "Unknown table",
        "Use a table name that read-data-warehouse-schema lists (synced tables only).",
    ),
    (
        "Unable to resolve field",
        "read-data-warehouse-schema with search set to the table lists its columns.",
    ),
)


class NotSucceeded(APIError):
    """200 ``{"success": false, ...}``: a webhook action that did part of its work.

    PostHog's answer stays visible (``details``): ``webhook_url`` and ``pending_inputs`` when
    the webhook exists but the provider could not be told about it, ``external_deleted`` when
    PostHog's side is gone but the provider's may not be.
    """

    def next_step(self) -> str:
        """What is left to do by hand, from the fields PostHog sent."""
        body = self.details or {}
        steps = []
        if body.get("webhook_url"):
            steps.append(
                "The webhook exists in PostHog but is not registered at the provider: ask the "
                "user to add webhook_url in the provider's dashboard"
            )
        if body.get("pending_inputs"):
            steps.append(
                "then send the fields in pending_inputs with "
                "external-data-sources-update-webhook-inputs-create"
            )
        if body.get("external_deleted") is False:
            steps.append(
                "PostHog removed its side of the webhook, but the provider still has it: ask the "
                "user to delete it in the provider's dashboard"
            )
        return "; ".join(steps) + "." if steps else BadRequest.hint


class AuthenticationFailed(APIError):
    """401: the personal API key was refused."""

    hint = (
        "Check POSTHOG_PERSONAL_API_KEY (a personal API key, phx_..., not a project token) and "
        "that POSTHOG_HOST is the key's region: a US key fails on https://eu.posthog.com and "
        "vice versa."
    )


class PermissionDenied(APIError):
    """403: the key lacks a scope or access to the project; ``scopes`` are what the call needs."""

    hint = (
        "The key needs the scope external_data_source:read for reads and "
        "external_data_source:write for changes, and access to this environment; edit the key "
        "in PostHog (Settings > Personal API keys) or use another one."
    )
    scopes: tuple[str, ...] = ()  # set by the caller that knows the endpoint

    def next_step(self) -> str:
        """Name the scopes this call needs, when known."""
        if not self.scopes:
            return self.hint
        return (
            f"This call needs a key with the scope{'s' if len(self.scopes) > 1 else ''} "
            f"{' and '.join(self.scopes)}, and access to "
            "this environment; edit the key in PostHog (Settings > Personal API keys) or use "
            "another one."
        )


class NotFound(APIError):
    """404: no such source, schema or environment."""


class MethodNotAllowed(APIError):
    """405: PostHog does not allow this method here."""


class RateLimited(APIError):
    """429: too many requests for this key."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after

    def describe(self) -> str:
        """Say how long to wait."""
        wait = f"{self.retry_after:g} seconds" if self.retry_after is not None else "a minute"
        return (
            f"PostHog rate limit exceeded (429): {self.message} Retry after {wait}; "
            "PostHog allows 480 requests a minute per personal API key, and only a few queries "
            "at once."
        )


class ServerError(APIError):
    """5xx: PostHog (or a proxy in front of it) failed; a 503 may carry ``retry_after``."""

    hint = "This is on PostHog's side; nothing was changed by a failed read. Try again shortly."

    def __init__(
        self,
        message: str,
        *,
        status: int,
        attr: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, attr=attr, code=code)
        self.retry_after = retry_after

    def describe(self) -> str:
        """Status, message and hint, with the wait PostHog asked for if it sent Retry-After."""
        text = super().describe()
        if self.retry_after is None:
            return text
        return f"{text} PostHog asked to retry after {self.retry_after:g} seconds."


class TransportError(PostHogError):
    """No answer: the host could not be reached or did not answer in time."""


class BackendUnavailable(TransportError):
    """The local sandbox cannot serve at all (not installed, its directory held by another
    process): trying again cannot help, so the adapter does not retry it."""


class MalformedResponse(PostHogError):
    """PostHog answered with something that is not the JSON it documents."""


STATUS_ERRORS: Mapping[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    429: RateLimited,
}

_HTML = re.compile(r"<[^>]+>")


def body_message(body: Any) -> tuple[str | None, str | None, str | None]:
    """Return ``(message, attr, code)`` from any of PostHog's error-body shapes."""
    if isinstance(body, Mapping):
        attr = body.get("attr") if isinstance(body.get("attr"), str) else None
        code = body.get("code") if isinstance(body.get("code"), str) else None
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value, attr, code
        if body:
            # DRF field errors: {"field": ["message", ...]}
            field, errors = next(iter(body.items()))
            if isinstance(errors, list) and errors and isinstance(errors[0], str):
                return errors[0], str(field), code
            if isinstance(errors, str):
                return errors, str(field), code
    if isinstance(body, list) and body and isinstance(body[0], str):
        return body[0], None, None
    return None, None, None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Read a ``Retry-After`` header given in seconds; None when absent or a date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_response(
    response: httpx.Response, *, what: str, secrets: Iterable[str] = ()
) -> APIError:
    """Build the error for a non-2xx ``response`` to the request described by ``what``.

    ``secrets`` are literal values the request carried (the caller's credentials); an answer
    that echoes the request has them, and every credential-named key's value, redacted.
    """
    status = response.status_code
    try:
        body: Any = json.loads(response.content) if response.content else None
    except (ValueError, RecursionError):
        body = None
    message, attr, code = body_message(body)
    if message is None:
        if body is None and response.content:
            text = _HTML.sub(" ", response.text[:2000])
            snippet = " ".join(text.split())[:200]
            message = f"non-JSON error page from {what}" + (f": {snippet}" if snippet else "")
        else:
            message = f"{what} failed"
    message = redact_text(message, extra=secrets)
    if status == 404 and message in ("Not found.", f"{what} failed"):
        message = f"{what}: not found. Check the id (list sources or schemas to find it)"
    if status == 429:
        return RateLimited(message, status=status, retry_after=retry_after_seconds(response))
    if status >= 500:
        return ServerError(
            message, status=status, attr=attr, code=code, retry_after=retry_after_seconds(response)
        )
    cls = STATUS_ERRORS.get(status, BadRequest)
    return cls(message, status=status, attr=attr, code=code)
