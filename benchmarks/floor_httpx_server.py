"""A reference point: the minimal low-level server whose one tool makes our server's request.

It shows what any MCP server pays for calling HTTP from inside a tool over stdio, apart from
what our server adds (validation, shaping, retries, redaction, output cap).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

from benchmarks.floor_server import lists

TOOL = types.Tool(
    name="external-data-sources-retrieve", description="Get.", input_schema={"type": "object"}
)
http: httpx.AsyncClient | None = None


async def on_call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    assert http is not None
    source = (params.arguments or {})["id"]
    response = await http.get(f"/api/environments/1/external_data_sources/{source}/")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=response.text)],
        structured_content=response.json(),
    )


server: Server[Any] = Server("floor-httpx", on_list_tools=lists(TOOL), on_call_tool=on_call_tool)


async def main() -> None:
    global http
    async with (
        httpx.AsyncClient(base_url=os.environ["POSTHOG_HOST"]) as http,
        stdio_server() as (read, write),
    ):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
