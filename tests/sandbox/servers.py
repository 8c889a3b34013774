"""The servers the sandbox tests run against: embedded PostgreSQL (a new database in one for
each test that asks) and MariaDB. Under xdist the workers share one server of each kind, which
the controller stops when the run ends (tests/conftest.py). Fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import anyio
import psycopg

from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials
from tests.sandbox.support import MySQLUpstream, Upstream
from tests.support import eventually, free_port

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


# Transaction ids a pg_xact segment file holds (32 pages of 32,768), and the counter's steps on
# its way to the wraparound: each under 2^31 past the last freeze, as PostgreSQL requires.
_XACT_SEGMENT = 32 * 32768
_XID_STEPS = (1_400_000_000, 2_800_000_000)


def near_wraparound(
    server: EmbeddedPostgres, creds: PostgresCredentials, left: int
) -> PostgresCredentials:
    """Restart `server` with `left` transaction ids before its 32-bit counter wraps around
    (its epoch then goes from 0 to 1): how a test reaches xid wraparound without four billion
    transactions. Every database is frozen before each step, so no row's xmin is left more than
    2^31 behind. Returns the credentials of the restarted server."""
    for xid in (*_XID_STEPS, 2**32 - left):
        _freeze_every_database(creds)
        segment = xid // _XACT_SEGMENT
        # pg_resetwal moves the counter; the commit log's page for it must exist (zeroed).
        xact = server.pgdata / "pg_xact" / f"{segment:04X}"
        xact.write_bytes(bytes(8192 * 32))
        if server.system_user is not None:
            shutil.chown(xact, server.system_user, server.system_user)
        creds = _reset_wal(server, "-x", str(xid), "-u", str(segment * _XACT_SEGMENT))
    return creds


def set_xid_epoch(server: EmbeddedPostgres, epoch: int) -> PostgresCredentials:
    """Restart `server` with its transaction counter's epoch set to `epoch` (the 64-bit ids
    `pg_current_snapshot` gives jump by whole wraparounds)."""
    return _reset_wal(server, "-e", str(epoch))


def _freeze_every_database(creds: PostgresCredentials) -> None:
    with psycopg.connect(creds.conninfo("postgres"), autocommit=True) as conn:
        conn.execute("UPDATE pg_database SET datallowconn = true WHERE datname = 'template0'")
        names = [str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")]
    for name in names:
        with psycopg.connect(creds.conninfo(name), autocommit=True) as conn:
            conn.execute("VACUUM (FREEZE)")


def _reset_wal(server: EmbeddedPostgres, *args: str) -> PostgresCredentials:
    server.stop()
    subprocess.run(
        [server.program("pg_resetwal"), *args, "-D", str(server.pgdata)],
        check=True,
        capture_output=True,
        user=server.system_user,
        group=server.system_user,
    )
    return server.start()


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
    for folder in (p for p in shared.glob("*") if p.is_dir()):
        _stop_mariadb(folder)
    shutil.rmtree(shared, ignore_errors=True)


# The MariaDB user the tests connect as (the root account stays passwordless on loopback).
MARIADB_USER = ("sandbox", "mysql-secret-pw")


@contextlib.contextmanager
def mariadb(binary: str, installer: str) -> Iterator[MySQLUpstream]:
    """Start a MariaDB server in a new temporary folder; stop and delete it on exit."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-mariadb-"))
    try:
        server = _start_mariadb(binary, installer, base)
        try:
            yield server
        finally:
            _stop_mariadb(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def shared_mariadb(folder: Path, binary: str, installer: str) -> Iterator[MySQLUpstream]:
    """The run's MariaDB in `folder`: the first worker to ask starts it, the others find it;
    `stop_shared` stops it when the run ends."""
    folder.mkdir(exist_ok=True)
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = folder / "port"
        if found.exists():
            server = MySQLUpstream("127.0.0.1", int(found.read_text()), "", *MARIADB_USER)
        else:
            server = _start_mariadb(binary, installer, folder)
            found.write_text(str(server.port))
    yield server


def _start_mariadb(binary: str, installer: str, base: Path) -> MySQLUpstream:
    """Install and start a MariaDB in `base`, with the tests' user; that user's connection."""
    data = base / "data"
    user = ["--user=root"] if os.geteuid() == 0 else []
    installed = subprocess.run(
        [
            installer,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *user,
        ],
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        said = (installed.stderr or installed.stdout).strip()[-2000:]
        raise RuntimeError(f"mariadb-install-db exited with {installed.returncode}: {said}")
    root = MySQLUpstream("127.0.0.1", free_port(), "", "root", "")
    with (base / "server.log").open("wb") as log:
        # setsid --fork: the server is no process's child here, so a worker's end leaves a
        # shared one running; its pid file says where it is.
        subprocess.run(
            [
                "setsid",
                "--fork",
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
            check=True,
        )

    async def accepting() -> bool | None:
        import pymysql

        try:
            root.connect().close()
        except pymysql.err.OperationalError:
            return None
        return True

    try:
        try:
            anyio.run(functools.partial(eventually, accepting, within=60, every=0.2))
        except TimeoutError:
            raise RuntimeError(f"MariaDB did not start; see {base}/server.log") from None
        name, password = MARIADB_USER
        root.execute(
            f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT ALL ON *.* TO '{name}'@'%'",
        )
    except BaseException:
        _stop_mariadb(base)
        raise
    return MySQLUpstream("127.0.0.1", root.port, "", name, password)


def _stop_mariadb(base: Path) -> None:
    """Stop the MariaDB server of `base` if one runs: SIGTERM, then wait (30 s) for it to
    remove its pid file, then kill it."""
    pid_file = base / "mysql.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not pid_file.exists():
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
