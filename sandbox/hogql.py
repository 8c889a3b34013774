"""HogQL in, DuckDB out: one read-only SELECT over the warehouse's own tables.

sqlglot parses the query with its ClickHouse dialect (HogQL is ClickHouse-flavoured SQL) and
writes it back in DuckDB's. Before that the tree is checked: exactly one SELECT (or UNION of
them), whose every table is a warehouse table or a CTE of the query; table functions
(`read_csv`, `query`, `file`...) are refused, whatever they are called. Table names resolve
the ways PostHog users write them, and an unknown one is answered with the close names.

This is the first of three locks: DuckDB itself refuses file access outside its own folders
(`warehouse.py`), and the query runs in a read-only transaction (`queries.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlglot import exp


class QueryError(ValueError):
    """A query the sandbox will not run, with the reason for the person who wrote it."""


@dataclass(frozen=True)
class Compiled:
    """A HogQL query as DuckDB runs it: the SQL (asking one row more than `limit`), the row
    limit applied, and whether the query had a LIMIT of its own (PostHog pages only those
    without one)."""

    sql: str
    limit: int
    own_limit: bool


# HogQL functions sqlglot leaves as they are, and what they are in DuckDB.
_CASTS = {
    "todate": "DATE",
    "todatetime": "TIMESTAMPTZ",
    "tostring": "VARCHAR",
    "toint": "BIGINT",
    "tofloat": "DOUBLE",
    "touuid": "UUID",
}


def compile_query(
    hogql: str, tables: Mapping[str, str], *, default_limit: int, max_limit: int
) -> Compiled:
    """The DuckDB SQL for a HogQL query, and the row limit applied to it.

    `tables` maps every accepted name (lower case) to its DuckDB table. Without a LIMIT the
    query gets `default_limit`; a larger LIMIT is lowered to `max_limit`. The SQL asks for one
    row more than the limit, so the caller can tell whether there were more.

    Raises:
        QueryError: not one SELECT, a table function, an unknown table, or a syntax error.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = [s for s in sqlglot.parse(hogql, read="clickhouse") if s is not None]
    except (ParseError, TokenError) as exc:
        raise QueryError(f"Syntax error: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError("Only one statement is allowed per query.")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = type(tree).__name__.upper()
        raise QueryError(f"Only SELECT queries are allowed, not {kind}.")
    if isinstance(tree, exp.Select):
        # Columns are named as the query wrote them (`count()`), as in PostHog's answer.
        tree.set(
            "expressions",
            [
                e
                if isinstance(e, exp.Alias | exp.Star | exp.Column)
                else e.as_(e.sql("clickhouse"))
                for e in tree.expressions
            ],
        )
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        _resolve(table, tables, ctes)
    for call in list(tree.find_all(exp.Anonymous)):
        cast = _CASTS.get(str(call.this).lower())
        if cast is not None and len(call.expressions) == 1:
            call.replace(exp.cast(call.expressions[0], cast))
    own_limit = tree.args.get("limit") is not None
    limit = _limit(tree, default_limit, max_limit)
    wrapped = exp.select("*").from_(tree.subquery("_hogql")).limit(limit + 1)
    return Compiled(wrapped.sql(dialect="duckdb"), limit, own_limit)


def _resolve(table: exp.Table, tables: Mapping[str, str], ctes: set[str]) -> None:
    from sqlglot import exp

    if not isinstance(table.this, exp.Identifier):
        raise QueryError(
            f"Table functions are not allowed ({table.this.sql(dialect='clickhouse')}): query "
            "the warehouse's tables by name."
        )
    name = ".".join(part.name for part in table.parts).lower()
    if name in ctes and not table.args.get("db"):
        return
    target = tables.get(name)
    if target is None:
        close = difflib.get_close_matches(name, sorted(tables), n=3, cutoff=0.7)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise QueryError(f"Unknown table `{name}`.{hint}")
    # A dotted name is referred to by its last part (`orders.id`), as in HogQL.
    alias = table.alias or (table.name if table.args.get("db") else None)
    replacement = exp.to_table(f'"{target}"', dialect="duckdb")
    table.replace(replacement.as_(alias) if alias else replacement)


def _limit(tree: exp.Query, default_limit: int, max_limit: int) -> int:
    from sqlglot import exp

    given = tree.args.get("limit")
    if given is None:
        return default_limit
    value = given.expression if isinstance(given, exp.Limit) else None
    if isinstance(value, exp.Literal) and value.is_int:
        return min(int(value.this), max_limit)
    raise QueryError("LIMIT must be a whole number.")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
