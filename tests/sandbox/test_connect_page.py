"""The connect page in a real headless browser (Debian's chromium and chromedriver, through
Selenium): the link comes from MCP, a person types the credentials on the page, the agent sees
only a credential id, and setup with it creates a source that syncs. The page refuses what it
must. Skipped where Chromium is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import html
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.listener import loopback
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import CHROMIUM, DRIVER, Upstream, browser_needed, call, services_of
from tests.support import eventually, settings

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def on_loopback(directory: Path, **client: Any) -> AsyncIterator[tuple[Client, str, Any]]:
    """An MCP client whose server uses an in-process sandbox that also listens on loopback,
    as the MCP server's --sandbox does; the sandbox's address; its app."""
    async with (
        open_sandbox(directory, demo=False) as app,
        loopback(app, directory) as access,
    ):
        app.state.services.public_url = access.url
        server = create_server(settings(environment_id="1"), transport=httpx.ASGITransport(app=app))
        async with Client(server, mode="legacy", **client) as mcp:
            yield mcp, access.url, app


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Client, str, Any]]:
    async with on_loopback(tmp_path / "sandbox") as served:
        yield served


def fill_in_browser(url: str, values: dict[str, str]) -> str:
    """Open the page in headless Chromium, type the values, submit; the page text after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        driver.get(url)
        for name, value in values.items():
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        for _ in range(100):
            if "stored" in driver.title.lower() or "error" in driver.page_source:
                break
            driver.implicitly_wait(0.1)
        return str(driver.page_source)
    finally:
        driver.quit()


@pytest.mark.slow  # a real browser, as every browser test
@browser_needed
async def test_a_person_types_the_credentials_and_the_agent_never_sees_them(
    served: tuple[Client, str, Any], upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _, app = served
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);"
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 25) g;"
    )
    password = upstream.creds.password
    seen: list[Any] = []
    link = await call(client, "data-warehouse-source-connect-link", {"source_type": "Postgres"})
    seen.append(link)
    assert link["connect_url"].startswith("http://127.0.0.1:")
    creds = upstream.creds.job_inputs()
    page = await anyio.to_thread.run_sync(
        lambda: fill_in_browser(
            link["connect_url"],
            {k: str(creds[k]) for k in ("host", "port", "database", "user", "password")},
        )
    )
    assert "Connection details stored" in page
    assert password not in page
    stored = await call(
        client, "data-warehouse-stored-credentials-list", {"source_type": "Postgres"}
    )
    seen.append(stored)
    (credential,) = stored["results"]
    created = await call(
        client,
        "data-warehouse-source-setup",
        {"source_type": "Postgres", "payload": {"credential_id": credential["credential_id"]}},
    )
    seen.append(created)

    async def synced() -> dict[str, Any] | None:
        jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
        done = jobs["results"] and all(j["status"] == "Completed" for j in jobs["results"])
        return jobs if done else None

    seen.append(await eventually(synced, within=60))
    source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
    seen.append(source)
    assert source["job_inputs"]["host"] == creds["host"]
    # Single use: the id is gone once the source has the details.
    again = await client.call_tool(
        "data-warehouse-source-setup",
        {
            "source_type": "Postgres",
            "payload": {"credential_id": credential["credential_id"]},
            "prefix": "again",
        },
    )
    assert "not found or expired" in again.content[0].text  # type: ignore[union-attr]
    assert (await call(client, "data-warehouse-stored-credentials-list", {}))["results"] == []
    assert password not in json.dumps(seen)
    # Every log line of the server and the sandbox (Selenium logs the person's own keystrokes
    # to the browser; that is the browser side, not ours).
    ours = [
        r.getMessage() for r in caplog.records if not r.name.startswith(("selenium", "urllib3"))
    ]
    assert ours and not any(password in line for line in ours)
    # The sandbox keeps the source's credentials in its owner-only store, as PostHog keeps them.
    store = await anyio.Path(app.state.services.warehouse.path).with_name("metadata.sqlite3").stat()
    assert store.st_mode & 0o777 == 0o600


