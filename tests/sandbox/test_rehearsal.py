"""`rehearse()`: a bounded local sync of real tables, checks at the source, PostHog's names and
billing estimates, and `schemas` that create takes unchanged; against embedded PostgreSQL and
MariaDB."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import rehearsal
from posthog_warehouse_mcp.sandbox.connectors import base
from posthog_warehouse_mcp.sandbox.engine import table_name
from posthog_warehouse_mcp.sandbox.rehearsal import (
    Limits,
    RehearsalCancelled,
    RehearsalError,
    rehearse,
)
from posthog_warehouse_mcp.tools import billing
from tests.sandbox.support import (
    MySQLUpstream,
    Upstream,
    create_source,
    schema_by_name,
    wait_for_jobs,
    warehouse_rows,
)

ORDERS = (
    "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), status text, "
    "updated_at timestamptz NOT NULL);"
    "INSERT INTO orders SELECT g, g * 1.5, 'paid', now() - g * interval '1 hour' "
    "FROM generate_series(1, 300) g"
)
# Each table fails one way; `TO_FAIL` is how each is rehearsed.
BROKEN = (
    "CREATE TABLE dupes (id int, updated_at timestamptz NOT NULL);"
    "INSERT INTO dupes SELECT g % 40, now() FROM generate_series(1, 50) g;"
    "CREATE TABLE stamps (id int PRIMARY KEY, updated_at timestamptz);"
    "INSERT INTO stamps SELECT g, CASE WHEN g <= 3 THEN NULL WHEN g <= 5 "
    "THEN now() + interval '30 days' ELSE now() - interval '1 day' END "
    "FROM generate_series(1, 20) g;"
    "CREATE TABLE feed (id bigint, body text);"
    "INSERT INTO feed SELECT g, 'x' FROM generate_series(1, 100) g;"
    "INSERT INTO feed SELECT g, 'y' FROM generate_series(201, 210) g;"
    "INSERT INTO feed VALUES (150, 'late');"
    "CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,2));"
    "INSERT INTO prices VALUES (1, 1.50), (2, 'NaN'), (3, 2.00), (4, 'NaN');"
    "CREATE TABLE logs (msg text, at timestamptz);"
    "INSERT INTO logs SELECT 'm' || g, now() FROM generate_series(1, 10) g"
)
TO_FAIL = [
    {
        "name": "dupes",
        "should_sync": True,
        "sync_type": "incremental",
        "incremental_field": "updated_at",
        "incremental_field_type": "timestamp",
        "primary_key_columns": ["id"],
    },
    {
        "name": "stamps",
        "should_sync": True,
        "sync_type": "incremental",
        "incremental_field": "updated_at",
        "incremental_field_type": "timestamp",
    },
    {
        "name": "feed",
        "should_sync": True,
        "sync_type": "append",
        "incremental_field": "id",
        "incremental_field_type": "integer",
    },
    {"name": "prices", "should_sync": True, "sync_type": "full_refresh"},
    {
        "name": "logs",
        "should_sync": True,
        "sync_type": "incremental",
        "incremental_field": "at",
        "incremental_field_type": "timestamp",
    },
]


def by_name(answer: dict[str, Any], name: str) -> dict[str, Any]:
    """The answer's entry for one table."""
    return next(t for t in answer["tables"] if t["name"] == name)


def check(table: dict[str, Any], name: str) -> dict[str, Any]:
    """One check of a table's answer."""
    return next(c for c in table["checks"] if c["check"] == name)


