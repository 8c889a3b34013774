"""Fixtures: a real embedded PostgreSQL upstream, and sandboxes driven over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials

API = "/api/environments/1"


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[PostgresCredentials]:
    """One embedded PostgreSQL for the whole run; each test gets its own database in it."""
    # Outside pytest's basetemp, which a concurrent pytest run may rotate away mid-session.
    base = Path(tempfile.mkdtemp(prefix="sandbox-upstream-"))
    server = EmbeddedPostgres(base / "pgdata")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Upstream:
    """A fresh upstream database and the payload that registers it as a source."""

    creds: PostgresCredentials

    def payload(self, schemas: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """A `Postgres` create payload for this database."""
        return {**self.creds.job_inputs(), "schemas": schemas, **extra}

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run SQL upstream and return any rows."""
        with psycopg.connect(self.creds.conninfo(), autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)  # bytes: the SQL is test-authored, not typed
            return cur.fetchall() if cur.description else []


@pytest.fixture
def upstream(upstream_server: PostgresCredentials) -> Upstream:
    """A new empty database in the shared server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(upstream_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    creds = PostgresCredentials(
        upstream_server.host,
        upstream_server.port,
        name,
        upstream_server.user,
        upstream_server.password,
    )
    return Upstream(creds)


@asynccontextmanager
async def client_for(app: Starlette, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, as the MCP server does."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox", headers=headers
    ) as client:
        yield client


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A sandbox without the demo, in a fresh folder, and a client for it."""
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app, client_for(app) as client:
        yield app, client


async def create_source(
    client: httpx.AsyncClient, upstream: Upstream, schemas: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """Create a `Postgres` source and return it (retrieved in full)."""
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload(schemas), **extra},
    )
    assert response.status_code == 201, response.text
    source = await client.get(f"{API}/external_data_sources/{response.json()['id']}/")
    assert source.status_code == 200
    return dict(source.json())


def schema_by_name(source: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of a source with this table name."""
    return next(s for s in source["schemas"] if s["name"] == name)


async def wait_for_jobs(
    client: httpx.AsyncClient,
    source_id: str,
    count: int,
    *,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Poll the jobs endpoint until `count` jobs exist and none is Running; return them."""
    params = {"schemas": schema} if schema else None
    with anyio.fail_after(60):
        while True:
            response = await client.get(
                f"{API}/external_data_sources/{source_id}/jobs/", params=params
            )
            jobs: list[dict[str, Any]] = response.json()
            if len(jobs) >= count and all(j["status"] != "Running" for j in jobs):
                return jobs
            await anyio.sleep(0.05)


async def wait_for_running(client: httpx.AsyncClient, source_id: str) -> dict[str, Any]:
    """Poll until the newest job is Running; return it."""
    with anyio.fail_after(30):
        while True:
            jobs = (await client.get(f"{API}/external_data_sources/{source_id}/jobs/")).json()
            if jobs and jobs[0]["status"] == "Running":
                return dict(jobs[0])
            await anyio.sleep(0.02)


def warehouse_rows(app: Starlette, sql: str) -> list[tuple[Any, ...]]:
    """Query the sandbox's DuckDB warehouse through the running app."""
    rows: list[tuple[Any, ...]] = app.state.sandbox.warehouse.query(sql)
    return rows


def _mariadbd() -> str | None:
    return shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")


@dataclass
class MySQLUpstream:
    """A MariaDB database reachable over loopback, for the `MySQL` source."""

    host: str
    port: int
    database: str
    user: str
    password: str

    def payload(self, schemas: list[dict[str, Any]]) -> dict[str, Any]:
        """A `MySQL` create payload for this database."""
        return {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password,
            "schema": self.database,
            "using_ssl": False,
            "schemas": schemas,
        }

    def execute(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements and return the last one's rows."""
        import pymysql

        conn = pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            autocommit=True,
        )
        rows: list[tuple[Any, ...]] = []
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLUpstream]:
    """A MariaDB server (Debian's mariadb-server) for the session; skipped if not installed."""
    pytest.importorskip("pymysql", reason="the MySQL driver is in the sandbox extra")
    binary = _mariadbd()
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
    port = _free_port()
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
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
    try:
        import pymysql

        deadline = time.monotonic() + 60
        while True:
            try:
                root = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with root, root.cursor() as cur:
            cur.execute("CREATE USER 'sandbox'@'%' IDENTIFIED BY 'mysql-secret-pw'")
            cur.execute("GRANT ALL ON *.* TO 'sandbox'@'%'")
        yield MySQLUpstream("127.0.0.1", port, "", "sandbox", "mysql-secret-pw")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mysql_upstream(mysql_server: MySQLUpstream) -> MySQLUpstream:
    """A new empty MariaDB database."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    MySQLUpstream(**{**mysql_server.__dict__, "database": "mysql"}).execute(
        f"CREATE DATABASE {name}"
    )
    return MySQLUpstream(**{**mysql_server.__dict__, "database": name})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
