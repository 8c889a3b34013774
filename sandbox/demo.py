"""The demo: an embedded PostgreSQL with a small shop dataset, registered as a `Postgres` source."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from .connectors import connector, discover
from .embedded import EmbeddedPostgres, PostgresCredentials
from .services import with_columns
from .store import Schema, Source, Store, iso, new_id, now

logger = logging.getLogger(__name__)

DEMO_PREFIX = "demo_"
DEMO_DATABASE = "shop"

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


def start_demo_database(directory: Path) -> tuple[EmbeddedPostgres, PostgresCredentials]:
    """Start (and on first use create and seed) the demo database in `directory`."""
    import psycopg

    server = EmbeddedPostgres(directory / "demo-postgres", database=DEMO_DATABASE)
    creds = server.start()
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
    return server, creds


def register_demo_source(store: Store, creds: PostgresCredentials) -> Source:
    """Register the demo database as a `Postgres` source once; later starts refresh its port."""
    inputs = creds.job_inputs()
    for source in store.live_sources():
        if source.source_type == "Postgres" and source.prefix == DEMO_PREFIX:
            if source.job_inputs != inputs:
                source = replace(source, job_inputs=inputs)
                store.save(source)
            return source
    created = iso(now()) or ""
    source = Source(
        id=new_id(),
        source_type="Postgres",
        prefix=DEMO_PREFIX,
        description=(
            "Demo shop database (embedded PostgreSQL started by the sandbox, on 127.0.0.1 "
            "without TLS: PostHog Cloud would refuse this host and connection)"
        ),
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
        )
        store.save(with_columns(schema, table))
    return source