@pytest.mark.slow  # a real browser, as every browser test
@browser_needed
async def test_a_person_pastes_only_a_connection_string(
    served: tuple[Client, str, Any], upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _, _ = served
    role = f"cs_{uuid.uuid4().hex[:10]}"
    # Every character a URL gives a meaning to, so the string must carry it percent-encoded.
    password = f"p@ss/w:rd#{uuid.uuid4().hex[:8]}?%&="
    upstream.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);"
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 7) g;"
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT ON orders TO {role};"
    )
    creds = upstream.creds
    encoded = quote(password, safe="")
    url = f"postgresql://{role}:{encoded}@{creds.host}:{creds.port}/{creds.database}?sslmode=prefer"
    seen: list[Any] = []
    link = await call(client, "data-warehouse-source-connect-link", {"source_type": "Postgres"})
    page = await anyio.to_thread.run_sync(
        lambda: fill_in_browser(link["connect_url"], {"connection_string": url})
    )
    assert "Connection details stored" in page
    assert password not in page and encoded not in page
    stored = await call(
        client, "data-warehouse-stored-credentials-list", {"source_type": "Postgres"}
    )
    (credential,) = stored["results"]
    created = await call(
        client,
        "data-warehouse-source-setup",
        {"source_type": "Postgres", "payload": {"credential_id": credential["credential_id"]}},
    )
    seen += [stored, created]

    async def synced() -> dict[str, Any] | None:
        jobs = await call(client, "external-data-sources-jobs", {"id": created["id"]})
        done = jobs["results"] and all(j["status"] == "Completed" for j in jobs["results"])
        return jobs if done else None

    jobs = await eventually(synced, within=60)
    assert [j["rows_synced"] for j in jobs["results"]] == [7]
    source = await call(client, "external-data-sources-retrieve", {"id": created["id"]})
    seen += [jobs, source]
    inputs = source["job_inputs"]
    assert (inputs["host"], str(inputs["port"]), inputs["database"], inputs["user"]) == (
        creds.host,
        str(creds.port),
        creds.database,
        role,
    )
    assert "connection_string" not in inputs
    assert password not in json.dumps(seen) and encoded not in json.dumps(seen)
    ours = [
        r.getMessage() for r in caplog.records if not r.name.startswith(("selenium", "urllib3"))
    ]
    assert ours and not any(password in line or encoded in line for line in ours)


async def test_a_connection_string_that_cannot_be_used_changes_nothing(
    served: tuple[Client, str, Any], upstream: Upstream
) -> None:
    client, base, app = served
    link = await call(client, "data-warehouse-source-connect-link", {"source_type": "Postgres"})
    url = link["connect_url"]
    creds = upstream.creds
    good = f"postgresql://{creds.user}:{quote(creds.password, safe='')}@{creds.host}:{creds.port}"
    origin = {"Origin": base}
    async with httpx.AsyncClient() as http:
        form = (await http.get(url)).text
        # The fields a connection string fills are not required by the browser.
        assert 'name="host" type="text" placeholder="db.example.com" autocomplete="off">' in form
        for data, says in [
            ({"connection_string": good}, "names no database"),
            ({"connection_string": "mysql://u:zq-secret@h/db"}, "must start with postgresql://"),
            (
                {"connection_string": f"{good}/{creds.database}", "host": "elsewhere.example"},
                "the Host field you typed differ",
            ),
            ({"port": "5432"}, "Fill in Host, Database, User and Password, or paste a connection"),
        ]:
            refused = await http.post(url, data=data, headers=origin)
            assert refused.status_code == 400, refused.text
            assert says in html.unescape(refused.text)
            assert creds.password not in refused.text and "zq-secret" not in refused.text
            assert services_of(app).store.credentials == {}
        # The link still works: the same page takes a good string.
        stored = await http.post(
            url, data={"connection_string": f"{good}/{creds.database}"}, headers=origin
        )
        assert stored.status_code == 201, stored.text
    (credential,) = services_of(app).store.credentials.values()
    assert credential.job_inputs == {
        "host": creds.host,
        "port": str(creds.port),
        "database": creds.database,
        "user": creds.user,
        "password": creds.password,
    }


async def test_the_page_refuses_what_it_must(
    served: tuple[Client, str, Any], upstream: Upstream
) -> None:
    client, base, _ = served
    link = await call(client, "data-warehouse-source-connect-link", {"source_type": "Postgres"})
    url = link["connect_url"]
    form = {**{k: str(v) for k, v in upstream.creds.job_inputs().items()}}
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 200
        assert (await http.get(url + "x")).status_code == 404  # a wrong token
        with_credentials = await http.get(url, params={"password": "typed-in-the-url"})
        assert with_credentials.status_code == 400
        rebound = await http.get(url, headers={"Host": "evil.example:80"})
        assert rebound.status_code == 400
        cross_site = await http.post(url, data=form, headers={"Origin": "https://evil.example"})
        assert cross_site.status_code == 403
        no_origin = await http.post(url, data=form)
        assert no_origin.status_code == 403
        wrong = await http.post(url, data={**form, "password": "nope"}, headers={"Origin": base})
        assert wrong.status_code == 400
        assert "nope" not in wrong.text
        stored = await http.post(url, data=form, headers={"Origin": base})
        assert stored.status_code == 201, stored.text
        assert upstream.creds.password not in stored.text
        reused = await http.post(url, data=form, headers={"Origin": base})
        assert reused.status_code == 404


async def test_a_client_that_can_show_a_url_shows_the_link_to_the_person(
    tmp_path: Path,
) -> None:
    shown: list[str] = []

    async def person(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestURLParams)
        shown.append(params.url)
        return types.ElicitResult(action="accept")

    async with on_loopback(tmp_path / "sandbox", elicitation_callback=person) as (client, _, _):
        link = await call(client, "data-warehouse-source-connect-link", {"source_type": "Postgres"})
    assert shown == [link["connect_url"]]
    assert link["shown_to_user"] == "accept"
