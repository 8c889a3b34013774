"""posthog-warehouse-mcp: an MCP server for PostHog's data-warehouse imports.

The one import package the project installs. Its subpackages are the repository's top-level
folders (``server/``, ``tools/``, ``sandbox/``, ``loopback/``), linked in here so the layout
stays as it is while nothing claims a generic top-level name.
"""

__version__ = "0.1.0"
