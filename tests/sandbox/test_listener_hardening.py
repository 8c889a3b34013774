"""The sandbox's listeners answer only what is meant for them: the standalone sandbox checks Host
and Origin (no DNS rebinding, no cross-site posts) and will not serve a public address without
a key; the in-process listener honours the server's --read-only; the connect page stops
answering a client (or a link) that keeps failing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.access import ACCESS_FILE, Access
from posthog_warehouse_mcp.sandbox.cli import main as sandbox_main
from posthog_warehouse_mcp.sandbox.listener import loopback
from posthog_warehouse_mcp.server.state import open_backend
from tests.sandbox.support import API, Upstream, sandbox_process, wait_until_up
from tests.support import eventually, free_port, settings

pytestmark = pytest.mark.anyio

QUERY = {"query": {"kind": "HogQLQuery", "query": "SELECT 1 AS one"}}
SCHEMA_ID = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.mark.slow  # a subprocess or a restart
async def test_the_standalone_sandbox_refuses_a_rebinding_host_and_a_foreign_origin(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "standalone"
    port = free_port()
    own = f"127.0.0.1:{port}"
    evil = {"Host": f"evil.example:{port}"}
    with sandbox_process(directory, port):
        async with httpx.AsyncClient(base_url=f"http://{own}") as http:
            await wait_until_up(http)
            created = await http.post(
                f"{API}/external_data_sources/",
                json={"source_type": "Postgres", "payload": upstream.payload([])},
            )
            assert created.status_code == 201, created.text
            source = created.json()["id"]
            # The attack run's table SA, each with a rebinding Host.
            listed = await http.get(f"{API}/external_data_sources/", headers=evil)
            queried = await http.post(
                f"{API}/query/", json=QUERY, headers={**evil, "Origin": "http://evil.example"}
            )
            linked = await http.get(
                f"{API}/external_data_sources/connect_link/",
                params={"source_type": "Postgres"},
                headers=evil,
            )
            deleted = await http.delete(f"{API}/external_data_sources/{source}/", headers=evil)
            assert [r.status_code for r in (listed, queried, linked, deleted)] == [400] * 4
            assert "Host" in listed.json()["detail"]
            # A page elsewhere posting to the right address (a cross-site form, no rebinding).
            cross_site = await http.post(
                f"{API}/external_data_sources/{source}/reload/",
                headers={"Origin": "http://evil.example"},
            )
            assert cross_site.status_code == 403
            # Its own names still work, and so does a page it serves itself.
            by_name = await http.get(
                f"{API}/external_data_sources/", headers={"Host": f"localhost:{port}"}
            )
            same_origin = await http.post(
                f"{API}/query/", json=QUERY, headers={"Origin": f"http://{own}"}
            )
            assert (by_name.status_code, same_origin.status_code) == (200, 200)
            remaining = (await http.get(f"{API}/external_data_sources/")).json()
            assert [s["id"] for s in remaining["results"]] == [source]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_public_bind_without_an_api_key_refuses_to_start(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = sandbox_main(["--host", host, "--port", "1", "--dir", str(tmp_path), "--no-demo"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"Refusing to serve the sandbox on {host} without --api-key" in err
    assert not (tmp_path / ACCESS_FILE).exists()


async def test_the_in_process_listener_honours_read_only(tmp_path: Path) -> None:
    # The attack run's F6: with --read-only --sandbox, delete_data through access.json's token.
    directory = tmp_path / "sandbox"
    config = settings(sandbox=True, read_only=True, sandbox_dir=directory, demo=False)
    async with open_backend(config):

        async def written() -> Access | None:
            return Access.read(directory)

        access = await eventually(written, within=60)
        api = f"{access.url}{API}"
        token = {"Authorization": f"Bearer {access.token}"}
        async with httpx.AsyncClient(headers=token) as http:
            dropped = await http.delete(f"{api}/external_data_schemas/{SCHEMA_ID}/delete_data/")
            created = await http.post(f"{api}/external_data_sources/", json={"source_type": "x"})
            reloaded = await http.post(f"{api}/external_data_schemas/{SCHEMA_ID}/reload/")
            queried = await http.post(f"{api}/query/", json=QUERY)
            listed = await http.get(f"{api}/external_data_sources/")
            link = await http.get(
                f"{api}/external_data_sources/connect_link/", params={"source_type": "Postgres"}
            )
            page = await http.get(link.json()["connect_url"])
    assert [r.status_code for r in (dropped, created, reloaded)] == [403] * 3
    assert "read-only" in dropped.json()["detail"]
    assert (queried.status_code, queried.json()["results"]) == (200, [[1]])
    assert (listed.status_code, link.status_code, page.status_code) == (200, 200, 200)


@asynccontextmanager
async def listening(directory: Path) -> AsyncIterator[tuple[Starlette, Access]]:
    """An in-process sandbox and its loopback listener, as the MCP server's --sandbox runs them."""
    async with open_sandbox(directory, demo=False) as app, loopback(app, directory) as access:
        app.state.services.public_url = access.url
        yield app, access


async def connect_link(app: Starlette) -> str:
    """A new connect page link, asked of the sandbox's API."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
    ) as api:
        answer = await api.get(
            f"{API}/external_data_sources/connect_link/", params={"source_type": "Postgres"}
        )
    url: str = answer.json()["connect_url"]
    return url


async def test_the_connect_page_stops_answering_a_client_that_keeps_guessing(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path / "sandbox") as (app, access):
        link = await connect_link(app)
        statuses: list[int] = []
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(60):
                for n in range(40):  # the attack run made 2,000 guesses, unhindered
                    guess = await http.get(f"{access.url}/connect/guess{n:04d}xxxxxxxxxxxxxxxxxxxx")
                    statuses.append(guess.status_code)
                    if guess.status_code == 429:
                        refused = guess
                        break
            # Past the limit even the right token is refused: a guess must learn nothing.
            right = await http.get(link)
    assert statuses[-1] == 429 and set(statuses[:-1]) == {404}
    assert 5 <= len(statuses) - 1 <= 30
    assert int(refused.headers["retry-after"]) > 0
    assert right.status_code == 429


async def test_a_link_that_keeps_failing_is_held_back_and_others_are_not(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path / "sandbox") as (app, access):
        link, other = await connect_link(app), await connect_link(app)
        form: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": str(free_port()),  # nothing listens: each check fails at once
            "database": "d",
            "user": "u",
            "password": "wrong",
        }
        origin = {"Origin": access.url}
        statuses: list[int] = []
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(120):
                for _ in range(30):
                    tried = await http.post(link, data=form, headers=origin)
                    statuses.append(tried.status_code)
                    if tried.status_code == 429:
                        break
            still_open = await http.get(other)
    assert statuses[-1] == 429 and set(statuses[:-1]) == {400}
    assert 3 <= len(statuses) - 1 <= 15
    assert still_open.status_code == 200
