"""HogQL in, DuckDB out: one read-only SELECT over the warehouse's own tables.

sqlglot parses the query with its ClickHouse dialect (HogQL is ClickHouse-flavoured SQL) and
writes it back in DuckDB's. Before that the tree is checked: exactly one SELECT (or UNION of
them), whose every table is a warehouse table or a CTE of the query; table functions
(`read_csv`, `query`, `file`...) are refused, whatever they are called. Table names resolve
the ways PostHog users write them. An unknown one is answered as PostHog answers it ("Unknown
table `x`."), then with the close names and the source each comes from, or, for the name of a
table that holds no data now, with why.

Whether a name is a CTE is decided scope by scope (sqlglot's `optimizer.scope`), and the
decision is then made binding: every CTE gets a name no table has (`__cte0_x`), and every
reference sqlglot found to be that CTE is renamed with it, while every other reference becomes
its warehouse table, schema-qualified (`main."postgres_orders"`). Where DuckDB's scoping differs
from sqlglot's (the anchor of a recursive CTE does not see the CTE), DuckDB finds no such
table and refuses: a disagreement is an error, never a read of an unlisted table.

This is the first of three locks: DuckDB itself refuses file access outside its own folders
(`warehouse.py`, `query_worker.py`), and the query runs in a read-only transaction on copies
of the published tables only (`query_worker.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlglot import exp


class QueryError(ValueError):
    """A query the sandbox will not run, with the reason for the person who wrote it."""


# Python's recursion limit meets a query of brackets or operators nested some hundreds deep
# (sqlglot parses and writes recursively); DuckDB refuses them too (`max_expression_depth`).
NESTED_TOO_DEEPLY = (
    "The query is nested too deeply for the sandbox to read (brackets, operators or subqueries "
    "inside one another, some hundreds deep). Write it flatter, for example with a CTE."
)


@dataclass(frozen=True)
class Compiled:
    """A HogQL query as DuckDB runs it: the SQL (asking one row more than `limit`), the row
    limit applied, and whether the query had a LIMIT of its own (PostHog pages only those
    without one), and the warehouse tables it reads."""

    sql: str
    limit: int
    own_limit: bool
    # The DuckDB tables the query reads (the values of `tables` it used).
    tables: frozenset[str] = frozenset()


# HogQL functions sqlglot leaves as they are, and what they are in DuckDB.
_CASTS = {
    "todate": "DATE",
    "todatetime": "TIMESTAMPTZ",
    "tostring": "VARCHAR",
    "toint": "BIGINT",
    "tofloat": "DOUBLE",
    "touuid": "UUID",
}


@dataclass(frozen=True)
class Catalog:
    """The names a query may use, and what an unknown name's error says.

    `tables` maps every accepted name (lower case) to its DuckDB table; `owners` names, for a
    DuckDB table, where it comes from (`source 0190...`), so that close names of different
    sources can be told apart; `empty` explains names that belong to a table holding no data
    now (never synced, or its data deleted): such a name gets that explanation, not other
    tables' names.
    """

    tables: Mapping[str, str]
    owners: Mapping[str, str] = field(default_factory=dict)
    empty: Mapping[str, str] = field(default_factory=dict)

    def unknown(self, name: str) -> str:
        """The error for a name no table has: why, or the close names with their sources."""
        if name in self.empty:
            return f"Unknown table `{name}`. {self.empty[name]}"
        close = difflib.get_close_matches(name, sorted(self.tables), n=6, cutoff=0.7)
        by_table: dict[str, list[str]] = {}
        for candidate in close:
            by_table.setdefault(self.tables[candidate], []).append(candidate)
        shown = [
            " or ".join(names[:2]) + (f" ({self.owners[table]})" if table in self.owners else "")
            for table, names in list(by_table.items())[:3]
        ]
        hint = f" Did you mean: {', '.join(shown)}?" if shown else ""
        return f"Unknown table `{name}`.{hint}"


def compile_query(
    hogql: str,
    tables: Mapping[str, str] | Catalog,
    *,
    default_limit: int,
    max_limit: int,
) -> Compiled:
    """The DuckDB SQL for a HogQL query, and the row limit applied to it.

    `tables` maps every accepted name (lower case) to its DuckDB table, or is a `Catalog` that
    also says what an unknown name's error tells. Without a LIMIT the query gets
    `default_limit`; a larger LIMIT is lowered to `max_limit`. The SQL asks for one row more
    than the limit, so the caller can tell whether there were more.

    Raises:
        QueryError: not one SELECT, a table function, an unknown table, a syntax error, or
            nesting too deep to read.
    """
    catalog = tables if isinstance(tables, Catalog) else Catalog(tables)
    try:
        return _compile(hogql, catalog, default_limit, max_limit)
    except RecursionError:
        raise QueryError(NESTED_TOO_DEEPLY) from None


def _compile(hogql: str, catalog: Catalog, default_limit: int, max_limit: int) -> Compiled:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, SqlglotError, TokenError

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
    used = _resolve_tables(tree, catalog)
    for call in list(tree.find_all(exp.Anonymous)):
        cast = _CASTS.get(str(call.this).lower())
        if cast is not None and len(call.expressions) == 1:
            call.replace(exp.cast(call.expressions[0], cast))
    own_limit = tree.args.get("limit") is not None
    limit = _limit(tree, default_limit, max_limit)
    wrapped = exp.select("*").from_(tree.subquery("_hogql")).limit(limit + 1)
    try:
        sql = wrapped.sql(dialect="duckdb")
    except (ValueError, SqlglotError) as exc:  # a construct sqlglot cannot write for DuckDB
        raise QueryError(f"The sandbox cannot run this query: {_first_line(exc)}") from None
    return Compiled(sql, limit, own_limit, frozenset(used))


def _resolve_tables(tree: exp.Query, catalog: Catalog) -> set[str]:
    """Make every table of `tree` either one of its CTEs, renamed, or a warehouse table; return
    the warehouse tables used.

    Raises:
        QueryError: a table function, an unknown table, or a table where no scope lists it.
    """
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.scope import Scope, traverse_scope

    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryError(
                f"Table functions are not allowed ({table.this.sql(dialect='clickhouse')}): "
                "query the warehouse's tables by name."
            )
    ctes = list(tree.find_all(exp.CTE))
    if not ctes:  # no name can be a CTE: every table is the warehouse's (no scopes to build)
        return {_to_warehouse(table, catalog) for table in list(tree.find_all(exp.Table))}
    # DuckDB matches names whatever their case, quoted or not: so must the scopes.
    for cte in ctes:
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
            alias.set("this", exp.to_identifier(alias.this.name.lower(), quoted=True))
    for table in tree.find_all(exp.Table):
        if not table.args.get("db"):
            table.set("this", exp.to_identifier(table.name.lower(), quoted=True))
    # A name no table has, nor any view or function of DuckDB's catalog (none starts with `__`;
    # warehouse tables start with a letter).
    renamed = {id(cte): f"__cte{i}_{cte.alias}" for i, cte in enumerate(ctes)}

    used: set[str] = set()
    checked: set[int] = set()
    try:
        scopes = traverse_scope(tree)
    except SqlglotError as exc:
        raise QueryError(f"The sandbox cannot read this query: {_first_line(exc)}") from None
    for scope in scopes:
        for table in scope.tables:
            if id(table) in checked:
                continue
            checked.add(id(table))
            source = None if table.args.get("db") else scope.cte_sources.get(table.name)
            owner = _cte_of(source.expression) if isinstance(source, Scope) else None
            if owner is not None and id(owner) in renamed:
                alias = table.args.get("alias") or exp.TableAlias(
                    this=exp.to_identifier(table.name, quoted=True)
                )
                table.set("this", exp.to_identifier(renamed[id(owner)], quoted=True))
                table.set("alias", alias)
            else:
                used.add(_to_warehouse(table, catalog))
    for table in tree.find_all(exp.Table):
        if id(table) not in checked:
            raise QueryError(
                f"The sandbox cannot check the table `{table.sql(dialect='clickhouse')}` where "
                "this query names it; name tables in FROM and JOIN clauses."
            )
    for cte in ctes:
        alias = cte.args["alias"]
        alias.set("this", exp.to_identifier(renamed[id(cte)], quoted=True))
    return used


def _cte_of(node: exp.Expr | None) -> exp.CTE | None:
    """The CTE whose body `node` is (or is the first branch of, for a recursive CTE)."""
    from sqlglot import exp

    while node is not None and not isinstance(node, exp.CTE):
        node = node.parent
    return node


def _to_warehouse(table: exp.Table, catalog: Catalog) -> str:
    """Point `table` at its warehouse table, qualified so that no CTE can stand for it; return
    that table.

    Raises:
        QueryError: not a table of the warehouse, answered with the close names.
    """
    from sqlglot import exp

    name = ".".join(part.name for part in table.parts).lower()
    target = catalog.tables.get(name)
    if target is None:
        raise QueryError(catalog.unknown(name))
    if not table.alias and table.args.get("db"):
        # A dotted name is referred to by its last part (`orders.id`), as in HogQL.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("this", exp.to_identifier(target, quoted=True))
    table.set("db", exp.to_identifier("main"))
    table.set("catalog", None)
    return target


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
