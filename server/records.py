"""What the server keeps for a while, where every instance sees it: values that expire, taken
once (held calls and approval page links, server/approvals.py), and for OAuth
(server/oauth/vault.py) also replaced only while they last, and locks. In this process's memory
(:class:`MemoryRecords`), or the deployment's Redis (server/shared.py's ``RedisStore``)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Protocol


def digest(secret: str) -> str:
    """A secret's SHA-256, in hex: what a store keeps in its place (a key under which a token,
    an approval id or a caller is found, without the secret itself)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Expiring(Protocol):
    """Values kept until taken or expired (held calls, page links, OAuth's records): shared by
    every instance that may be asked for them."""

    async def hold(self, key: str, value: str, seconds: float) -> None:
        """Keep `value` under `key` for `seconds`.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...

    async def peek(self, key: str) -> str | None:
        """The value under `key`, left in place; None when there is none (or it expired).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...

    async def take(self, key: str) -> str | None:
        """The value under `key`, removed at once: of two takers, only one gets it.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...


class MemoryRecords:
    """Values in this process only (one instance, or stdio): a dict under a lock."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    async def hold(self, key: str, value: str, seconds: float) -> None:
        """Keep `value` under `key` for `seconds` (forgetting what has expired)."""
        moment = self._clock()
        with self._lock:
            self._kept = {k: v for k, v in self._kept.items() if v[1] >= moment}
            self._kept[key] = (value, moment + seconds)

    async def peek(self, key: str) -> str | None:
        """The live value under `key`, left in place."""
        with self._lock:
            entry = self._kept.get(key)
        return entry[0] if entry is not None and entry[1] >= self._clock() else None

    async def take(self, key: str) -> str | None:
        """The live value under `key`, removed."""
        with self._lock:
            entry = self._kept.pop(key, None)
        return entry[0] if entry is not None and entry[1] >= self._clock() else None

    async def replace(self, key: str, value: str, seconds: float) -> bool:
        """Keep `value` under `key` for `seconds` only if a live value is there."""
        moment = self._clock()
        with self._lock:
            entry = self._kept.get(key)
            if entry is None or entry[1] < moment:
                return False
            self._kept[key] = (value, moment + seconds)
        return True

    async def claim(self, key: str, owner: str, seconds: float) -> bool:
        """Keep `owner` under `key` for `seconds` unless a live value is there; whether it
        did."""
        moment = self._clock()
        with self._lock:
            entry = self._kept.get(key)
            if entry is not None and entry[1] >= moment:
                return False
            self._kept[key] = (owner, moment + seconds)
        return True

    async def release(self, key: str, owner: str) -> bool:
        """Remove `key` if it still holds `owner`; whether it did."""
        with self._lock:
            entry = self._kept.get(key)
            if entry is None or entry[0] != owner:
                return False
            del self._kept[key]
        return entry[1] >= self._clock()


class Records(Expiring, Protocol):
    """An :class:`Expiring` store that can also replace a live value and take a lock."""

    async def replace(self, key: str, value: str, seconds: float) -> bool:
        """Keep `value` under `key` for `seconds` only if a live value is there (Redis
        ``SET ... XX``); whether it did. A value taken meanwhile (a revoked grant) stays gone.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...

    async def claim(self, key: str, owner: str, seconds: float) -> bool:
        """Keep `owner` under `key` for `seconds` unless a value is there; whether it did (of
        several instances claiming at once, one gets it). :meth:`release` ends it.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...

    async def release(self, key: str, owner: str) -> bool:
        """Remove `key` if it still holds `owner` (a lock that expired and was claimed by
        another instance is left to it); whether it did.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...
