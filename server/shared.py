"""What every instance of a deployment must see alike: the one-time ids already spent, the
calls held for a person's approval and the rate-limit counts. In Redis with
``POSTHOG_REDIS_URL``; otherwise this machine keeps them.

Without Redis one process is right: spent ids go to SQLite under the state directory
(server/store.py, shared only by processes on this machine), held calls and rate-limit counts
stay in memory (server/approvals.py, server/limits.py). Behind a balancer that is wrong: a
confirmation token or plan id could act once per replica, an approval reaching another replica
would find nothing held, and each replica would count a caller apart.

With Redis:

- a spent id is ``SET <prefix>spent:<nonce> 1 NX EX <the token's remaining life>``: the first
  instance to set it wins, and Redis forgets it once the token could no longer verify;
- a held call (or an approval page's link) is ``SET <prefix>approval:<hash of the id> <json>
  EX <life>``, read by ``GET`` (the page shows it; a card's caller is checked) and taken by
  ``GETDEL``: one replica takes it, whichever the approval reaches (Redis 6.2 or later);
- a rate-limit count, and a count of the approval page's failed attempts, is ``INCR`` and
  ``EXPIRE`` of a window's key, sent together in one ``MULTI`` pipeline (server/limits.py
  names the windows); the page looks its counts up with ``MGET``, writing nothing.

When Redis cannot be reached, a spend or a held call fails closed (:class:`StoreUnavailable`:
the token is not used, the call is not held or taken, and nothing is sent; reads, which spend
nothing, go on), and so does the approval page's count of failed attempts (the page is not
served); a rate-limit count fails open (the request is served), as PostHog's MCP does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..tools.confirm import Spent, StoreUnavailable
from .config import ConfigError, Settings
from .limits import MemoryWindows, Windows
from .records import Expiring, MemoryRecords, Records
from .store import SqliteSpent

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("posthog_warehouse_mcp")

PREFIX = "posthog-warehouse-mcp:"
# A store that does not answer within this long is down for this request; the balancer's and
# the client's timeouts are much longer.
TIMEOUT_SECONDS = 1.0
# Compare-and-delete: a lock is removed only by the instance that holds it.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class RedisStore:
    """One Redis for a deployment: spent ids (:class:`~..tools.confirm.Spent`), held calls
    (:class:`~.records.Expiring`), OAuth's records (:class:`~.records.Records`), rate-limit
    counts (:class:`~.limits.Windows`) and a readiness probe.

    The client (and its connection pool) is made on first use and closed when the last
    :meth:`running` block ends: an HTTP app holds one for its lifetime, and each SSE or stdio
    connection's server lifespan holds another.
    """

    def __init__(self, url: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self._client: Redis | None = None
        self._users = 0

    @property
    def where(self) -> str:
        """The store's address without its credentials, for logs and /ready."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the client for the block; the last block to end closes it."""
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0 and self._client is not None:
                client, self._client = self._client, None
                await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # One retry, at once: a pooled connection a restarted Redis has closed is
                # replaced; a Redis that is down is not waited for.
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    async def spend(self, nonce: str, until: float) -> bool:
        """Record ``nonce`` as spent until ``until`` (epoch seconds); False if it was already.

        Raises:
            StoreUnavailable: Redis cannot be reached (the token is not used).
        """
        from redis.exceptions import RedisError

        seconds = max(1, math.ceil(until - time.time()))
        try:
            added = await self._redis().set(f"{PREFIX}spent:{nonce}", b"1", nx=True, ex=seconds)
        except (RedisError, OSError) as exc:
            log.warning("cannot record a spent one-time id in %s: %s", self.where, exc)
            raise StoreUnavailable(
                f"the server cannot reach its shared store ({self.where}) to record the token "
                "as used; the token was not used. Try again in a moment"
            ) from None
        return bool(added)

    async def hold(self, key: str, value: str, seconds: float) -> None:
        """``SET <prefix><key> <value> EX <seconds>``.

        Raises:
            StoreUnavailable: Redis cannot be reached (nothing is held).
        """
        from redis.exceptions import RedisError

        try:
            await self._redis().set(f"{PREFIX}{key}", value, ex=max(1, math.ceil(seconds)))
        except (RedisError, OSError) as exc:
            raise self._unavailable("keep a record", exc) from None

    async def peek(self, key: str) -> str | None:
        """``GET <prefix><key>``: the value, left in place.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        from redis.exceptions import RedisError

        try:
            found = await self._redis().get(f"{PREFIX}{key}")
        except (RedisError, OSError) as exc:
            raise self._unavailable("read a record", exc) from None
        return found.decode() if isinstance(found, bytes) else found

    async def take(self, key: str) -> str | None:
        """``GETDEL <prefix><key>``: the value, removed in the same step, so that of two
        replicas taking it only one gets it.

        Raises:
            StoreUnavailable: Redis cannot be reached (nothing is taken).
        """
        from redis.exceptions import RedisError

        try:
            found = await self._redis().getdel(f"{PREFIX}{key}")
        except (RedisError, OSError) as exc:
            raise self._unavailable("take a record", exc) from None
        return found.decode() if isinstance(found, bytes) else found

    async def replace(self, key: str, value: str, seconds: float) -> bool:
        """``SET <prefix><key> <value> XX EX <seconds>``: only over a live value, so that a
        record removed meanwhile (a revoked grant) is not written back.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        return await self._set_if(key, value, seconds, doing="replace a record", xx=True)

    async def claim(self, key: str, owner: str, seconds: float) -> bool:
        """``SET <prefix><key> <owner> NX EX <seconds>``: True for the one instance that set it
        (a lock every replica sees; :meth:`release` ends it early).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        return await self._set_if(key, owner, seconds, doing="take a lock", nx=True)

    async def _set_if(
        self,
        key: str,
        value: str,
        seconds: float,
        *,
        doing: str,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        from redis.exceptions import RedisError

        try:
            done = await self._redis().set(
                f"{PREFIX}{key}", value, nx=nx, xx=xx, ex=max(1, math.ceil(seconds))
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(doing, exc) from None
        return bool(done)

    async def release(self, key: str, owner: str) -> bool:
        """Delete ``<prefix><key>`` if it still holds `owner`, in one step (a script): a lock
        that expired and was claimed by another instance is left to it.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        from redis.exceptions import RedisError

        try:
            done = await self._redis().eval(_RELEASE, 1, f"{PREFIX}{key}", owner)
        except (RedisError, OSError) as exc:
            raise self._unavailable("release a lock", exc) from None
        return bool(done)

    def _unavailable(self, doing: str, exc: BaseException) -> StoreUnavailable:
        log.warning("cannot %s in %s: %s", doing, self.where, exc)
        return StoreUnavailable(
            f"the server cannot reach its shared store ({self.where}) to {doing}. Try again in "
            "a moment"
        )

    async def count(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each key's count, each kept for its seconds; return the new counts.

        Hand-written rather than taken from a rate-limit library: it is ``INCR`` and ``EXPIRE``
        per key in one ``MULTI`` pipeline (one round trip, applied together), and the window
        arithmetic lives in :class:`~.limits.Limiter`.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be reached.
        """
        async with self._redis().pipeline(transaction=True) as pipe:
            for key, seconds in keys:
                pipe.incr(f"{PREFIX}{key}")
                pipe.expire(f"{PREFIX}{key}", seconds)
            replies = await pipe.execute()
        return [int(n) for n in replies[::2]]

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Each key's count now (0 for none), with ``MGET``: nothing is written.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be reached.
        """
        if not keys:
            return []
        found = await self._redis().mget([f"{PREFIX}{key}" for key in keys])
        return [int(value) if value is not None else 0 for value in found]

    async def problem(self) -> str | None:
        """Why the store cannot be used now, or None when it answers."""
        from redis.exceptions import RedisError

        try:
            await self._redis().ping()
        except (RedisError, OSError) as exc:
            return f"{self.where} unreachable ({type(exc).__name__})"
        return None


@dataclass(frozen=True)
class Shared:
    """Where this instance keeps what other instances must see."""

    spent: Spent
    windows: Windows
    redis: RedisStore | None = None
    held: Expiring = field(default_factory=MemoryRecords)
    # OAuth's records (server/oauth/vault.py): clients, sign-ins, codes, tokens, each person's
    # grant.
    records: Records = field(default_factory=MemoryRecords)

    def running(self) -> AbstractAsyncContextManager[None]:
        """Hold the store's connections for the block (nothing to hold without Redis)."""
        return self.redis.running() if self.redis is not None else nullcontext()

    async def problem(self) -> str | None:
        """Why the shared store cannot be used now; None when it answers or there is none."""
        return await self.redis.problem() if self.redis is not None else None


def shared_for(settings: Settings) -> Shared:
    """Redis for ``settings.redis_url``; otherwise SQLite under the state directory and memory.

    Raises:
        ConfigError: a Redis URL, but the ``redis`` client is not installed.
    """
    url = settings.redis
    if url is None:
        return Shared(SqliteSpent(settings.state_dir.expanduser()), MemoryWindows())
    try:
        import redis.asyncio  # noqa: F401 (only whether it is installed)
    except ImportError:
        raise ConfigError(
            "POSTHOG_REDIS_URL needs the Redis client: pip install 'posthog-warehouse-mcp[hosted]'"
        ) from None
    store = RedisStore(url)
    return Shared(store, store, store, store, store)


def alone(settings: Settings) -> str | None:
    """What a stateless HTTP start without Redis gives up with more than one replica (logged
    at start), or None when that does not apply."""
    if settings.mcp_transport != "http" or not settings.mcp_stateless or settings.redis:
        return None
    return (
        "stateless HTTP without POSTHOG_REDIS_URL: this process alone records the "
        f"confirmation tokens and plan ids already used (in {settings.state_dir}, seen only by "
        "processes on this machine) and counts rate limits in its memory. Behind a balancer "
        "with more than one replica a token could act once on each replica, and each replica "
        "would count a caller apart; set POSTHOG_REDIS_URL (docs/deploy.md)."
    )
