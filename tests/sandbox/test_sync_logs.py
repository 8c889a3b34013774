"""Every sync writes its own log, read through `external_data_schemas/{id}/logs/` with PostHog's
filters (limit, after, before, level, search, instance_id) and pagination. (A cancelled sync's
warning is checked with the cancel, in test_syncs.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.engine import INTERRUPTED, REDACTED
from tests.sandbox.support import (
    API,
    Upstream,
    client_for,
    jobs_of,
    log_lines,
    reload_and_wait,
    services_of,
    sync_log,
    synced,
    warehouse_rows,
)

pytestmark = pytest.mark.anyio

ORDERS_SQL = """
CREATE TABLE orders (id int PRIMARY KEY, amount int, updated_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, g * 10, timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, 30) g;
"""
MISSING = "00000000-0000-0000-0000-000000000000"
# The log of the first, full-refresh sync of `orders`, newest first.
FIRST_SYNC = [
    ("INFO", "Sync completed: 30 rows synced in Ns"),
    ("INFO", "Published postgres_orders (created the table): 30 rows in the table"),
    ("INFO", "Loaded 30 rows into the warehouse"),
    ("INFO", "Read 30 rows from Postgres table public.orders"),
    ("DEBUG", "No cursor: reading every row"),
    ("DEBUG", "Reading public.orders: 3 columns (id, amount, updated_at)"),
    ("INFO", "Sync started for table orders: sync type full_refresh, mode replace the table"),
]

Synced = tuple[httpx.AsyncClient, dict[str, Any], str]


@pytest.fixture
async def orders(sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream) -> Synced:
    """A client, and a source whose `orders` table synced once (full refresh); its schema id."""
    _, client = sandbox
    upstream.execute(ORDERS_SQL)
    source, schema_id = await synced(client, upstream, "orders")
    return client, source, schema_id


def bad_param(attr: str, code: str, detail: str) -> dict[str, Any]:
    return {"type": "validation_error", "code": code, "detail": detail, "attr": attr}


async def test_a_completed_sync_logs_each_step_newest_first(orders: Synced) -> None:
    client, source, schema_id = orders
    body = await sync_log(client, schema_id)
    assert log_lines(body) == FIRST_SYNC
    assert (body["count"], body["next"], body["previous"]) == (7, None, None)
    job = (await jobs_of(client, source["id"]))[0]
    assert {e["instance_id"] for e in body["results"]} == {job["workflow_run_id"]}
    assert {e["log_source_id"] for e in body["results"]} == {schema_id}
    times = [datetime.fromisoformat(e["timestamp"]) for e in body["results"]]
    assert times == sorted(times, reverse=True)
    assert all(e["timestamp"].endswith("Z") for e in body["results"])

    # Incremental syncs say which cursor they read past, and how they published.
    patched = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"sync_type": "incremental", "incremental_field": "id"},
    )
    assert patched.status_code == 200
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    second = await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"])
    assert log_lines(second) == [
        ("INFO", "Sync completed: 30 rows synced in Ns"),
        ("INFO", "Published postgres_orders (merged on id): 30 rows in the table"),
        ("INFO", "Loaded 30 rows into the warehouse"),
        ("INFO", "Read 30 rows from Postgres table public.orders"),
        # The full refresh saved no cursor: this sync reads every row, and merges them.
        ("DEBUG", "No saved cursor for id: reading every row"),
        ("DEBUG", "Reading public.orders: 3 columns (id, amount, updated_at)"),
        (
            "INFO",
            "Sync started for table orders: sync type incremental, mode merge on the primary key",
        ),
    ]
    jobs = await reload_and_wait(client, source["id"], schema_id, 3)
    third = await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"])
    # As in PostHog, only rows past the cursor: nothing changed, nothing is read.
    assert log_lines(third)[:5] == [
        ("INFO", "Sync completed: 0 rows synced in Ns"),
        ("INFO", "Published postgres_orders (merged on id): 30 rows in the table"),
        ("INFO", "Loaded 0 rows into the warehouse"),
        ("INFO", "Read 0 rows from Postgres table public.orders"),
        ("DEBUG", "Cursor: rows where id > 30"),
    ]


async def test_a_failing_sync_logs_the_drivers_error(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    upstream.execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);"
        "CREATE VIEW broken AS SELECT id, 1 / (id - id) AS ratio FROM t;"
    )
    source, schema_id = await synced(client, upstream, "broken")
    job = (await jobs_of(client, source["id"]))[0]
    assert (job["status"], job["latest_error"]) == ("Failed", "division by zero")
    assert log_lines(await sync_log(client, schema_id))[0] == (
        "ERROR",
        "Sync failed: division by zero",
    )
    errors = await sync_log(client, schema_id, level="ERROR")
    assert log_lines(errors) == [("ERROR", "Sync failed: division by zero")]


async def test_filters_limit_and_pagination(orders: Synced) -> None:
    client, source, schema_id = orders
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    first, second = jobs[1]["workflow_run_id"], jobs[0]["workflow_run_id"]
    every = await sync_log(client, schema_id)
    assert every["count"] == 14
    assert [e["instance_id"] for e in every["results"]] == [second] * 7 + [first] * 7

    # level: an exact list, compared upper-cased (the MCP tool sends "INFO,WARNING,ERROR").
    debug = await sync_log(client, schema_id, level="debug")
    assert {e["level"] for e in debug["results"]} == {"DEBUG"}
    assert (await sync_log(client, schema_id, level="INFO,WARNING,ERROR"))["count"] == 10
    assert (await sync_log(client, schema_id, level="WARNING,ERROR"))["count"] == 0
    # search: case-insensitive, with ILIKE's wildcards.
    searched = await sync_log(client, schema_id, search="PUBLISHED POSTGRES_orders")
    assert [e["level"] for e in searched["results"]] == ["INFO", "INFO"]
    assert (await sync_log(client, schema_id, search="sync%ROWS synced"))["count"] == 2
    assert (await sync_log(client, schema_id, search="no such text"))["count"] == 0
    # instance_id: one sync's entries only.
    assert (await sync_log(client, schema_id, instance_id=first))["results"] == every["results"][7:]
    # after / before: strictly later / earlier than the time given.
    middle = every["results"][6]["timestamp"]
    assert (await sync_log(client, schema_id, after=middle))["results"] == every["results"][:6]
    assert (await sync_log(client, schema_id, before=middle))["results"] == every["results"][7:]
    # limit: the newest N; the paginator then pages within those N.
    limited = await sync_log(client, schema_id, limit=3)
    assert limited["results"] == every["results"][:3]
    assert (limited["count"], limited["next"], limited["previous"]) == (3, None, None)
    paged = await sync_log(client, schema_id, limit=3, offset=1)
    assert paged["results"] == every["results"][1:3]
    assert paged["previous"] is not None
    # Both prefixes answer the same.
    projects = await client.get(f"/api/projects/1/external_data_schemas/{schema_id}/logs/")
    assert projects.json() == every


async def test_bad_parameters_are_400_and_unknown_schemas_404(orders: Synced) -> None:
    client, _, schema_id = orders
    wrong_time = (
        "Datetime has wrong format. Use one of these formats instead: "
        "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
    )
    not_integer = bad_param("limit", "invalid", "A valid integer is required.")
    cases = [
        ({"limit": "0"}, "limit", "min_value", "Ensure this value is greater than or equal to 1."),
        ({"limit": "501"}, "limit", "max_value", "Ensure this value is less than or equal to 500."),
        ({"after": "yesterday"}, "after", "invalid", wrong_time),
        ({"search": " "}, "search", "blank", "This field may not be blank."),
    ]
    for params, attr, code, detail in cases:
        assert await sync_log(client, schema_id, 400, **params) == bad_param(attr, code, detail)
    assert await sync_log(client, schema_id, 400, limit="ten") == not_integer
    # The first invalid field in the serializer's order is the one reported.
    assert await sync_log(client, schema_id, 400, search="", limit="x") == not_integer
    assert (await sync_log(client, schema_id, limit="500"))["count"] == 7
    assert (await sync_log(client, schema_id, limit="2.0"))["count"] == 2
    # The schema is looked up before the parameters are read.
    assert (await sync_log(client, MISSING, 404, limit="0"))["code"] == "not_found"


async def test_no_log_entry_shows_the_sources_password(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    _, client = sandbox
    password = upstream.creds.password
    # A column named like the password: the sync's log would list it.
    upstream.execute(f'CREATE TABLE leak (id int PRIMARY KEY, "{password}" text)')
    _, schema_id = await synced(client, upstream, "leak")
    text = json.dumps(await sync_log(client, schema_id, limit=500))
    assert password not in text
    assert f"Reading public.leak: 2 columns (id, {REDACTED})" in text


async def test_a_sync_killed_by_a_restart_logs_an_error(tmp_path: Path, upstream: Upstream) -> None:
    upstream.execute(ORDERS_SQL)
    async with open_sandbox(tmp_path, demo=False) as app, client_for(app) as client:
        _, schema_id = await synced(client, upstream, "orders")
        # Leave the job as a kill would: still Running when the sandbox starts again.
        store = services_of(app).store
        with store.lock:
            job = store.schema_jobs(schema_id)[0]
            store.save(replace(job, status="Running", finished_at=None))
    async with open_sandbox(tmp_path, demo=False) as app, client_for(app) as client:
        body = await sync_log(client, schema_id, instance_id=job.workflow_run_id)
        assert log_lines(body) == [("ERROR", f"Sync failed: {INTERRUPTED}"), *FIRST_SYNC]


VISITS_SQL = """
CREATE TABLE visits (id int PRIMARY KEY, at timestamptz NOT NULL, day date NOT NULL);
INSERT INTO visits SELECT g, timestamptz '2025-01-01 00:00:00+00' + g * interval '1 hour',
       date '2025-01-01' + g / 4 FROM generate_series(1, 10) g;
