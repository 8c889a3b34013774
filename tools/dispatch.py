"""From a table row and a tool call's arguments to one adapter request and a shaped result.

run(row, call)    the row's hook, if it has one, around send()
send(row, call)   validated arguments -> prepare() -> PostHogClient.request -> shape()

Whether a destructive call may act is decided before it gets here (tools/confirm.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pydantic
from pydantic import BaseModel

from .confirm import caller_of
from .errors import MalformedResponse, NotSucceeded, PermissionDenied
from .hooks import OpenUrl, Progress
from .models import Ack
from .redact import redact
from .secrets import SecretPolicy, check_references, resolve
from .table import BY_NAME, Endpoint
from .waiting import DEFAULT_WAIT_CAP

if TYPE_CHECKING:
    # The adapter imports httpx; nothing here needs it until a call is made.
    from .client import PostHogClient, Reply
    from .plans import Plans
    from .rehearsal import Rehearse


class ArgumentError(ValueError):
    """The arguments do not fit the tool's params model; nothing was sent."""


@dataclass(frozen=True)
class PreparedRequest:
    """The HTTP request a validated tool call turns into."""

    method: str
    path: str
    query: dict[str, Any] | None
    body: dict[str, Any] | None


def validate(row: Endpoint, arguments: Mapping[str, Any] | None) -> BaseModel:
    """Validate ``arguments`` against the row's params model.

    Raises:
        ArgumentError: with one line per problem, naming the field and never echoing a value.
    """
    try:
        return row.params.model_validate(dict(arguments or {}))
    except pydantic.ValidationError as exc:
        allowed = ", ".join(row.params.model_fields)
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            if error["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown argument (allowed: {allowed or 'none'})")
            elif error["type"] == "missing":
                problems.append(f"{where}: required")
            else:
                problems.append(f"{where}: {error['msg']}")
        if len(problems) > 10:
            problems = [*problems[:10], f"and {len(problems) - 10} more problems"]
        raise ArgumentError(
            f"Invalid arguments for {row.name}; nothing was sent. " + "; ".join(problems) + "."
        ) from None


def prepare(row: Endpoint, params: BaseModel, *, base_path: str) -> PreparedRequest:
    """Split validated arguments into path, query and body.

    Path values are percent-encoded whole, so no argument can change which endpoint is called.
    Only the arguments the caller gave are sent (a PATCH changes just those fields).
    """
    values = params.model_dump(mode="json", exclude_unset=True)
    path_values = {name: quote(str(values.pop(name)), safe="") for name in row.path_fields}
    path = base_path + row.path.format(**path_values)
    if row.sends_body:
        if row.build_body is not None:
            values = row.build_body(params)
        body = {**values, **row.inject_body}
        return PreparedRequest(row.method, path, None, body)
    if row.build_query is not None:
        values = row.build_query(params)
    query = {k: v for k, v in values.items() if v is not None}
    return PreparedRequest(row.method, path, query or None, None)


def shape(row: Endpoint, reply: Reply) -> dict[str, Any]:
    """Turn PostHog's answer into the row's response model, always a JSON object.

    Raises:
        NotSucceeded: a 200 answer with ``"success": false`` (PostHog's webhook endpoints),
            which keeps the answer for the model.
        MalformedResponse: an answer that does not fit the documented shape.
    """
    body = reply.body
    if body is None:
        body = {}
    if isinstance(body, dict) and body.get("success") is False:
        failed = NotSucceeded(
            str(body.get("error") or body.get("message") or f"{row.name} did not succeed"),
            status=reply.status_code,
        )
        failed.details = redact(body)
        raise failed
    if isinstance(body, list):
        body = {"results": body}
    if row.response is Ack and isinstance(body, dict):
        body = {"ok": True, "status_code": reply.status_code, **body}
    if not isinstance(body, dict):
        raise MalformedResponse(f"{row.name}: PostHog answered with an unexpected JSON value.")
    try:
        model = row.response.model_validate(body)
    except pydantic.ValidationError:
        raise MalformedResponse(
            f"{row.name}: PostHog's answer does not have the documented shape "
            f"({row.response.__name__}); check POSTHOG_HOST points at PostHog."
        ) from None
    # Only what PostHog sent (validated), not defaults for fields it left out; credentials a
    # source's job_inputs might echo are redacted by key name.
    shaped: dict[str, Any] = redact(model.model_dump(mode="json", exclude_unset=True))
    for path in row.exclude:
        _drop(shaped, path.split("."))
    return shaped


