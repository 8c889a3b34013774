"""The MCP server: built from the tool table, served over stdio, SSE or streamable HTTP."""

__version__ = "0.1.0"
