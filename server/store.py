"""State that must outlive the process: the one-time ids the server has spent.

A confirmation token acts once. Its nonce is recorded as spent until the token expires, in a
SQLite file under the server's state directory, so a restart (with a shared
``POSTHOG_CONFIRM_SECRET``, the token would still verify) does not make a used token usable
again, and two servers sharing the directory see each other's. SQLite because it is in the
standard library and already safe across processes; replicas on several machines share theirs
in Redis instead (server/shared.py, another implementation of :class:`~..tools.confirm.Spent`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import anyio

from ..tools.confirm import StoreUnavailable

log = logging.getLogger("posthog_warehouse_mcp")

SPENT_FILE = "spent.sqlite3"


class SqliteSpent:
    """Spent one-time ids in ``<state_dir>/spent.sqlite3`` (0600), each kept until it expires."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SPENT_FILE
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def spend(self, nonce: str, until: float) -> bool:
        """Record `nonce` as spent until `until` (epoch seconds); False if it was already.

        Raises:
            StoreUnavailable: the file cannot be opened or written (the token is not used).
        """
        # A write can wait on the file's lock (another process): not on the event loop.
        return await anyio.to_thread.run_sync(self._spend, nonce, until)

    def _spend(self, nonce: str, until: float) -> bool:
        with self._lock:
            try:
                db = self._open()
                with db:
                    db.execute("DELETE FROM spent WHERE until < ?", (time.time(),))
                    added = db.execute(
                        "INSERT OR IGNORE INTO spent (nonce, until) VALUES (?, ?)", (nonce, until)
                    )
                return added.rowcount == 1
            except (OSError, sqlite3.Error) as exc:
                log.warning("cannot record a spent confirmation token in %s: %s", self.path, exc)
                raise StoreUnavailable(
                    f"the server cannot record the token as used ({self.path}: {exc})"
                ) from None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.touch(mode=0o600, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
            db.execute(
                "CREATE TABLE IF NOT EXISTS spent (nonce TEXT PRIMARY KEY, until REAL NOT NULL)"
            )
            db.commit()
            self._db = db
        return self._db

    def close(self) -> None:
        """Close the file, if it was opened."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
