"""What the sandbox tests share: upstream databases, clients of a sandbox, polling of its jobs,
an engine hook that holds syncs, and the sandbox as a process. Fixtures are in conftest.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from time import monotonic
from typing import Any, Literal

import httpx
import psycopg
import pytest
from mcp import Client
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.embedded import PostgresCredentials
from posthog_warehouse_mcp.sandbox.engine import Checkpoint
from posthog_warehouse_mcp.sandbox.services import Services
from posthog_warehouse_mcp.server.app import create_server
from tests.support import eventually, settings

API = "/api/environments/1"
ROOT = Path(__file__).resolve().parents[2]
# The application_name the sandbox's Postgres connections carry.
SANDBOX_APPLICATION = "posthog-warehouse-sandbox"
# The replication slots of the CDC-ready upstream server: few, so a test can use them all up.
LOGICAL_SLOTS = 3
# Debian's chromium and its chromedriver, for the browser tests (Selenium drives them).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
browser_needed = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="Chromium and chromedriver are not installed"
)


@dataclass
class Upstream:
    """A fresh upstream PostgreSQL database and the payload that registers it as a source."""

    creds: PostgresCredentials

    def payload(self, schemas: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """A `Postgres` create payload for this database."""
        return {**self.creds.job_inputs(), "schemas": schemas, **extra}

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run SQL upstream and return any rows."""
        with psycopg.connect(self.creds.conninfo(), autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)  # bytes: the SQL is test-authored, not typed
            return cur.fetchall() if cur.description else []

    @contextmanager
    def locked(self, table: str) -> Iterator[None]:
        """Hold an exclusive lock on `table`: a sync's export of it waits until the block ends,
        or until the sandbox cancels its query."""
        with psycopg.connect(self.creds.conninfo()) as conn:
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE".encode())
            yield
            conn.rollback()

    async def export_waits(self) -> None:
        """Return once a sandbox query of this database waits on a lock (see `locked`)."""

        async def waiting() -> bool | None:
            rows = self.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND wait_event_type = 'Lock'",
                (SANDBOX_APPLICATION,),
            )
            return True if rows else None

        await eventually(waiting)


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
        return {**asdict(self), "schema": self.database, "using_ssl": False, "schemas": schemas}

    def connect(self) -> Any:
        """A PyMySQL connection to this database."""
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database or None,
            autocommit=True,
        )

    def execute(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements and return the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        with self.connect() as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows

    def in_database(self, name: str) -> MySQLUpstream:
        """The same server, another database."""
        return replace(self, database=name)

    @contextmanager
    def locked(self, table: str) -> Iterator[None]:
        """Hold a write lock on `table`: a sync's export of it waits until the block ends, or
        until the sandbox kills its query."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"LOCK TABLES {table} WRITE")
            yield
            cur.execute("UNLOCK TABLES")

    async def export_waits(self) -> None:
        """Return once a query of this database waits for a table lock (see `locked`)."""

        async def waiting() -> bool | None:
            rows = self.execute(
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                "AND STATE LIKE 'Waiting for table%'"
            )
            return True if rows else None

        await eventually(waiting)


@asynccontextmanager
async def client_for(app: Starlette, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, as the MCP server does."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox", headers=headers
    ) as client:
        yield client


def services_of(app: Starlette) -> Services:
    """The store, warehouse and engine of an app from `open_sandbox`."""
    services: Services = app.state.services
    return services


def warehouse_rows(app: Starlette, sql: str) -> list[tuple[Any, ...]]:
    """Run a read query on the sandbox's DuckDB warehouse."""
    return services_of(app).warehouse.cursor().execute(sql).fetchall()


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


async def synced(
    client: httpx.AsyncClient, upstream: Upstream, table: str, **settings: Any
) -> tuple[dict[str, Any], str]:
    """Create a source syncing `table` (a full refresh unless `settings` say otherwise), wait for
    its first sync; return the source and the table's schema id."""
    schema = {"name": table, "should_sync": True, "sync_type": "full_refresh", **settings}
    source = await create_source(client, upstream, [schema])
    await wait_for_jobs(client, source["id"], 1)
    return source, schema_by_name(source, table)["id"]


def schema_by_name(source: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of a source with this table name."""
    return next(s for s in source["schemas"] if s["name"] == name)


async def jobs_of(
    client: httpx.AsyncClient, source_id: str, *, schema: str | None = None
) -> list[dict[str, Any]]:
    """A source's jobs, newest first."""
    params = {"schemas": schema} if schema else None
    response = await client.get(f"{API}/external_data_sources/{source_id}/jobs/", params=params)
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()
    return jobs


async def wait_for_jobs(
    client: httpx.AsyncClient, source_id: str, count: int, *, schema: str | None = None
) -> list[dict[str, Any]]:
    """Wait until `count` jobs exist and none is Running; return them, newest first."""

    async def finished() -> list[dict[str, Any]] | None:
        jobs = await jobs_of(client, source_id, schema=schema)
        done = len(jobs) >= count and all(j["status"] != "Running" for j in jobs)
        return jobs if done else None

    return await eventually(finished, within=60)


async def sync_log(
    client: httpx.AsyncClient, schema_id: str, expect: int = 200, **params: Any
) -> dict[str, Any]:
    """A schema's sync log (`logs/`), its answer's body; the status must be `expect`."""
    response = await client.get(f"{API}/external_data_schemas/{schema_id}/logs/", params=params)
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def log_lines(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(level, message) of each entry of a `sync_log` body, durations replaced by `N`."""
    return [(e["level"], re.sub(r"in \d+\.\d+s$", "in Ns", e["message"])) for e in body["results"]]


Point = Literal["progress", "publish", "finished"]


async def reload_and_wait(
    client: httpx.AsyncClient, source_id: str, schema_id: str, jobs: int
) -> list[dict[str, Any]]:
    """Sync one table now, wait until the source has `jobs` finished jobs; return them."""
    response = await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
    assert response.status_code == 200, response.text
    return await wait_for_jobs(client, source_id, jobs)


class Gate:
    """An engine hook that holds sync threads at one checkpoint until the test opens it (or,
    unless `hold_cancelled`, the sync is cancelled): an interleaving forced, not hoped for."""

    def __init__(self, point: Point, *, hold_cancelled: bool = False) -> None:
        self.point = point
        self.hold_cancelled = hold_cancelled
        self.arrivals: list[str] = []  # the schema ids held, in order
        self._open = threading.Event()

    def __call__(self, at: Checkpoint) -> None:
        if at.point != self.point or self._open.is_set():
            return
        self.arrivals.append(at.schema_id)
        deadline = monotonic() + 30
        while not self._open.wait(0.01):
            if at.cancelled.is_set() and not self.hold_cancelled:
                return
            if monotonic() > deadline:
                raise TimeoutError(f"the test never opened the {self.point} gate")

    def open(self) -> None:
        """Let every held sync go on, and the next ones pass."""
        self._open.set()

    async def reached(self, count: int = 1) -> None:
        """Return once `count` syncs are (or were) held here."""

        async def arrived() -> bool | None:
            return True if len(self.arrivals) >= count else None

        await eventually(arrived)


@contextmanager
def gate(app: Starlette, point: Point, *, hold_cancelled: bool = False) -> Iterator[Gate]:
    """Install a Gate on the sandbox's engine for the block; it opens on exit."""
    engine = services_of(app).engine
    held = Gate(point, hold_cancelled=hold_cancelled)
    engine.hook = held
    try:
        yield held
    finally:
        held.open()
        engine.hook = None


async def call(client: Client, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(name, args, **kw)
    assert result.is_error is False, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def enable_and_sync(
    client: Client, schema_id: str, sync_type: str = "full_refresh"
) -> dict[str, Any]:
    """Through MCP: enable a table with a sync type, then sync it and wait for the job."""
    await call(
        client,
        "external-data-schemas-partial-update",
        {"id": schema_id, "should_sync": True, "sync_type": sync_type},
    )
    # Enabling starts a sync; the reload follows it (or starts the next one) to its end.
    return await call(client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60})


@asynccontextmanager
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Client, Starlette]]:
    """An MCP client whose server talks to an in-process sandbox we can also look inside."""
    async with open_sandbox(tmp_path / "sandbox", demo=False) as app:
        config = settings(environment_id="1")
        server = create_server(config, transport=httpx.ASGITransport(app=app))
        async with Client(server, mode="legacy") as client:
            yield client, app


@contextmanager
def sandbox_process(directory: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run the standalone sandbox (its CLI) on loopback; kill it on exit if still running."""
    log = (directory.parent / f"server-{port}.log").open("ab")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--host", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--no-demo"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_warehouse_mcp.sandbox", *args, *extra],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


async def wait_until_up(client: httpx.AsyncClient) -> None:
    """Return once the sandbox behind `client` answers."""

    async def up() -> bool | None:
        try:
            response = await client.get(f"{API}/external_data_sources/")
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    await eventually(up, every=0.1)
