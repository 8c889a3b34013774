"""What OAuth keeps (server/oauth.py) needs of a store: values that expire, taken once, and
locks every instance sees: this process's memory, or the deployment's Redis."""

from __future__ import annotations

from typing import Protocol

from .approvals import HeldStore


class Records(HeldStore, Protocol):
    """A :class:`~.approvals.HeldStore` that can also take a lock."""

    async def claim(self, key: str, seconds: float) -> bool:
        """Keep a value under `key` for `seconds` unless one is there; whether it did (of
        several instances claiming at once, one gets it). ``take`` releases it.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...
