"""Fixtures only: a real embedded PostgreSQL and MariaDB upstream, and in-process sandboxes.
The helpers the tests share are in support.py."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials
from tests.sandbox.support import LOGICAL_SLOTS, MySQLUpstream, Upstream, client_for
from tests.support import eventually, free_port


class Databases:
    """An embedded PostgreSQL for the session (per xdist worker), and a new database in it for
    each test that asks. A test's databases are dropped when a later test asks for one (by then
    every sandbox, thread and process of the test has stopped): each is 8 MB, and ~150 of them
    left to the end made the session's teardown delete 1.3 GB at once."""

    def __init__(self, server: PostgresCredentials) -> None:
        self.server = server
        self.finished: list[str] = []  # the databases of tests that have ended

    def new(self) -> Upstream:
        """A new empty database."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server.conninfo("postgres"), autocommit=True) as conn:
            while self.finished:
                drop = f"DROP DATABASE IF EXISTS {self.finished.pop()} WITH (FORCE)"
                # Not droppable (a replication slot left in it): the session's end removes it.
                with contextlib.suppress(psycopg.Error):
                    conn.execute(drop.encode())
            conn.execute(f"CREATE DATABASE {name}".encode())
        creds = replace(self.server, database=name)
        return Upstream(creds)

    @contextlib.contextmanager
    def database(self) -> Iterator[Upstream]:
        """A new database for the block; dropped after it, when the next one is made."""
        upstream = self.new()
        try:
            yield upstream
        finally:
            self.finished.append(upstream.creds.database)


@contextlib.contextmanager
def embedded_postgres(prefix: str, settings: dict[str, str] | None = None) -> Iterator[Databases]:
    """Start an embedded PostgreSQL in a new temporary folder; stop and delete it on exit."""
    # Outside pytest's basetemp, which a concurrent pytest run may rotate away mid-session.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(base / "pgdata", settings=settings)
    try:
        yield Databases(server.start())
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[Databases]:
    """One embedded PostgreSQL for the whole run; each test gets its own database in it."""
    with embedded_postgres("sandbox-upstream-") as databases:
        yield databases


@pytest.fixture
def upstream(upstream_server: Databases) -> Iterator[Upstream]:
    """A new empty database in the shared server (wal_level `replica`, Postgres's default)."""
    with upstream_server.database() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def logical_server() -> Iterator[Databases]:
    """An embedded PostgreSQL ready for CDC: wal_level `logical`, LOGICAL_SLOTS slots."""
    settings = {"wal_level": "logical", "max_replication_slots": str(LOGICAL_SLOTS)}
    with embedded_postgres("sandbox-logical-", settings) as databases:
        yield databases


@pytest.fixture
def logical_upstream(logical_server: Databases) -> Iterator[Upstream]:
    """A new empty database in the server ready for CDC."""
    with logical_server.database() as upstream:
        yield upstream


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A sandbox without the demo, in a fresh folder, and a client for it."""
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app, client_for(app) as client:
        yield app, client


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLUpstream]:
    """A MariaDB server (Debian's mariadb-server) for the session; skipped if not installed."""
    pytest.importorskip("pymysql", reason="the MySQL driver is in the sandbox extra")
    binary = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    installer = shutil.which("mariadb-install-db")
    if binary is None or installer is None:
        pytest.skip("MariaDB is not installed (apt-get install mariadb-server)")
    base = Path(tempfile.mkdtemp(prefix="sandbox-mariadb-"))
    data = base / "data"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            installer,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *user,
        ],
        check=True,
        capture_output=True,
    )
    root = MySQLUpstream("127.0.0.1", free_port(), "", "root", "")
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={root.port}",
            "--bind-address=127.0.0.1",
            f"--socket={base / 'mysql.sock'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            f"--pid-file={base / 'mysql.pid'}",
            *user,
        ],
        stdout=log,
        stderr=log,
    )

    async def accepting() -> bool | None:
        import pymysql

        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {proc.returncode}; see {base}/server.log")
        try:
            root.connect().close()
        except pymysql.err.OperationalError:
            return None
        return True

    try:
        anyio.run(functools.partial(eventually, accepting, within=60, every=0.2))
        root.execute(
            "CREATE USER 'sandbox'@'%' IDENTIFIED BY 'mysql-secret-pw'",
            "GRANT ALL ON *.* TO 'sandbox'@'%'",
        )
        yield MySQLUpstream("127.0.0.1", root.port, "", "sandbox", "mysql-secret-pw")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mysql_upstream(mysql_server: MySQLUpstream) -> MySQLUpstream:
    """A new empty MariaDB database."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    mysql_server.in_database("mysql").execute(f"CREATE DATABASE {name}")
    return mysql_server.in_database(name)
