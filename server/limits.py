"""Per-caller rate limits on the HTTP transports: fixed windows, as PostHog's MCP counts them.

A caller is the hash of the bearer token it sends (the server's token, or its own PostHog key
with --forward-key): the same token is the same caller on every replica, and the token itself
is never stored. A person signed in with --oauth is counted by who they are (their PostHog
user and project), so that a refreshed token does not start a new count. Each request adds
one to the caller's count in the current minute and the current hour
(``POSTHOG_MCP_RATE_LIMIT_PER_MINUTE``, ``_PER_HOUR``; PostHog's defaults, 1,500 and 15,000);
past either, the request is refused until that window ends.

Where the counts live is a :class:`Windows`: this process's memory (one instance), or Redis
(server/shared.py), so that every replica counts the same caller together. When the shared
store cannot be reached the request is served (fail open, as PostHog does): a limit guards
against a runaway client, and is not worth an outage.

How a refusal reads depends on where the count is made:

- streamable HTTP counts each ``POST /mcp`` (:class:`RateLimit`) and answers ``429`` with
  ``Retry-After`` and ``X-RateLimit-*`` headers, before any work;
- the legacy SSE transport answers its POSTs ``202`` and the result on the stream, so there
  each tool call is counted instead, and a refused one is a tool error saying when to retry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback.limits import CLIENT_FAILURES, CLIENT_WINDOW, LINK_FAILURES, LINK_WINDOW
from ..tools.confirm import StoreUnavailable
from .auth import bearer
from .callers import SIGNED_IN, Caller
from .config import Settings
from .records import digest

log = logging.getLogger("posthog_warehouse_mcp.limits")

# How often a store that cannot be counted in is logged (once a window is enough to notice).
_QUIET_SECONDS = 60.0


class Windows(Protocol):
    """Where the windows' counts live."""

    async def count(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each key's count, each key kept for its seconds; return the new counts.

        Raises:
            Exception: the store cannot be reached (the limiter serves the request).
        """
        ...

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Each key's count now (0 for none), changing nothing.

        Raises:
            Exception: the store cannot be reached.
        """
        ...


class MemoryWindows:
    """Counts in this process only, at most ``keys`` of them (the oldest go first)."""

    def __init__(self, *, keys: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (when it is dropped, count)
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._counts)

    async def count(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each key's count; return the new counts."""
        now = self._clock()
        counts = []
        with self._lock:
            for key, seconds in keys:
                until, count = self._counts.pop(key, (now + seconds, 0))
                # Re-inserted, so the dict's order is the order of last use.
                self._counts[key] = (until, count + 1)
                counts.append(count + 1)
            if len(self._counts) > self._keys:
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
                while len(self._counts) > self._keys:
                    del self._counts[next(iter(self._counts))]
        return counts

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Each key's count now (0 for none or a window gone), changing nothing."""
        now = self._clock()
        with self._lock:
            found = [self._counts.get(key) for key in keys]
        return [entry[1] if entry is not None and entry[0] > now else 0 for entry in found]


@dataclass(frozen=True)
class Limit:
    """At most ``per`` requests in each window of ``seconds``; ``setting`` raises it."""

    per: int
    seconds: int
    name: str
    setting: str


@dataclass(frozen=True)
class Refused:
    """A request over a limit: which, and whole seconds until its window ends."""

    limit: Limit
    retry_after: int

    @property
    def message(self) -> str:
        """What the caller is told: the limit, the setting, when to try again."""
        return (
            f"Rate limit reached: {self.limit.per:,} requests {self.limit.name} for this caller "
            f"(the server's {self.limit.setting}). Nothing was done; retry in "
            f"{self.retry_after} s."
        )


class Limiter:
    """Fixed windows per caller over shared :class:`Windows`.

    Each window is numbered from the epoch (``now // seconds``), so every replica names the
    same window the same way and a key is kept only as long as its window (plus a second for
    clocks that differ a little). Requests past a limit still count, as PostHog's do.
    """

    def __init__(
        self,
        limits: Sequence[Limit],
        windows: Windows,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = tuple(limits)
        self.windows = windows
        self._clock = clock
        self._quiet_until = 0.0

    async def check(self, caller: str) -> Refused | None:
        """Count a request of ``caller`` (a :func:`caller_of` hash); the refusal, or None."""
        now = self._clock()
        keys = [
            (f"rl:{limit.seconds}:{caller}:{int(now // limit.seconds)}", limit.seconds + 1)
            for limit in self.limits
        ]
        try:
            counts = await self.windows.count(keys)
        except Exception as exc:  # fail open: any store failure serves the request
            if now >= self._quiet_until:
                self._quiet_until = now + _QUIET_SECONDS
                log.warning("rate limits are not counted (requests are served): %s", exc)
            return None
        refusals = [
            Refused(limit, max(1, math.ceil((now // limit.seconds + 1) * limit.seconds - now)))
            for limit, count in zip(self.limits, counts, strict=True)
            if count > limit.per
        ]
        return max(refusals, key=lambda r: r.retry_after) if refusals else None


def limiter_for(settings: Settings, windows: Windows) -> Limiter | None:
    """The limits ``settings`` set over ``windows``, or None when both are off (0)."""
    limits = [
        Limit(settings.mcp_rate_limit_per_minute, 60, "a minute", _variable("per_minute")),
        Limit(settings.mcp_rate_limit_per_hour, 3600, "an hour", _variable("per_hour")),
    ]
    limits = [limit for limit in limits if limit.per > 0]
    return Limiter(limits, windows) if limits else None


def _variable(suffix: str) -> str:
    return Settings.variable(f"mcp_rate_limit_{suffix}")


def caller_of(headers: Any) -> str:
    """Who is counted: a hash of the request's bearer token (one bucket for requests without).

    SHA-256, not a slow password hash as PostHog's per-user state uses: a bearer token has the
    entropy a password lacks, and this runs on every request.
    """
    return digest(bearer(headers) or "")[:32]


class RateLimit:
    """Count each ``POST`` and answer ``429`` past a limit (behind authentication, so only a
    caller with a valid token is counted)."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # A signed-in person (--oauth) is counted as themselves, whichever token they send:
        # refreshing a token must not start a new count.
        signed_in = scope.get(SIGNED_IN)
        who = signed_in.identity if isinstance(signed_in, Caller) else None
        refused = await self.limiter.check(who or caller_of(Request(scope).headers))
        if refused is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": refused.message}},
            status_code=429,
            headers={
                "Retry-After": str(refused.retry_after),
                "X-RateLimit-Limit": str(refused.limit.per),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(refused.retry_after),
            },
        )
        await response(scope, receive, send)


class SharedAttempts:
    """The approval page's failed attempts counted in :class:`Windows`, with the loopback page's
    limits (``loopback.limits``: per client a minute, per link ten minutes), so that every
    instance of a deployment holds a client, or a link, to the same count. Windows are numbered
    from the epoch, as :class:`Limiter`'s are; a client and a link are kept as hashes, never
    as the address or the token. Looking a count up writes nothing.

    Fail closed, unlike the rate limits: when the store cannot be reached to look a count up,
    the page is not served (StoreUnavailable), as its links cannot be found then either. A
    failure that cannot be counted is logged: the page has answered by then.

    Like the loopback pages' own count, it is looked up before a request and added to after
    its answer, so requests sent together are all answered before any of them counts.
    """

    def __init__(self, windows: Windows, *, clock: Callable[[], float] = time.time) -> None:
        self.windows = windows
        self._clock = clock

    async def retry_after(self, client: str, link: str) -> int | None:
        """Seconds until this client may try this link again, or None when it may now."""
        now = self._clock()
        keys = _page_windows(client, link, now)
        try:
            counts = await self.windows.read([key for key, _, _ in keys])
        except Exception as exc:
            log.warning("the page's failed attempts cannot be looked up: %s", exc)
            raise StoreUnavailable(
                "the server cannot reach its shared store to look up the page's failed "
                "attempts. Try again in a moment"
            ) from exc
        waits = [
            max(1, math.ceil((now // seconds + 1) * seconds - now))
            for (_, seconds, limit), count in zip(keys, counts, strict=True)
            if count >= limit
        ]
        return max(waits) if waits else None

    async def fail(self, client: str, link: str | None) -> None:
        """Count a failed attempt of `client`, on `link` when it named a live one."""
        keys = _page_windows(client, link, self._clock())
        # Kept a second past its window, for clocks that differ a little between instances.
        try:
            await self.windows.count([(key, seconds + 1) for key, seconds, _ in keys])
        except Exception as exc:
            log.warning("a failed attempt at the page was not counted: %s", exc)


def _page_windows(client: str, link: str | None, now: float) -> list[tuple[str, int, int]]:
    """(key, window seconds, limit) of each count a failed attempt adds to."""
    counted = [("client", client, CLIENT_FAILURES, int(CLIENT_WINDOW))]
    if link is not None:
        counted.append(("link", link, LINK_FAILURES, int(LINK_WINDOW)))
    return [
        (f"page:{kind}:{digest(value)[:32]}:{int(now // seconds)}", seconds, limit)
        for kind, value, limit, seconds in counted
    ]
