"""The table allow-list holds in every scope a query can build: a CTE hides a table only where
DuckDB itself would resolve the name to that CTE, so no CTE, however placed or named, lets a
query reach a table the warehouse does not list (the sandbox's own tables, DuckDB's catalog)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import duckdb
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox.hogql import QueryError, compile_query
from tests.sandbox.support import API

# The value only the table `secret` holds: it must never come back.
SECRET = 42424242
TABLES = {"orders": "orders", "postgres.orders": "orders"}


@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB holding a listed table (`orders`) and an unlisted one (`secret`)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE orders AS SELECT range AS id, range AS s FROM range(1, 4)")
    con.execute(f"CREATE TABLE secret AS SELECT {SECRET} AS s, {SECRET} AS a, {SECRET} AS id")
    yield con
    con.close()


def run(con: duckdb.DuckDBPyConnection, hogql: str) -> list[tuple[object, ...]]:
    """Compile `hogql` as the sandbox does and run it on `con`."""
    sql = compile_query(hogql, TABLES, default_limit=100, max_limit=1000).sql
    return con.execute(sql).fetchall()


BYPASSES = [
    # The attack run's S55: a same-named CTE inside a subquery of WHERE.
    "SELECT * FROM secret WHERE 1 IN (WITH secret AS (SELECT 1 AS a) SELECT a FROM secret)",
    # S58: a sibling FROM subquery declares it.
    "SELECT * FROM (WITH secret AS (SELECT 1 AS a) SELECT * FROM secret) t, secret",
    "SELECT * FROM secret, (WITH secret AS (SELECT 1 AS a) SELECT * FROM secret) t",
    # Nested WITH: declared inside another CTE's body.
    "WITH x AS (WITH secret AS (SELECT 1 AS a) SELECT * FROM secret) SELECT * FROM x, secret",
    # Sibling CTE scopes: declared inside CTE a, used by CTE b.
    "WITH a AS (WITH secret AS (SELECT 1 AS s) SELECT * FROM secret), "
    "b AS (SELECT * FROM secret) SELECT * FROM b",
    # LATERAL
    "SELECT * FROM secret, LATERAL (WITH secret AS (SELECT 1 AS a) SELECT a FROM secret) l",
    "SELECT * FROM orders o, LATERAL (SELECT s FROM secret WHERE 1 IN "
    "(WITH secret AS (SELECT 1 AS x) SELECT x FROM secret)) l",
    # Set operations: the CTE belongs to one branch only.
    "SELECT s FROM secret UNION ALL (WITH secret AS (SELECT 1 AS s) SELECT s FROM secret)",
    "(WITH secret AS (SELECT 1 AS s) SELECT s FROM secret) UNION ALL SELECT s FROM secret",
    f"(WITH secret AS (SELECT {SECRET} AS s) SELECT s FROM secret) INTERSECT SELECT s FROM secret",
    "SELECT s FROM secret EXCEPT (WITH secret AS (SELECT 1 AS s) SELECT s FROM secret)",
    # Recursive CTE: its anchor (left of UNION) does not see the CTE, so DuckDB reads the table.
    "WITH RECURSIVE secret AS (SELECT s FROM secret UNION ALL SELECT 1) SELECT * FROM secret",
    # Without UNION, WITH RECURSIVE is not recursive: the body names the table.
    "WITH RECURSIVE secret AS (SELECT * FROM secret) SELECT * FROM secret",
    # A CTE never sees itself without RECURSIVE, nor a CTE declared after it.
    "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
    "WITH a AS (SELECT * FROM secret), secret AS (SELECT 1 AS s) SELECT * FROM a",
    "WITH RECURSIVE a AS (SELECT * FROM secret), secret AS (SELECT 1 AS s) SELECT * FROM a",
    # Scalar subqueries side by side.
    "SELECT (SELECT max(s) FROM secret), (WITH secret AS (SELECT 1 AS s) SELECT s FROM secret)",
    "SELECT * FROM orders o WHERE EXISTS (WITH secret AS (SELECT 1 AS a) SELECT * FROM secret) "
    "AND o.id IN (SELECT id FROM secret)",
    "SELECT * FROM orders JOIN secret ON orders.id <> secret.id "
    "WHERE 1 IN (WITH secret AS (SELECT 1 AS a) SELECT a FROM secret)",
    # Quoted and case variants: DuckDB resolves names without regard to case.
    'SELECT * FROM "SECRET" WHERE 1 IN (WITH secret AS (SELECT 1 AS a) SELECT a FROM secret)',
    'SELECT * FROM Secret WHERE 1 IN (WITH "SECRET" AS (SELECT 1 AS a) SELECT a FROM "SECRET")',
    "SELECT * FROM secret WHERE 1 IN (WITH SeCrEt AS (SELECT 1 AS a) SELECT a FROM sEcReT)",
    # A CTE named like a listed table does not open the unlisted one.
    "WITH orders AS (SELECT * FROM secret) SELECT * FROM orders",
    "WITH orders AS (SELECT 1 AS id) SELECT * FROM orders, secret",
]


def attempt(con: duckdb.DuckDBPyConnection, hogql: str) -> str | list[tuple[object, ...]]:
    """The sandbox's refusal, DuckDB's error, or the rows."""
    try:
        return run(con, hogql)
    except QueryError as exc:
        return f"refused: {exc}"
    except duckdb.Error as exc:
        return f"DuckDB: {exc}"


@pytest.mark.parametrize("query", BYPASSES)
def test_no_cte_placement_reaches_an_unlisted_table(
    duck: duckdb.DuckDBPyConnection, query: str
) -> None:
    outcome = attempt(duck, query)
    # Refused by the allow-list naming the table; or DuckDB found no CTE of the name where the
    # query used it (the scopes disagreed), and refused: nothing was read either way.
    assert isinstance(outcome, str), f"ran: {outcome}"
    assert outcome.startswith(("refused: Unknown table `secret`", "DuckDB: ")), outcome
    assert str(SECRET) not in outcome


class RandomQuery:
    """A query of CTEs, subqueries, LATERAL joins and set operations nested at random, whose
    every table and CTE is named `secret`, `orders` or `x`, in any case, quoted or not."""

    NAMES = ("secret", "orders", "x", "Secret", '"SECRET"')

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def name(self) -> str:
        return self.rng.choice(self.NAMES)

    def source(self, depth: int) -> str:
        roll = self.rng.random()
        if depth > 3 or roll < 0.5:
            return self.name()
        if roll < 0.75:
            return f"({self.query(depth + 1)}) AS t{depth}"
        return f"LATERAL ({self.query(depth + 1)}) AS l{depth}"

    def select(self, depth: int) -> str:
        text = f"SELECT s FROM {self.source(depth)}"
        if self.rng.random() < 0.3:
            text += f", {self.source(depth)}"
        if self.rng.random() < 0.3 and depth < 4:
            text += f" WHERE s IN ({self.query(depth + 1)})"
        return text

    def body(self, depth: int) -> str:
        roll = self.rng.random()
        if roll < 0.3 and depth < 4:
            operator = self.rng.choice(["UNION ALL", "INTERSECT", "EXCEPT"])
            return f"({self.query(depth + 1)}) {operator} ({self.query(depth + 1)})"
        return self.select(depth)

    def cte(self, depth: int, recursive: bool) -> str:
        if recursive and self.rng.random() < 0.5:
            return (
                f"{self.name()} AS (SELECT s FROM {self.name()} UNION ALL "
                f"SELECT s + 1 FROM {self.name()} WHERE s < 3)"
            )
        if self.rng.random() < 0.6:
            return f"{self.name()} AS ({self.body(depth + 1)})"
        return f"{self.name()} AS (SELECT 1 AS s)"

    def query(self, depth: int = 0) -> str:
        if self.rng.random() < 0.5 and depth < 4:
            recursive = self.rng.random() < 0.3
            ctes = ", ".join(self.cte(depth, recursive) for _ in range(self.rng.randint(1, 2)))
            return f"WITH {'RECURSIVE ' if recursive else ''}{ctes} {self.body(depth)}"
        return self.body(depth)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_no_random_nesting_of_scopes_reaches_an_unlisted_table(
    duck: duckdb.DuckDBPyConnection, seed: int
) -> None:
    """About one in ten of these queries reads `secret` when DuckDB runs it as written."""
    query = RandomQuery(random.Random(seed)).query()
    outcome = attempt(duck, query)
    assert isinstance(outcome, str) or all(SECRET not in row for row in outcome), query


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("WITH a AS (SELECT id FROM orders) SELECT count() FROM a", [(3,)]),
        ("WITH a AS (SELECT id FROM orders), b AS (SELECT * FROM a) SELECT count() FROM b", [(3,)]),
        (
            "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
            "SELECT sum(n) FROM r",
            [(15,)],
        ),
        ("SELECT (WITH a AS (SELECT count() AS c FROM orders) SELECT c FROM a) AS c", [(3,)]),
        (
            "WITH a AS (SELECT id FROM orders WHERE id > 1) "
            "SELECT count() FROM orders WHERE id IN (SELECT id FROM a)",
            [(2,)],
        ),
        ("WITH a AS (SELECT 1 AS x) SELECT x FROM a UNION ALL SELECT x FROM a", [(1,), (1,)]),
        ("WITH a AS (SELECT id FROM orders) SELECT a.id FROM a ORDER BY a.id LIMIT 1", [(1,)]),
        ("WITH A AS (SELECT 1 AS x) SELECT x FROM a", [(1,)]),
        ('WITH "Mixed" AS (SELECT 2 AS x) SELECT x FROM mixed', [(2,)]),
        ("WITH orders AS (SELECT 7 AS id) SELECT id FROM orders", [(7,)]),
        # A dotted name is always the warehouse table, even under a CTE of its short name.
        ("WITH orders AS (SELECT 7 AS id) SELECT count() FROM postgres.orders", [(3,)]),
        (
            "SELECT o.id FROM orders o, LATERAL (SELECT o.id * 2 AS d) l WHERE l.d = 4",
            [(2,)],
        ),
        (
            "WITH a AS (SELECT id FROM orders) SELECT id FROM a INTERSECT SELECT id FROM orders "
            "ORDER BY id",
            [(1,), (2,), (3,)],
        ),
    ],
)
def test_ctes_still_work_where_they_are_visible(
    duck: duckdb.DuckDBPyConnection, query: str, expected: list[tuple[object, ...]]
) -> None:
    assert run(duck, query) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("table", "query"),
    [
        (
            "duckdb_tables",
            "SELECT table_name, estimated_size FROM duckdb_tables WHERE 1 IN "
            "(WITH duckdb_tables AS (SELECT 1 AS a) SELECT a FROM duckdb_tables)",
        ),
        (
            "_sandbox_sync_state",
            "SELECT * FROM _sandbox_sync_state WHERE 1 IN "
            "(WITH _sandbox_sync_state AS (SELECT 1 AS a) SELECT a FROM _sandbox_sync_state)",
        ),
        (
            "pg_settings",
            "SELECT name, setting FROM pg_settings WHERE name IN ('enable_external_access',"
            "'allowed_directories','memory_limit','lock_configuration') AND 1 IN "
            "(WITH pg_settings AS (SELECT 1 AS a) SELECT a FROM pg_settings)",
        ),
        (
            "duckdb_databases",
            "SELECT database_name, path FROM duckdb_databases WHERE 1 IN "
            "(WITH duckdb_databases AS (SELECT 1 AS a) SELECT a FROM duckdb_databases)",
        ),
        (
            "sqlite_master",
            "SELECT * FROM (WITH sqlite_master AS (SELECT 1 AS a) SELECT * FROM sqlite_master) t, "
            "sqlite_master LIMIT 3",
        ),
    ],
)
async def test_the_attack_runs_cte_bypasses_are_refused(
    sandbox: tuple[Starlette, httpx.AsyncClient], table: str, query: str
) -> None:
    """The exact inputs of the attack run's S54 to S58, through the query API."""
    _, client = sandbox
    response = await client.post(
        f"{API}/query/", json={"query": {"kind": "HogQLQuery", "query": query}}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "hogql_query_error"
    assert body["detail"].startswith(f"Unknown table `{table}`"), body["detail"]
