"""The sandbox as a real server: the CLI on loopback, killed midway through a sync, and the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres
from posthog_warehouse_mcp.sandbox.engine import INTERRUPTED

from .conftest import API, Upstream, client_for, create_source, wait_for_jobs, wait_for_running

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(directory: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run the standalone sandbox on loopback; kill it on exit if it is still running."""
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
    """Poll until the server answers."""
    with anyio.fail_after(30):
        while True:
            try:
                if (await client.get(f"{API}/external_data_sources/")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.1)


async def test_sigkill_midway_keeps_the_previous_table_and_fails_the_job(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g;"
    )
    directory = tmp_path / "sandbox"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(directory, port) as proc:
        async with httpx.AsyncClient(base_url=base, headers={"authorization": "Bearer any"}) as c:
            await wait_until_up(c)
            source = await create_source(
                c, upstream, [{"name": "big", "should_sync": True, "sync_type": "full_refresh"}]
            )
            await wait_for_jobs(c, source["id"], 1)
        proc.send_signal(signal.SIGINT)  # a clean stop first: uvicorn's shutdown closes DuckDB
        assert proc.wait(30) == 0
    # If the interrupted sync had published, the table would lose these rows.
    upstream.execute("DELETE FROM big WHERE id <= 1000")
    port = _free_port()
    with serve(directory, port, "--sync-delay", "0.05") as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_until_up(c)
            schema_id = source["schemas"][0]["id"]
            assert (await c.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
            running = await wait_for_running(c, source["id"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        jobs = (await client.get(f"{API}/external_data_sources/{source['id']}/jobs/")).json()
        assert (jobs[0]["id"], jobs[0]["status"]) == (running["id"], "Failed")
        assert jobs[0]["latest_error"] == INTERRUPTED
        assert [j["status"] for j in jobs[1:]] == ["Completed"]
        rows = app.state.sandbox.warehouse.query("SELECT count(*), min(id) FROM postgres_big")
        assert rows == [(200000, 1)]
        schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
        assert schema["status"] == "Failed"
        assert schema["table"]["row_count"] == 200000
        # The next sync works normally and sees the upstream change.
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        await wait_for_jobs(client, source["id"], 3)
        assert app.state.sandbox.warehouse.query("SELECT count(*) FROM postgres_big") == [(199000,)]


async def test_demo_registers_a_postgres_source_once_and_keeps_its_password_secret(
    tmp_path: Path,
) -> None:
    async with open_sandbox(tmp_path) as app, client_for(app) as client:
        listed = await client.get(f"{API}/external_data_sources/")
        assert listed.json()["count"] == 1
        source = listed.json()["results"][0]
        assert (source["source_type"], source["prefix"]) == ("Postgres", "demo_")
        assert sorted(s["name"] for s in source["schemas"]) == ["customers", "events", "orders"]
        assert not any(s["should_sync"] for s in source["schemas"])
        assert "password" not in listed.text
        secret = (tmp_path / "demo-postgres.secret").read_text().strip()
        assert secret not in listed.text
        orders = next(s for s in source["schemas"] if s["name"] == "orders")
        enabled = await client.patch(
            f"{API}/external_data_schemas/{orders['id']}/",
            json={
                "should_sync": True,
                "sync_type": "incremental",
                "incremental_field": "updated_at",
            },
        )
        assert enabled.status_code == 200
        jobs = await wait_for_jobs(client, source["id"], 1)
        assert jobs[0]["rows_synced"] == 20000
        assert app.state.sandbox.warehouse.query("SELECT count(*) FROM demo_postgres_orders") == [
            (20000,)
        ]
    async with open_sandbox(tmp_path) as app, client_for(app) as client:
        again = (await client.get(f"{API}/external_data_sources/")).json()
        assert [s["id"] for s in again["results"]] == [source["id"]]
        schema = (await client.get(f"{API}/external_data_schemas/{orders['id']}/")).json()
        assert schema["should_sync"] is True
        assert schema["table"]["row_count"] == 20000


async def test_a_directory_in_use_by_another_process_is_refused_clearly(tmp_path: Path) -> None:
    port = _free_port()
    directory = tmp_path / "sandbox"
    with serve(directory, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_until_up(c)
        with pytest.raises(RuntimeError, match="in use by another process"):
            async with open_sandbox(directory, demo=False):
                pass


def test_a_postgres_left_running_by_a_killed_sandbox_is_adopted_and_stopped(
    tmp_path: Path,
) -> None:
    first = EmbeddedPostgres(tmp_path / "pg")
    creds = first.start()
    # A second owner (the restarted sandbox) finds the server running and takes it over.
    second = EmbeddedPostgres(tmp_path / "pg")
    assert second.start() == creds
    with psycopg.connect(creds.conninfo()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    second.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(creds.conninfo()).close()
