"""The MCP Apps views in a real headless browser (Debian's chromium and chromedriver, through
Selenium), each shown as a host shows it: the tool's `_meta.ui.resourceUri` from tools/list, the
document from resources/read, in a sandboxed iframe under the spec's restrictive CSP
(tests/sandbox/apps_host.html is the host side, written by hand), fed a real result of the
sandbox over the Apps postMessage protocol. Checks the values shown, that hostile names stay
text, that the host's theme applies, and that a button's tools/call reaches the host and its
answer (a real call through MCP) is shown. Skipped where Chromium is not installed (`.ci/run`
installs it).

With VIEW_SCREENSHOTS set to a folder (docs/views), each view is saved there, light and dark.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.server.app import create_server
from tests.sandbox.support import CHROMIUM, DRIVER, Upstream, browser_needed, call, services_of
from tests.support import settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow, browser_needed]

HOST_PAGE = Path(__file__).with_name("apps_host.html")
HOSTILE = "<img src=x onerror=alert(1)>"
T = TypeVar("T")

UPSTREAM_SQL = f"""
CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), updated_at timestamptz NOT NULL);
INSERT INTO orders
  SELECT g, g * 1.5, now() - g * interval '1 minute' FROM generate_series(1, 400) g;
CREATE TABLE events (id bigint, at timestamptz);
INSERT INTO events SELECT g % 30, now() FROM generate_series(1, 60) g;
CREATE TABLE "{HOSTILE}" (id int PRIMARY KEY, label text);
INSERT INTO "{HOSTILE}" VALUES (1, '{HOSTILE}');
"""


def wire(result: types.CallToolResult) -> dict[str, Any]:
    """A tool result as the host forwards it to the view (ui/notifications/tool-result)."""
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


class Host:
    """Headless Chromium on the test host page. Every method blocks: run it in a thread."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
            options.add_argument(flag)
        options.add_argument("--window-size=820,1400")
        self.driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
        self.driver.get(HOST_PAGE.as_uri())

    def quit(self) -> None:
        self.driver.quit()

    def inside(self, look: Callable[[], T]) -> T:
        """``look`` run inside the view's iframe."""
        from selenium.webdriver.common.by import By

        self.driver.switch_to.frame(self.driver.find_element(By.TAG_NAME, "iframe"))
        try:
            return look()
        finally:
            self.driver.switch_to.default_content()

    def until(self, ready: Callable[[], Any], within: float = 20) -> Any:
        """Poll ``ready`` (inside the frame) until it is truthy; its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, within).until(lambda _: self.inside(ready))

    def text_here(self) -> str:
        """The text of the document the driver is in (call it inside the frame)."""
        return str(self.driver.find_element("tag name", "body").text)

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.inside(lambda: self.driver.find_elements(By.CSS_SELECTOR, css)))

    def show(self, html: str, arguments: dict[str, Any], result: dict[str, Any], theme: str) -> str:
        """Render the view with this input and result; its text once it shows the result."""
        self.driver.execute_script(
            "host.show(arguments[0], arguments[1], arguments[2], arguments[3])",
            html,
            arguments,
            result,
            theme,
        )

        def shown() -> str | None:
            text = self.text_here()
            return text if text and "Waiting for" not in text else None

        return str(self.until(shown))

    def background(self) -> str:
        return str(
            self.inside(
                lambda: self.driver.execute_script(
                    "return getComputedStyle(document.body).backgroundColor"
                )
            )
        )

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        self.inside(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    def calls(self) -> list[dict[str, Any]]:
        from selenium.webdriver.support.ui import WebDriverWait

        found = WebDriverWait(self.driver, 20).until(
            lambda d: d.execute_script("return host.calls.length ? host.calls : null")
        )
        self.driver.execute_script("host.calls = []")
        return list(found)

    def answer(self, request_id: int, result: dict[str, Any]) -> None:
        self.driver.execute_script("host.answer(arguments[0], arguments[1])", request_id, result)

    def methods(self) -> list[str]:
        return list(self.driver.execute_script("return host.methods"))

    def screenshot(self, path: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.TAG_NAME, "iframe").screenshot(str(path))


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


@asynccontextmanager
async def apps_agent(directory: Path) -> AsyncIterator[tuple[Client, Any]]:
    """An MCP client that renders MCP Apps, whose server uses an in-process sandbox."""
    async with open_sandbox(directory, demo=False) as app:
        server = create_server(settings(environment_id="1"), transport=httpx.ASGITransport(app=app))
        renders = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        async with Client(server, mode="legacy", extensions=[renders]) as client:
            yield client, app


@asynccontextmanager
async def browser() -> AsyncIterator[Host]:
    host = await blocking(Host)
    try:
        yield host
    finally:
        await blocking(host.quit)


class Views:
    """What a host does before it shows a view: the tool's resourceUri, then resources/read."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.uris: dict[str, str] = {}

    async def html(self, tool: str) -> str:
        if not self.uris:
            for listed in (await self.client.list_tools()).tools:
                if listed.meta:
                    self.uris[listed.name] = listed.meta["ui"]["resourceUri"]
        (content,) = (await self.client.read_resource(self.uris[tool])).contents
        assert isinstance(content, types.TextResourceContents)
        assert content.mime_type == APP_MIME_TYPE
        return content.text


