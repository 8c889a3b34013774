"""What one server lifetime holds: the settings, the adapter (built at the first call), the
in-process sandbox when configured, and the confirmation tokens (the handlers'
``ctx.lifespan_context``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import mcp_types as types
from mcp.server import ServerRequestContext

from .. import __version__
from ..tools.confirm import Confirmations
from ..tools.plans import Plans
from ..tools.rehearsal import Rehearse
from ..tools.secrets import SecretPolicy
from .approvals import Approvals
from .config import Settings
from .limits import Limiter
from .rehearsal import rehearser
from .sandbox_backend import SandboxTransport

if TYPE_CHECKING:
    import httpx

    from ..tools.client import PostHogClient

NAME = "posthog-warehouse-mcp"
USER_AGENT = f"{NAME}/{__version__}"


class LazyClient:
    """The adapter, built at the first tool call: answering tools/list never waits for httpx.

    ``transport`` replaces the network (the in-process sandbox, or a test's ASGI app); it may
    be attached after construction, as long as no call has been made yet. ``client`` is an
    adapter built elsewhere (with a retry policy or size limit of its own) to hand out instead.
    """

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        client: PostHogClient | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self._client = client

    def get(self) -> PostHogClient:
        """The pooled adapter, created on first use."""
        if self._client is None:
            from ..tools.client import PostHogClient, build_http_client

            http = build_http_client(
                base_url=self.settings.base_url,
                api_key=self.settings.api_key,
                timeout=self.settings.timeout,
                user_agent=USER_AGENT,
                transport=self.transport,
            )
            self._client = PostHogClient(http)
        return self._client

    @property
    def secret_policy(self) -> SecretPolicy:
        """How a call's credential fields are treated: the settings' policy, with the
        references the in-process sandbox defines (its demo's password) ahead of the server's
        environment."""
        policy = self.settings.secret_policy
        if not isinstance(self.transport, SandboxTransport) or not self.transport.references:
            return policy
        environ = os.environ if policy.environ is None else policy.environ
        return replace(policy, environ={**environ, **self.transport.references})

    @property
    def rehearse(self) -> Rehearse:
        """Rehearsals on this machine; with the in-process sandbox, they can read what its
        connect page stored (PostHog never gives a stored credential back)."""
        backend = self.transport
        return rehearser(
            backend.stored_credential if isinstance(backend, SandboxTransport) else None
        )

    async def aclose(self) -> None:
        """Close the pool, if it was ever opened."""
        if self._client is not None:
            await self._client.http.aclose()


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[httpx.AsyncBaseTransport | None]:
    """Run the in-process sandbox for the block, if configured; yield its transport."""
    if not settings.sandbox:
        yield None
        return
    backend = SandboxTransport(
        settings.sandbox_dir,
        demo=settings.demo,
        cloud_rules=settings.sandbox_cloud_rules,
        read_only=settings.read_only,
    )
    async with backend.running() as sandbox:
        yield sandbox


@asynccontextmanager
async def open_client(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[LazyClient]:
    """Hold the adapter (and the in-process sandbox, if configured) for a lifetime.

    ``transport`` replaces the network (tests inject ``httpx.ASGITransport``).
    """
    async with AsyncExitStack() as stack:
        if transport is None:
            transport = await stack.enter_async_context(open_backend(settings))
        client = LazyClient(settings, transport)
        stack.push_async_callback(client.aclose)
        yield client


@dataclass(frozen=True)
class ServerState:
    """What the handlers need, for one server lifetime (the SDK's ``ctx.lifespan_context``)."""

    settings: Settings
    client: LazyClient
    listing: types.ListToolsResult
    # The same tools naming their views (server/apps.py), for a client that renders MCP Apps.
    views_listing: types.ListToolsResult
    # Confirmation tokens of destructive calls (None: confirmations are off).
    confirmations: Confirmations | None = None
    # Plan ids of external-data-schemas-plan (None: the server keeps none).
    plans: Plans | None = None
    # Destructive calls held for a person's approval (a card, a loopback page).
    approvals: Approvals = field(default_factory=Approvals)
    # Per-caller limits counted per tool call (the SSE transport; None: counted per request
    # by the HTTP app, or not at all).
    limiter: Limiter | None = None


Context = ServerRequestContext[ServerState]
