"""What a table row's per-tool behaviour receives: the call in progress, typed by its params.

A hook is per-tool behaviour that lives on the row (``Endpoint.hook``) rather than in a branch
of the generic handler: it may make other calls first, send the row's own request with
``send``, and add to the result. A preview (``Endpoint.preview``) reads what a destructive call
will affect, before the person is asked (tools/previews.py).

Both are typed by the params model of their row (``Caller[SyncParams]``), so ``call.params.id``
type-checks; a test checks each row's params model is the one its hook and preview declare.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from .plans import Plans
    from .rehearsal import Rehearse
    from .secrets import SecretPolicy

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Send = Callable[[], Awaitable[dict[str, Any]]]
# Asks the client to show the person a URL (MCP URL-mode elicitation), with a message; returns
# the person's answer (accept, decline, cancel).
OpenUrl = Callable[[str, str], Awaitable[str]]

P = TypeVar("P", bound=BaseModel, covariant=True)


class Caller(Protocol[P]):
    """A validated tool call, able to call other rows of the table by tool name."""

    @property
    def params(self) -> P:
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

    @property
    def caller(self) -> str:
        """Who is calling: a digest of a forwarded key, or "" for the server's own callers."""
        ...

    @property
    def rehearse(self) -> Rehearse | None:
        """Runs a rehearsal on this machine (tools/rehearsal.py); None where it cannot."""
        ...

    @property
    def secrets(self) -> SecretPolicy | None:
        """How credential fields are treated (secret references, strict mode)."""
        ...

    @property
    def plans(self) -> Plans | None:
        """Issues and reads plan ids (tools/plans.py); None where the server keeps none."""
        ...

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call another row by tool name, with arguments validated by its params model."""
        ...


# A row's hook and preview take a Caller of that row's params model.
Hook = Callable[[Caller[Any], Send], Awaitable[dict[str, Any]]]
# A preview answers None when this call will remove nothing after all (it acts at once).
Preview = Callable[[Caller[Any]], Awaitable[dict[str, Any] | None]]
