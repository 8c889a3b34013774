"""The SDK floor: a minimal low-level MCP server with one no-op tool, over stdio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

NOOP = types.Tool(name="noop", description="Does nothing.", input_schema={"type": "object"})
ListTools = Callable[
    [ServerRequestContext[Any], types.PaginatedRequestParams | None],
    Awaitable[types.ListToolsResult],
]


def lists(tool: types.Tool) -> ListTools:
    """A tools/list handler that offers just ``tool``."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    return on_list_tools


async def on_call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text="{}")])


server: Server[Any] = Server("floor", on_list_tools=lists(NOOP), on_call_tool=on_call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
