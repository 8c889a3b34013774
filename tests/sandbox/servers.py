"""The embedded PostgreSQL servers the sandbox tests run against, and a new database in one for
each test that asks. Under xdist the workers share one server, which the controller stops when
the run ends (tests/conftest.py). Fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg

from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials
from tests.sandbox.support import Upstream

# The key of xdist's workerinput that names the folder of the run's shared servers.
SHARED_SERVERS = "shared_servers"


class Databases:
    """A new database for each test that asks, in one server.

    The next test's database is made in a thread while the current test runs (CREATE DATABASE
    copies 8 MB, about 50 ms), and the databases of the tests that have ended are dropped there
    too (by then every sandbox, thread and process of those tests has stopped): each is 8 MB,
    and ~150 of them left to the end made the session's teardown delete 1.3 GB at once."""

    def __init__(self, server: PostgresCredentials) -> None:
        self.server = server
        self.finished: list[str] = []  # the databases of tests that have ended
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="databases")
        self._next: Future[str] | None = None

    def new(self) -> Upstream:
        """A new empty database."""
        name = self._next.result() if self._next is not None else self._make([])
        ended, self.finished = self.finished, []
        self._next = self._maker.submit(self._make, ended)
        return Upstream(replace(self.server, database=name))

    @contextlib.contextmanager
    def database(self) -> Iterator[Upstream]:
        """A new database for the block; dropped after it, when the next one is made."""
        upstream = self.new()
        try:
            yield upstream
        finally:
            self.finished.append(upstream.creds.database)

    def close(self) -> None:
        """Wait for the database being made (the server's end removes it)."""
        self._maker.shutdown(wait=True)

    def _make(self, drop: list[str]) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server.conninfo("postgres"), autocommit=True) as conn:
            for ended in drop:
                # Not droppable (a replication slot left in it): the server's end removes it.
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"DROP DATABASE IF EXISTS {ended} WITH (FORCE)".encode())
            conn.execute(f"CREATE DATABASE {name}".encode())
        return name


@contextlib.contextmanager
def embedded_postgres(prefix: str, settings: dict[str, str] | None = None) -> Iterator[Databases]:
    """Start an embedded PostgreSQL in a new temporary folder; stop and delete it on exit."""
    # Outside pytest's basetemp, which a concurrent pytest run may rotate away mid-session.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(base / "pgdata", settings=settings)
    try:
        databases = Databases(server.start())
        try:
            yield databases
        finally:
            databases.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def shared_postgres(folder: Path, settings: Mapping[str, str] | None = None) -> Iterator[Databases]:
    """The run's server in `folder` (in the controller's shared folder): the first worker to ask
    starts it, the others find it running; `stop_shared` stops it when the run ends."""
    folder.mkdir(exist_ok=True)
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker at a time starts or finds it
        # The worker that starts it never stops it: the others may still be using it.
        server = EmbeddedPostgres(folder / "pgdata", settings=settings).start()
    databases = Databases(server)
    try:
        yield databases
    finally:
        databases.close()


def stop_shared(shared: Path) -> None:
    """Stop the servers the workers started in `shared`, and delete them."""
    for pgdata in shared.glob("*/pgdata"):
        if (pgdata / "postmaster.pid").exists():
            server = EmbeddedPostgres(pgdata)
            server.start()  # finds the running server (and so may stop it)
            server.stop()
    shutil.rmtree(shared, ignore_errors=True)
