"""Build the MCP server from the endpoint table: one generic handler for every tool.

on_call_tool(ctx, params)   look up the row, refuse what the settings refuse (preflight),
                            validate; tools.confirm.decide: act, or ask the person first
                            (server/asking.py presents the question); then tools.dispatch.run
                            -> the adapter -> PostHog
failure(tool, exc)          what stopped a call, as the tool error the model reads
server/sending.py builds every Call, for a tool call and for a held call a person approved.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from .. import __version__
from ..tools import dispatch
from ..tools.confirm import ConfirmationRefused, Confirmations, decide
from ..tools.definitions import definitions
from ..tools.dispatch import ArgumentError, validate
from ..tools.errors import NothingSent, PostHogError
from ..tools.output import cap, dumps
from ..tools.plans import Plans
from ..tools.redact import redact_text, remember_secrets
from ..tools.secrets import SecretRefused
from ..tools.table import ENDPOINTS, Endpoint, lookup
from . import apps, asking
from .approvals import APPROVE_TOOL, Approvals, Held
from .callers import Caller
from .config import Settings
from .filters import enabled, why_disabled
from .limits import MemoryWindows, SharedAttempts, caller_of, limiter_for
from .prompts import PROMPTS, PROMPTS_BY_NAME, instructions
from .sending import Sender, caller_of_request, forwarded_key, sender_of
from .shared import Shared, shared_for
from .state import NAME, Context, LazyClient, ServerState, open_client

if TYPE_CHECKING:
    import httpx
    from starlette.requests import Request

log = logging.getLogger("posthog_warehouse_mcp")

# The server's icon in serverInfo (scripts/make_icon.py draws it); the bundle has icon.png.
ICON = types.Icon(
    src="data:image/svg+xml;base64,"
    + base64.b64encode(Path(__file__).with_name("icon.svg").read_bytes()).decode(),
    mime_type="image/svg+xml",
    sizes=["any"],
)


def error_result(message: str, details: dict[str, Any] | None = None) -> types.CallToolResult:
    """A tool error the model can read and act on; ``details`` (what PostHog answered, when part
    of the work was done) go in the text and as structured content."""
    text = redact_text(message)
    if details is not None:
        text = f"{text}\nPostHog's answer: {dumps(details)}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=details,
        is_error=True,
    )


def listing_for(settings: Settings) -> types.ListToolsResult:
    """The tools these settings offer, in table order."""
    tools = definitions()
    return types.ListToolsResult(
        tools=[
            types.Tool.model_validate(tools[row.name])
            for row in ENDPOINTS
            if enabled(settings, row)
        ]
    )


def preflight(settings: Settings, row: Endpoint, request: Request | None) -> str | None:
    """Why this call cannot be sent as configured (a tool error for the model), or None."""
    if not enabled(settings, row):
        return why_disabled(settings, row)
    if settings.environment is None and not settings.mcp_oauth:
        return (
            "No PostHog environment id is configured; nothing was sent. Set "
            "POSTHOG_ENVIRONMENT_ID (or --environment-id) to the number in your PostHog URL "
            "(/project/<id>/), or run with --sandbox to try the server locally."
        )
    if settings.forward_key and forwarded_key(request) is None:
        return (
            "This server uses each caller's own PostHog key; send it as "
            "'Authorization: Bearer phx_...'. Nothing was sent."
        )
    if settings.needs_key and not settings.api_key:
        return (
            "No PostHog personal API key is configured; nothing was sent. Set "
            "POSTHOG_PERSONAL_API_KEY to a key with the external_data_source:read and "
            ":write scopes, or run with --sandbox to try the server locally."
        )
    return None


def scope_refusal(row: Endpoint, caller: Caller) -> str | None:
    """Why the caller's token may not make this call (a signed-in person's token lacks a scope
    the row needs), or None."""
    missing = caller.missing(row.scopes)
    if not missing:
        return None
    plural = "s" if len(missing) > 1 else ""
    return (
        f"{row.name} needs the scope{plural} {' and '.join(missing)}, which this sign-in was "
        "not granted; nothing was sent. Reconnect the server in your MCP client and approve "
        f"the scope{plural} to use this tool."
    )


async def on_list_tools(
    ctx: Context, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    """``tools/list``: the table's rows these settings offer, naming their views for a client
    that renders MCP Apps (and, to a client that renders approval cards, the app-only tool
    their buttons call)."""
    state = ctx.lifespan_context
    listing = state.views_listing if apps.negotiated(ctx) else state.listing
    if asking.offers_cards(ctx):
        return types.ListToolsResult(tools=[*listing.tools, asking.APPROVE_DEFINITION])
    return listing


async def on_call_tool(
    ctx: Context, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    """``tools/call``: every tool, through its table row.

    Raises:
        MCPError: only for a tool name no row has; every other failure is a tool error.
    """
    state = ctx.lifespan_context
    settings = state.settings
    caller = caller_of_request(settings, ctx.request)
    if state.limiter is not None:
        # A signed-in person is counted as themselves: a refreshed token starts no new count.
        who = caller.identity or caller_of(ctx.request.headers if ctx.request else None)
        refused = await state.limiter.check(who)
        if refused is not None:
            return error_result(f"{params.name}: {refused.message}")
    if params.name == APPROVE_TOOL and asking.offers_cards(ctx):
        try:
            answered = await asking.card_answer(
                ctx,
                params.arguments,
                caller=caller,
                send=sender_of(state).held,
            )
        except Exception as exc:
            return failure(params.name, exc)
        return tool_result(answered, settings)
    row = lookup(params.name)
    if row is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
    refusal = preflight(settings, row, ctx.request) or scope_refusal(row, caller)
    if refusal is not None:
        return error_result(refusal)
    try:
        args = validate(row, params.arguments)
    except ArgumentError as exc:
        return error_result(str(exc))
    answer = asking.answer_of(params)
    if answer is not None and not answer.agreed:
        return tool_result(asking.declined(answer), settings)
    try:
        call = sender_of(state).call(
            args,
            caller=caller,
            progress=ctx.session.report_progress,
            open_url=asking.url_opener(ctx),
        )
        question = await decide(
            row, call, state.confirmations, answered=answer.token if answer else None
        )
        if question is not None:
            # The very call, as data, sent later if a person approves it (a card, a page),
            # by whichever instance the approval reaches. Only the arguments the caller gave:
            # a PATCH sends just those.
            arguments = args.model_dump(mode="json", exclude_unset=True)
            held = await asking.present(
                ctx, question, Held(row.name, arguments, call.caller, question.preview)
            )
            if isinstance(held, types.InputRequiredResult | types.CallToolResult):
                return held
            if not isinstance(held, asking.Agreed):
                return tool_result(held, settings)
        result = await dispatch.run(row, call)
    except Exception as exc:
        return failure(row.name, exc)
    return apps.shown(ctx, row.name, tool_result(result, settings))


def failure(tool: str, exc: Exception) -> types.CallToolResult:
    """The tool error for what stopped a call: the model's next step in its text."""
    if isinstance(exc, PostHogError):
        return error_result(exc.describe(), exc.details)
    if isinstance(exc, SecretRefused):
        return error_result(str(exc))
    if isinstance(exc, NothingSent):
        return error_result(f"{tool}: {exc}; nothing was sent.")
    if isinstance(exc, ConfirmationRefused):
        return error_result(
            f"{tool}: {exc}; nothing was sent. Call it again without confirmation_token to "
            "see what it will do and get a new token."
        )
    log.error("unexpected failure in %s", tool, exc_info=exc)
    return error_result(
        f"{tool} failed inside the server (an unexpected error, logged on the server's "
        "stderr). Whether PostHog applied the change is unknown: check with a list or "
        "retrieve call before retrying."
    )