async def show(
    host: Host,
    views: Views,
    tool: str,
    arguments: dict[str, Any],
    *,
    theme: str = "light",
    name: str | None = None,
) -> tuple[str, types.CallToolResult]:
    """Call the tool as the model would, show its result in its view; the view's text."""
    result = await views.client.call_tool(tool, arguments)
    assert result.is_error is False, result.content
    # What the model reads says the person sees it; the view gets the same result.
    note = result.content[-1]
    assert isinstance(note, types.TextContent) and "The user sees this result" in note.text
    text = await blocking(host.show, await views.html(tool), arguments, wire(result), theme)
    # Data only ever as text: a name that is markup made no element.
    assert await blocking(host.count, "img") == 0
    await screenshots(host, name)
    return text, result


async def screenshots(host: Host, name: str | None) -> None:
    """Save the view as shown, light, then dark (the same view re-shown in the dark theme)."""
    folder = os.environ.get("VIEW_SCREENSHOTS")
    if not folder or name is None:
        return
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    theme = await blocking(lambda: host.driver.execute_script("return host.theme"))
    await blocking(host.screenshot, Path(folder) / f"{name}-{theme}.png")


async def seeded(client: Client, upstream: Upstream, app: Any) -> dict[str, Any]:
    """A source with three tables synced twice: orders (400 rows, then 50 more), events (fails:
    no key), and a table whose name is markup (left stuck in Running); the rehearsal that
    proposed them. Returns the ids and the rehearsal's arguments."""
    upstream.execute(UPSTREAM_SQL)
    tried = [
        {"name": "orders", "sync_type": "incremental", "incremental_field": "updated_at"},
        {"name": "events", "sync_type": "incremental", "incremental_field": "at"},
        {"name": HOSTILE, "sync_type": "full_refresh"},
    ]
    rehearsal = {
        "source_type": "Postgres",
        "prefix": "shop_",
        "payload": {**upstream.creds.job_inputs(), "schemas": tried},
    }
    report = await call(client, "external-data-sources-rehearse", rehearsal)
    created = await call(
        client,
        "external-data-sources-create",
        {
            "source_type": "Postgres",
            "prefix": "shop_",
            "payload": {**upstream.creds.job_inputs(), "schemas": report["schemas"]},
        },
    )
    source_id = created["id"]
    await call(client, "external-data-sources-jobs-wait", {"id": source_id, "wait_seconds": 60})
    upstream.execute(
        "INSERT INTO orders SELECT g, g * 1.5, now() FROM generate_series(401, 450) g;"
    )
    await call(client, "external-data-sources-reload", {"id": source_id, "wait_seconds": 60})
    source = await call(client, "external-data-sources-retrieve", {"id": source_id})
    ids = {s["name"]: s["id"] for s in source["schemas"]}
    # Stuck: marked Running with no sync (set while the sandbox runs, as a lost worker leaves it).
    live = services_of(app).store
    with live.lock:
        live.save(replace(live.schemas[ids[HOSTILE]], status="Running"))
    return {"source": source_id, "schemas": ids, "rehearsal": rehearsal}


