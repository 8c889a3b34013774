"""The demo database in the first hour: it keeps its port across restarts, sources made against
it follow it when it must move, a connection toward its old or stopped address says why, and an
agent connects its tables with no password in any argument."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.access import DEMO_SECRET
from posthog_warehouse_mcp.sandbox.connectors import ConnectionFailed, Unreachable
from posthog_warehouse_mcp.sandbox.demo import DemoDatabase
from posthog_warehouse_mcp.sandbox.embedded import PostgresCredentials
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import (
    API,
    call,
    client_for,
    reload_and_wait,
    services_of,
    sync_log,
    wait_for_jobs,
)
from tests.support import settings, text_of

pytestmark = pytest.mark.anyio

CREDS = PostgresCredentials("127.0.0.1", 6001, "shop", "postgres", "demo-password-0123456789")
RUNNING = DemoDatabase(CREDS, 6001, (5999,))
PORT_REFUSED = ConnectionFailed(Unreachable.PORT, "fallback")


@pytest.mark.parametrize(
    ("demo", "inputs", "expected"),
    [
        (RUNNING, {"host": "127.0.0.1", "port": 5999}, "moved to 127.0.0.1:6001"),
        (RUNNING, {"host": "localhost", "port": "5999"}, "Use port 6001"),
        (DemoDatabase(None, 6001), {"host": "::1", "port": 6001}, "started without it"),
        (RUNNING, {"host": "127.0.0.1", "port": 6001}, None),  # running: not its fault
        (RUNNING, {"host": "db.example.com", "port": 5999}, None),
        (RUNNING, {"host": "127.0.0.1", "port": 6002}, None),
        (RUNNING, {"host": "127.0.0.1", "port": "x"}, None),
        (DemoDatabase(), {"host": "127.0.0.1", "port": 6001}, None),  # no demo here, ever
    ],
)
def test_a_failed_connection_toward_the_demo_says_why(
    demo: DemoDatabase, inputs: dict[str, Any], expected: str | None
) -> None:
    hint = demo.hint(PORT_REFUSED, inputs)
    if expected is None:
        assert hint is None
        return
    assert hint is not None and expected in hint
    explained = PORT_REFUSED.with_hint(hint)
    assert str(explained).startswith("Could not connect to the host on the port given. ")
    assert explained.reason is Unreachable.PORT and explained.hint == hint


def test_wrong_credentials_for_the_running_demo_name_the_reference() -> None:
    failed = ConnectionFailed(Unreachable.CREDENTIALS, "fallback")
    hint = RUNNING.hint(failed, {"host": "127.0.0.1", "port": 6001})
    assert hint is not None and f'{{"env": "{DEMO_SECRET}"}}' in hint
    assert CREDS.password not in hint


def test_the_demo_description_names_its_address_and_reference_never_its_password() -> None:
    text = RUNNING.description()
    assert "127.0.0.1:6001" in text and "database shop" in text and "user postgres" in text
    assert DEMO_SECRET in text
    assert CREDS.password not in text


@contextmanager
def held(port: int) -> Iterator[None]:
    """Another program listening on `port` of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


