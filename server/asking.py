"""Putting a question to the person, in the form this client supports.

tools/confirm.py decides, once per call, whether a destructive call may act or must ask first
(a :class:`~..tools.confirm.Question`: the preview and a token). Here the server presents that
question, trying each presenter in turn until one can:

1. ``across_turns``: a 2026-07-28 connection whose client declared form elicitation gets an
   input-required result; the client asks the person and retries with the answer and the
   token (``request_state``).
2. ``in_call``: a 2025 connection with form elicitation is asked during the call
   (``elicitation/create``); the call acts on a yes.
3. ``in_card``: a client that renders MCP Apps gets the preview as a card with Approve and
   Decline; the call is held (server/approvals.py, where any replica can take it) and sent
   once, when the card's Approve calls the app-only tool. The answer also prints the approval
   page's link where there is a page (hosts still fail to render apps from some local servers).
4. ``on_page``: the preview and a one-time link to the approval page, where the person types
   the name of what will go; the held call is sent then. On stdio the page is on 127.0.0.1;
   over HTTP it is at the deployment's public URL (``POSTHOG_MCP_PUBLIC_URL``), if set, and not
   for forwarded keys (the page cannot send a caller's key: it is never kept).
5. ``with_token``, the fallback: any other client (or every client, when the operator sets
   ``POSTHOG_CONFIRM=token``) gets the preview and a ``confirmation_token`` for the model to
   show the person and bring back: a path the model can satisfy itself.

A new way to ask is one more presenter in :data:`PRESENTERS`. URL-mode elicitation (showing
the person a page) lives here too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.apps import client_supports_apps
from mcp.shared.exceptions import NoBackChannelError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..tools.confirm import Question
from ..tools.hooks import OpenUrl
from ..tools.output import dumps
from .approvals import APPROVAL_META, APPROVE_TOOL, ApprovalRefused, Send
from .approvals import Held as HeldCall
from .apps import APPROVE
from .callers import Caller
from .state import Context

log = logging.getLogger("posthog_warehouse_mcp")

CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "confirm": {"type": "boolean", "title": "Go ahead", "description": "Yes, do it."}
    },
    "required": ["confirm"],
}


@dataclass(frozen=True)
class Agreed:
    """The person said yes during the call: go ahead."""


# What a call answers instead of acting (nothing was sent): a result's structured content, a
# whole result (a card's, with `_meta`), or a 2026-07-28 input-required result.
Held = dict[str, Any] | types.CallToolResult | types.InputRequiredResult
# Presents a question about a call (held, as data, if a person approves it later); None when
# it cannot reach the person through this client.
Presenter = Callable[[Context, Question, HeldCall], Awaitable[Agreed | Held | None]]


@dataclass(frozen=True)
class Answer:
    """The person's answer a 2026-07-28 client brings back on its retry, with our token."""

    token: str
    action: str
    agreed: bool


