"""A local PostHog-compatible data-warehouse API (sources, schemas, jobs) with real syncs.

``open_sandbox`` (``runtime.py``) is loaded on first use: importing one module of the sandbox,
such as ``access`` for ``posthog-warehouse-mcp sql``, loads that module, not all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import open_sandbox

__all__ = ["open_sandbox"]


def __getattr__(name: str) -> Any:
    """``open_sandbox``, imported when it is first asked for (PEP 562)."""
    if name == "open_sandbox":
        from .runtime import open_sandbox

        return open_sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
