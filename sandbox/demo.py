"""The demo: an embedded PostgreSQL with a small shop dataset, registered as a `Postgres` source.

Its port stays the same for the life of its folder. Only when that port is taken at start does
the demo move, and then every source that named its old address follows it. A connection that
fails toward the demo's address, current or former, says why and what to do.

Its password reaches a new source without passing through the chat: the MCP server that runs
the sandbox in-process defines the secret reference `DEMO_SECRET`, bound to the demo's address,
and the demo source's description names it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .access import DEMO_SECRET
from .connectors import ConnectionFailed, Unreachable, connector, discover
from .embedded import EmbeddedPostgres, PostgresCredentials
from .store import LogEntry, Schema, Source, Store, iso, new_id, now

logger = logging.getLogger(__name__)

DEMO_PREFIX = "demo_"
DEMO_DATABASE = "shop"
DEMO_USER = "postgres"
DEMO_HOST = "127.0.0.1"
DEMO_REFERENCE = f'{{"env": "{DEMO_SECRET}"}}'
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

# Deterministic data (setseed) so every sandbox shows the same numbers.
_SEED_SQL = """
SELECT setseed(0.42);
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    country text,
    plan text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
INSERT INTO customers
SELECT g,
       'customer' || g || '@example.com',
       (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Linus','Margaret','Ken'])[1 + g % 8]
           || ' '
           || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Hamilton'])[1 + g % 6],
       (ARRAY['US','GB','DE','FR','BR','IN','JP',NULL])[1 + g % 8],
       (ARRAY['free','free','starter','growth','enterprise'])[1 + g % 5],
       timestamptz '2025-01-01' + (g * interval '37 minutes'),
       timestamptz '2025-01-01' + (g * interval '37 minutes') + interval '3 days'
FROM generate_series(1, 5000) AS g;

CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
INSERT INTO orders
SELECT g,
       1 + (random() * 4999)::int,
       (ARRAY['paid','paid','paid','refunded','pending'])[1 + g % 5],
       round((5 + random() * 495)::numeric, 2),
       (ARRAY['USD','EUR','GBP'])[1 + g % 3],
       timestamptz '2025-02-01' + (g * interval '13 minutes'),
       timestamptz '2025-02-01' + (g * interval '13 minutes') + (g % 7) * interval '1 hour'
FROM generate_series(1, 20000) AS g;
CREATE INDEX orders_updated_at ON orders (updated_at);

CREATE TABLE events (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    event text NOT NULL,
    properties jsonb,
    "timestamp" timestamptz NOT NULL
);
INSERT INTO events
SELECT g,
       1 + (random() * 4999)::int,
       (ARRAY['$pageview','$pageview','signed_up','checkout_started','order_paid'])[1 + g % 5],
       jsonb_build_object('path', '/page/' || (g % 40), 'browser',
                          (ARRAY['Chrome','Firefox','Safari'])[1 + g % 3]),
       timestamptz '2025-02-01' + (g * interval '90 seconds')
FROM generate_series(1, 40000) AS g;
CREATE INDEX events_timestamp ON events ("timestamp");
"""


def _folder(directory: Path) -> EmbeddedPostgres:
    # wal_level logical: change data capture can be tried on the demo as it comes.
    return EmbeddedPostgres(
        directory / "demo-postgres", database=DEMO_DATABASE, settings={"wal_level": "logical"}
    )


def _moves_file(directory: Path) -> Path:
    return directory / "demo-postgres.moves.json"


@dataclass(frozen=True)
class DemoDatabase:
    """The demo database as sources see it: its credentials while it runs in this sandbox,
    the port it has (or last had) in this folder, and the ports it had before it moved."""

    credentials: PostgresCredentials | None = None
    port: int | None = None
    former_ports: tuple[int, ...] = ()

    @classmethod
    def recorded(cls, directory: Path) -> DemoDatabase:
        """The demo of a sandbox started without it: where it last listened, not running."""
        return cls(None, _folder(directory).recorded_port(), _former_ports(directory))

    def port_named(self, job_inputs: Mapping[str, Any]) -> int | None:
        """The demo port (current or former) a connection's host and port name, if any."""
        host = str(job_inputs.get("host") or "").strip().strip("[]").lower()
        try:
            port = int(job_inputs.get("port") or 0)
        except (TypeError, ValueError):
            return None
        if host in _LOOPBACK and port and port in (self.port, *self.former_ports):
            return port
        return None

    def hint(self, error: ConnectionFailed, job_inputs: Mapping[str, Any]) -> str | None:
        """What a failed connection toward the demo's address means, and what to do."""
        named = self.port_named(job_inputs)
        if named is None:
            return None
        if named != self.port:
            return (
                f"{DEMO_HOST}:{named} is where the sandbox's demo database listened before it "
                f"moved to {DEMO_HOST}:{self.port} (that port was taken when the sandbox "
                f"started). Use port {self.port} (external-data-sources-partial-update changes "
                "an existing source's job_inputs)."
            )
        if self.credentials is None:
            return (
                f"{DEMO_HOST}:{named} is the sandbox's demo database, which is not running: this "
                "sandbox was started without it (--no-demo). Start the sandbox with the demo, "
                "or connect to another database."
            )
        if error.reason is Unreachable.CREDENTIALS:
            return (
                f"{DEMO_HOST}:{named} is the sandbox's demo database: user {DEMO_USER}, "
                f"database {DEMO_DATABASE}, and for the password the secret reference "
                f"{DEMO_REFERENCE}."
            )
        return None

    @contextmanager
    def explained(self, job_inputs: Mapping[str, Any]) -> Iterator[None]:
        """Add `hint` to a connection failure raised in the block."""
        try:
            yield
        except ConnectionFailed as exc:
            hint = self.hint(exc, job_inputs)
            if hint is None:
                raise
            raise exc.with_hint(hint) from exc

    def description(self) -> str:
        """The demo source's description: where it is, and how to connect its tables again."""
        return (
            f"Demo shop database: embedded PostgreSQL started by the sandbox on "
            f"{DEMO_HOST}:{self.port}, database {DEMO_DATABASE}, user {DEMO_USER}, schema "
            "public, without TLS (PostHog Cloud would refuse this host). To connect its tables "
            f"as a new source, pass the password as the secret reference {DEMO_REFERENCE}."
        )


def _former_ports(directory: Path) -> tuple[int, ...]:
    try:
        moves = json.loads(_moves_file(directory).read_text())
        return tuple(int(p) for p in moves["former_ports"])
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def start_demo_database(directory: Path) -> tuple[EmbeddedPostgres, DemoDatabase]:
    """Start (and on first use create and seed) the demo database in `directory`."""
    import psycopg

    server = _folder(directory)
    creds = server.start()
    former = _former_ports(directory)
    if server.moved_from is not None and server.moved_from not in former:
        former = (*former, server.moved_from)
        _moves_file(directory).write_text(json.dumps({"former_ports": list(former)}))
    admin = PostgresCredentials(creds.host, creds.port, "postgres", creds.user, creds.password)
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)
        ).fetchone()
        if exists is None:
            conn.execute(f"CREATE DATABASE {DEMO_DATABASE}")
    with psycopg.connect(creds.conninfo()) as conn:
        seeded = conn.execute("SELECT to_regclass('public.events') IS NOT NULL").fetchone()
        if not (seeded and seeded[0]):
            logger.info("seeding the demo database")
            conn.execute(_SEED_SQL.encode())  # bytes: a fixed script, not a typed query
            conn.commit()
    logger.info(
        "demo database on %s:%d (database %s, user %s); its password is in %s. An MCP server "
        "started separately takes it as %s, set from that file, with %s_HOSTS=%s:%d",
        creds.host,
        creds.port,
        DEMO_DATABASE,
        DEMO_USER,
        server.secret_file,
        DEMO_SECRET,
        DEMO_SECRET,
        creds.host,
        creds.port,
    )
    return server, DemoDatabase(creds, creds.port, former)


