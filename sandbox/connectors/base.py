"""What every connector shares: the `Connector` contract, columns, tables and errors."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..row_filters import RowFilter

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


class SourceError(Exception):
    """A source problem with a message fit for an API answer."""


class Unreachable(enum.Enum):
    """Why a connection failed; each value is PostHog's message for it."""

    CREDENTIALS = "Invalid user or password"
    HOST = "Could not connect to the host"
    PORT = "Could not connect to the host on the port given"
    DATABASE = "Database does not exist"
    TIMEOUT = "Connection timed out. Does your database have our IP addresses allowed?"


class ConnectionFailed(SourceError):
    """A connection to the source failed; `reason` is None when no known cause matched."""

    def __init__(self, reason: Unreachable | None, fallback: str, *, hint: str = "") -> None:
        message = reason.value if reason is not None else fallback
        if hint:
            message = f"{message.rstrip('.')}. {hint}"
        super().__init__(message)
        self.reason = reason
        self.fallback = fallback
        self.hint = hint

    def with_hint(self, hint: str) -> ConnectionFailed:
        """The same failure, its message followed by `hint` (what the address is, what to do)."""
        return ConnectionFailed(self.reason, self.fallback, hint=hint)


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


# The field PostHog lists among a table's `incremental_fields` when it can sync by xmin
# (though no column has that name): Postgres's row version, always unindexed.
XMIN_FIELD: dict[str, Any] = {"label": "xmin", "type": "xid", "field": "xmin", "field_type": "xid"}


@dataclass
class Table:
    """One upstream table with its columns and primary key, and which change-tracking syncs
    PostHog offers on it: `supports_cdc` (a Postgres table with a primary key) and
    `supports_xmin` (a Postgres table or materialized view; None where the source type has no
    xmin at all)."""

    name: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    supports_cdc: bool = False
    supports_xmin: bool | None = None

    @property
    def available_columns(self) -> list[dict[str, Any]]:
        """The columns as a schema's `available_columns` lists them."""
        return [
            {"name": c.name, "data_type": c.data_type, "is_nullable": c.nullable}
            for c in self.columns
        ]

    @property
    def column_choices(self) -> list[dict[str, Any]]:
        """The columns as PostHog's discovery answers offer them: field, label, type, nullable."""
        return [
            {"field": c.name, "label": c.name, "type": c.data_type, "nullable": c.nullable}
            for c in self.columns
        ]

    def incremental_fields(self, *, nullable: bool = False) -> list[dict[str, Any]]:
        """PostHog's `incremental_fields` of the table: its cursor candidates, then `xmin`
        where the table can sync by it."""
        return self.cursor_candidates(nullable=nullable) + (
            [XMIN_FIELD] if self.supports_xmin else []
        )

    def cursor_candidates(self, *, nullable: bool = False) -> list[dict[str, Any]]:
        """The columns a sync can follow (PostHog's `IncrementalField`), in column order;
        `nullable` adds each column's nullability, as the incremental_fields endpoint does."""
        return [
            {"label": c.name, "type": t, "field": c.name, "field_type": t}
            | ({"nullable": c.nullable} if nullable else {})
            for c in self.columns
            if (t := c.incremental_type) is not None
        ]


@dataclass(frozen=True)
class TableStats:
    """What the catalog says of a table beyond its columns (`database_schema`): the planner's row
    estimate (None when unknown), whether the connection's role may read it, and whether
    row-level security filters what that role reads."""

    rows: int | None = None
    readable: bool = True
    row_security: bool = False


# Called every few thousand rows with the rows exported so far (it may raise SyncCancelled).
Progress = Callable[[int], None]
# Called with each part of an export's CSV once it is whole (`Export.part_ready`).
PartReady = Callable[[Path], None]
# An export read in parts starts a new part at the first row boundary past this many bytes:
# small enough that the load of the last part, which waits for the export's end, is short;
# large enough that a part's own cost (one statement) does not count.
PART_BYTES = 16 << 20


@dataclass(frozen=True)
class Export:
    """What a sync asks a connector to export: a table's columns, as CSV to `path`.

    With a cursor, only rows past `cursor_value` of `cursor_column` (`>=` if `inclusive`); with
    row filters, only the rows they all match; with `limit`, at most that many rows (the first
    the database hands over, in no set order). With `part_ready`, the CSV is written as parts
    (`CsvOut`), each handed on as soon as it is whole, so the rows can be loaded while the
    export runs.
    """

    namespace: str
    table: str
    columns: list[Column]
    cursor_column: str | None
    cursor_value: str | None
    inclusive: bool
    path: Path
    cancelled: threading.Event
    progress: Progress
    # PostHog's row filters, checked and coerced: ANDed onto the query.
    row_filters: tuple[RowFilter, ...] = ()
    # A rehearsal's bound on the rows it reads (syncs read every row: None).
    limit: int | None = None
    # Where each part of the CSV goes once whole (a rehearsal loads them as they come); None:
    # one file, `path`.
    part_ready: PartReady | None = None
    # A condition in the source's own SQL, ANDed on (Postgres: an xmin sync's range).
    where: str | None = None

    @property
    def past_cursor(self) -> tuple[str, str] | None:
        """The cursor column and value to export past, if any."""
        if self.cursor_column is None or self.cursor_value is None:
            return None
        return self.cursor_column, self.cursor_value


