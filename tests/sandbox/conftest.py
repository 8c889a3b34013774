"""Fixtures only: a real embedded PostgreSQL and MariaDB upstream, and in-process sandboxes.
The helpers the tests share are in support.py, the embedded PostgreSQL servers in servers.py."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from tests.sandbox.servers import (
    SHARED_SERVERS,
    Databases,
    embedded_postgres,
    mariadb,
    shared_mariadb,
    shared_postgres,
)
from tests.sandbox.support import LOGICAL_SLOTS, MySQLUpstream, Upstream, client_for


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
    """An embedded PostgreSQL ready for CDC: wal_level `logical`, LOGICAL_SLOTS slots. One a
    worker, not one a run: a test fills every slot (test_cdc.py), which would fail another
    worker's CDC sync meanwhile."""
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
def mysql_server(request: pytest.FixtureRequest) -> Iterator[MySQLUpstream]:
    """A MariaDB server (Debian's mariadb-server) for the run (all of xdist's workers); skipped
    if not installed."""
    pytest.importorskip("pymysql", reason="the MySQL driver is in the sandbox extra")
    binary = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    installer = shutil.which("mariadb-install-db")
    if binary is None or installer is None:
        pytest.skip("MariaDB is not installed (apt-get install mariadb-server)")
    shared = getattr(request.config, "workerinput", {}).get(SHARED_SERVERS)
    with (
        shared_mariadb(Path(shared) / "mariadb", binary, installer)
        if shared
        else mariadb(binary, installer)
    ) as server:
        yield server


@pytest.fixture
def mysql_upstream(mysql_server: MySQLUpstream) -> MySQLUpstream:
    """A new empty MariaDB database."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    mysql_server.in_database("mysql").execute(f"CREATE DATABASE {name}")
    return mysql_server.in_database(name)
