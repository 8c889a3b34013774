"""A person can query a running sandbox: the in-process sandbox's loopback listener (token and
Host checked, its access file owner-only) and the standalone sandbox, both reached by
`posthog-warehouse-mcp sql`, with no warehouse lock error."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from posthog_warehouse_mcp.sandbox.access import ACCESS_FILE, Access
from posthog_warehouse_mcp.sandbox.sql import main as sql_main
from posthog_warehouse_mcp.server.sandbox_backend import SandboxTransport
from tests.sandbox.support import sandbox_process, wait_until_up
from tests.support import eventually, free_port

pytestmark = pytest.mark.anyio

QUERY = {"query": {"kind": "HogQLQuery", "query": "SELECT 40 + 2 AS answer"}}


async def sql(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the subcommand (it blocks on its HTTP call) and return its code and output."""
    code = await anyio.to_thread.run_sync(lambda: sql_main(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_in_process_sandbox_listens_on_loopback_behind_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "sandbox"
    access_file = directory / ACCESS_FILE
    async with SandboxTransport(directory, demo=False, grace=0).running():

        async def written() -> dict[str, str] | None:
            return json.loads(access_file.read_text()) if access_file.exists() else None

        access = await eventually(written, within=60)
        assert stat.S_IMODE(access_file.stat().st_mode) == 0o600
        assert access["url"].startswith("http://127.0.0.1:")
        url = f"{access['url']}/api/environments/1/query/"
        good = {"Authorization": f"Bearer {access['token']}"}
        async with httpx.AsyncClient() as client:
            answered = await client.post(url, json=QUERY, headers=good)
            assert (answered.status_code, answered.json()["results"]) == (200, [[42]])
            no_token = await client.post(url, json=QUERY)
            assert no_token.status_code == 401
            wrong = await client.post(url, json=QUERY, headers={"Authorization": "Bearer x"})
            assert wrong.status_code == 401
            rebound = await client.post(url, json=QUERY, headers={**good, "Host": "evil.example"})
            assert rebound.status_code == 400
        code, out, err = await sql(capsys, "SELECT 40 + 2 AS answer", "--dir", str(directory))
        assert (code, out) == (0, "answer\n42\n"), err
        code, out, err = await sql(capsys, "SELECT * FROM nope", "--dir", str(directory))
        assert code == 1 and "Unknown table `nope`." in err
    assert not access_file.exists()
    code, _, err = await sql(capsys, "SELECT 1", "--dir", str(directory))
    assert code == 2 and "No running sandbox found" in err


@pytest.mark.slow  # a subprocess or a restart
async def test_the_standalone_sandbox_is_reached_with_its_api_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "standalone"
    port = free_port()
    with sandbox_process(directory, port, "--api-key", "local-key") as proc:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer local-key"}
        ) as client:
            await wait_until_up(client)
        access = json.loads((directory / ACCESS_FILE).read_text())
        assert access["token"] == "local-key"
        code, out, err = await sql(capsys, "SELECT 40 + 2 AS answer", "--dir", str(directory))
        assert (code, out) == (0, "answer\n42\n"), err
        proc.terminate()
        proc.wait(30)
    assert not (directory / ACCESS_FILE).exists()


async def test_a_file_left_by_a_killed_sandbox_is_not_a_running_sandbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finished = await anyio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True
    )
    Access("http://127.0.0.1:9", "t", int(finished.stdout.decode())).write(tmp_path)
    code, _, err = await sql(capsys, "SELECT 1", "--dir", str(tmp_path))
    assert code == 2 and "No running sandbox found" in err
