"""`check_cdc_prerequisites/` against real PostgreSQL servers: the shared one (wal_level
`replica`) and one started with wal_level `logical`, as a superuser and as a role that lacks
what CDC needs, then after the fixes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.sandbox.support import API, LOGICAL_SLOTS, Upstream

pytestmark = pytest.mark.anyio

CHECK = f"{API}/external_data_sources/check_cdc_prerequisites/"
TABLES_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount int);
CREATE TABLE notes (body text);
CREATE TABLE secret (id int PRIMARY KEY);
"""
WAL_LEVEL = (
    "wal_level must be set to 'logical' (currently 'replica'). This requires a PostgreSQL server "
    "restart after changing the configuration."
)
REPLICATION = (
    "The database user cannot create logical replication slots. Grant one of: REPLICATION "
    "attribute (ALTER USER <username> WITH REPLICATION), superuser, or membership in "
    "rds_replication / rds_superuser on RDS."
)
CREATE_PUBLICATION = (
    "The database user cannot create the publication PostHog manages: it needs CREATE on the "
    "database (GRANT CREATE ON DATABASE <database> TO <username>), or use self-managed mode with "
    "a publication you create."
)


def no_primary_key(table: str) -> str:
    return f"Table 'public.{table}' has no primary key. CDC requires a primary key on each table."


def not_owner(table: str) -> str:
    return (
        f"The database user does not own table 'public.{table}', so it cannot add it to the "
        "publication PostHog manages. Use the table owner, or self-managed mode with a "
        "publication you create."
    )


async def check(
    client: httpx.AsyncClient, inputs: dict[str, Any], expect: int = 200, **options: Any
) -> Any:
    """POST the check with the connection fields flat, as PostHog's wizard sends them."""
    response = await client.post(CHECK, json={"source_type": "Postgres", **inputs, **options})
    assert response.status_code == expect, response.text
    return response.json()


@pytest.fixture
def cdc_role(logical_upstream: Upstream) -> Iterator[tuple[Upstream, str]]:
    """The CDC database with its tables, and a login role that may only read `orders`."""
    role = f"cdc_{uuid.uuid4().hex[:10]}"
    logical_upstream.execute(
        TABLES_SQL + f"CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT SELECT ON orders TO {role};"
    )
    reader = Upstream(replace(logical_upstream.creds, user=role, password="pw"))
    yield reader, role
    logical_upstream.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}")


async def test_wal_level_and_tables_fail_as_posthog_reports_them(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(TABLES_SQL)
    body = await check(client, upstream.creds.job_inputs(), tables=["orders", "notes", "missing"])
    # PostHog's order: version, wal_level, primary keys, SELECT, replication role, slots.
    assert body == {
        "valid": False,
        "errors": [
            WAL_LEVEL,
            no_primary_key("notes"),
            no_primary_key("missing"),
            "Table 'public.missing' does not exist.",
        ],
    }


async def test_a_ready_database_is_valid(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    _, client = sandbox
    logical_upstream.execute(TABLES_SQL)
    inputs = logical_upstream.creds.job_inputs()
    assert await check(client, inputs, tables=["orders"]) == {"valid": True, "errors": []}
    # Without tables only the server-wide checks run.
    assert await check(client, inputs) == {"valid": True, "errors": []}


async def test_a_role_without_rights_is_told_what_to_grant_and_passes_once_granted(
    sandbox: tuple[Starlette, httpx.AsyncClient],
    cdc_role: tuple[Upstream, str],
    logical_upstream: Upstream,
) -> None:
    _, client = sandbox
    reader, role = cdc_role
    inputs = reader.creds.job_inputs()
    body = await check(client, inputs, tables=["orders", "secret"])
    assert body == {
        "valid": False,
        "errors": [
            "No SELECT permission on table 'public.secret'.",
            REPLICATION,
            CREATE_PUBLICATION,
            not_owner("orders"),
            not_owner("secret"),
        ],
    }
    # Self-managed: the user creates the publication, so only its existence is checked.
    self_managed = {
        "tables": ["orders"],
        "cdc_management_mode": "self_managed",
        "cdc_publication_name": "posthog_orders",
    }
    assert (await check(client, inputs, **self_managed))["errors"] == [
        REPLICATION,
        "Publication 'posthog_orders' does not exist. Create it with: CREATE PUBLICATION "
        "posthog_orders FOR TABLE ...;",
    ]

    database = reader.creds.database
    logical_upstream.execute(
        f"ALTER ROLE {role} WITH REPLICATION; GRANT CREATE ON DATABASE {database} TO {role}; "
        f"ALTER TABLE orders OWNER TO {role}; CREATE PUBLICATION posthog_orders FOR TABLE orders"
    )
    assert await check(client, inputs, tables=["orders"]) == {"valid": True, "errors": []}
    assert await check(client, inputs, **self_managed) == {"valid": True, "errors": []}


async def test_full_replication_slots_are_reported(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    _, client = sandbox
    slots = [f"s_{uuid.uuid4().hex[:10]}" for _ in range(LOGICAL_SLOTS)]
    try:
        for slot in slots:
            logical_upstream.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
            )
        body = await check(client, logical_upstream.creds.job_inputs())
    finally:
        for slot in slots:
            logical_upstream.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
    assert body["errors"] == [
        f"No replication slot capacity available ({LOGICAL_SLOTS}/{LOGICAL_SLOTS} slots in "
        "use). Increase max_replication_slots in your PostgreSQL configuration."
    ]


async def test_what_cannot_be_checked_is_a_400_with_posthogs_message(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    inputs = upstream.creds.job_inputs()
    not_cdc = {"message": "CDC prerequisite checks are only supported for CDC enabled sources."}
    for source_type in ("MySQL", "Stripe", "Nope", None):
        response = await client.post(CHECK, json={**inputs, "source_type": source_type})
        assert (response.status_code, response.json()) == (400, not_cdc)
    missing = {k: v for k, v in inputs.items() if k not in ("host", "user")}
    assert await check(client, missing, 400) == {
        "message": "Invalid source config: Required field 'host' is missing, "
        "Required field 'user' is missing"
    }
    assert await check(client, inputs, 400, cdc_management_mode="dba") == {
        "message": "cdc_management_mode must be 'posthog' or 'self_managed'."
    }
    wrong = {**inputs, "password": "not-the-password-7f3a"}
    message = (await check(client, wrong, 400))["message"]
    assert message.startswith("Could not connect to Postgres to check prerequisites: ")
    assert "password authentication failed" in message
    assert "not-the-password-7f3a" not in message
    # A check stores nothing.
    assert app.state.services.store.sources == {}