"""
# Rows 8, 9 and 10 share the last day, 2025-01-03.


async def test_an_unchanged_reload_reads_nothing_and_a_date_cursor_reads_its_day_again(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(VISITS_SQL)
    source, schema_id = await synced(
        client,
        upstream,
        "visits",
        sync_type="incremental",
        incremental_field="at",
        incremental_field_type="timestamp",
    )
    # PostHog reads `at > <last value>`: a reload with nothing changed reads no row.
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    assert [j["rows_synced"] for j in jobs] == [0, 10]
    lines = log_lines(await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"]))
    assert ("INFO", "Read 0 rows from Postgres table public.visits") in lines
    assert any(m.startswith("Cursor: rows where at > 2025-01-01 10:00:00") for _, m in lines)
    assert not any("read again" in m for _, m in lines)

    # A date holds only the day: PostHog reads `day >= <last day>`, and merges on the key.
    patched = await client.patch(
        f"{API}/external_data_schemas/{schema_id}/",
        json={"incremental_field": "day", "incremental_field_type": "date"},
    )
    assert patched.status_code == 200, patched.text
    await reload_and_wait(client, source["id"], schema_id, 3)  # a new cursor: every row
    upstream.execute("INSERT INTO visits VALUES (11, '2025-01-03 23:00:00+00', '2025-01-03')")
    jobs = await reload_and_wait(client, source["id"], schema_id, 4)
    assert jobs[0]["rows_synced"] == 4  # the three rows of 2025-01-03 again, and the new one
    lines = log_lines(await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"]))
    assert ("DEBUG", "Cursor: rows where day >= 2025-01-03") in lines
    assert (
        "INFO",
        "Rows with day >= 2025-01-03 are read again: a date cursor holds only the day, and rows "
        "added later that day share it; merged on id",
    ) in lines
    sql = "SELECT count(*), count(DISTINCT id) FROM postgres_visits"
    assert warehouse_rows(app, sql) == [(11, 11)]


async def test_an_append_on_a_date_cursor_appends_its_last_day_again_as_posthog_does(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    upstream.execute(VISITS_SQL)
    source, schema_id = await synced(
        client,
        upstream,
        "visits",
        sync_type="append",
        incremental_field="day",
        incremental_field_type="date",
    )
    jobs = await reload_and_wait(client, source["id"], schema_id, 2)
    assert [j["rows_synced"] for j in jobs] == [3, 10]
    lines = log_lines(await sync_log(client, schema_id, instance_id=jobs[0]["workflow_run_id"]))
    assert (
        "INFO",
        "Rows with day >= 2025-01-03 are read again: a date cursor holds only the day, and rows "
        "added later that day share it; appended again, as PostHog appends them",
    ) in lines
    sql = "SELECT count(*), count(DISTINCT id) FROM postgres_visits"
    assert warehouse_rows(app, sql) == [(13, 10)]