@pytest.mark.slow
async def test_a_source_made_against_the_demo_follows_it_across_restarts(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox"
    # 1. A source of the user's own against the demo, synced; a connection stays open.
    async with open_sandbox(directory) as app, client_for(app) as client:
        demo = services_of(app).demo
        assert demo.credentials is not None
        first = demo.credentials.port
        payload = {
            **demo.credentials.job_inputs(),
            "schemas": [{"name": "orders", "should_sync": True, "sync_type": "full_refresh"}],
        }
        created = await client.post(
            f"{API}/external_data_sources/",
            json={"source_type": "Postgres", "prefix": "shop_", "payload": payload},
        )
        assert created.status_code == 201, created.text
        source_id = created.json()["id"]
        jobs = await wait_for_jobs(client, source_id, 1)
        assert [j["status"] for j in jobs] == ["Completed"]
        schema_id = jobs[0]["schema"]["id"]
        # The server closes this connection at stop: its port then lingers in TIME_WAIT.
        lingering = psycopg.connect(demo.credentials.conninfo())
        lingering.execute("SELECT 1")
    lingering.close()
    # 2. Restarted: the same port, though a closed connection still lingers on it.
    async with open_sandbox(directory) as app:
        assert services_of(app).demo.port == first
    # 3. The port is taken by another program: the demo moves, and the source follows it.
    with held(first):
        async with open_sandbox(directory) as app, client_for(app) as client:
            moved = services_of(app).demo
            assert moved.port is not None and moved.port != first
            assert moved.former_ports == (first,)
            source = services_of(app).store.sources[source_id]
            assert source.job_inputs["port"] == moved.port
            log = await sync_log(client, schema_id)
            notes = [e for e in log["results"] if "moved from" in e["message"]]
            assert [e["level"] for e in notes] == ["WARNING"]
            assert f"127.0.0.1:{first} to 127.0.0.1:{moved.port}" in notes[0]["message"]
            jobs = await reload_and_wait(client, source_id, schema_id, 2)
            assert [j["status"] for j in jobs] == ["Completed", "Completed"]
            # A connection to the old address, as an agent that remembered it would make.
            stale = {**source.job_inputs, "port": first}
            answer = await client.post(
                f"{API}/external_data_sources/database_schema/",
                json={"source_type": "Postgres", **stale},
            )
            assert answer.status_code == 400
            assert f"moved to 127.0.0.1:{moved.port}" in answer.text
            assert str(source.job_inputs["password"]) not in answer.text
    # 4. Started without the demo: a sync toward it says the demo is not running, and why.
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        jobs = await reload_and_wait(client, source_id, schema_id, 3)
        assert jobs[0]["status"] == "Failed"
        assert "which is not running" in jobs[0]["latest_error"]
        assert "--no-demo" in jobs[0]["latest_error"]
    assert json.loads((directory / "demo-postgres.moves.json").read_text()) == {
        "former_ports": [first]
    }


REFERENCE = re.compile(r'\{"env": "(POSTHOG_SECRET_[A-Z0-9_]+)"\}')
ADDRESS = re.compile(r"on ([0-9.]+):(\d+), database (\w+), user (\w+)")


@pytest.mark.slow
async def test_an_agent_connects_demo_tables_with_no_password_in_any_argument(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "sandbox"
    config = settings(
        sandbox=True, sandbox_dir=directory, personal_api_key=None, environment_id=None
    )
    shown: list[str] = []
    sent: list[dict[str, Any]] = []

    async def use(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
        sent.append(args)
        answer = await call(client, name, args)
        shown.append(json.dumps(answer))
        return answer

    async with Client(create_server(config)) as client:
        # What the server says: the reference, in its instructions; the address, in the demo's
        # description.
        assert client.instructions is not None
        named = REFERENCE.search(client.instructions)
        assert named is not None and named.group(1) == DEMO_SECRET
        reference = {"env": named.group(1)}
        listed = await use(client, "external-data-sources-list", {})
        demo = next(s for s in listed["results"] if s["prefix"] == "demo_")
        assert REFERENCE.search(demo["description"]) is not None
        found = ADDRESS.search(demo["description"])
        assert found is not None
        host, port, database, user = found.groups()
        fields = {"host": host, "port": int(port), "database": database, "user": user}
        tables = await use(
            client,
            "external-data-sources-db-schema",
            {
                "source_type": "Postgres",
                "payload": {**fields, "password": reference, "schema": "public"},
            },
        )
        names = sorted(t["table"] for t in tables["results"])
        assert names == ["customers", "events", "orders"]
        schemas = [
            {"name": "customers", "should_sync": True, "sync_type": "full_refresh"},
            {
                "name": "orders",
                "should_sync": True,
                "sync_type": "incremental",
                "incremental_field": "updated_at",
                "incremental_field_type": "timestamp",
            },
        ]
        payload = {**fields, "password": reference, "schema": "public", "schemas": schemas}
        created = await use(
            client,
            "external-data-sources-create",
            {"source_type": "Postgres", "prefix": "shop_", "payload": payload},
        )
        waited = await use(
            client, "external-data-sources-jobs-wait", {"id": created["id"], "wait_seconds": 60}
        )
        assert sorted(j["status"] for j in waited["results"]) == ["Completed", "Completed"]
        counted = await use(
            client,
            "execute-sql",
            {"query": "SELECT count() FROM shop_postgres_orders"},
        )
        assert counted["results"] == [[20000]]
        # The reference goes to the demo's address only.
        elsewhere = await client.call_tool(
            "external-data-sources-db-schema",
            {
                "source_type": "Postgres",
                "payload": {**fields, "port": int(port) + 1, "password": reference},
            },
        )
        assert elsewhere.is_error is True
        assert f"bound to 127.0.0.1:{port}" in text_of(elsewhere)
        shown.append(text_of(elsewhere))
    password = (directory / "demo-postgres.secret").read_text().strip()
    assert all(password not in json.dumps(args) for args in sent)
    assert all(password not in text for text in shown)
    assert sources_of(directory)["shop_"] == int(port)


def sources_of(directory: Path) -> dict[str, int]:
    """Each source's prefix and the port it connects to, read from the stopped sandbox."""
    from posthog_warehouse_mcp.sandbox.store import Store

    store = Store(directory / "metadata.sqlite3")
    try:
        return {s.prefix or "": int(s.job_inputs["port"]) for s in store.live_sources()}
    finally:
        store.close()


@pytest.mark.slow(seconds=6)
async def test_an_agent_tries_cdc_on_the_demo_with_nothing_to_set_up(tmp_path: Path) -> None:
    """The demo database runs with wal_level logical: the prerequisites pass, a CDC source
    snapshots `events`, and a row inserted upstream shows after the next sync."""
    directory = tmp_path / "sandbox"
    config = settings(
        sandbox=True, sandbox_dir=directory, personal_api_key=None, environment_id=None
    )
    async with Client(create_server(config)) as client:
        assert client.instructions is not None
        named = REFERENCE.search(client.instructions)
        assert named is not None
        listed = await call(client, "external-data-sources-list", {})
        demo = next(s for s in listed["results"] if s["prefix"] == "demo_")
        found = ADDRESS.search(demo["description"])
        assert found is not None
        host, port, database, user = found.groups()
        connection = {
            "host": host,
            "port": int(port),
            "database": database,
            "user": user,
            "password": {"env": named.group(1)},
            "schema": "public",
        }
        checked = await call(
            client,
            "external-data-sources-check-cdc-prerequisites-create",
            {
                "source_type": "Postgres",
                "payload": connection,
                "tables": ["events"],
                "cdc_management_mode": "posthog",
            },
        )
        assert checked == {"valid": True, "errors": []}
        schema = {"name": "events", "should_sync": True, "sync_type": "cdc"}
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "live_",
                "payload": {**connection, "schemas": [schema], "cdc_enabled": True},
            },
        )
        await call(
            client, "external-data-sources-jobs-wait", {"id": created["id"], "wait_seconds": 60}
        )
        count = "SELECT count() FROM live_postgres_events WHERE NOT _ph_deleted"
        assert (await call(client, "execute-sql", {"query": count}))["results"] == [[40000]]

        password = (directory / "demo-postgres.secret").read_text().strip()
        demo_db = PostgresCredentials(host, int(port), database, user, password)
        with psycopg.connect(demo_db.conninfo(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO events VALUES (40001, 1, 'order_paid', '{}', now());"
                "DELETE FROM events WHERE id = 1"
            )
        source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
        schema_id = source["schemas"][0]["id"]
        synced = await call(
            client, "external-data-schemas-reload", {"id": schema_id, "wait_seconds": 60}
        )
        assert synced["wait"]["jobs"][0]["status"] == "Completed"
        assert (await call(client, "execute-sql", {"query": count}))["results"] == [[40000]]
        newest = "SELECT max(id), min(id) FROM live_postgres_events WHERE NOT _ph_deleted"
        assert (await call(client, "execute-sql", {"query": newest}))["results"] == [[40001, 2]]
