"""PostHog's query API over the DuckDB warehouse: `HogQLQuery` and `DatabaseSchemaQuery`.

A query runs on its own cursor, inside a read-only transaction, one at a time, with a time
limit (DuckDB's `interrupt`) and the row limit `hogql.py` puts in it. DuckDB's transactions
are snapshots: a query never sees a table half published, and never blocks a sync's write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from decimal import Decimal
from typing import Any
from uuid import UUID

from .hogql import QueryError, compile_query
from .store import Schema, Source, Store
from .warehouse import Warehouse

# PostHog's API limits (`LimitContext.QUERY`): rows without a LIMIT, and the most with one.
DEFAULT_ROWS = 100
MAX_ROWS = 50_000
TIME_LIMIT_SECONDS = 10.0  # PostHog's max_execution_time for personal-API-key queries

# DuckDB's type names as ClickHouse's, as PostHog's `types` pairs show them.
_CLICKHOUSE_TYPES = {
    "BOOLEAN": "Bool",
    "TINYINT": "Int8",
    "SMALLINT": "Int16",
    "INTEGER": "Int32",
    "BIGINT": "Int64",
    "HUGEINT": "Int128",
    "UTINYINT": "UInt8",
    "USMALLINT": "UInt16",
    "UINTEGER": "UInt32",
    "UBIGINT": "UInt64",
    "FLOAT": "Float32",
    "DOUBLE": "Float64",
    "VARCHAR": "String",
    "DATE": "Date",
    "TIMESTAMP": "DateTime64(6, 'UTC')",
    "TIMESTAMP WITH TIME ZONE": "DateTime64(6, 'UTC')",
    "UUID": "UUID",
    "BLOB": "String",
}


def hogql_name(source: Source, schema: Schema) -> str:
    """PostHog's `get_data_warehouse_table_name`: `postgres.prefix.orders`, or
    `postgres.orders` without a prefix."""
    source_type = source.source_type.lower()
    prefix = (source.prefix or "").strip("_").lower()
    table = schema.name.replace(".", "__").lower()
    return f"{source_type}.{prefix}.{table}" if prefix else f"{source_type}.{table}"


class Queries:
    """Runs queries against the warehouse's published tables."""

    def __init__(self, store: Store, warehouse: Warehouse) -> None:
        self.store = store
        self.warehouse = warehouse
        self._one_at_a_time = threading.Lock()

    def synced_tables(self) -> list[tuple[Source, Schema]]:
        """Every schema with a published table, and its source."""
        found = []
        with self.store.lock:
            for schema in self.store.live_schemas():
                if schema.table_name:
                    found.append((self.store.sources[schema.source_id], schema))
        return found

    def names(self) -> dict[str, str]:
        """Every name a query may use for a table (its stored name and its dotted HogQL name,
        lower case), to the DuckDB table."""
        names: dict[str, str] = {}
        for source, schema in self.synced_tables():
            assert schema.table_name is not None
            names[schema.table_name.lower()] = schema.table_name
            names[hogql_name(source, schema)] = schema.table_name
        return names

    def run_hogql(self, hogql: str, *, time_limit: float = TIME_LIMIT_SECONDS) -> dict[str, Any]:
        """Run one HogQL SELECT; answer as PostHog's `HogQLQueryResponse`.

        Raises:
            QueryError: refused before running, or DuckDB's own error (a missing column...).
        """
        compiled = compile_query(
            hogql, self.names(), default_limit=DEFAULT_ROWS, max_limit=MAX_ROWS
        )
        columns, types, rows = self._execute(compiled.sql, time_limit)
        more = len(rows) > compiled.limit
        rows = rows[: compiled.limit]
        answer: dict[str, Any] = {
            "query": hogql,
            "hogql": hogql,
            "clickhouse": compiled.sql,
            "columns": columns,
            "types": [[name, kind] for name, kind in zip(columns, types, strict=True)],
            "results": [[_json_value(v) for v in row] for row in rows],
            "timings": [],
            "modifiers": {},
        }
        if not compiled.own_limit:
            answer |= {"hasMore": more, "limit": compiled.limit, "offset": 0}
        return answer

    def _execute(self, sql: str, time_limit: float) -> tuple[list[str], list[str], list[Any]]:
        import duckdb

        with self._one_at_a_time:
            cursor = self.warehouse.cursor()
            timer = threading.Timer(time_limit, cursor.interrupt)
            try:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                timer.start()
                try:
                    result = cursor.execute(sql)
                    rows = result.fetchall()
                except duckdb.InterruptException:
                    raise QueryError(
                        f"The query took longer than {time_limit:g} seconds and was stopped. "
                        "Filter or aggregate more."
                    ) from None
                except duckdb.Error as exc:
                    raise QueryError(_duckdb_message(exc)) from None
                description = result.description or []
                columns = [str(d[0]) for d in description]
                types = [_clickhouse_type(str(d[1])) for d in description]
                return columns, types, rows
            finally:
                timer.cancel()
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
                cursor.close()

    def database_schema(self) -> dict[str, Any]:
        """PostHog's `DatabaseSchemaQueryResponse` for the warehouse tables: keyed by the
        dotted name, with fields, row count, the schema and the source they come from."""
        tables: dict[str, Any] = {}
        for source, schema in self.synced_tables():
            name = hogql_name(source, schema)
            jobs = [j for j in self.store.source_jobs(source.id) if j.status == "Completed"]
            tables[name] = {
                "type": "data_warehouse",
                "id": schema.table_id,
                "name": name,
                "fields": {
                    c["name"]: {
                        "name": c["name"],
                        "hogql_value": c["name"],
                        "type": c.get("type", "string"),
                        "schema_valid": bool(c.get("schema_valid", True)),
                    }
                    for c in schema.table_columns
                },
                "search_aliases": [schema.table_name],
                "format": "DuckDB",
                "url_pattern": "",
                "row_count": schema.row_count,
                "schema": {
                    "id": schema.id,
                    "name": schema.name,
                    "should_sync": schema.should_sync,
                    "incremental": schema.sync_type == "incremental",
                    "status": schema.status,
                    "last_synced_at": str(schema.last_synced_at),
                },
                "source": {
                    "id": source.id,
                    "status": source.status,
                    "source_type": source.source_type,
                    "access_method": source.access_method,
                    "prefix": source.prefix or "",
                    "last_synced_at": jobs[0].created_at if jobs else None,
                },
            }
        return {"tables": tables, "joins": []}


def _clickhouse_type(duck: str) -> str:
    if duck.startswith("DECIMAL"):
        return "Decimal" + duck[len("DECIMAL") :].replace(",", ", ")
    return _CLICKHOUSE_TYPES.get(duck, duck)


def _json_value(value: Any) -> Any:
    """A value as PostHog's JSON renderer writes it: datetimes in ISO with `Z` for UTC (a time
    without a zone is UTC, the sandbox's project time zone), decimals as numbers, UUIDs as
    text."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)  # as DRF's encoder writes a Decimal
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _duckdb_message(exc: Exception) -> str:
    """DuckDB's error as a person reads it: its first line, and a missing column in HogQL's
    words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if 'Referenced column "' in text:
        column = text.split('Referenced column "', 1)[1].split('"', 1)[0]
        return f"Unable to resolve field: {column}"
    return text