def problems(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A table's problems by kind."""
    return {p["problem"]: p for p in table["problems"]}


def source_state(upstream: Upstream) -> list[tuple[Any, ...]]:
    """What a write would change: the relations and every table's contents."""
    relations = upstream.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "ORDER BY relname"
    )
    tables = [r[0] for r in relations if r[1] == "r"]
    sums = [
        upstream.execute(f"SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {t} t")[0]
        for t in tables
    ]
    return relations + sums


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the rehearsal's temporary warehouse goes, so a test can see it is removed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.anyio
async def test_a_clean_table_rehearsed_then_created_syncs_the_same_rows(
    upstream: Upstream, sandbox: tuple[Starlette, httpx.AsyncClient], scratch: Path
) -> None:
    upstream.execute(ORDERS)
    before = source_state(upstream)
    seen: list[tuple[float, float | None, str]] = []
    table = {
        "name": "orders",
        "should_sync": True,
        "sync_type": "incremental",
        "incremental_field": "updated_at",
        "sync_frequency": "24hour",
    }
    answer = await anyio.to_thread.run_sync(
        lambda: rehearse(
            "Postgres",
            upstream.creds.job_inputs(),
            [table],
            limits=Limits(rows=1000),
            progress=lambda *a: seen.append(a),
        )
    )
    orders = by_name(answer, "orders")
    assert orders["problems"] == []
    assert orders["warehouse_table"] == "postgres_orders"
    assert orders["local_sync"]["status"] == "completed"
    assert orders["local_sync"]["whole_table"] is True
    assert orders["rows"] == {
        "count": 300,
        "exact": True,
        "basis": "count(*) over the local copy of the whole table (read in one snapshot by the "
        "sync)",
    }
    proven = "proven: the table's primary key constraint"
    assert check(orders, "primary_key_unique")["how"] == proven
    # Every row's cursor is within 300 hours: about 168 of them in the last week.
    recent = check(orders, "recent_changes")["rows"]
    assert 160 <= recent <= 170
    # The tools estimate the bill from what the rehearsal measured (tools/billing.py).
    billing.rehearsed(orders)
    monthly = orders["estimates"]["monthly"]
    assert monthly["billed_rows_estimate"] == round(recent * 30 / 7)
    assert monthly["sync_frequency"] == "24hour" and monthly["syncs_per_month"] == 30
    assert orders["estimates"]["first_sync"]["rows"] == 300
    assert orders["estimates"]["first_sync"]["billed_rows"] == 0
    # The obvious fixes: the field's type and the detected key.
    ready = answer["schemas"]
    assert ready == [
        {**table, "incremental_field_type": "timestamp", "primary_key_columns": ["id"]}
    ]
    assert answer["cloud"]["problems"][0].startswith("127.0.0.1: This host points to an internal")
    assert answer["left_behind"].startswith("nothing")
    assert not any(True for _ in scratch.iterdir())  # noqa: ASYNC240  # a local folder, at once
    assert upstream.creds.password not in json.dumps(answer)
    assert source_state(upstream) == before
    assert seen[-1][0] == seen[-1][1]
    assert all(done <= (total or 0) for done, total, _ in seen)

    _, client = sandbox
    source = await create_source(client, upstream, ready)
    await wait_for_jobs(client, source["id"], 1)
    app, _ = sandbox
    name = schema_by_name(source, "orders")
    assert name["sync_type"] == "incremental"
    assert warehouse_rows(app, "SELECT count(*) FROM postgres_orders") == [(300,)]


