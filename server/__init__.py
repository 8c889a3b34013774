"""The MCP server: built from the tool table, served over stdio, SSE or streamable HTTP."""
