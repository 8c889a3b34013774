"""MCP Apps (``io.modelcontextprotocol/ui``): the views a host renders for tool results.

A client that negotiated the extension (its capabilities name it, with the
``text/html;profile=mcp-app`` MIME type) sees, on each tool a :class:`View` shows, a
``_meta.ui.resourceUri``; the host reads that ``ui://`` resource (``resources/read``), renders
it in a sandboxed iframe and hands it the tool's input and result over ``postMessage``. The
result's text then tells the model that the person already sees it. Every other client gets
the tools and results it always got.

Each view is one HTML document in ``server/views/``. A ``/* include: <file> */`` line in it is
replaced, when it is read, by that file of the same folder (``bridge.js``, the Apps bridge
every view uses; ``base.css``, the shared styles), so each document served is self-contained:
no network, no build step. A new view is its HTML file and one entry in :data:`VIEWS`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID, client_supports_apps
from mcp.shared.exceptions import MCPError

from ..tools.table import ENDPOINTS
from .state import Context

VIEWS_DIR = Path(__file__).with_name("views")
URI_PREFIX = "ui://posthog-warehouse/"
_INCLUDE = re.compile(r"/\* include: ([a-z-]+\.(?:js|css)) \*/")

# The views load nothing and connect nowhere (the host hands them their data), so they ask for
# no domain; the host's restrictive default policy is all they need.
RESOURCE_UI: dict[str, Any] = {
    "csp": {"connectDomains": [], "resourceDomains": []},
    "prefersBorder": True,
}


@dataclass(frozen=True)
class View:
    """One ``ui://`` view: ``server/views/<name>.html``, and the tools whose results it shows."""

    name: str
    title: str
    description: str
    tools: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        """The view's resource URI, as a tool's ``_meta.ui.resourceUri`` names it."""
        return f"{URI_PREFIX}{self.name}.html"

    def resource(self) -> types.Resource:
        """The view as ``resources/list`` lists it."""
        return types.Resource(
            uri=self.uri,
            name=self.name,
            title=self.title,
            description=self.description,
            mime_type=APP_MIME_TYPE,
            _meta={"ui": RESOURCE_UI},
        )


# The card a call held for a person shows (server/approvals.py), on every tool that may ask;
# its buttons call the app-only tool approve-destructive-call.
APPROVE = View(
    "approve",
    "Approve a change",
    "What a destructive call will remove, with Approve and Decline; Approve sends it once.",
    tools=tuple(row.name for row in ENDPOINTS if row.preview is not None),
)

VIEWS: tuple[View, ...] = (
    APPROVE,
    View(
        "health",
        "Data warehouse health",
        "The audit's findings by severity, with cause and next step; buttons read a failed "
        "table's sync logs and settings.",
        tools=("external-data-sources-audit",),
    ),
    View(
        "sync-history",
        "Sync history",
        "A source's sync jobs per table: status, rows, duration and errors, with a chart.",
        tools=("external-data-sources-jobs", "external-data-sources-jobs-wait"),
    ),
    View(
        "query-results",
        "Query results",
        "An execute-sql answer as a table, with column types and the truncation notice.",
        tools=("execute-sql",),
    ),
    View(
        "review",
        "Import review",
        "A rehearsal, plan or setup as a card: tables, sync type, rows, billed rows a month, "
        "problems and fixes.",
        tools=(
            "external-data-sources-rehearse",
            "external-data-schemas-plan",
            "data-warehouse-source-setup",
        ),
    ),
)

BY_URI = {view.uri: view for view in VIEWS}
BY_TOOL = {tool: view for view in VIEWS for tool in view.tools}


def negotiated(ctx: Context) -> bool:
    """Whether this client renders MCP Apps (it declared the extension and its MIME type)."""
    return client_supports_apps(ctx)


def advertise(server: Server[Any]) -> None:
    """Declare the extension in the server's capabilities (no settings)."""
    server.extensions[EXTENSION_ID] = {}


@functools.cache
def html(name: str) -> str:
    """The view's document with its includes inlined.

    Raises:
        FileNotFoundError: the view or an included file is not in ``server/views/``.
    """
    page = (VIEWS_DIR / f"{name}.html").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: (VIEWS_DIR / m[1]).read_text(encoding="utf-8"), page)


def with_views(listing: types.ListToolsResult) -> types.ListToolsResult:
    """The tool list an Apps client sees: each tool a view shows names it in ``_meta.ui``."""
    tools = []
    for tool in listing.tools:
        view = BY_TOOL.get(tool.name)
        if view is not None:
            meta = {**(tool.meta or {}), "ui": {"resourceUri": view.uri}}
            tool = tool.model_copy(update={"meta": meta})
        tools.append(tool)
    return listing.model_copy(update={"tools": tools})


def shown(ctx: Context, tool: str, result: types.CallToolResult) -> types.CallToolResult:
    """A successful result of a tool with a view, for an Apps client: one more text block tells
    the model the person sees it in the view. The structured content is unchanged."""
    view = BY_TOOL.get(tool)
    if view is None or result.is_error or not negotiated(ctx):
        return result
    note = types.TextContent(
        type="text",
        text=f"The user sees this result in the {view.title} view: do not repeat its rows or "
        "tables. Say what matters and what to do next.",
    )
    return result.model_copy(update={"content": [*result.content, note]})


async def on_list_resources(
    ctx: Context, params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    """``resources/list``: the views, for a client that renders them; none for another."""
    views = VIEWS if negotiated(ctx) else ()
    return types.ListResourcesResult(resources=[view.resource() for view in views])


async def on_read_resource(
    ctx: Context, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    """``resources/read``: one view's document, self-contained.

    Raises:
        MCPError: a URI that names no view.
    """
    view = BY_URI.get(str(params.uri))
    if view is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {params.uri}")
    return types.ReadResourceResult(
        contents=[
            types.TextResourceContents(
                uri=view.uri,
                mime_type=APP_MIME_TYPE,
                text=html(view.name),
                _meta={"ui": RESOURCE_UI},
            )
        ]
    )
