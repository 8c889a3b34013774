"""The sandbox as a real server: the CLI on loopback, killed midway through a sync, and the demo."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psycopg
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres
from posthog_warehouse_mcp.sandbox.engine import INTERRUPTED
from posthog_warehouse_mcp.sandbox.warehouse import DirectoryInUse
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.sandbox_backend import SandboxTransport
from tests.sandbox.support import (
    API,
    Upstream,
    client_for,
    create_source,
    jobs_of,
    sandbox_process,
    wait_for_jobs,
    wait_until_up,
    warehouse_rows,
)
from tests.support import free_port, settings, text_of

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_sigkill_midway_keeps_the_previous_table_and_fails_the_job(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"
    )
    directory = tmp_path / "sandbox"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with sandbox_process(directory, port) as proc:
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
    schema_id = source["schemas"][0]["id"]
    port = free_port()
    # The reload's export waits on the lock: the kill lands midway, whatever the machine's speed.
    with upstream.locked("big"), sandbox_process(directory, port) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_until_up(c)
            assert (await c.post(f"{API}/external_data_schemas/{schema_id}/reload/")).is_success
            await upstream.export_waits()
            running = (await jobs_of(c, source["id"]))[0]
            assert running["status"] == "Running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        jobs = await jobs_of(client, source["id"])
        assert (jobs[0]["id"], jobs[0]["status"]) == (running["id"], "Failed")
        assert jobs[0]["latest_error"] == INTERRUPTED
        assert [j["status"] for j in jobs[1:]] == ["Completed"]
        assert warehouse_rows(app, "SELECT count(*), min(id) FROM postgres_big") == [(20000, 1)]
        schema = (await client.get(f"{API}/external_data_schemas/{schema_id}/")).json()
        assert schema["status"] == "Failed"
        assert schema["table"]["row_count"] == 20000
        # The next sync works normally and sees the upstream change.
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        await wait_for_jobs(client, source["id"], 3)
        assert warehouse_rows(app, "SELECT count(*) FROM postgres_big") == [(19000,)]


@pytest.mark.slow
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
        assert '"password"' not in listed.text  # no such field (the description names the word)
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
        assert warehouse_rows(app, "SELECT count(*) FROM demo_postgres_orders") == [(20000,)]
    async with open_sandbox(tmp_path) as app, client_for(app) as client:
        again = (await client.get(f"{API}/external_data_sources/")).json()
        assert [s["id"] for s in again["results"]] == [source["id"]]
        schema = (await client.get(f"{API}/external_data_schemas/{orders['id']}/")).json()
        assert schema["should_sync"] is True
        assert schema["table"]["row_count"] == 20000


@pytest.mark.slow  # a subprocess or a restart
async def test_a_directory_in_use_by_another_process_is_refused_clearly(tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "sandbox"
    with sandbox_process(directory, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_until_up(c)
        with pytest.raises(DirectoryInUse) as refused:
            async with open_sandbox(directory, demo=False):
                pass
    assert refused.value.pid is not None and f"(pid {refused.value.pid})" in str(refused.value)


@pytest.mark.slow  # a subprocess or a restart
async def test_a_server_on_a_directory_in_use_says_who_holds_it_and_does_not_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    directory = tmp_path / "sandbox"
    sent: list[str] = []
    handle = SandboxTransport.handle_async_request

    async def counted(self: SandboxTransport, request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return await handle(self, request)

    monkeypatch.setattr(SandboxTransport, "handle_async_request", counted)
    with sandbox_process(directory, port) as holder:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_until_up(c)
        config = settings(sandbox=True, sandbox_dir=directory, demo=False)
        async with Client(create_server(config), mode="legacy") as client:
            assert len((await client.list_tools()).tools) > 0  # the handshake still answers
            result = await client.call_tool("external-data-sources-list", {})
    text = text_of(result)
    assert result.is_error is True
    assert str(directory) in text and f"pid {holder.pid}" in text
    assert "--sandbox-dir" in text and "Stop that process" in text and "nothing was sent" in text
    assert len(sent) == 1  # no retries: trying again cannot free the directory


@pytest.mark.slow  # a subprocess or a restart
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
