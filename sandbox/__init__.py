"""A local PostHog-compatible data-warehouse API (sources, schemas, jobs) with real syncs."""

from .runtime import open_sandbox

__all__ = ["open_sandbox"]
