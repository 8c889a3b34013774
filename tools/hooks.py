"""What a table row's hook receives: the call in progress and the request it would send.

A hook is per-tool behaviour that lives on the row (``Endpoint.hook``) rather than in a branch
of the generic handler: it may make other calls first, send the row's own request with
``send``, and add to the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Send = Callable[[], Awaitable[dict[str, Any]]]
# Asks the client to show the person a URL (MCP URL-mode elicitation), with a message; returns
# the person's answer (accept, decline, cancel).
OpenUrl = Callable[[str, str], Awaitable[str]]


class Caller(Protocol):
    """A validated tool call, able to call other rows of the table by tool name."""

    @property
    def params(self) -> BaseModel:
        """The call's validated arguments."""
        ...

    @property
    def progress(self) -> Progress | None:
        """Reports MCP progress, when the client asked for it."""
        ...

    @property
    def wait_cap(self) -> float:
        """The longest a call may wait for syncs (below the clients' own call timeouts)."""
        ...

    @property
    def open_url(self) -> OpenUrl | None:
        """Shows the person a URL, when the client supports URL-mode elicitation."""
        ...

    async def call_tool(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call another row by tool name, with arguments validated by its params model."""
        ...


Hook = Callable[[Caller, Send], Awaitable[dict[str, Any]]]