def elicitation_modes(ctx: Context) -> tuple[bool, bool]:
    """Which elicitation the client declared: (form, url). An elicitation capability that
    names neither mode means form, as the protocol had it before modes."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False, False
    return elicitation.form is not None or elicitation.url is None, elicitation.url is not None


def answer_of(params: types.CallToolRequestParams) -> Answer | None:
    """The person's answer and our token, when this call is a client's retry after an
    input-required result; None for a first call."""
    answer = (params.input_responses or {}).get("confirm")
    if not params.request_state or not isinstance(answer, types.ElicitResult):
        return None
    agreed = answer.action == "accept" and bool((answer.content or {}).get("confirm"))
    return Answer(params.request_state, str(answer.action), agreed)


def declined(answer: Answer) -> dict[str, Any]:
    """What a call answers when the person said no on a retry: nothing was done."""
    return {"confirmed": False, "answer": answer.action}


async def across_turns(ctx: Context, question: Question, call: HeldCall) -> Held | None:
    """2026-07-28 with form elicitation: the question goes back as an input-required result,
    the token as its ``request_state``."""
    form, _ = elicitation_modes(ctx)
    if not form or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    ask = types.ElicitRequest(
        params=types.ElicitRequestFormParams(
            message=question.message, requested_schema=CONFIRM_SCHEMA
        )
    )
    return types.InputRequiredResult(input_requests={"confirm": ask}, request_state=question.token)


async def in_call(ctx: Context, question: Question, call: HeldCall) -> Agreed | Held | None:
    """Form elicitation during the call, where there is a channel back (not stateless HTTP)."""
    form, _ = elicitation_modes(ctx)
    if not form or ctx.lifespan_context.settings.mcp_stateless:
        return None
    try:
        answer = await ctx.session.elicit_form(
            question.message, CONFIRM_SCHEMA, related_request_id=ctx.request_id
        )
    except NoBackChannelError:
        return None  # no server-to-client requests on this connection after all
    if answer.action == "accept" and (answer.content or {}).get("confirm"):
        return Agreed()
    return {"confirmed": False, "answer": str(answer.action), "preview": question.preview}


async def with_token(ctx: Context, question: Question) -> dict[str, Any]:
    """No way to ask the person from here: the model shows the preview and brings the token
    back with the same arguments."""
    return {
        "confirmation_required": True,
        "preview": question.preview,
        "confirmation_token": question.token,
        "next": f"Nothing was changed. Show the preview to the user and ask. If they agree, "
        f"call {question.tool} again with the same arguments plus this confirmation_token "
        f"(valid {question.seconds // 60} minutes, once).",
    }


async def in_card(ctx: Context, question: Question, call: HeldCall) -> Held | None:
    """A client that renders MCP Apps: the preview as a card whose Approve sends the held call
    (the approval id rides in the result's `_meta` only); with the page's link as well.

    Raises:
        ApprovalRefused: the call cannot be held (the shared store is unreachable).
    """
    if not client_supports_apps(ctx):
        return None
    approvals = ctx.lifespan_context.approvals
    approval = await approvals.hold(call)
    answer: dict[str, Any] = {
        "confirmation_required": True,
        "tool": question.tool,
        "preview": question.preview,
        "next": "Nothing was changed. The user is asked in the card shown with this result "
        "(Approve or Decline); the call is sent only when they approve there. Do not call it "
        "again to approve it.",
    }
    link = await approvals.link(approval, call)
    if link is not None:
        answer["approve_at"] = link
        answer["next"] += f" If no card appears, give the user this link: {link}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=dumps(answer))],
        structured_content=answer,
        meta={APPROVAL_META: approval},
    )


async def on_page(ctx: Context, question: Question, call: HeldCall) -> Held | None:
    """Neither forms nor cards: a one-time link to the approval page (127.0.0.1 on stdio, the
    public URL over HTTP), where the person approves by typing the name it shows.

    Raises:
        ApprovalRefused: the call cannot be held (the shared store is unreachable).
    """
    approvals = ctx.lifespan_context.approvals
    if not approvals.serves_page or (call.caller and approvals.sessions is None):
        # A forwarded key's call cannot wait for a page: the key is never kept. A signed-in
        # person's can (--oauth): the server keeps their token, and the page takes their session.
        return None
    link = await approvals.link(await approvals.hold(call), call)
    if link is None:
        return None
    return {
        "confirmation_required": True,
        "preview": question.preview,
        "approve_at": link,
        "next": "Nothing was changed. Show the user the preview and give them this link; they "
        "approve on that page by typing the name it shows (the page is for them: do not open "
        "it yourself). The call is sent once, when they approve; then check the result with a "
        "read tool. The link works once, for 10 minutes.",
    }


# The ways to reach the person, in order of preference, per POSTHOG_CONFIRM; with_token is the
# fallback where none reaches them.
PRESENTERS: dict[str, tuple[Presenter, ...]] = {
    "human": (across_turns, in_call, in_card, on_page),
    "token": (across_turns, in_call),
}


async def present(ctx: Context, question: Question, call: HeldCall) -> Agreed | Held:
    """Put the question to the person the first way this client allows; `call` is held if a
    person approves it later (a card, a page).

    Raises:
        ApprovalRefused: the call cannot be held (the shared store is unreachable).
    """
    for presenter in PRESENTERS[ctx.lifespan_context.settings.confirm]:
        outcome = await presenter(ctx, question, call)
        if outcome is not None:
            return outcome
    return await with_token(ctx, question)


# The app-only tool a card's buttons call; listed only to clients that render MCP Apps, whose
# hosts keep it from the model.
APPROVE_DEFINITION = types.Tool(
    name=APPROVE_TOOL,
    title="Approve or decline a held call",
    description="For the approval card only: sends the held destructive call once, or drops it.",
    input_schema={
        "type": "object",
        "properties": {
            "approval": {"type": "string", "maxLength": 200, "description": "The card's id."},
            "decision": {
                "type": "string",
                "enum": ["approve", "decline"],
                "description": "The person's click.",
            },
        },
        "required": ["approval", "decision"],
        "additionalProperties": False,
    },
    meta={"ui": {"resourceUri": APPROVE.uri, "visibility": ["app"]}},
)


def offers_cards(ctx: Context) -> bool:
    """Whether this client gets approval cards (and so the app-only tool): it renders MCP
    Apps, and the server asks a person (POSTHOG_CONFIRM=human)."""
    return ctx.lifespan_context.settings.confirm == "human" and client_supports_apps(ctx)


async def card_answer(
    ctx: Context, arguments: dict[str, Any] | None, *, caller: Caller, send: Send
) -> dict[str, Any]:
    """The app-only tool: the card's Approve sends the held call once (its answer is the
    call's), by `send`, with the approving caller's credentials, which must be the caller's
    who made the call; Decline drops it.

    Raises:
        ApprovalRefused: malformed, unknown, used, declined, expired or another caller's, or
            the shared store is unreachable; nothing was sent.
        PostHogError: the approved call failed upstream.
    """
    args = arguments or {}
    approval, decision = args.get("approval"), args.get("decision")
    if (
        not isinstance(approval, str)
        or len(approval) > 200
        or decision not in ("approve", "decline")
    ):
        raise ApprovalRefused("expected {approval: <the card's id>, decision: approve|decline}")
    approvals = ctx.lifespan_context.approvals
    if decision == "decline":
        await approvals.decline(approval, caller=caller.id)
        return {"declined": True, "sent": False}
    return await approvals.approve(approval, caller=caller, send=send)


def url_opener(ctx: Context) -> OpenUrl | None:
    """Shows a URL to the person through the client (URL-mode elicitation), when the client
    declared it; None otherwise (or where there is no channel back, stateless HTTP)."""
    _, url = elicitation_modes(ctx)
    if not url:
        return None

    async def open_url(message: str, url: str) -> str:
        try:
            answer = await ctx.session.elicit_url(
                message, url, elicitation_id=str(uuid.uuid4()), related_request_id=ctx.request_id
            )
        except Exception:  # no back channel, or the client failed: the URL is in the result
            log.info("URL elicitation was not possible", exc_info=True)
            return "not shown"
        return str(answer.action)

    return open_url
