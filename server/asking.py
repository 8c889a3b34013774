"""Putting a question to the person, in the form this client supports.

tools/confirm.py decides, once per call, whether a destructive call may act or must ask first
(a :class:`~..tools.confirm.Question`: the preview and a token). Here the server presents that
question, trying each presenter in turn until one can:

1. ``across_turns``: a 2026-07-28 connection whose client declared form elicitation gets an
   input-required result; the client asks the person and retries with the answer and the
   token (``request_state``).
2. ``in_call``: a 2025 connection with form elicitation is asked during the call
   (``elicitation/create``); the call acts on a yes.
3. ``with_token``, the fallback: any other client gets the preview and a
   ``confirmation_token`` for the model to show the person and bring back.

A new way to ask (a card in the chat, a loopback approval page) is one more presenter in
:data:`PRESENTERS`. URL-mode elicitation (showing the person a page) lives here too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import NoBackChannelError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..tools.confirm import Question
from ..tools.hooks import OpenUrl
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


# What a call answers instead of acting (nothing was sent): a result's structured content, or
# a 2026-07-28 input-required result.
Held = dict[str, Any] | types.InputRequiredResult
# Presents a question; None when it cannot reach the person through this client.
Presenter = Callable[[Context, Question], Awaitable[Agreed | Held | None]]


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


async def across_turns(ctx: Context, question: Question) -> Held | None:
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


async def in_call(ctx: Context, question: Question) -> Agreed | Held | None:
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


async def with_token(ctx: Context, question: Question) -> Held:
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


# The ways to reach the person, in order of preference; with_token is the fallback.
PRESENTERS: tuple[Presenter, ...] = (across_turns, in_call)


async def present(ctx: Context, question: Question) -> Agreed | Held:
    """Put the question to the person the first way this client allows."""
    for presenter in PRESENTERS:
        outcome = await presenter(ctx, question)
        if outcome is not None:
            return outcome
    return await with_token(ctx, question)


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