@pytest.mark.parametrize("rows", [1000, 3], ids=["checked-locally", "checked-at-the-source"])
def test_tables_built_to_fail_are_reported_with_their_fixes(
    upstream: Upstream, scratch: Path, rows: int
) -> None:
    upstream.execute(BROKEN)
    before = source_state(upstream)
    answer = rehearse("Postgres", upstream.creds.job_inputs(), TO_FAIL, limits=Limits(rows=rows))
    where = "local copy" if rows == 1000 else "at the source"

    dupes = by_name(answer, "dupes")
    unique = check(dupes, "primary_key_unique")
    assert (unique["duplicate_keys"], unique["duplicate_rows"]) == (10, 10)
    # Merged on the key, as the incremental sync would: one row a key.
    assert dupes["local_sync"]["rows_in_table"] == (40 if rows == 1000 else 3)
    assert unique["example_key"][0] in range(1, 11)
    assert where in unique["how"]
    found = problems(dupes)["duplicate_primary_key"]
    assert "The primary keys for this table are not unique" in found["message"]
    assert any("full_refresh" in f for f in found["fixes"])

    stamps = problems(by_name(answer, "stamps"))
    assert "3 rows of stamps have no updated_at" in stamps["null_cursor"]["message"]
    assert "2 rows of stamps have updated_at after now" in stamps["cursor_in_future"]["message"]

    feed = by_name(answer, "feed")
    assert check(feed, "cursor_insert_order")["rows"] == 1
    assert "(e.g. 150)" in problems(feed)["cursor_out_of_order"]["message"]

    logs = problems(by_name(answer, "logs"))["no_primary_key"]
    assert "Primary key required for incremental syncs" in logs["message"]
    assert any("append" in f for f in logs["fixes"])

    prices = by_name(answer, "prices")
    if rows == 1000:
        converted = check(prices, "values_convert")
        assert converted["columns"] == [
            {
                "column": "amount",
                "type": "numeric(10,2)",
                "loaded_as": "DECIMAL(10,2)",
                "example": "NaN",
                "rows": 2,
            }
        ]
        assert "values_do_not_convert" in problems(prices)
        assert prices["local_sync"]["status"] == "failed"
        assert prices["local_sync"]["rows_loaded"] == 2
    # Given as they were, but for what is obvious and safe.
    assert answer["schemas"][0] == TO_FAIL[0]
    assert answer["schemas"][1]["primary_key_columns"] == ["id"]
    assert list(scratch.iterdir()) == []
    assert source_state(upstream) == before


