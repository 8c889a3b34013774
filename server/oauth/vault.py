"""What OAuth keeps, sealed: each record encrypted with Fernet and kept under a digest of its
secret, in the deployment's store (Redis with ``POSTHOG_REDIS_URL``, else memory).

A token is never a key: each record is kept under a SHA-256 of its secret. The keys are
``POSTHOG_OAUTH_KEYS``, newest first; older keys still decrypt, so keys rotate.

==========================  ===========================================  =============
record                      holds                                        lives
==========================  ===========================================  =============
``oauth:pending:<state>``   the client's authorization request            10 minutes
``oauth:grant:<id>``        the person's PostHog tokens, region, project  30 days
``oauth:code:<code>``       what this server's code grants                5 minutes
``oauth:access:<token>``    client, grant, scopes, audience               the token's
``oauth:refresh:<token>``   client, grant, scopes, audience               30 days
``oauth:session:<cookie>``  the browser's grant (the approval page)       12 hours
``oauth:client:<id>``       a dynamically registered client               1 day; 1 year
                                                                          once it has a
                                                                          token
``oauth:document:<url>``    a fetched client ID metadata document         1 hour
``oauth:refused:<url>``     why a document was refused                    1 minute
``oauth:refreshing:<id>``   the refresh lock of a grant (its owner)       30 seconds
==========================  ===========================================  =============

Each sealed value names the key it was kept under, and is refused under any other: someone
who can write to the store cannot copy a person's record under a token of their own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..records import Records, digest

log = logging.getLogger("posthog_warehouse_mcp.oauth")


class Cipher:
    """Fernet encryption of what the store keeps; the first key encrypts, every key decrypts.

    Without keys (one process, nothing shared), a key is made for this process: its grants
    end with it.
    """

    def __init__(self, keys: list[str]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        self._fernet = MultiFernet([Fernet(k) for k in keys] or [Fernet(Fernet.generate_key())])

    def seal(self, value: dict[str, Any]) -> str:
        """`value` as JSON, encrypted."""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, text: str) -> dict[str, Any] | None:
        """What :meth:`seal` sealed; None when no key opens it (a retired key's record)."""
        from cryptography.fernet import InvalidToken

        try:
            found = json.loads(self._fernet.decrypt(text.encode()))
        except (InvalidToken, ValueError):
            log.warning("an OAuth record could not be decrypted with POSTHOG_OAUTH_KEYS")
            return None
        return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class Vault:
    """Records kept encrypted, each under a digest of its secret and bound to that key (the
    sealed value names it; a value copied under another key does not open)."""

    records: Records
    cipher: Cipher

    async def put(self, kind: str, secret: str, value: dict[str, Any], seconds: float) -> None:
        """Keep `value` for `seconds`.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        key = self._key(kind, secret)
        await self.records.hold(key, self._seal(key, value), seconds)

    async def replace(self, kind: str, secret: str, value: dict[str, Any], seconds: float) -> bool:
        """Keep `value` for `seconds` only over a live record; whether it did (a record taken
        meanwhile, a revoked grant, stays gone).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        key = self._key(kind, secret)
        return await self.records.replace(key, self._seal(key, value), seconds)

    async def get(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, left in place."""
        key = self._key(kind, secret)
        found = await self.records.peek(key)
        return self._open(key, found) if found is not None else None

    async def take(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The live value, removed (of two takers, one gets it)."""
        key = self._key(kind, secret)
        found = await self.records.take(key)
        return self._open(key, found) if found is not None else None

    async def claim(self, kind: str, secret: str, owner: str, seconds: float) -> bool:
        """A lock on `secret`'s record of `kind`, held by `owner`; :meth:`release` ends it."""
        return await self.records.claim(self._key(kind, secret), owner, seconds)

    async def locked(self, kind: str, secret: str) -> bool:
        """Whether someone holds the lock."""
        return await self.records.peek(self._key(kind, secret)) is not None

    async def release(self, kind: str, secret: str, owner: str) -> None:
        """End `owner`'s lock (another's, after `owner`'s expired, is left alone)."""
        await self.records.release(self._key(kind, secret), owner)

    def _seal(self, key: str, value: dict[str, Any]) -> str:
        return self.cipher.seal({"key": key, "value": value})

    def _open(self, key: str, text: str) -> dict[str, Any] | None:
        found = self.cipher.open(text)
        if found is None or found.get("key") != key or not isinstance(found.get("value"), dict):
            if found is not None:
                log.warning("an OAuth record was found under a key it was not kept under")
            return None
        return dict(found["value"])

    @staticmethod
    def _key(kind: str, secret: str) -> str:
        return f"oauth:{kind}:{digest(secret)}"
