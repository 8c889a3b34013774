"""What every source connector shares: columns, tables, errors, and the connector registry.

A connector is a module with: `NONSENSITIVE_INPUTS`, `connect(job_inputs)` (a context manager
connection), `schema_name(job_inputs)`, `discover(job_inputs, only)`, `discover_with(conn,
namespace, only)`, `column(name, data_type, nullable)`, `export(conn, namespace, table, columns,
*, cursor_column, cursor_value, inclusive, path, cancelled, progress)` (writes a CSV file, returns
bytes written) and `cancel(conn, job_inputs)` (stops a running export from another thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

_HOGQL_TYPES = {
    "SMALLINT": "integer",
    "INTEGER": "integer",
    "BIGINT": "integer",
    "UBIGINT": "integer",
    "HUGEINT": "integer",
    "FLOAT": "float",
    "DOUBLE": "float",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "datetime",
    "TIMESTAMPTZ": "datetime",
    "UUID": "string",
    "VARCHAR": "string",
}

# Connector modules by PostHog source type; each provides the functions `Connector` lists.
_CONNECTORS = {
    "Postgres": "posthog_warehouse_mcp.sandbox.postgres",
    "MySQL": "posthog_warehouse_mcp.sandbox.mysql",
}
SUPPORTED_SOURCE_TYPES = tuple(_CONNECTORS)


class SourceError(Exception):
    """A source problem with a message fit for an API answer."""


class SyncCancelled(Exception):
    """The sync was cancelled by the user or by shutdown."""


@dataclass
class Column:
    """One upstream column and how the warehouse stores it."""

    name: str
    data_type: str
    nullable: bool
    duck_type: str
    incremental_type: str | None
    select_expr: str

    @property
    def hogql_type(self) -> str:
        """The type name PostHog shows for the warehouse column."""
        if self.duck_type.startswith("DECIMAL"):
            return "decimal"
        return _HOGQL_TYPES.get(self.duck_type, "string")


@dataclass
class Table:
    """One upstream table with its columns and primary key."""

    name: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)


# Called every few thousand rows with the rows exported so far; returns seconds to pause.
Progress = Callable[[int], float]
Cancelled = threading.Event


def quote_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL and DuckDB (same rules)."""
    return '"' + name.replace('"', '""') + '"'


def connector(source_type: str) -> ModuleType:
    """The connector module for a source type (imported on first use: drivers are heavy)."""
    import importlib

    return importlib.import_module(_CONNECTORS[source_type])


def check_cancelled(cancelled: threading.Event) -> None:
    """Raise SyncCancelled if the sync was asked to stop."""
    if cancelled.is_set():
        raise SyncCancelled
