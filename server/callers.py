"""Who a call is made for, and how it reaches PostHog for them."""

from __future__ import annotations

from dataclasses import dataclass

from ..tools.confirm import caller_of


@dataclass(frozen=True)
class Caller:
    """The credentials a call travels with: the server's own (all None), a caller's forwarded
    PostHog key, or a signed-in person's PostHog token with their region and environment."""

    # Sent upstream as the bearer; None: the server's own key.
    api_key: str | None = None
    # ``https://eu.posthog.com/api/environments/@current/``; None: the configured one.
    base_path: str | None = None
    # Who they are when the key does not say it for good (an OAuth token is refreshed).
    identity: str | None = None
    # What the caller may call (a signed-in person's token's scopes); None: not bounded here.
    scopes: frozenset[str] | None = None

    def missing(self, needed: tuple[str, ...]) -> list[str]:
        """The scopes of `needed` this caller lacks (none when it is not bounded)."""
        if self.scopes is None:
            return []
        return [scope for scope in needed if scope not in self.scopes]

    @property
    def id(self) -> str:
        """What tokens, plans and held calls are bound to ("" for the server's own callers)."""
        return self.identity or caller_of(self.api_key)


SERVER = Caller()
# Where the sign-in check (``SignedIn``, server/oauth/web.py) puts the signed-in person's Caller
# in a request's ASGI scope, for the tool handlers to read.
SIGNED_IN = "posthog_warehouse_mcp.caller"