def tool_result(result: dict[str, Any], settings: Settings) -> types.CallToolResult:
    """A tool's answer as text and structured content, cut to the output budget."""
    text = dumps(result)
    if len(text.encode()) > settings.max_output_bytes:
        result = cap(result, settings.max_output_bytes)
        text = dumps(result)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=result
    )


async def on_list_prompts(
    ctx: Context, params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    """``prompts/list``: the workflow prompts."""
    return types.ListPromptsResult(prompts=[p.definition() for p in PROMPTS])


async def on_get_prompt(
    ctx: Context, params: types.GetPromptRequestParams
) -> types.GetPromptResult:
    """``prompts/get``: one workflow prompt, rendered.

    Raises:
        MCPError: an unknown prompt, or a required argument missing.
    """
    prompt = PROMPTS_BY_NAME.get(params.name)
    if prompt is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
    arguments = dict(params.arguments or {})
    missing = prompt.missing(arguments)
    if missing:
        raise MCPError(
            code=types.INVALID_PARAMS,
            message=f"Prompt {prompt.name} needs the argument(s): {', '.join(missing)}",
        )
    return types.GetPromptResult(
        description=prompt.description,
        messages=[
            types.PromptMessage(
                role="user", content=types.TextContent(type="text", text=prompt.render(arguments))
            )
        ],
    )


def approvals_for(settings: Settings, shared: Shared) -> Approvals:
    """Where this server holds calls for a person (``shared``'s store), and where their page is
    served: 127.0.0.1 on stdio, the public URL over HTTP, or nowhere. The page's failed
    attempts are counted in Redis when there is one, so every instance counts them together;
    otherwise in windows of their own (the rate limits' would let one evict the other)."""
    windows = shared.windows if shared.redis is not None else MemoryWindows()
    return Approvals(
        shared.held,
        loopback=settings.mcp_transport == "stdio",
        public_url=settings.public_url,
        attempts=SharedAttempts(windows),
    )


def create_server(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    client: LazyClient | None = None,
    shared: Shared | None = None,
    approvals: Approvals | None = None,
) -> Server[ServerState]:
    """Build the low-level MCP server.

    With ``client``, every connection shares that adapter (the HTTP transports open it once,
    in the ASGI lifespan); otherwise each connection opens its own through :func:`open_client`
    with ``transport``. ``shared`` is where spent one-time ids and rate-limit counts go (by
    default as the settings say: Redis, or this machine), and where held calls are kept.
    ``approvals`` is given by an HTTP app that serves their page itself.

    Raises:
        ConfigError: settings that cannot work (:meth:`Settings.check`), or a Redis URL
            without the Redis client installed.
    """
    settings.check()
    remember_secrets(
        [
            settings.api_key,
            settings.auth_token,
            settings.confirm_secret.get_secret_value() if settings.confirm_secret else None,
            *settings.oauth_key_list,
        ]
    )
    listing = listing_for(settings)
    views_listing = apps.with_views(listing)
    schemas: Mapping[str, Mapping[str, Any]] = {t.name: t.input_schema for t in listing.tools}
    # One key signs confirmation tokens and plan ids (each under its own derivation), so every
    # instance sharing POSTHOG_CONFIRM_SECRET verifies both; one record of what is spent, in
    # the store every instance shares (Redis), or on this machine.
    secret = settings.confirm_secret.get_secret_value() if settings.confirm_secret else None
    key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)
    store = shared if shared is not None else shared_for(settings)
    spent = store.spent
    # The SSE transport answers each POST before its work is done: its limits are per tool
    # call (streamable HTTP counts requests, server/limits.py).
    limiter = limiter_for(settings, store.windows) if settings.mcp_transport == "sse" else None
    confirmations = Confirmations(key=key, spent=spent) if settings.confirm != "off" else None
    plans = Plans(key=hashlib.sha256(key + b"/plans").digest(), spent=spent)
    if approvals is None:
        approvals = approvals_for(settings, store)
    holding = approvals
    if client is not None:
        # The HTTP page may approve between connections: it sends with the app's adapter.
        holding.send = Sender(settings, client, plans).held

    @asynccontextmanager
    async def lifespan(_: Server[ServerState]) -> AsyncIterator[ServerState]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(store.running())
            await stack.enter_async_context(holding.running())
            own = client
            if own is None:
                own = await stack.enter_async_context(open_client(settings, transport=transport))
                holding.send = Sender(settings, own, plans).held
            yield ServerState(
                settings, own, listing, views_listing, confirmations, plans, holding, limiter
            )

    server = Server(
        NAME,
        version=__version__,
        title="PostHog data warehouse",
        icons=[ICON],
        instructions=instructions(settings),
        lifespan=lifespan,
        # The 2026-07-28 streamable-HTTP path checks Mcp-Param-* headers against a tool's
        # input schema; without this lookup the SDK would call list_tools on every call.
        get_tool_input_schema=schemas.get,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_prompts=on_list_prompts,
        on_get_prompt=on_get_prompt,
        on_list_resources=apps.on_list_resources,
        on_read_resource=apps.on_read_resource,
    )
    apps.advertise(server)
    return server