def register_demo_source(store: Store, demo: DemoDatabase, moved_from: int | None = None) -> Source:
    """Register the demo database as a `Postgres` source once; later starts refresh its
    address and description. When the demo moved from `moved_from`, every source that named
    that address is re-pointed, with a log line and an entry in its tables' sync logs."""
    assert demo.credentials is not None
    inputs = demo.credentials.job_inputs()
    if moved_from is not None:
        _follow_move(store, moved_from, demo)
    for source in store.live_sources():
        if source.source_type == "Postgres" and source.prefix == DEMO_PREFIX:
            if source.job_inputs != inputs or source.description != demo.description():
                source = replace(source, job_inputs=inputs, description=demo.description())
                store.save(source)
            return source
    created = iso(now()) or ""
    source = Source(
        id=new_id(),
        source_type="Postgres",
        prefix=DEMO_PREFIX,
        description=demo.description(),
        job_inputs=inputs,
        created_at=created,
        created_via="api",
    )
    store.save(source)
    for table in discover(connector("Postgres"), inputs):
        schema = Schema(
            id=new_id(),
            source_id=source.id,
            name=table.name,
            created_at=created,
            sync_type="full_refresh",
            available_columns=table.available_columns,
            detected_primary_keys=list(table.primary_key),
        )
        store.save(schema)
    return source


def _follow_move(store: Store, old: int, demo: DemoDatabase) -> None:
    """Re-point the sources whose connection named the demo's old address."""
    moved = DemoDatabase(demo.credentials, old)
    message = (
        f"The sandbox's demo database moved from {DEMO_HOST}:{old} to {DEMO_HOST}:{demo.port} "
        f"(port {old} was taken when the sandbox started); this source now connects to port "
        f"{demo.port}."
    )
    for source in store.live_sources():
        if source.source_type != "Postgres" or moved.port_named(source.job_inputs) is None:
            continue
        port = demo.port if isinstance(source.job_inputs.get("port"), int) else str(demo.port)
        store.save(replace(source, job_inputs={**source.job_inputs, "port": port}))
        logger.warning("source %s: %s", source.id, message)
        for schema in store.source_schemas(source.id):
            store.add_log(LogEntry(schema.id, "", iso(now()) or "", "WARNING", message))