def _drop(node: Any, path: list[str]) -> None:
    """Remove the field at a dotted path (``*`` stands for every item of a list)."""
    head, rest = path[0], path[1:]
    if head == "*":
        for item in node if isinstance(node, list) else []:
            _drop(item, rest)
    elif isinstance(node, dict) and head in node:
        if rest:
            _drop(node[head], rest)
        else:
            del node[head]


@dataclass(frozen=True, kw_only=True)
class Call:
    """A validated tool call and what it needs to reach PostHog (a :class:`~.hooks.Caller`)."""

    params: BaseModel
    client: PostHogClient
    base_path: str
    api_key: str | None = None
    # Who is calling when the key alone does not say it for good (a refreshed OAuth token).
    identity: str | None = None
    progress: Progress | None = None
    # How credential fields are treated (secret references, strict mode); None: sent as given.
    secrets: SecretPolicy | None = None
    open_url: OpenUrl | None = None
    wait_cap: float = DEFAULT_WAIT_CAP
    # Plan ids (tools/plans.py), signed with the server's key; None: the server keeps none.
    plans: Plans | None = None
    # Rehearsals on this machine (tools/rehearsal.py); None: the server cannot run them.
    rehearse: Rehearse | None = None

    @property
    def caller(self) -> str:
        """Who is calling: the identity, a digest of the forwarded key, or "" for the server's
        own callers."""
        return self.identity or caller_of(self.api_key)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call another row by tool name, with arguments validated by its params model."""
        row = BY_NAME[tool]
        other = Call(
            params=validate(row, arguments),
            client=self.client,
            base_path=self.base_path,
            api_key=self.api_key,
            identity=self.identity,
        )
        return await send(row, other)


async def run(row: Endpoint, call: Call) -> dict[str, Any]:
    """Carry out a validated tool call: the row's hook, if it has one, around :func:`send`.

    Raises:
        PostHogError: from the adapter or :func:`shape`.
        SecretRefused: a secret reference or literal the call's policy refuses (nothing sent).
    """

    async def send_this() -> dict[str, Any]:
        return await send(row, call)

    if row.hook is None:
        return await send_this()
    try:
        return await row.hook(call, send_this)
    except PermissionDenied as exc:
        # A hook's reads go through other rows; the key needs what the tool called needs.
        exc.scopes = row.scopes
        raise


async def send(row: Endpoint, call: Call) -> dict[str, Any]:
    """Send the request for a validated call and return the shaped result.

    Raises:
        PostHogError: from the adapter or :func:`shape`.
        SecretRefused: a secret reference or literal the call's policy refuses (nothing sent).
    """
    req = prepare(row, call.params, base_path=call.base_path)
    if call.secrets is not None and req.body is not None:
        current = await _changed_source(row, call, req.body, call.secrets)
        resolved = resolve(req.body, call.secrets, tool=row.name, current=current)
        req = replace(req, body=resolved)
    try:
        reply = await call.client.request(
            req.method,
            req.path,
            query=req.query,
            json_body=req.body,
            retry=row.is_retry_safe,
            api_key=call.api_key,
        )
    except PermissionDenied as exc:
        exc.scopes = row.scopes  # the adapter knows the request, the row knows its scopes
        raise
    return shape(row, reply)


async def _changed_source(
    row: Endpoint, call: Call, body: dict[str, Any], policy: SecretPolicy
) -> dict[str, Any] | None:
    """The source a body with secret references changes when it does not say its type (a
    source PATCH of ``job_inputs``): its type and host are where the secrets would go.

    Raises:
        SecretRefused: a reference refused whatever the source (nothing sent, nothing read).
    """
    source_id = getattr(call.params, "id", None)
    if "source_type" in body or "job_inputs" not in body or source_id is None:
        return None
    if not check_references(body, policy, tool=row.name):
        return None
    return await call.call("external-data-sources-retrieve", id=str(source_id))
