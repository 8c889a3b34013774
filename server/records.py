"""What OAuth keeps (server/oauth.py) needs of a store: values that expire, taken once, replaced
only while they last, and locks every instance sees: this process's memory, or the
deployment's Redis."""

from __future__ import annotations

from typing import Protocol

from .approvals import HeldStore


class Records(HeldStore, Protocol):
    """A :class:`~.approvals.HeldStore` that can also replace a live value and take a lock."""

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
