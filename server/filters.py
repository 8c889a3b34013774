"""Which tools a server offers: read-only mode, toolsets and tool names, and why one is refused."""

from __future__ import annotations

from ..tools.table import Endpoint
from .config import Settings


def enabled(settings: Settings, row: Endpoint) -> bool:
    """Whether a tool is listed and callable under the read-only, toolsets and tools filters."""
    if settings.read_only and not row.read_scoped:
        return False
    if settings.tools and not {row.name, *row.aliases} & set(settings.tools):
        return False
    return not (settings.toolsets and row.toolset not in settings.toolsets)


def why_disabled(settings: Settings, row: Endpoint) -> str:
    """Explain to the model why a tool is refused and how the user can allow it."""
    if settings.read_only and not row.read_scoped:
        return (
            f"{row.name} needs the scope {' and '.join(row.scopes)} and the server runs "
            "read-only (only tools a read-scoped key can call); nothing was sent. Ask the user "
            "to restart it without --read-only (POSTHOG_READ_ONLY=0) to allow it."
        )
    return (
        f"{row.name} is not enabled on this server (--tools/--toolsets); nothing was sent. "
        f"It belongs to the toolset '{row.toolset}'."
    )
