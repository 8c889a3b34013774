"""Build the MCP server from the endpoint table: one generic handler for every tool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from posthog_warehouse_mcp import __version__
from posthog_warehouse_mcp.server.config import Settings, bearer
from posthog_warehouse_mcp.server.prompts import BY_NAME as PROMPTS_BY_NAME
from posthog_warehouse_mcp.server.prompts import PROMPTS
from posthog_warehouse_mcp.tools.dispatch import ArgumentError, run, validate
from posthog_warehouse_mcp.tools.errors import PostHogError
from posthog_warehouse_mcp.tools.output import cap, dumps
from posthog_warehouse_mcp.tools.redact import redact_text, remember_secrets
from posthog_warehouse_mcp.tools.schema import model_schema
from posthog_warehouse_mcp.tools.table import ENDPOINTS, Endpoint, lookup
from posthog_warehouse_mcp.tools.waiting import Call

if TYPE_CHECKING:
    import httpx

    from posthog_warehouse_mcp.tools.client import PostHogClient

log = logging.getLogger("posthog_warehouse_mcp")

NAME = "posthog-warehouse-mcp"
USER_AGENT = f"{NAME}/{__version__}"

INSTRUCTIONS = """\
Manage PostHog data-warehouse imports: sources (a connected database or SaaS account), \
their schemas (one per source table, with sync settings) and jobs (one per sync run).
Typical flow: external-data-sources-list (find the source and its schemas) -> \
external-data-schemas-incremental-fields-create (pick a cursor column) -> \
external-data-schemas-partial-update or external-data-sources-bulk-update-schemas-partial-update \
(should_sync, sync_type, incremental_field) -> external-data-schemas-reload or \
external-data-sources-reload (start a sync; returns at once) -> external-data-sources-jobs \
(watch status, rows_synced, latest_error).
reload syncs new data with the table's sync type; resync drops the table and re-imports \
everything; refresh-schemas only discovers new source tables; incremental-fields only inspects \
columns. destroy, delete-data and resync delete synced data: confirm with the user first."""

SANDBOX_NOTE = """
This server runs against a local sandbox, not PostHog: environment 1, data in a local DuckDB \
file. A demo Postgres source with prefix demo_ is registered; its tables are not syncing yet."""


def tool_definition(row: Endpoint) -> types.Tool:
    """The MCP tool for one table row."""
    return types.Tool(
        name=row.name,
        title=row.title,
        description=row.full_description,
        input_schema=model_schema(row.params),
        output_schema=model_schema(row.response, mode="serialization"),
        annotations=types.ToolAnnotations(
            read_only_hint=row.is_read_only,
            destructive_hint=row.is_destructive,
            idempotent_hint=row.is_idempotent,
            open_world_hint=True,
        ),
    )


def error_result(message: str) -> types.CallToolResult:
    """A tool error the model can read and act on."""
    text = redact_text(message)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