class CsvOut:
    """The file an export writes its CSV to, in bytes: `export.path`, or, when the export has
    `part_ready`, parts `<stem>.<n><suffix>` beside it, each handed to `part_ready` once whole.

    A connector writes whole rows to `file` and calls `row_boundary()` now and then between
    rows; a new part starts there once the current one holds `PART_BYTES`. Whatever ends the
    export, the rows written so far are handed on when the block ends (each write is whole
    rows, so a part never ends inside one).
    """

    def __init__(self, export: Export) -> None:
        self._export = export
        self._parts = 0
        self.path = export.path
        self.file: IO[bytes] = self._open()

    def _open(self) -> IO[bytes]:
        if self._export.part_ready is not None:
            self._parts += 1
            base = self._export.path
            self.path = base.with_name(f"{base.stem}.{self._parts}{base.suffix}")
        return self.path.open("wb", buffering=1 << 20)

    def row_boundary(self) -> bool:
        """A row ends here: start the next part if this one is full. True if `file` changed."""
        if self._export.part_ready is None or self.file.tell() < PART_BYTES:
            return False
        self._hand_on()
        self.file = self._open()
        return True

    def _hand_on(self) -> None:
        if self.file.closed:  # handed on already (the next part failed to open)
            return
        self.file.close()
        if self._export.part_ready is not None:
            self._export.part_ready(self.path)

    def __enter__(self) -> CsvOut:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hand_on()


ConnT = TypeVar("ConnT")


class Connector(Protocol[ConnT]):
    """A source type: a module of these functions, `ConnT` being its driver's connection."""

    @property
    def SOURCE_CONFIG(self) -> dict[str, Any]:
        """PostHog's setup form of the source type, as the wizard lists it (`config.py`)."""
        ...

    @property
    def NONSENSITIVE_INPUTS(self) -> tuple[str, ...]:
        """The job inputs that are not secret (PostHog removes every other one from answers);
        derived from the fields of `SOURCE_CONFIG`."""
        ...

    def connect(self, job_inputs: dict[str, Any]) -> AbstractContextManager[ConnT]:
        """Open a connection (closed on exit); raise ConnectionFailed with PostHog's message."""
        ...

    def cancel(self, conn: ConnT, job_inputs: dict[str, Any]) -> None:
        """Stop the connection's running query (called from another thread)."""
        ...

    def schema_name(self, job_inputs: dict[str, Any]) -> str:
        """The upstream namespace (schema or database) the source reads."""
        ...

    def discover_with(self, conn: ConnT, namespace: str, only: str | None = None) -> list[Table]:
        """The tables (or only the one named `only`) of `namespace`, with columns and keys."""
        ...

    def table_stats(self, conn: ConnT, namespace: str) -> dict[str, TableStats]:
        """Row estimates, read permission and row-level security of `namespace`'s tables."""
        ...

    def column(self, name: str, data_type: str, nullable: bool) -> Column:
        """A column from the source's type name, with its DuckDB type and export expression."""
        ...

    def export(self, conn: ConnT, export: Export) -> int:
        """Write the rows `export` asks for as CSV through a `CsvOut`; return the rows written."""
        ...


def discover(
    connector: Connector[Any], job_inputs: dict[str, Any], only: str | None = None
) -> list[Table]:
    """Connect, and list the tables of the source's namespace with their columns."""
    with connector.connect(job_inputs) as conn:
        return connector.discover_with(conn, connector.schema_name(job_inputs), only)


def inspect(
    connector: Connector[Any], job_inputs: dict[str, Any]
) -> list[tuple[Table, TableStats]]:
    """Connect once, and list the tables of the source's namespace with their catalog stats."""
    with connector.connect(job_inputs) as conn:
        namespace = connector.schema_name(job_inputs)
        tables = connector.discover_with(conn, namespace)
        stats = connector.table_stats(conn, namespace)
    return [(t, stats.get(t.name, TableStats())) for t in tables]


def build_tables(
    columns: Iterable[tuple[str, str, str, bool]],
    keys: Iterable[tuple[str, str]],
    column: Callable[[str, str, bool], Column],
) -> list[Table]:
    """Tables from catalog rows: (table, column, type, nullable) in column order, and
    (table, column) of primary keys in key order; `column` is the connector's."""
    tables: dict[str, Table] = {}
    for table, name, data_type, nullable in columns:
        tables.setdefault(table, Table(table, [])).columns.append(column(name, data_type, nullable))
    for table, name in keys:
        if table in tables:
            tables[table].primary_key.append(name)
    return list(tables.values())


def quote_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL and DuckDB (same rules)."""
    return '"' + name.replace('"', '""') + '"'


def text_input(job_inputs: dict[str, Any], name: str) -> str:
    """A connection field that is text (`""` when absent): a number, list or object is refused,
    never stringified into what is sent (`{'env': ...}` once went out as a password).

    Raises:
        SourceError: the value is not text.
    """
    value = job_inputs.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"
        raise SourceError(f"Invalid source config: '{name}' must be text, not {kind}")
    return value


def check_cancelled(cancelled: threading.Event) -> None:
    """Raise SyncCancelled if the sync was asked to stop."""
    if cancelled.is_set():
        raise SyncCancelled
