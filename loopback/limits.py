"""How many failed attempts a loopback listener takes before it stops answering: a fixed-window
counter per key (a client, a link), so that guessing a one-time token, or typing password after
password into a link's form, is held back.

On loopback the only identity a client has is its peer address, and every program and browser
on this machine shares 127.0.0.1: "per client" is in practice "all local callers together".
A local program that fails on purpose can therefore hold a person's page back for one window;
that is the price of a guess learning nothing, and the window is short.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Failed attempts a client may make in a minute (the attack run made 23 a second, unhindered).
CLIENT_FAILURES, CLIENT_WINDOW = 20, 60.0
# Failed attempts on one link (a form refused: wrong credentials, a foreign page) in 10 minutes.
LINK_FAILURES, LINK_WINDOW = 10, 600.0


class FailureLimit:
    """At most `limit` failures per key in each window of `window` seconds; past that the key
    waits for its window to end. Keeps at most `keys` keys (the oldest windows go first).

    A fixed window, not a sliding one: simple, and a burst at a window's edge gets at most twice
    the limit, which is plenty against guessing. Thread-safe.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._keys = keys
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (its window's start, failures)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._counts)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until `key` may try again, or None when it may now."""
        moment = self._clock()
        with self._lock:
            start, count = self._counts.get(key, (moment, 0))
        left = start + self.window - moment
        if count < self.limit or left <= 0:
            return None
        return max(1, math.ceil(left))

    def fail(self, key: str) -> None:
        """Count a failed attempt of `key`."""
        moment = self._clock()
        with self._lock:
            start, count = self._counts.pop(key, (moment, 0))
            if start + self.window <= moment:
                start, count = moment, 0
            # Re-inserted, so the dict's order is the order of last failure.
            self._counts[key] = (start, count + 1)
            if len(self._counts) > self._keys:
                self._forget(moment)

    def _forget(self, moment: float) -> None:
        """Drop the windows that have ended, then, while still too many, the oldest."""
        self._counts = {k: v for k, v in self._counts.items() if v[0] + self.window > moment}
        while len(self._counts) > self._keys:
            del self._counts[next(iter(self._counts))]


class Failures(Protocol):
    """Where a page's failed attempts are counted: per client (its peer address) and per link
    (its token). :class:`Attempts` counts them in this process; a deployment of several
    instances counts them in its shared store."""

    async def retry_after(self, client: str, link: str) -> int | None:
        """Seconds until this client may try this link again, or None when it may now."""
        ...

    async def fail(self, client: str, link: str | None) -> None:
        """Count a failed attempt of `client`, on `link` when it named a live one."""
        ...


@dataclass
class Attempts:
    """The failed attempts at a listener's one-time links, in this process: per client (its
    peer address) and per link (its token)."""

    clock: Callable[[], float] = time.monotonic
    per_client: FailureLimit = field(init=False)
    per_link: FailureLimit = field(init=False)

    def __post_init__(self) -> None:
        self.per_client = FailureLimit(CLIENT_FAILURES, CLIENT_WINDOW, clock=self.clock)
        self.per_link = FailureLimit(LINK_FAILURES, LINK_WINDOW, clock=self.clock)

    async def retry_after(self, client: str, link: str) -> int | None:
        """Seconds until this client may try this link again, or None when it may now."""
        waits = [self.per_client.retry_after(client), self.per_link.retry_after(link)]
        known = [w for w in waits if w is not None]
        return max(known) if known else None

    async def fail(self, client: str, link: str | None) -> None:
        """Count a failed attempt of `client`, on `link` when it named a live one."""
        self.per_client.fail(client)
        if link is not None:
            self.per_link.fail(link)