def test_a_table_loaded_in_parts_and_checked_in_shares_answers_as_in_one(
    upstream: Upstream, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2,000 rows, one value that does not convert far past the first part; and the tables
    # built to fail.
    upstream.execute(
        BROKEN + ";CREATE TABLE ledger (id int PRIMARY KEY, amount numeric(10,2), note text);"
        "INSERT INTO ledger SELECT g, CASE WHEN g = 1700 THEN 'NaN' ELSE g / 4.0 END, "
        "repeat('x', g % 50) FROM generate_series(1, 2000) g"
    )
    tables = [*TO_FAIL, {"name": "ledger", "should_sync": True, "sync_type": "full_refresh"}]

    def rehearsed() -> dict[str, Any]:
        answer = rehearse("Postgres", upstream.creds.job_inputs(), tables, limits=Limits(rows=5000))
        for table in answer["tables"]:
            for timing in ("seconds", "read_seconds", "rows_per_second"):
                table["local_sync"].pop(timing)
            table.pop("estimates")
            for found in table["checks"]:
                found.pop("now", None)
        return {t["name"]: t for t in answer["tables"]}

    whole = rehearsed()
    # Parts of about 2 KB (ledger: 25 of them) and the keys in shares of at most 7.
    monkeypatch.setattr(base, "PART_BYTES", 2048)
    monkeypatch.setattr(rehearsal, "KEYS_PER_PASS", 7)
    parts = rehearsed()
    assert parts == whole
    ledger = whole["ledger"]
    assert ledger["local_sync"]["status"] == "failed"
    assert ledger["local_sync"]["rows_loaded"] == 1999
    # Numbered from the table's first line, not from its part's.
    assert int(ledger["local_sync"]["error"].rsplit("Line: ", 1)[1]) > 1600
    assert check(ledger, "values_convert")["columns"][0]["example"] == "NaN"
    assert check(whole["dupes"], "primary_key_unique")["duplicate_rows"] == 10
    assert list(scratch.iterdir()) == []


def test_checks_past_their_statement_timeout_are_cut_short(
    upstream: Upstream, scratch: Path
) -> None:
    upstream.execute(
        "CREATE VIEW slow AS SELECT g AS id, now() AS updated_at FROM generate_series(1, 40) g "
        "WHERE pg_sleep(0.05) IS NOT NULL"
    )
    table = {"name": "slow", "should_sync": True, "primary_key_columns": ["id"]}
    answer = rehearse(
        "Postgres",
        upstream.creds.job_inputs(),
        [table],
        limits=Limits(rows=2, check_seconds=0.2),
    )
    slow = by_name(answer, "slow")
    assert slow["local_sync"]["rows_loaded"] == 2
    for name in ("row_count", "primary_key_unique"):
        found = check(slow, name)
        assert found["result"] == "cut_short"
        assert found["why"] == "cut short by the 0.2s statement timeout"
    assert slow["rows"]["count"] is None
    assert slow["rows"]["exact"] is False
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_the_time_limit_stops_the_sync_and_keeps_what_was_read(
    upstream: Upstream, scratch: Path
) -> None:
    upstream.execute(
        "CREATE VIEW slow AS SELECT g AS id FROM generate_series(1, 400) g "
        "WHERE pg_sleep(0.01) IS NOT NULL"
    )
    answer = rehearse(
        "Postgres",
        upstream.creds.job_inputs(),
        [{"name": "slow", "should_sync": True}],
        limits=Limits(rows=10_000, seconds=1),
    )
    slow = by_name(answer, "slow")
    assert answer["stopped"] == "time limit"
    assert slow["local_sync"]["status"] == "cut_short"
    assert 0 < slow["local_sync"]["rows_loaded"] < 400
    assert check(slow, "row_count")["why"] == "not run: the rehearsal's time limit came first"
    assert list(scratch.iterdir()) == []


def test_a_cancel_stops_the_rehearsal_and_removes_its_warehouse(
    upstream: Upstream, scratch: Path
) -> None:
    upstream.execute(ORDERS)
    cancelled = threading.Event()

    def progress(done: float, total: float | None, message: str) -> None:
        if message.startswith("Syncing"):
            cancelled.set()

    with pytest.raises(RehearsalCancelled):
        rehearse(
            "Postgres",
            upstream.creds.job_inputs(),
            [{"name": "orders", "should_sync": True}],
            progress=progress,
            cancelled=cancelled,
        )
    assert list(scratch.iterdir()) == []


def test_a_blank_schema_names_tables_schema_dot_table_as_posthog_does(
    upstream: Upstream, scratch: Path
) -> None:
    upstream.execute(ORDERS)
    inputs = {**upstream.creds.job_inputs(), "schema": ""}
    answer = rehearse("Postgres", inputs, [{"name": "orders"}], prefix="crm_")
    orders = by_name(answer, "public.orders")
    assert orders["warehouse_table"] == "crm_postgres_public__orders"
    assert answer["schemas"][0]["name"] == "public.orders"
    assert answer["schemas"][0]["should_sync"] is True
    assert table_name("App_", "Postgres", "Orders") == "app_postgres_orders"
    assert table_name(None, "GitHub", "owner/repo.issues") == "github_owner_repo__issues"


@pytest.mark.parametrize(
    ("source_type", "tables", "inputs", "limits", "says"),
    [
        ("Stripe", [{"name": "x"}], {}, Limits(), "Rehearsal is not available for Stripe"),
        ("Nope", [{"name": "x"}], {}, Limits(), "Unknown source_type 'Nope'"),
        ("Postgres", [{"name": "x"}], {}, Limits(rows=0), "limits.rows must be a number"),
        ("Postgres", [{"name": "x"}], {}, Limits(seconds=7200), "limits.seconds"),
        ("Postgres", [], {}, Limits(), "List the tables to rehearse"),
        ("Postgres", [{"name": "ordrs"}], {}, Limits(), "Close names: orders"),
        (
            "Postgres",
            [{"name": "orders", "sync_type": "incremental", "incremental_field": "nope"}],
            {},
            Limits(),
            "has no column 'nope' for incremental_field. Candidates: id, updated_at",
        ),
        (
            "Postgres",
            [{"name": "orders", "sync_type": "append", "incremental_field": "status"}],
            {},
            Limits(),
            "a cursor must be an integer, date or timestamp column",
        ),
        (
            "Postgres",
            [{"name": "orders", "primary_key_columns": ["nope"]}],
            {},
            Limits(),
            "has no column 'nope' for primary_key_columns",
        ),
        ("Postgres", [{"name": "orders", "sync_type": "cdc"}], {}, Limits(), "'cdc' cannot"),
        (
            "Postgres",
            [{"name": "orders"}],
            {"password": "wrong-secret-value"},
            Limits(),
            "Could not connect to the source: Invalid user or password",
        ),
        ("Postgres", [{"name": "orders"}], {"schema": "nope"}, Limits(), "Schema nope does not"),
    ],
)
def test_bad_input_is_a_rehearsal_error_that_says_what_to_fix(
    upstream: Upstream,
    scratch: Path,
    source_type: str,
    tables: list[dict[str, Any]],
    inputs: dict[str, Any],
    limits: Limits,
    says: str,
) -> None:
    upstream.execute(ORDERS)
    job_inputs = {**upstream.creds.job_inputs(), **inputs}
    with pytest.raises(RehearsalError) as raised:
        rehearse(source_type, job_inputs, tables, limits=limits)
    assert says in str(raised.value)
    assert str(job_inputs["password"]) not in str(raised.value)
    assert list(scratch.iterdir()) == []


MYSQL_TABLES = (
    "SET SESSION sql_mode = ''",
    "CREATE TABLE orders (id bigint PRIMARY KEY, amount decimal(10,2), "
    "updated_at datetime(6) NOT NULL)",
    "INSERT INTO orders WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
    "WHERE n < 50) SELECT n, n * 1.5, UTC_TIMESTAMP() - INTERVAL n HOUR FROM g",
    "CREATE TABLE visits (id int, at datetime)",
    "INSERT INTO visits VALUES (1, '2025-01-01'), (1, '2025-01-02'), (2, '0000-00-00 00:00:00')",
)


def test_mysql_tables_are_rehearsed_and_their_problems_reported(
    mysql_upstream: MySQLUpstream, scratch: Path
) -> None:
    mysql_upstream.execute(*MYSQL_TABLES)
    inputs = {k: v for k, v in mysql_upstream.payload([]).items() if k != "schemas"}
    tables = [
        {
            "name": "orders",
            "should_sync": True,
            "sync_type": "incremental",
            "incremental_field": "updated_at",
            "incremental_field_type": "timestamp",
        },
        {
            "name": "visits",
            "should_sync": True,
            "sync_type": "incremental",
            "incremental_field": "at",
            "incremental_field_type": "timestamp",
            "primary_key_columns": ["id"],
        },
    ]
    for rows in (1000, 1):
        answer = rehearse("MySQL", inputs, tables, prefix="my_", limits=Limits(rows=rows))
        orders = by_name(answer, "orders")
        assert orders["warehouse_table"] == "my_mysql_orders"
        assert orders["problems"] == []
        assert orders["rows"]["count"] == 50
        visits = by_name(answer, "visits")
        unique = check(visits, "primary_key_unique")
        assert (unique["duplicate_keys"], unique["example_key"]) == (1, [1]), rows
        assert "duplicate_primary_key" in problems(visits)
    # The whole table synced locally: the zero date did not convert.
    answer = rehearse("MySQL", inputs, tables, limits=Limits(rows=1000))
    converted = check(by_name(answer, "visits"), "values_convert")
    assert converted["columns"][0]["column"] == "at"
    assert converted["columns"][0]["example"] == "0000-00-00 00:00:00"
    assert mysql_upstream.password not in json.dumps(answer)
    assert list(scratch.iterdir()) == []
