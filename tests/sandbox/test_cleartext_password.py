"""A password never leaves the sandbox in clear text: a Postgres server that asks for a
cleartext (or md5) password without TLS gets nothing, nor does a MySQL server that switches to
`mysql_clear_password` or PAM's `dialog`. With MCP on top, a secret reference reaches a
database only through a bound host, and a fake Postgres at that host still gets no password.

The fakes are tiny socket servers on 127.0.0.1 that record what they receive, as the attack
run's `fakepg.py` did: Postgres answers SSLRequest with `N` and asks
AuthenticationCleartextPassword; MySQL offers no TLS and switches to the clear-text plugin.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from posthog_warehouse_mcp.sandbox.connectors import ConnectionFailed, SourceError, connector
from tests.sandbox.support import agent
from tests.support import text_of

pytestmark = pytest.mark.anyio

PASSWORD = "Cleartext-canary-9b1e77"
PG_AUTH_CLEARTEXT, PG_AUTH_MD5 = 3, 5


@dataclass
class Received:
    """What a fake server was sent: connections, startup parameters and any password."""

    connections: int = 0
    startup: list[dict[str, str]] = field(default_factory=list)
    passwords: list[bytes] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)


def _read(conn: socket.socket, size: int, received: Received) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    received.raw += data
    return data


@dataclass
class FakeServer:
    """A one-thread socket server on loopback; `handle` speaks the protocol to one client."""

    handle: Callable[[socket.socket, Received], None]
    received: Received = field(default_factory=Received)
    port: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.received.connections += 1
            conn.settimeout(5)
            try:
                self.handle(conn, self.received)
            except (OSError, ConnectionError, struct.error):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def fake_postgres(auth: int) -> Callable[[socket.socket, Received], None]:
    """A Postgres that refuses TLS, asks for a password with `auth` and records it."""

    def handle(conn: socket.socket, received: Received) -> None:
        while True:
            (length,) = struct.unpack("!i", _read(conn, 4, received))
            body = _read(conn, length - 4, received)
            (code,) = struct.unpack("!i", body[:4])
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                conn.sendall(b"N")
                continue
            pairs = body[4:].split(b"\0")
            received.startup.append(
                {pairs[i].decode(): pairs[i + 1].decode() for i in range(0, len(pairs) - 2, 2)}
            )
            break
        salt = b"\x01\x02\x03\x04" if auth == PG_AUTH_MD5 else b""
        conn.sendall(b"R" + struct.pack("!ii", 8 + len(salt), auth) + salt)
        kind = _read(conn, 1, received)
        (length,) = struct.unpack("!i", _read(conn, 4, received))
        message = _read(conn, length - 4, received)
        if kind == b"p":
            received.passwords.append(message.rstrip(b"\0"))
        fields = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
        conn.sendall(b"E" + struct.pack("!i", 4 + len(fields)) + fields)

    return handle


def _mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _read_mysql(conn: socket.socket, received: Received) -> tuple[int, bytes]:
    header = _read(conn, 4, received)
    length = int.from_bytes(header[:3], "little")
    return header[3], _read(conn, length, received)


def fake_mysql(plugin: bytes) -> Callable[[socket.socket, Received], None]:
    """A MySQL without TLS that switches authentication to `plugin` and records the answer."""

    def handle(conn: socket.socket, received: Received) -> None:
        # CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH
        capabilities = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000
        scramble = b"abcdefgh" + b"ijklmnopqrst"
        greeting = (
            b"\x0a8.0.36-fake\0"
            + struct.pack("<I", 7)
            + scramble[:8]
            + b"\0"
            + struct.pack("<H", capabilities & 0xFFFF)
            + bytes([45])
            + struct.pack("<H", 2)
            + struct.pack("<H", capabilities >> 16)
            + bytes([21])
            + b"\0" * 10
            + scramble[8:]
            + b"\0"
            + b"mysql_native_password\0"
        )
        conn.sendall(_mysql_packet(0, greeting))
        seq, response = _read_mysql(conn, received)
        received.startup.append({"user": response[32:].split(b"\0", 1)[0].decode()})
        if plugin == b"dialog":
            switch = b"\xfe" + plugin + b"\0" + b"\x04Password: "
        else:
            switch = b"\xfe" + plugin + b"\0" + scramble + b"\0"
        conn.sendall(_mysql_packet(seq + 1, switch))
        seq, answer = _read_mysql(conn, received)
        received.passwords.append(answer.rstrip(b"\0"))
        error = b"\xff" + struct.pack("<H", 1045) + b"#28000Access denied"
        conn.sendall(_mysql_packet(seq + 1, error))

    return handle


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket, Received], None]], FakeServer]]:
    servers: list[FakeServer] = []

    def start(handle: Callable[[socket.socket, Received], None]) -> FakeServer:
        servers.append(FakeServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def assert_never_saw_the_password(server: FakeServer) -> None:
    assert server.received.passwords == []
    assert PASSWORD.encode() not in server.received.raw


@pytest.mark.parametrize("auth", [PG_AUTH_CLEARTEXT, PG_AUTH_MD5], ids=["cleartext", "md5"])
def test_postgres_never_answers_a_cleartext_or_md5_request(
    auth: int, serve: Callable[..., FakeServer]
) -> None:
    server = serve(fake_postgres(auth))
    job_inputs = {"host": "127.0.0.1", "port": server.port, "database": "d", "user": "u"}
    with pytest.raises(ConnectionFailed) as failed:
        connector("Postgres").connect({**job_inputs, "password": PASSWORD})
    assert "SCRAM" in str(failed.value) and "TLS" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert server.received.startup[0]["user"] == "u"
    assert_never_saw_the_password(server)


def test_the_fake_postgres_does_record_a_password_sent_in_clear(
    serve: Callable[..., FakeServer],
) -> None:
    # The fake itself works: libpq without the sandbox's requirement answers it in clear.
    import psycopg

    server = serve(fake_postgres(PG_AUTH_CLEARTEXT))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=server.port, user="u", password=PASSWORD, connect_timeout=5
        )
    assert server.received.passwords == [PASSWORD.encode()]


@pytest.mark.parametrize("plugin", [b"mysql_clear_password", b"dialog"])
def test_mysql_refuses_a_clear_text_plugin_without_tls(
    plugin: bytes, serve: Callable[..., FakeServer]
) -> None:
    pytest.importorskip("pymysql", reason="the MySQL driver is in the sandbox extra")
    server = serve(fake_mysql(plugin))
    # `using_ssl: false` still takes TLS when offered (PyMySQL's PREFERRED mode); this one
    # offers none. (With `using_ssl: true`, TLS is required and the fake is refused earlier.)
    job_inputs = {"host": "127.0.0.1", "port": server.port, "database": "d", "user": "u"}
    with pytest.raises(ConnectionFailed) as failed:
        connector("MySQL").connect({**job_inputs, "password": PASSWORD, "using_ssl": "false"})
    assert "TLS" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert server.received.startup[0]["user"] == "u"
    with pytest.raises(ConnectionFailed):
        connector("MySQL").connect({**job_inputs, "password": PASSWORD})
    assert server.received.connections == 2
    assert_never_saw_the_password(server)


def test_the_fake_mysql_does_record_a_password_sent_in_clear(
    serve: Callable[..., FakeServer],
) -> None:
    pymysql = pytest.importorskip("pymysql")
    server = serve(fake_mysql(b"mysql_clear_password"))
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            host="127.0.0.1", port=server.port, user="u", password=PASSWORD, connect_timeout=5
        )
    assert server.received.passwords == [PASSWORD.encode()]


@pytest.mark.parametrize("source_type", ["Postgres", "MySQL"])
@pytest.mark.parametrize(
    "value",
    [{"env": {"env": "POSTHOG_SECRET_X"}}, 12345, ["x"], {"a": "b"}],
    ids=["nested-ref", "number", "list", "object"],
)
def test_a_credential_that_is_not_text_is_refused_not_stringified(
    source_type: str, value: Any, serve: Callable[..., FakeServer]
) -> None:
    server = serve(fake_postgres(PG_AUTH_CLEARTEXT))
    job_inputs = {"host": "127.0.0.1", "port": server.port, "database": "d", "user": "u"}
    for name in ("password", "user", "host", "database"):
        with pytest.raises(SourceError) as refused:
            connector(source_type).connect({**job_inputs, name: value})
        assert f"'{name}' must be text" in str(refused.value)
    assert server.received.connections == 0


def db_schema(port: int, password: Any) -> dict[str, Any]:
    payload = {
        "host": "127.0.0.1",
        "port": port,
        "database": "d",
        "user": "u",
        "password": password,
    }
    return {"source_type": "Postgres", "payload": payload}


async def test_through_mcp_a_reference_reaches_only_a_bound_host_and_never_in_clear(
    tmp_path: Path, serve: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(fake_postgres(PG_AUTH_CLEARTEXT))
    monkeypatch.setenv("POSTHOG_SECRET_CANARY", PASSWORD)
    monkeypatch.delenv("POSTHOG_SECRET_CANARY_HOSTS", raising=False)
    ref = {"env": "POSTHOG_SECRET_CANARY"}
    client: Any
    async with agent(tmp_path) as (client, _):
        # Unbound (the attack run's F4): refused before any connection.
        unbound = await client.call_tool(
            "external-data-sources-db-schema", db_schema(server.port, ref)
        )
        assert unbound.is_error is True
        assert "POSTHOG_SECRET_CANARY_HOSTS" in text_of(unbound)
        assert server.received.connections == 0
        # Bound to this host: the sandbox connects, and the fake asks for the password in clear.
        monkeypatch.setenv("POSTHOG_SECRET_CANARY_HOSTS", "127.0.0.1")
        bound = await client.call_tool(
            "external-data-sources-db-schema", db_schema(server.port, ref)
        )
        assert bound.is_error is True
        assert "SCRAM" in text_of(bound)
        assert PASSWORD not in text_of(bound)
        # Into `user`, even when bound: refused before the startup packet.
        args = db_schema(server.port, "x")
        args["payload"]["user"] = ref
        user = await client.call_tool("external-data-sources-db-schema", args)
        assert user.is_error is True and "not a secret field" in text_of(user)
    assert server.received.connections == 1
    assert [s["user"] for s in server.received.startup] == ["u"]
    assert_never_saw_the_password(server)
