"""A local PostHog-compatible data-warehouse API (sources, schemas, jobs) with real syncs."""

from posthog_warehouse_mcp.sandbox.runtime import open_sandbox

__all__ = ["open_sandbox"]