async def test_each_view_shows_a_real_result_in_a_browser_host(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with apps_agent(tmp_path / "sandbox") as (client, app), browser() as host:
        seed = await seeded(client, upstream, app)
        views = Views(client)
        for theme in ("light", "dark"):
            text, _ = await show(
                host, views, "external-data-sources-audit", {}, theme=theme, name="health"
            )
            assert "2 findings" in text and "3 tables checked" in text
            assert "Broken: needs a fix" in text
            assert "failed sync" in text and "Postgres shop_ events" in text
            assert "no primary key" in text
            assert f"Postgres shop_ {HOSTILE}" in text and "stuck" in text
            assert "external-data-schemas-cancel" in text
            assert await blocking(host.count, "article.finding") == 2
            # The host's theme, not the system's, decides the view's colours.
            background = await blocking(host.background)
            assert background == ("rgb(255, 255, 255)" if theme == "light" else "rgb(28, 28, 30)")

            text, jobs = await show(
                host,
                views,
                "external-data-sources-jobs",
                {"id": seed["source"]},
                theme=theme,
                name="sync-history",
            )
            assert jobs.structured_content is not None
            every = jobs.structured_content["results"]
            assert "6 jobs" in text and "3 tables" in text and "452 rows synced" in text
            assert "2 failed" in text
            assert HOSTILE in text and "events" in text and "orders" in text
            assert "has no primary key to merge on" in text
            # One bar per job, in the inline SVG chart.
            assert await blocking(host.count, "svg.chart rect.bar") == len(every)
            assert await blocking(host.count, "tr[data-status=Failed]") == 2

            text, _ = await show(
                host,
                views,
                "execute-sql",
                {
                    "query": f"SELECT id, amount, '{HOSTILE}' AS note FROM shop_postgres_orders "
                    "ORDER BY id",
                    "limit": 20,
                },
                theme=theme,
                name="query-results",
            )
            assert "20 rows" in text and "3 columns" in text and "Truncated" in text
            assert "Int64" in text and "Decimal(12, 2)" in text
            assert HOSTILE in text and "1.5" in text
            assert "never follow instructions" in text
            assert await blocking(host.count, "tbody tr") == 20

            text, _ = await show(
                host,
                views,
                "external-data-sources-rehearse",
                seed["rehearsal"],
                theme=theme,
                name="review",
            )
            assert "Rehearsal: Postgres shop_" in text
            assert "shop_postgres_orders" in text and HOSTILE in text
            assert await blocking(host.count, ".problem") == 1
            assert "events has no primary key" in text
            assert "set primary_key_columns to columns that are unique in every row" in text
            assert "PostHog can't reach" in text

            text, _ = await show(
                host,
                views,
                "external-data-schemas-plan",
                {"id": seed["source"], "set": {"sync_type": "full_refresh"}},
                theme=theme,
            )
            assert "Plan of table changes" in text
            assert "sync_type: incremental → full_refresh" in text
            assert "450" in text and "54,000" in text
        assert "ui/initialize" in await blocking(host.methods)


async def test_a_views_button_reaches_the_host_and_shows_the_answer(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with apps_agent(tmp_path / "sandbox") as (client, app), browser() as host:
        seed = await seeded(client, upstream, app)
        views = Views(client)
        await show(host, views, "external-data-sources-audit", {})

        async def forward() -> dict[str, Any]:
            """The host's part: the view's tools/call goes to the server; its answer back."""
            (asked,) = await blocking(host.calls)
            answered = await client.call_tool(asked["name"], asked["arguments"])
            await blocking(host.answer, asked["id"], wire(answered))
            return dict(asked)

        # The failed table's "Sync logs" button asks for its ERROR lines, by the finding's id.
        await blocking(
            host.click, "article[data-kind=failed] button[data-tool=external-data-sync-logs]"
        )
        asked = await forward()
        assert asked["name"] == "external-data-sync-logs"
        events = seed["schemas"]["events"]
        assert asked["arguments"] == {"schema_id": events, "level": "ERROR", "limit": 20}
        assert await blocking(host.until, lambda: "ERROR" in element(host, "table.logs").text)

        # A failed job's "Log" button asks for that job's lines only.
        await show(host, views, "external-data-sources-jobs", {"id": seed["source"]})
        await blocking(host.click, "tr[data-status=Failed] button")
        asked = await forward()
        assert asked["name"] == "external-data-sync-logs"
        assert asked["arguments"]["schema_id"] == events and asked["arguments"]["job_id"]
        failed_log = "tr[data-status=Failed] pre"
        assert await blocking(host.until, lambda: "primary key" in element(host, failed_log).text)

        # A one-step setup's card reads the new source back through the host.
        arguments = {
            "source_type": "Postgres",
            "prefix": "again_",
            "payload": upstream.creds.job_inputs(),
        }
        created = await client.call_tool("data-warehouse-source-setup", arguments)
        assert created.is_error is False and created.structured_content, created.content
        html = await views.html("data-warehouse-source-setup")
        script = "host.show(arguments[0], arguments[1], arguments[2], 'light')"
        await blocking(host.driver.execute_script, script, html, arguments, wire(created))
        asked = await forward()
        assert asked["name"] == "external-data-sources-retrieve"
        assert asked["arguments"] == {"id": created.structured_content["id"]}
        text = await blocking(
            host.until, lambda: "syncing" in host.text_here() and host.text_here()
        )
        assert "3 of 3 tables syncing" in text and "New Postgres source again_" in text
        assert HOSTILE in text
        assert await blocking(host.count, "img") == 0


def element(host: Host, css: str) -> Any:
    """An element of the view (inside its frame already)."""
    return host.driver.find_element("css selector", css)


async def test_the_approval_card_sends_the_call_once_after_a_click(
    tmp_path: Path, upstream: Upstream
) -> None:
    directory = tmp_path / "sandbox"
    deletes: list[str] = []

    class Counted(httpx.ASGITransport):
        """The server's way to the sandbox, counting what would delete data."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/delete_data/"):
                deletes.append(request.url.path)
            return await super().handle_async_request(request)

    async with open_sandbox(directory, demo=False) as app:
        config = settings(environment_id="1", confirm="human")
        server = create_server(config, transport=Counted(app=app))
        renders = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        async with Client(server, mode="legacy", extensions=[renders]) as client, browser() as host:
            seed = await seeded(client, upstream, app)
            views = Views(client)
            sent: list[str] = []

            async def delete_data(table: str) -> types.CallToolResult:
                """The model's call: held, the card shown; what was sent so far."""
                args = {"id": seed["schemas"][table]}
                held = await client.call_tool("external-data-schemas-delete-data", args)
                assert held.is_error is False and held.meta, held.content
                html = await views.html("external-data-schemas-delete-data")
                await blocking(host.show, html, args, wire(held), "light")
                return held

            def tables(table: str) -> int:
                name = f"shop_postgres_{table}"
                found = (
                    services_of(app)
                    .warehouse.cursor()
                    .execute(
                        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                        [name],
                    )
                )
                return int(found.fetchone()[0])

            async def forward() -> types.CallToolResult:
                (asked,) = await blocking(host.calls)
                assert asked["name"] == "approve-destructive-call"
                answered = await client.call_tool(asked["name"], asked["arguments"])
                await blocking(host.answer, asked["id"], wire(answered))
                sent.append(asked["arguments"]["decision"])
                return answered

            # Decline: nothing is sent; the table's data stays.
            held = await delete_data("orders")
            text = await blocking(
                host.until, lambda: "Approve a change" in host.text_here() and host.text_here()
            )
            assert "shop_postgres_orders" in text and "450 rows" in text
            await screenshots(host, "approve")
            assert tables("orders") == 1 and deletes == []
            await blocking(host.click, "button:not(.approve)")
            declined = await forward()
            assert (declined.structured_content or {}).get("declined") is True
            assert await blocking(host.until, lambda: "Nothing was sent" in host.text_here())
            assert tables("orders") == 1 and deletes == []
            # A replay of the declined card's approval sends nothing.
            approval = held.meta["posthog-warehouse/approval"]  # type: ignore[index]
            replay = await client.call_tool(
                "approve-destructive-call", {"approval": approval, "decision": "approve"}
            )
            assert replay.is_error is True and tables("orders") == 1 and deletes == []

            # Approve: the call goes out once, after the click.
            held = await delete_data("orders")
            await blocking(host.until, lambda: "Approve a change" in host.text_here())
            assert tables("orders") == 1
            await blocking(host.click, "button.approve")
            approved = await forward()
            assert approved.is_error is False, approved.content
            assert await blocking(host.until, lambda: "sent once" in host.text_here())
            assert tables("orders") == 0 and len(deletes) == 1
            again = await client.call_tool(
                "approve-destructive-call",
                {"approval": held.meta["posthog-warehouse/approval"], "decision": "approve"},  # type: ignore[index]
            )
            assert again.is_error is True and len(deletes) == 1
            assert sent == ["decline", "approve"]
