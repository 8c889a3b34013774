"""Fixtures only: a real embedded PostgreSQL and MariaDB upstream, and in-process sandboxes.
The helpers the tests share are in support.py, the embedded PostgreSQL servers in servers.py."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from tests.sandbox.servers import SHARED_SERVERS, Databases, embedded_postgres, shared_postgres
from tests.sandbox.support import LOGICAL_SLOTS, MySQLUpstream, Upstream, client_for
from tests.support import eventually, free_port


@pytest.fixture(scope="session")
def upstream_server(request: pytest.FixtureRequest) -> Iterator[Databases]:
    """One embedded PostgreSQL for the whole run (all of xdist's workers); each test gets its
    own database in it."""
    shared = getattr(request.config, "workerinput", {}).get(SHARED_SERVERS)
    servers = (
        shared_postgres(Path(shared) / "upstream")
        if shared
        else embedded_postgres("sandbox-upstream-")
    )
    with servers as databases:
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