class LazyClient:
    """The adapter, built at the first tool call: answering tools/list never waits for httpx."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> None:
        self.settings = settings
        self.transport = transport
        self._client: PostHogClient | None = None

    def get(self) -> PostHogClient:
        """The pooled adapter, created on first use."""
        if self._client is None:
            from posthog_warehouse_mcp.tools.client import PostHogClient, build_http_client

            http = build_http_client(
                base_url=self.settings.base_url,
                api_key=self.settings.api_key,
                timeout=self.settings.timeout,
                user_agent=USER_AGENT,
                transport=self.transport,
            )
            self._client = PostHogClient(http)
        return self._client

    async def aclose(self) -> None:
        """Close the pool, if it was ever opened."""
        if self._client is not None:
            await self._client.http.aclose()


@asynccontextmanager
async def open_client(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[LazyClient]:
    """Hold the adapter (and run the in-process sandbox, if configured) for a lifetime.

    ``transport`` replaces the network (tests inject ``httpx.ASGITransport``).
    """
    async with AsyncExitStack() as stack:
        backend = transport
        if backend is None and settings.sandbox:
            from posthog_warehouse_mcp.server.sandbox_backend import SandboxTransport

            sandbox = SandboxTransport(settings.sandbox_dir, demo=settings.demo)
            backend = await stack.enter_async_context(sandbox.running())
        lazy = LazyClient(settings, backend)
        stack.push_async_callback(lazy.aclose)
        yield lazy


def create_server(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    client: PostHogClient | LazyClient | None = None,
) -> Server[dict[str, Any]]:
    """Build the low-level MCP server.

    With ``client``, every connection shares that adapter (the HTTP transports open it once);
    otherwise each connection opens its own through :func:`open_client` with ``transport``.
    """
    settings.check()
    remember_secrets([settings.api_key])
    tools = [tool_definition(row) for row in ENDPOINTS if settings.enabled(row)]
    schemas: Mapping[str, Mapping[str, Any]] = {t.name: t.input_schema for t in tools}
    listing = types.ListToolsResult(tools=tools)

    @asynccontextmanager
    async def lifespan(_: Server[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        if client is not None:
            yield {"client": client}
            return
        async with open_client(settings, transport=transport) as own:
            yield {"client": own}

    async def on_list_tools(
        ctx: ServerRequestContext[dict[str, Any]], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def on_call_tool(
        ctx: ServerRequestContext[dict[str, Any]], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        row = lookup(params.name)
        if row is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        if not settings.enabled(row):
            return error_result(settings.why_disabled(row))
        try:
            args = validate(row, params.arguments)
        except ArgumentError as exc:
            return error_result(str(exc))
        if settings.environment is None:
            return error_result(
                "No PostHog environment id is configured; nothing was sent. Set "
                "POSTHOG_ENVIRONMENT_ID (or --environment-id) to the number in your PostHog URL "
                "(/project/<id>/), or run with --sandbox to try the server locally."
            )
        api_key = None
        if settings.forward_key:
            request = ctx.request
            api_key = bearer(request.headers) if request is not None else None
            if api_key is None:
                return error_result(
                    "This server uses each caller's own PostHog key; send it as "
                    "'Authorization: Bearer phx_...'. Nothing was sent."
                )
        elif not settings.sandbox and not settings.api_key and transport is None:
            return error_result(
                "No PostHog personal API key is configured; nothing was sent. Set "
                "POSTHOG_PERSONAL_API_KEY to a key with the external_data_source:read and "
                ":write scopes, or run with --sandbox to try the server locally."
            )
        held = ctx.lifespan_context["client"]
        client: PostHogClient = held.get() if isinstance(held, LazyClient) else held
        try:
            call = Call(args, client, settings.base_path(), api_key, ctx.session.report_progress)
            result = await run(row, call)
        except PostHogError as exc:
            return error_result(exc.describe())
        except Exception:
            log.exception("unexpected failure in %s", row.name)
            return error_result(
                f"{row.name} failed inside the server (an unexpected error, logged on the "
                "server's stderr). Whether PostHog applied the change is unknown: check with a "
                "list or retrieve call before retrying."
            )
        text = dumps(result)
        if len(text.encode()) > settings.max_output_bytes:
            result = cap(result, settings.max_output_bytes)
            text = dumps(result)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=result
        )

    async def on_list_prompts(
        ctx: ServerRequestContext[dict[str, Any]], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[p.definition() for p in PROMPTS])

    async def on_get_prompt(
        ctx: ServerRequestContext[dict[str, Any]], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        prompt = PROMPTS_BY_NAME.get(params.name)
        if prompt is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        missing = [
            n
            for n, _, required in prompt.arguments
            if required and not (params.arguments or {}).get(n)
        ]
        if missing:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"Prompt {prompt.name} needs the argument(s): {', '.join(missing)}",
            )
        text = prompt.render(dict(params.arguments or {}))
        return types.GetPromptResult(
            description=prompt.description,
            messages=[
                types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
            ],
        )

    return Server(
        NAME,
        version=__version__,
        title="PostHog data warehouse",
        instructions=INSTRUCTIONS + (SANDBOX_NOTE if settings.sandbox else ""),
        lifespan=lifespan,
        get_tool_input_schema=schemas.get,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_prompts=on_list_prompts,
        on_get_prompt=on_get_prompt,
    )
