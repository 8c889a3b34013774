"""Secrets a loopback listener checks: a bearer token, compared in constant time, and one-time
tokens that expire (the links a person opens)."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .limits import Attempts

T = TypeVar("T")


def tokens_match(given: str, expected: str) -> bool:
    """Whether `given` is `expected`, in a time that does not tell how much of it matched.

    Compared as UTF-8 bytes: ``hmac.compare_digest`` raises TypeError for a str with a
    non-ASCII character, which a request header may hold; such a token is a mismatch.
    """
    # surrogatepass: even a str no codec would write (a lone surrogate) is a mismatch, not an error.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


class OneTimeTokens(Generic[T]):
    """Tokens handed out for one use each, with what each is for, live for `ttl` seconds, and
    the failed attempts at using them (`attempts`: guesses, forms refused), which the page that
    takes them limits.

    Thread-safe: tokens are issued, looked up and spent from the event loop and from threads.
    """

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.attempts = Attempts(clock)
        self._clock = clock
        self._live: dict[str, tuple[T, float]] = {}
        self._lock = threading.Lock()

    def issue(self, value: T) -> str:
        """A new token (unguessable, URL-safe) for `value`."""
        token = secrets.token_urlsafe(24)
        moment = self._clock()
        with self._lock:
            # Forget the expired ones, so that links never opened do not pile up.
            self._live = {k: v for k, v in self._live.items() if v[1] >= moment}
            self._live[token] = (value, moment + self.ttl)
        return token

    def get(self, token: str) -> T | None:
        """What a live token is for, or None (unknown, spent or expired)."""
        with self._lock:
            entry = self._live.get(token)
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    async def find(self, token: str) -> T | None:
        """What a live token is for, or None: :meth:`get`, as a page's ``Links`` asks."""
        return self.get(token)

    def spend(self, token: str) -> bool:
        """Spend a token, so it is never live again; whether it was live until now (of two
        callers spending one token, only one is told True)."""
        with self._lock:
            entry = self._live.pop(token, None)
        return entry is not None and entry[1] >= self._clock()
