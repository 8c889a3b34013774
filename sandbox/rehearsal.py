"""A rehearsal of a warehouse import before PostHog bills anything: a real, bounded sync of the
user's own tables into a temporary DuckDB on this machine, checks of each table at the source,
the name PostHog would give each table, and its first sync's rows and time.

`rehearse()` is blocking (call it from a worker thread). It reads the source only in read-only
transactions, and removes its temporary warehouse whatever happens.

What it cannot see, it says: whether PostHog Cloud can reach the host (only the host and TLS
rules of `cloud_rules.py` are checked), whether every update moves a cursor forward (an
application's promise, not the table's), and the exact bill (the estimates name their basis).

PostHog's rules it follows, read in PostHog/posthog:

- Names: `build_table_name` in
  `products/warehouse_sources/backend/temporal/data_imports/pipelines/helpers.py`:
  `{prefix}{source_type}_{name}` lower-cased, a `.` in the name written `__` (and `/` as `_`).
  A Postgres source with a blank `schema` reads every schema, and its tables are named
  `schema.table` (`sources/common/sql/location.py`, `normalize_namespace`: blank means all).
- Billing is estimated from what this measures (the row count, the rows a time column dates to
  the last week) by `tools/billing.py`, which cites PostHog's rules.
- An incremental table whose key is not unique fails with "The primary keys for this table are
  not unique", and PostHog then stops syncing it (`Any_Source_Errors` in
  `posthog/temporal/data_imports/external_data_job.py`); so does one without a key ("Primary key
  required for incremental syncs").
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import json
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

from . import errors
from .cloud_rules import INTERNAL_HOST, TLS_REQUIRED, is_public, resolve
from .connectors import (
    SUPPORTED_SOURCE_TYPES,
    Column,
    ConnectionFailed,
    Connector,
    Export,
    SourceError,
    SyncCancelled,
    Table,
    TableStats,
    connector,
    known_source_type,
    quote_ident,
)
from .discovery import PREFERRED_INCREMENTAL_FIELDS, RLS_WARNING_MESSAGE
from .engine import REDACTED, table_name
from .validation import (
    CURSOR_SYNC_TYPES,
    LOG_SYNC_TYPES,
    SYNC_TYPES,
    UNSUPPORTED_SYNC_TYPES,
    check_prefix,
    schema_requests,
)
from .warehouse import STAGING_PREFIX, Warehouse

# How far back the rate of change is measured on a time column.
RECENT_DAYS = 7
# DuckDB's buffer for the temporary warehouse.
REHEARSAL_MEMORY = "128MB"
# The key check over the local copy groups at most about this many rows at a time (one pass per
# share of the keys' hash): its memory stays the same whatever the table's size.
KEYS_PER_PASS = 500_000
# The inputs of a source that are secret whatever the form says.
_SECRET_INPUTS = ("password", "connection_string")

ProgressFn = Callable[[float, float | None, str], None]


@dataclass(frozen=True)
class Limits:
    """How much a rehearsal may do: rows synced locally per table, seconds for the whole
    rehearsal (checks and syncs stop at it), and the statement timeout of each check."""

    rows: int = 10_000
    seconds: float = 30.0
    check_seconds: float = 10.0

    def check(self) -> None:
        """Refuse limits out of range.

        Raises:
            RehearsalError: a limit out of range, naming it and its range.
        """
        for name, value, low, high in (
            ("rows", self.rows, 1, 10_000_000),
            ("seconds", self.seconds, 1, 3600),
            ("check_seconds", self.check_seconds, 0.001, 3600),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (low <= value <= high)
            ):
                raise RehearsalError(
                    f"limits.{name} must be a number from {low:g} to {high:,}; got {value!r}."
                )
        if isinstance(self.rows, float) and self.rows != int(self.rows):
            raise RehearsalError(f"limits.rows must be a whole number; got {self.rows!r}.")


class RehearsalError(ValueError):
    """Bad input (unknown table, a cursor column that does not exist, a limit out of range, a
    source type without rehearsal): the message says what and how to fix; nothing was done."""


class RehearsalCancelled(Exception):
    """The caller's `cancelled` event was set: the rehearsal stopped, and its temporary
    warehouse was removed."""


def rehearse(
    source_type: str,
    job_inputs: dict[str, Any],
    tables: list[dict[str, Any]],
    *,
    prefix: str | None = None,
    limits: Limits = Limits(),  # frozen: one shared default is safe
    progress: ProgressFn | None = None,
    cancelled: threading.Event | None = None,
) -> dict[str, Any]:
    """Rehearse an import of `tables` (PostHog's `payload.schemas` entries) from the source
    `job_inputs` describe (secrets resolved): a bounded local sync of each, checks at the
    source, PostHog's names and estimates of its rows billed, and `schemas` ready for create.

    Blocking: call it from a worker thread. Nothing is written at the source, and nothing is
    left on this machine.

    Raises:
        RehearsalError: bad input, or the source could not be reached (the connector's message).
        RehearsalCancelled: `cancelled` was set.
    """
    secrets = _secret_values(job_inputs)
    try:
        return _Rehearsal(
            source_type, job_inputs, tables, prefix, limits, progress, cancelled
        ).run()
    except RehearsalError as exc:
        raise RehearsalError(_scrub(str(exc), secrets)) from None


# --- input -----------------------------------------------------------------------------------


@dataclass
class _Target:
    """One table to rehearse, as resolved at the source."""

    item: dict[str, Any]  # the entry as given
    name: str  # its payload name (`schema.table` where PostHog lists it so)
    namespace: str
    table: Table
    stats: TableStats
    sync_type: str
    cursor: Column | None
    key: list[str]
    key_given: bool
    key_proven: bool  # a primary key constraint, or a unique index on NOT NULL columns
    unique_keys: list[list[str]]
    rate_column: Column | None
    changes: list[dict[str, Any]] = field(default_factory=list)


def _secret_values(job_inputs: dict[str, Any]) -> list[str]:
    values = [job_inputs.get(k) for k in _SECRET_INPUTS]
    return sorted({v for v in values if isinstance(v, str) and v}, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    """`value` with every secret masked in every string it holds."""
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    return value


def _upstream(source_type: str) -> Connector[Any]:
    if source_type in SUPPORTED_SOURCE_TYPES:
        return connector(source_type)
    supported = " and ".join(SUPPORTED_SOURCE_TYPES)
    if known_source_type(source_type):
        raise RehearsalError(
            f"Rehearsal is not available for {source_type} sources: only the databases the "
            f"sandbox can sync ({supported}) are rehearsed locally. Create the source and watch "
            "its first sync instead."
        )
    raise RehearsalError(f"Unknown source_type '{source_type}'. Rehearsal supports {supported}.")


def _answer_error(exc: errors.ErrorAnswer) -> RehearsalError:
    body = exc.body
    return RehearsalError(str(body.get("message") or body.get("detail") or body))


# --- stopping --------------------------------------------------------------------------------


class _Stop:
    """Stops the rehearsal at its deadline or when the caller cancels: a watcher thread sets
    `event` and stops the source's running query (and, on cancel, DuckDB's)."""

    def __init__(
        self, deadline: float, cancelled: threading.Event | None, cancel_query: Callable[[], None]
    ) -> None:
        self.deadline = deadline
        self.cancelled = cancelled
        self.event = threading.Event()
        self.reason: str | None = None  # "time" or "cancelled"
        self.connected = False  # a source connection is open (a query may run on it)
        self.duck: Any = None  # the DuckDB cursor loading rows, if any
        self._cancel_query = cancel_query
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rehearsal-stop", daemon=True)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._done.set()
            self._thread.join()

    def remaining(self) -> float:
        return self.deadline - monotonic()

    def is_cancelled(self) -> bool:
        return self.reason == "cancelled" or (
            self.cancelled is not None and self.cancelled.is_set()
        )

    def raise_if_cancelled(self) -> None:
        if self.is_cancelled():
            raise RehearsalCancelled

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            if self.cancelled is not None and self.cancelled.is_set():
                self._trigger("cancelled")
                return
            if monotonic() >= self.deadline:
                self._trigger("time")
                # Keep watching: a cancel after the deadline still interrupts DuckDB.
                while not self._done.wait(0.05):
                    if self.cancelled is not None and self.cancelled.is_set():
                        self.reason = "cancelled"
                        self._interrupt_duck()
                        return
                return

    def _trigger(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            self.event.set()
            connected = self.connected
        if connected:
            with contextlib.suppress(Exception):  # the query may have just ended
                self._cancel_query()
        if reason == "cancelled":
            self._interrupt_duck()

    def _interrupt_duck(self) -> None:
        duck = self.duck
        if duck is not None:
            with contextlib.suppress(Exception):
                duck.interrupt()


class _CutShort(Exception):
    """A check's query ran out of time: `why` says whose limit."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Loader:
    """Loads a table's export into its staging table part by part, on its own thread, while
    the export goes on: the load then costs only its last part's time after the export.

    The export never waits for it (parts queue on disk). A part that does not load stops the
    loading (`failed`); the rest are only collected. A cancel interrupts DuckDB through
    `stop.duck`, and the parts left are skipped.
    """

    def __init__(
        self, warehouse: Warehouse, staging: str, columns: list[Column], stop: _Stop
    ) -> None:
        self.parts: list[Path] = []
        self.failed: BaseException | None = None
        self._warehouse = warehouse
        self._staging = staging
        self._columns = columns
        self._stop = stop
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rehearsal-load", daemon=True)
        self._thread.start()

    def add(self, part: Path) -> None:
        """Queue a whole part of the CSV (the export's `part_ready`)."""
        self.parts.append(part)
        self._queue.put(part)

    def finish(self) -> None:
        """Wait until every part queued is loaded (or skipped)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        warehouse, stop = self._warehouse, self._stop
        while (part := self._queue.get()) is not None:
            if self.failed is not None or stop.is_cancelled():
                continue
            try:
                with warehouse.locked() as cur:
                    stop.duck = cur
                    try:
                        warehouse.append_staging(cur, part, self._staging, self._columns)
                    finally:
                        stop.duck = None
            except Exception as exc:
                self.failed = exc


# --- the rehearsal ---------------------------------------------------------------------------


class _Rehearsal:
    def __init__(
        self,
        source_type: str,
        job_inputs: dict[str, Any],
        tables: list[dict[str, Any]],
        prefix: str | None,
        limits: Limits,
        progress: ProgressFn | None,
        cancelled: threading.Event | None,
    ) -> None:
        if not isinstance(limits, Limits):
            raise RehearsalError("limits must be a Limits")
        limits.check()
        self.upstream = _upstream(source_type)
        self.source_type = source_type
        try:
            check_prefix(prefix)
        except errors.ErrorAnswer as exc:
            raise _answer_error(exc) from None
        if not isinstance(tables, list) or not tables:
            raise RehearsalError(
                "List the tables to rehearse: entries of payload.schemas, each with a 'name'."
            )
        for item in tables:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RehearsalError(
                    "Each table must be an entry of payload.schemas with a 'name' (text)."
                )
        names = [str(item["name"]) for item in tables]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise RehearsalError(f"Tables listed twice: {', '.join(repeated)}. List each once.")
        self.job_inputs = job_inputs
        self.tables = tables
        self.prefix = prefix
        self.limits = limits
        self.progress_fn = progress
        self.secrets = _secret_values(job_inputs)
        self.conn: Any = None
        self._stack = contextlib.ExitStack()
        self.stop = _Stop(monotonic() + limits.seconds, cancelled, self._cancel_query)
        self.began = monotonic()
        self.done = 0.0
        self.total: float = 1.0
        self.mariadb = False

    def _cancel_query(self) -> None:
        if self.conn is not None:
            self.upstream.cancel(self.conn, self.job_inputs)

    def _progress(self, message: str, *, step: float = 0.0) -> None:
        if self.progress_fn is not None:
            with contextlib.suppress(Exception):  # a caller's reporting never stops the work
                self.progress_fn(min(self.done + step, self.total), self.total, message)

    def run(self) -> dict[str, Any]:
        """The whole rehearsal; the answer, secrets masked."""
        self.stop.raise_if_cancelled()
        answer: dict[str, Any]
        with self.stop.watching():
            self._progress("Connecting to the source")
            try:
                connection = self.upstream.connect(self.job_inputs)
            except ConnectionFailed as exc:
                raise RehearsalError(f"Could not connect to the source: {exc}") from None
            except SourceError as exc:
                raise RehearsalError(str(exc)) from None
            with contextlib.ExitStack() as stack:
                self._stack = stack
                self.conn = stack.enter_context(connection)
                self.stop.connected = True
                try:
                    answer = self._with()
                finally:
                    self.stop.connected = False
                    self.conn = None
        return dict(_scrubbed(answer, self.secrets))

    def _with(self) -> dict[str, Any]:
        self._read_only()
        targets = self._resolve()
        self.total = 1.0 + 2 * len(targets)
        self.done = 1.0
        workdir = Path(tempfile.mkdtemp(prefix="posthog-rehearsal-"))
        results: list[dict[str, Any]] = []
        try:
            # Half the sandbox's buffer: a rehearsal runs beside the MCP server, and its memory
            # must not grow with the table (DuckDB spills to the temporary folder instead).
            warehouse = Warehouse(
                workdir / "warehouse.duckdb",
                staging_dir=workdir / "staging",
                memory_limit=REHEARSAL_MEMORY,
            )
            try:
                for index, target in enumerate(targets):
                    results.append(self._table(warehouse, workdir, index, target))
            finally:
                warehouse.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        left = "nothing" if not workdir.exists() else f"{workdir} could not be removed"
        self.done = self.total
        self._progress("Rehearsal finished")
        return {
            "source_type": self.source_type,
            "prefix": self.prefix,
            "limits": asdict(self.limits),
            "seconds": round(monotonic() - self.began, 3),
            "stopped": "time limit" if self.stop.reason == "time" else None,
            "tables": results,
            "schemas": self._schemas(targets),
            "cloud": self._cloud(),
            "left_behind": (
                f"{left}: the temporary warehouse was removed; the source was read in "
                "read-only transactions"
            ),
        }

    # --- the source -----------------------------------------------------------------------

    def _read_only(self) -> None:
        """Every transaction of this connection is read-only, the export's COPY included."""
        conn = self.conn
        if self.source_type == "Postgres":
            conn.execute("SET default_transaction_read_only = on")
        else:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
            self.mariadb = bool(row and "mariadb" in str(row[0]).lower())

    def _split(self, name: str) -> tuple[str, str, str]:
        """The namespace and table a payload name reads, and the name as PostHog lists it."""
        given = str(self.job_inputs.get("schema") or "").strip()
        if self.source_type == "Postgres" and not given:
            # PostHog reads every schema and names each table `schema.table`.
            namespace, dot, table = name.partition(".")
            if dot and namespace and table:
                return namespace, table, name
            return "public", name, f"public.{name}"
        namespace = self.upstream.schema_name(self.job_inputs)
        if not namespace:
            space, dot, table = name.partition(".")
            if dot and space and table:
                return space, table, name
            raise RehearsalError(
                f"'{name}': the source names no database (job_inputs 'schema' or 'database'); "
                "give one, or name the table as database.table."
            )
        return namespace, name, name

    def _resolve(self) -> list[_Target]:
        """Each table listed, found at the source and its settings checked, before any sync."""
        conn = self.conn
        catalogs: dict[str, dict[str, Table]] = {}
        stats: dict[str, dict[str, TableStats]] = {}
        targets: list[_Target] = []
        for item in self.tables:
            namespace, table_name_, listed = self._split(str(item["name"]))
            if namespace not in catalogs:
                try:
                    found = self.upstream.discover_with(conn, namespace)
                except SourceError as exc:
                    raise RehearsalError(f"{exc}: check the source's 'schema'.") from None
                catalogs[namespace] = {t.name: t for t in found}
                stats[namespace] = self.upstream.table_stats(conn, namespace)
            table = catalogs[namespace].get(table_name_)
            if table is None:
                close = difflib.get_close_matches(table_name_, list(catalogs[namespace]), 3)
                hint = f" Close names: {', '.join(close)}." if close else ""
                raise RehearsalError(
                    f"Table '{item['name']}' does not exist in {namespace}.{hint} List only "
                    "tables of the source (external-data-sources-db-schema lists them)."
                )
            if item.get("should_sync", True) is not False:
                targets.append(self._target(item, listed, namespace, table, stats[namespace]))
        self._check_like_create(targets)
        return targets

    def _target(
        self,
        item: dict[str, Any],
        listed: str,
        namespace: str,
        table: Table,
        stats: dict[str, TableStats],
    ) -> _Target:
        name = str(item["name"])
        columns = {c.name: c for c in table.columns}
        sync_type = item.get("sync_type") or "full_refresh"
        if sync_type in (*UNSUPPORTED_SYNC_TYPES, *LOG_SYNC_TYPES):
            raise RehearsalError(
                f"'{name}': sync type '{sync_type}' cannot be rehearsed locally; rehearse it as "
                f"one of {', '.join(SYNC_TYPES)}."
            )
        if sync_type not in SYNC_TYPES:
            raise RehearsalError(
                f"'{name}': unknown sync_type '{sync_type}'. Use one of {', '.join(SYNC_TYPES)}."
            )
        cursor = None
        changes: list[dict[str, Any]] = []
        if sync_type in CURSOR_SYNC_TYPES:
            field_name = item.get("incremental_field")
            candidates = [c["field"] for c in table.cursor_candidates()]
            if not field_name:
                raise RehearsalError(
                    f"'{name}': a {sync_type} sync needs incremental_field, the column it "
                    f"follows. Candidates: {', '.join(candidates) or 'none (use full_refresh)'}."
                )
            cursor = columns.get(str(field_name))
            if cursor is None:
                raise RehearsalError(
                    f"'{name}' has no column '{field_name}' for incremental_field. Candidates: "
                    f"{', '.join(candidates) or 'none (use full_refresh)'}."
                )
            if cursor.incremental_type is None:
                raise RehearsalError(
                    f"'{name}': incremental_field '{field_name}' is {cursor.data_type}; a cursor "
                    f"must be an integer, date or timestamp column. Candidates: "
                    f"{', '.join(candidates) or 'none (use full_refresh)'}."
                )
            if item.get("incremental_field_type") != cursor.incremental_type:
                changes.append(
                    {
                        "field": "incremental_field_type",
                        "from": item.get("incremental_field_type"),
                        "to": cursor.incremental_type,
                        "why": f"the type of {cursor.name} at the source",
                    }
                )
        given = item.get("primary_key_columns")
        if given is not None and (
            not isinstance(given, list) or not all(isinstance(c, str) for c in given)
        ):
            raise RehearsalError(f"'{name}': primary_key_columns must be a list of column names.")
        unknown = [c for c in given or [] if c not in columns]
        if unknown:
            raise RehearsalError(
                f"'{name}' has no column {', '.join(map(repr, unknown))} for "
                f"primary_key_columns. Columns: {', '.join(columns)}."
            )
        unique_keys = self._unique_keys(namespace, table)
        key = list(given or table.primary_key)
        if not given and table.primary_key:
            changes.append(
                {
                    "field": "primary_key_columns",
                    "from": given,
                    "to": list(table.primary_key),
                    "why": "the table's primary key",
                }
            )
        elif not key and sync_type == "incremental" and unique_keys:
            key = unique_keys[0]
            changes.append(
                {
                    "field": "primary_key_columns",
                    "from": given,
                    "to": key,
                    "why": "a unique index on columns that cannot be null: unique by the "
                    "database's own rule",
                }
            )
        if "should_sync" not in item:
            changes.append(
                {
                    "field": "should_sync",
                    "from": None,
                    "to": True,
                    "why": "rehearsed as a table to sync; create leaves a table without it off",
                }
            )
        proven = bool(key) and (key == list(table.primary_key) or key in unique_keys)
        return _Target(
            item=item,
            name=listed,
            namespace=namespace,
            table=table,
            stats=stats.get(table.name, TableStats()),
            sync_type=sync_type,
            cursor=cursor,
            key=key,
            key_given=bool(given),
            key_proven=proven,
            unique_keys=unique_keys,
            rate_column=_rate_column(table, cursor),
            changes=changes
            + (
                [{"field": "name", "from": name, "to": listed, "why": _DOTTED}]
                if listed != name
                else []
            ),
        )

    def _unique_keys(self, namespace: str, table: Table) -> list[list[str]]:
        """Unique indexes whose columns cannot be null: keys the database itself guarantees."""
        conn = self.conn
        not_null = {c.name for c in table.columns if not c.nullable}
        if self.source_type == "Postgres":
            rows = conn.execute(
                """
                SELECT array_agg(a.attname ORDER BY k.ord)
                FROM pg_index i
                JOIN pg_class c ON c.oid = i.indrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                WHERE n.nspname = %s AND c.relname = %s AND i.indisunique
                  AND i.indpred IS NULL AND i.indexprs IS NULL
                GROUP BY i.indexrelid, i.indisprimary
                ORDER BY i.indisprimary DESC, i.indexrelid
                """,
                (namespace, table.name),
            ).fetchall()
            found = [list(r[0]) for r in rows]
        else:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0 "
                    "ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
                    (namespace, table.name),
                )
                by_index: dict[str, list[str]] = {}
                for index, column in cur.fetchall():
                    by_index.setdefault(str(index), []).append(str(column))
            found = list(by_index.values())
        return [k for k in found if all(c in not_null for c in k)]

    def _check_like_create(self, targets: list[_Target]) -> None:
        """What create itself would refuse in the fixed entries (row filters, lookback...),
        except a missing key, which is reported as a problem with its fixes."""
        for target in targets:
            fixed = _fixed(target)
            if target.sync_type == "incremental" and not target.key:
                fixed["primary_key_columns"] = ["id"]  # checked below as a problem instead
            try:
                schema_requests([fixed], [_renamed(target.table, str(fixed["name"]))])
            except errors.ErrorAnswer as exc:
                raise RehearsalError(f"'{target.name}': {_answer_error(exc)}") from None

    # --- one table ------------------------------------------------------------------------

    def _table(
        self, warehouse: Warehouse, workdir: Path, index: int, target: _Target
    ) -> dict[str, Any]:
        self.done = 1.0 + 2 * index
        result: dict[str, Any] = {
            "name": target.name,
            "source_table": f"{target.namespace}.{target.table.name}",
            "warehouse_table": table_name(self.prefix, self.source_type, target.name),
            "sync_type": target.sync_type,
            "sync_frequency": target.item.get("sync_frequency"),
        }
        if target.cursor is not None:
            result["incremental_field_type"] = target.cursor.incremental_type
        local = self._sync(warehouse, workdir, index, target)
        self.done = 2.0 + 2 * index
        checks = self._checks(warehouse, target, local)
        staging = local.pop("_staging", None)
        merged = _merged_rows(target, local, checks)
        if merged is not None and staging is not None:
            # An incremental first sync keeps one row a key: the key check over this very copy
            # already counted them, and publishing would sort the table for the same number
            # (0.5 s a million rows).
            local["rows_in_table"] = merged
            with warehouse.locked() as cur:
                warehouse.drop_staging(cur, staging)
        elif staging is not None:
            local["rows_in_table"] = self._publish(warehouse, target, staging, index)
        result["local_sync"] = local
        count = next((c for c in checks if c["check"] == "row_count"), None)
        result["rows"] = _rows_answer(count, target.stats)
        result["checks"] = checks
        result["problems"] = _problems(target, checks, local)
        result["estimates"] = self._estimates(result["rows"], local)
        result["cannot_prove"] = _cannot_prove(target)
        if target.changes:
            result["schema_changes"] = target.changes
        return result

    def _sync(
        self, warehouse: Warehouse, workdir: Path, index: int, target: _Target
    ) -> dict[str, Any]:
        """Export up to `limits.rows` rows with the connector and load them with the
        warehouse's own load, as a sync does; the rows' fate in `local`."""
        if self.stop.event.is_set():
            self.stop.raise_if_cancelled()
            return {"status": "not_run", "why": "the rehearsal's time limit came first"}
        wanted = set(target.item.get("enabled_columns") or [c.name for c in target.table.columns])
        wanted.update(target.key)
        if target.cursor is not None:
            wanted.add(target.cursor.name)
        columns = [c for c in target.table.columns if c.name in wanted]
        csv_path = workdir / "staging" / f"{index}.csv"
        staging = f"{STAGING_PREFIX}rehearsal_{index}"
        bound = self.limits.rows
        message = f"Syncing {target.name} (at most {bound:,} rows)"
        self._progress(message)

        def exported(rows: int) -> None:
            self._progress(message, step=min(rows / bound, 1.0) * 0.9)
            if self.stop.event.is_set():
                raise SyncCancelled

        began = monotonic()
        loader = _Loader(warehouse, staging, columns, self.stop)
        export = Export(
            target.namespace,
            target.table.name,
            columns,
            cursor_column=None,  # a first sync: no saved cursor, every row past nothing
            cursor_value=None,
            inclusive=False,
            path=csv_path,
            cancelled=self.stop.event,
            progress=exported,
            limit=bound,
            part_ready=loader.add,
        )
        local: dict[str, Any] = {"status": "completed", "row_bound": bound}
        read: int | None = None
        try:
            try:
                read = self.upstream.export(self.conn, export)
            finally:
                read_seconds = monotonic() - began
                # The parts already handed on are loaded whatever stopped the export (or, on a
                # cancel, skipped).
                loader.finish()
        except Exception as exc:
            self.stop.raise_if_cancelled()
            if not self.stop.event.is_set():
                self._recover()
                with warehouse.locked() as cur:
                    warehouse.drop_staging(cur, staging)
                _remove(loader.parts)
                return {"status": "failed", "error": _first_line(exc), "row_bound": bound}
            self._recover()
            local["status"] = "cut_short"
            local["why"] = "the rehearsal's time limit; the rows read by then were loaded"
        if read is None:
            read = sum(_lines(part) for part in loader.parts)
        local["rows_read"] = read
        local["whole_table"] = local["status"] == "completed" and read < bound
        loaded = 0
        with warehouse.locked() as cur:
            self.stop.duck = cur
            try:
                if loader.failed is None:
                    warehouse.create_staging(cur, staging, columns)  # no part came: no rows
                    loaded = warehouse.count_staging(cur, staging)
                else:
                    self.stop.raise_if_cancelled()
                    if not _is_conversion(loader.failed):
                        raise loader.failed
                    # Loaded again as one file, as a sync loads it: the error's line numbers
                    # are then the table's (a part's start from its own first line).
                    _join(loader.parts, csv_path)
                    warehouse.drop_staging(cur, staging)
                    loaded = warehouse.load_staging(
                        cur, csv_path, staging, columns, threading.Event()
                    )
                local["rows_loaded"] = loaded
            except Exception as exc:
                self.stop.raise_if_cancelled()
                if not _is_conversion(exc):
                    raise
                loaded, rejected = warehouse.load_convertible(cur, csv_path, staging, columns)
                local["status"] = "failed"
                local["error"] = (
                    "Values that do not convert to their column's type stop this sync: "
                    + _first_line(exc)
                )
                local["rows_loaded"] = loaded
                local["_rejected"] = _unconverted(rejected, columns)
            finally:
                self.stop.duck = None
        _remove([*loader.parts, csv_path])
        took = monotonic() - began
        local["seconds"] = round(took, 3)
        local["read_seconds"] = round(read_seconds, 3)
        local["rows_per_second"] = round(loaded / took) if loaded and took > 0 else None
        local["_staging"] = staging
        return local

    def _recover(self) -> None:
        """Make the connection usable after a failed or stopped export: Postgres ends the
        query; a MySQL stream left unread is abandoned with its connection, so open another."""
        if self.source_type == "Postgres":
            with contextlib.suppress(Exception):
                self.conn.rollback()
            return
        self.stop.connected = False
        self.conn = self._stack.enter_context(self.upstream.connect(self.job_inputs))
        self._read_only()
        self.stop.connected = True

    def _publish(self, warehouse: Warehouse, target: _Target, staging: str, index: int) -> int:
        """Publish the staged rows with the sync type's own semantics (incremental merges on
        the key, keeping the latest cursor); the rows the table then holds."""
        mode = target.sync_type
        if mode == "incremental" and not target.key:
            mode = "append"  # PostHog refuses it; its rows are still counted as they came
        final = f"rehearsal_{index}"
        with warehouse.locked() as cur:
            try:
                warehouse.publish(
                    cur,
                    schema_id=f"rehearsal-{index}",
                    staging=staging,
                    final=final,
                    mode=mode,
                    primary_key=target.key if mode == "incremental" else [],
                    cursor_column=target.cursor.name if target.cursor else None,
                )
            finally:
                warehouse.drop_staging(cur, staging)
            rows = warehouse.count(final)
            # Nothing reads the table after its count: dropped now, it neither holds DuckDB's
            # buffer while later tables load nor is written out when the warehouse closes
            # (0.1 s at 4M rows).
            warehouse.drop_table(cur, f"rehearsal-{index}", final)
        return rows

    # --- checks ---------------------------------------------------------------------------

    def _checks(
        self, warehouse: Warehouse, target: _Target, local: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The checks of one table: over the local copy when it holds the whole table (one
        read of the source serves the sync and the checks), else at the source, one query at a
        time, each read-only with a statement timeout."""
        self._progress(f"Checking {target.name}")
        checks: list[dict[str, Any]] = []
        whole = bool(local.get("whole_table")) and local.get("status") == "completed"
        staging = local.get("_staging")
        if whole and staging is not None:
            run: Callable[[str, list[Any]], tuple[Any, ...]] = self._local_query(warehouse, staging)
            how = "over the local copy of the whole table (read in one snapshot by the sync)"
            dialect = _DUCK
            relation = quote_ident(staging)
        else:
            run = self._source_query()
            how = (
                f"at the source, read-only, statement timeout {self._timeout_text()}"
                if not self.stop.event.is_set()
                else "at the source"
            )
            dialect = _POSTGRES if self.source_type == "Postgres" else _MYSQL
            q = dialect.quote
            relation = f"{q(target.namespace)}.{q(target.table.name)}"
        checks.extend(self._stats_checks(run, how, dialect, relation, target, whole, local))
        passes = 1
        if dialect is _DUCK:
            passes = max(1, -(-_int(local.get("rows_loaded")) // KEYS_PER_PASS))
        checks.append(self._key_check(run, how, dialect, relation, target, passes=passes))
        if (
            target.sync_type == "append"
            and target.cursor is not None
            and target.cursor.incremental_type == "integer"
        ):
            checks.append(self._order_check(target))
        rejected = local.pop("_rejected", None)
        checks.append(_conversion_check(local, rejected))
        return checks

    def _timeout_text(self) -> str:
        return f"{self.limits.check_seconds:g}s"

    def _local_query(
        self, warehouse: Warehouse, staging: str
    ) -> Callable[[str, list[Any]], tuple[Any, ...]]:
        def run(sql: str, params: list[Any]) -> tuple[Any, ...]:
            self.stop.raise_if_cancelled()
            with warehouse.locked() as cur:
                self.stop.duck = cur
                try:
                    row = cur.execute(sql, params).fetchone()
                except Exception:
                    self.stop.raise_if_cancelled()
                    raise
                finally:
                    self.stop.duck = None
            return tuple(row or ())

        return run

    def _source_query(self) -> Callable[[str, list[Any]], tuple[Any, ...]]:
        def run(sql: str, params: list[Any]) -> tuple[Any, ...]:
            self.stop.raise_if_cancelled()
            remaining = self.stop.remaining()
            if self.stop.event.is_set() or remaining <= 0:
                raise _CutShort("not run: the rehearsal's time limit came first")
            timeout = min(self.limits.check_seconds, remaining)
            if self.source_type == "Postgres":
                return self._postgres_query(self.conn, sql, params, timeout)
            return self._mysql_query(self.conn, sql, params, timeout)

        return run

    def _postgres_query(
        self, conn: Any, sql: str, params: list[Any], timeout: float
    ) -> tuple[Any, ...]:
        import psycopg

        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
                # One process reads the table, in its stored order (the insert-order check).
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                row = conn.execute(sql, params).fetchone()
        except psycopg.errors.QueryCanceled as exc:
            self.stop.raise_if_cancelled()
            if "statement timeout" in str(exc):
                raise _CutShort(f"cut short by the {timeout:g}s statement timeout") from None
            raise _CutShort("cut short by the rehearsal's time limit") from None
        return tuple(row or ())

    def _mysql_query(
        self, conn: Any, sql: str, params: list[Any], timeout: float
    ) -> tuple[Any, ...]:
        import pymysql

        if self.mariadb:
            limit = f"SET SESSION max_statement_time = {timeout:.3f}"
            unlimit = "SET SESSION max_statement_time = 0"
        else:
            limit = f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}"
            unlimit = "SET SESSION max_execution_time = 0"
        with conn.cursor() as cur:
            cur.execute(limit)
            cur.execute("START TRANSACTION READ ONLY")
            try:
                cur.execute(sql, tuple(params))
                row = cur.fetchone()
            except pymysql.err.OperationalError as exc:
                self.stop.raise_if_cancelled()
                code = exc.args[0] if exc.args else None
                if code in (1969, 3024):  # MariaDB's and MySQL's statement timeouts
                    raise _CutShort(f"cut short by the {timeout:g}s statement timeout") from None
                if code == 1317:  # KILL QUERY: the rehearsal's own stop
                    raise _CutShort("cut short by the rehearsal's time limit") from None
                raise
            finally:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                    cur.execute(unlimit)
        return tuple(row or ())

    def _stats_checks(
        self,
        run: Callable[[str, list[Any]], tuple[Any, ...]],
        how: str,
        dialect: _Dialect,
        relation: str,
        target: _Target,
        whole: bool,
        local: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Row count, nulls in the key and the cursor, cursor values in the future, and rows
        changed in the last week: one read of the table."""
        q, now = dialect.quote, datetime.now(UTC)
        parts = ["count(*)"]
        params: list[Any] = []
        key_nulls = " OR ".join(f"{q(k)} IS NULL" for k in target.key) if target.key else None
        parts.append(dialect.count_if(key_nulls) if key_nulls else "NULL")
        cursor = target.cursor
        time_cursor = cursor is not None and cursor.incremental_type in ("date", "timestamp")
        if cursor is not None:
            parts.append(dialect.count_if(f"{q(cursor.name)} IS NULL"))
            parts.append(dialect.text(f"max({q(cursor.name)})"))
        else:
            parts += ["NULL", "NULL"]
        if cursor is not None and time_cursor:
            parts.append(dialect.count_if(f"{q(cursor.name)} > {dialect.param}"))
            params.append(_moment(cursor, now, dialect))
        else:
            parts.append("NULL")
        rate = target.rate_column
        if rate is not None:
            parts.append(
                dialect.count_if(
                    f"{q(rate.name)} >= {dialect.param} AND {q(rate.name)} <= {dialect.param}"
                )
            )
            params += [
                _moment(rate, now - timedelta(days=RECENT_DAYS), dialect),
                _moment(rate, now, dialect),
            ]
        else:
            parts.append("NULL")
        sql = f"SELECT {', '.join(parts)} FROM {relation}"
        try:
            row = run(sql, params)
        except _CutShort as exc:
            names = ["row_count", "primary_key_nulls", "cursor_nulls", "cursor_future"]
            return [
                {"check": n, "result": "cut_short", "why": exc.why, "how": how}
                for n in names
                if n == "row_count"
                or (n == "primary_key_nulls" and target.key and not target.key_proven)
                or (n.startswith("cursor") and cursor is not None)
            ] + ([_recent(rate, None, how, exc.why)] if rate is not None else [])
        except RehearsalCancelled:
            raise
        except Exception as exc:
            return [{"check": "row_count", "result": "failed", "error": _first_line(exc)}]
        count, key_null, cursor_null, cursor_max, future, recent = (list(row) + [None] * 6)[:6]
        checks: list[dict[str, Any]] = [
            {"check": "row_count", "result": "ok", "rows": _int(count), "how": how}
        ]
        if target.key:
            if target.key_proven:
                checks.append(
                    {
                        "check": "primary_key_nulls",
                        "result": "ok",
                        "key": target.key,
                        "rows": 0,
                        "how": "proven: the key's columns cannot be null at the source",
                    }
                )
            else:
                checks.append(
                    {
                        "check": "primary_key_nulls",
                        "result": "problem" if _int(key_null) else "ok",
                        "key": target.key,
                        "rows": _int(key_null),
                        "how": how,
                    }
                )
        if cursor is not None:
            checks.append(
                {
                    "check": "cursor_nulls",
                    "result": "problem" if _int(cursor_null) else "ok",
                    "column": cursor.name,
                    "rows": _int(cursor_null),
                    "max": None if cursor_max is None else str(cursor_max),
                    "how": how,
                }
            )
            if time_cursor:
                checks.append(
                    {
                        "check": "cursor_future",
                        "result": "problem" if _int(future) else "ok",
                        "column": cursor.name,
                        "rows": _int(future),
                        "now": now.isoformat(timespec="seconds"),
                        "max": None if cursor_max is None else str(cursor_max),
                        "how": how,
                    }
                )
        if rate is not None:
            checks.append(_recent(rate, _int(recent), how, None))
        return checks

    def _key_check(
        self,
        run: Callable[[str, list[Any]], tuple[Any, ...]],
        how: str,
        dialect: _Dialect,
        relation: str,
        target: _Target,
        *,
        passes: int = 1,
    ) -> dict[str, Any]:
        """Whether the key is unique over the whole table: proven by a constraint, or counted
        (in `passes` shares of the keys, each grouped on its own)."""
        check: dict[str, Any] = {"check": "primary_key_unique", "key": target.key}
        if not target.key:
            check.update(result="not_run", why="the table has no key, and none was given")
            return check
        if target.key_proven:
            kind = "primary key" if target.key == list(target.table.primary_key) else "unique index"
            check.update(result="ok", how=f"proven: the table's {kind} constraint")
            return check
        q = dialect.quote
        keys = ", ".join(q(k) for k in target.key)
        groups = extra = 0
        examples = []
        for share in range(passes):
            # Equal keys hash alike, so each share holds every row of its keys.
            where = f" WHERE hash({keys}) % {passes} = {share}" if passes > 1 else ""
            sql = (
                f"SELECT count(*), {dialect.coalesce_sum('n - 1')}, min(ex) FROM (SELECT "
                f"count(*) AS n, {dialect.key_text(target.key)} AS ex FROM {relation}{where} "
                f"GROUP BY {keys} HAVING count(*) > 1) d"
            )
            row = _first_row(run, sql, 3, check, how)
            if row is None:
                return check
            found, more, example = row
            groups += _int(found)
            extra += _int(more)
            if example is not None:
                examples.append(example)
        example = min(examples, default=None)
        check.update(
            result="problem" if _int(groups) else "ok",
            duplicate_keys=_int(groups),
            duplicate_rows=_int(extra),
            example_key=_example(example),
            how=how,
        )
        return check

    def _order_check(self, target: _Target) -> dict[str, Any]:
        """For append on an integer cursor: rows stored after a row with a higher cursor value,
        a sign that rows do not arrive in cursor order (Postgres heap order only)."""
        assert target.cursor is not None
        column = target.cursor.name
        check: dict[str, Any] = {"check": "cursor_insert_order", "column": column}
        if self.source_type != "Postgres":
            check.update(
                result="not_run",
                why="MySQL's InnoDB stores rows in key order, so the order rows arrived in "
                "cannot be read back",
            )
            return check
        c = quote_ident(column)
        relation = f"{quote_ident(target.namespace)}.{quote_ident(target.table.name)}"
        sql = (
            f"SELECT count(*), min({c})::text FROM (SELECT {c}, max({c}) OVER (ROWS BETWEEN "
            f"UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM {relation}) s "
            f"WHERE {c} < before"
        )
        how = f"at the source in stored order, read-only, statement timeout {self._timeout_text()}"
        row = _first_row(self._source_query(), sql, 2, check, how)
        if row is None:
            return check
        rows, example = row
        check.update(
            result="problem" if _int(rows) else "ok",
            rows=_int(rows),
            example=example,
            how=how,
        )
        return check

    # --- estimates ------------------------------------------------------------------------

    def _estimates(self, rows: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
        """The first sync's rows and time, labelled with their basis. What PostHog would bill
        is estimated from these and the checks by the tools (tools/billing.py)."""
        total = rows.get("count")
        rate = local.get("rows_per_second")
        first: dict[str, Any] = {"rows": total, "rows_basis": rows.get("basis")}
        if total is not None and rate:
            first["seconds_estimate"] = round(total / rate, 1)
            first["seconds_basis"] = (
                f"{total:,} rows at this machine's measured rate of {rate:,} rows/s (export and "
                "load); PostHog Cloud's rate differs with its distance to the database and its "
                "own pipeline"
            )
        return {"first_sync": first}

    # --- the answer's other parts ---------------------------------------------------------

    def _schemas(self, targets: list[_Target]) -> list[dict[str, Any]]:
        """`payload.schemas` ready for create: as given, with the obvious, safe fixes."""
        by_name = {str(t.item["name"]): t for t in targets}
        ready = []
        for item in self.tables:
            target = by_name.get(str(item["name"]))
            ready.append(_fixed(target) if target is not None else dict(item))
        return ready

    def _cloud(self) -> dict[str, Any]:
        """What this machine can say about PostHog Cloud reaching the database: its host and TLS
        rules (`cloud_rules.py`); never that the database's firewall lets Cloud in."""
        host = str(self.job_inputs.get("host") or "").strip()
        problems: list[str] = []
        addresses = resolve(host) if host else []
        if host.lower() == "localhost" or (addresses and not all(map(is_public, addresses))):
            problems.append(f"{host}: {INTERNAL_HOST}")
        elif not addresses:
            problems.append(f"{host}: the host does not resolve from this machine")
        tls = self._tls()
        if tls is False:
            if self.source_type == "Postgres":
                problems.append(TLS_REQUIRED)
            else:
                problems.append(
                    "This connection is not encrypted; PostHog's MySQL source connects with "
                    "TLS when using_ssl is true (its default)."
                )
        return {
            "host": host,
            "addresses": addresses,
            "tls": tls,
            "problems": problems,
            "cannot_prove": (
                "that PostHog Cloud can reach this host: a firewall or allowlist between them "
                "is invisible from here (PostHog's egress addresses must be allowed)"
            ),
        }

    def _tls(self) -> bool | None:
        conn = self.conn
        with contextlib.suppress(Exception):
            if self.source_type == "Postgres":
                row = conn.execute(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()
                return bool(row[0]) if row else None
            with conn.cursor() as cur:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                row = cur.fetchone()
            return bool(row and row[1])
        return None


# --- SQL of the checks, per engine -----------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    name: str
    quote: Callable[[str], str]
    param: str

    def count_if(self, condition: str) -> str:
        return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def coalesce_sum(self, expression: str) -> str:
        return f"coalesce(sum({expression}), 0)"

    def text(self, expression: str) -> str:
        if self.name == "mysql":
            return f"CAST({expression} AS CHAR)"
        return f"CAST({expression} AS VARCHAR)" if self.name == "duckdb" else f"{expression}::text"

    def key_text(self, key: list[str]) -> str:
        columns = ", ".join(self.quote(k) for k in key)
        if self.name == "postgres":
            return f"json_build_array({columns})::text"
        if self.name == "mysql":
            return f"CAST(JSON_ARRAY({columns}) AS CHAR)"
        return f"json_array({columns})::VARCHAR"


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


_POSTGRES = _Dialect("postgres", quote_ident, "%s")
_MYSQL = _Dialect("mysql", _mysql_quote, "%s")
_DUCK = _Dialect("duckdb", quote_ident, "?")


def _moment(column: Column, at: datetime, dialect: _Dialect) -> Any:
    """`at` as a value to compare `column` with: a date for a date, UTC for the rest (the
    connections read times in UTC)."""
    if column.incremental_type == "date":
        return at.date()
    if dialect.name == "mysql" or column.duck_type == "TIMESTAMP":
        return at.replace(tzinfo=None)
    return at


def _rate_column(table: Table, cursor: Column | None) -> Column | None:
    """The column that shows how fast rows change: a date or timestamp cursor, else the
    table's preferred time column (PostHog's order), else None."""
    if cursor is not None and cursor.incremental_type in ("date", "timestamp"):
        return cursor
    times = {c.name: c for c in table.columns if c.incremental_type in ("date", "timestamp")}
    preferred = next((times[n] for n in PREFERRED_INCREMENTAL_FIELDS if n in times), None)
    return preferred or next(iter(times.values()), None)


def _recent(column: Column, rows: int | None, how: str, why: str | None) -> dict[str, Any]:
    check: dict[str, Any] = {
        "check": "recent_changes",
        "column": column.name,
        "days": RECENT_DAYS,
        "rows": rows,
        "result": "ok" if why is None else "cut_short",
        "how": how,
    }
    if why is not None:
        check["why"] = why
    return check


# --- results ---------------------------------------------------------------------------------


def _fixed(target: _Target) -> dict[str, Any]:
    entry = dict(target.item)
    for change in target.changes:
        entry[change["field"]] = change["to"]
    return entry


def _renamed(table: Table, name: str) -> Table:
    return Table(name, table.columns, table.primary_key)


def _merged_rows(
    target: _Target, local: dict[str, Any], checks: list[dict[str, Any]]
) -> int | None:
    """The rows an incremental first sync of the whole local copy keeps (one a key), when the
    key check over that copy settles it; None when only publishing the rows tells."""
    if target.sync_type != "incremental" or not target.key or not local.get("whole_table"):
        return None
    unique = next((c for c in checks if c["check"] == "primary_key_unique"), {})
    loaded = int(local.get("rows_loaded") or 0)
    if unique.get("result") == "ok" and unique.get("how", "").startswith("proven"):
        return loaded
    if unique.get("result") in ("ok", "problem") and "duplicate_rows" in unique:
        return loaded - int(unique["duplicate_rows"])
    return None


def _rows_answer(check: dict[str, Any] | None, stats: TableStats) -> dict[str, Any]:
    if check is not None and check.get("result") == "ok":
        return {"count": check["rows"], "exact": True, "basis": f"count(*) {check['how']}"}
    why = check.get("why") or check.get("error") if check else "not counted"
    if stats.rows is not None:
        return {
            "count": stats.rows,
            "exact": False,
            "basis": f"the database's own estimate (pg_class/TABLE_ROWS): the count was {why}",
        }
    return {"count": None, "exact": False, "basis": f"unknown: the count was {why}"}


def _problems(
    target: _Target, checks: list[dict[str, Any]], local: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each problem the checks found, and what fixes it."""
    problems: list[dict[str, Any]] = []
    by = {c["check"]: c for c in checks}
    name, key = target.name, target.key
    other_keys = [k for k in target.unique_keys if k != key]
    another_key = (
        f"set primary_key_columns to {other_keys[0]} (a unique index on columns that cannot "
        "be null)"
        if other_keys
        else "set primary_key_columns to columns that are unique in every row"
    )
    if target.sync_type == "incremental" and not key:
        problems.append(
            {
                "problem": "no_primary_key",
                "message": f"{name} has no primary key, and an incremental sync merges on one: "
                "PostHog fails it with 'Primary key required for incremental syncs' and stops "
                "syncing the table.",
                "fixes": [
                    another_key,
                    "sync it with append (new rows only) or full_refresh",
                    "leave the table out",
                ],
            }
        )
    unique = by.get("primary_key_unique", {})
    if unique.get("result") == "problem":
        problems.append(
            {
                "problem": "duplicate_primary_key",
                "message": f"{unique['duplicate_rows']:,} rows of {name} repeat a key of "
                f"{', '.join(key)} ({unique['duplicate_keys']:,} keys repeated; for example "
                f"{unique['example_key']})"
                + (
                    ": an incremental sync fails with 'The primary keys for this table are not "
                    "unique' and PostHog stops syncing the table"
                    if target.sync_type == "incremental"
                    else ": a later switch to incremental would fail; a merge keeps one row a key"
                ),
                "fixes": [
                    another_key,
                    "sync it with full_refresh or append, which do not merge on the key",
                    "leave the table out",
                ],
            }
        )
    nulls = by.get("primary_key_nulls", {})
    if nulls.get("result") == "problem":
        problems.append(
            {
                "problem": "null_primary_key",
                "message": f"{nulls['rows']:,} rows of {name} have a null in {', '.join(key)}: "
                "merged on the key, they collapse into one another",
                "fixes": [
                    another_key,
                    "sync it with full_refresh or append",
                    "leave the table out",
                ],
            }
        )
    cursor_fixes = [
        "choose another cursor: a column set on every insert and update, never null, "
        "never ahead of the clock",
        "sync it with full_refresh (every row at every sync; more rows billed)",
        "leave the table out",
    ]
    cnulls = by.get("cursor_nulls", {})
    if cnulls.get("result") == "problem" and target.sync_type in CURSOR_SYNC_TYPES:
        problems.append(
            {
                "problem": "null_cursor",
                "message": f"{cnulls['rows']:,} rows of {name} have no {cnulls['column']}: the "
                f"first sync reads them, but no later {target.sync_type} sync sees them or "
                f"their changes ('{cnulls['column']} > cursor' is never true for a null)",
                "fixes": cursor_fixes,
            }
        )
    future = by.get("cursor_future", {})
    if future.get("result") == "problem" and target.sync_type in CURSOR_SYNC_TYPES:
        problems.append(
            {
                "problem": "cursor_in_future",
                "message": f"{future['rows']:,} rows of {name} have {future['column']} after "
                f"now (up to {future['max']}): the saved cursor jumps there, and rows written "
                "with the right time are skipped until the clock passes it",
                "fixes": cursor_fixes,
            }
        )
    order = by.get("cursor_insert_order", {})
    if order.get("result") == "problem":
        problems.append(
            {
                "problem": "cursor_out_of_order",
                "message": f"{order['rows']:,} rows of {name} are stored after a row with a "
                f"higher {order['column']} (e.g. {order['example']}): rows do not arrive in "
                "cursor order, so an append sync can pass a value before a lower one is "
                "written, and never read it. A sign, not a proof: stored order is not always "
                "insert order",
                "fixes": [
                    "choose a cursor written in commit order, e.g. a timestamp set on insert",
                    "sync it with full_refresh",
                    "leave the table out",
                ],
            }
        )
    convert = by.get("values_convert", {})
    if convert.get("result") == "problem":
        listed = "; ".join(
            f"{c['column']} ({c['type']}): e.g. {c['example']!r}" for c in convert["columns"]
        )
        problems.append(
            {
                "problem": "values_do_not_convert",
                "message": f"values of {name} did not convert in the local sync: {listed}",
                "fixes": [
                    "fix or remove those values at the source",
                    "leave those columns out (enabled_columns)",
                    "leave the table out",
                ],
            }
        )
    if local.get("status") == "failed" and convert.get("result") != "problem":
        problems.append(
            {
                "problem": "sync_failed",
                "message": f"the local sync of {name} failed: {local.get('error')}",
                "fixes": ["fix what the error names, then rehearse again", "leave the table out"],
            }
        )
    if target.stats.row_security:
        problems.append(
            {
                "problem": "row_level_security",
                "message": RLS_WARNING_MESSAGE,
                "fixes": ["grant the role BYPASSRLS, or accept the rows the policy permits"],
            }
        )
    return problems


def _cannot_prove(target: _Target) -> list[str]:
    notes = []
    if target.sync_type == "incremental" and target.cursor is not None:
        notes.append(
            f"that every update moves {target.cursor.name} forward: that is the application's "
            "doing (a trigger or the ORM), not the table's; an update that leaves it alone is "
            "never synced"
        )
    if target.sync_type == "append" and target.cursor is not None:
        notes.append(
            f"that rows are never written with a {target.cursor.name} lower than one already "
            "synced (late commits, back-dated rows): an append sync never reads them"
        )
    return notes


def _conversion_check(
    local: dict[str, Any], rejected: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if local.get("status") == "not_run" or "rows_loaded" not in local:
        return {"check": "values_convert", "result": "not_run", "why": "no rows were synced"}
    check: dict[str, Any] = {
        "check": "values_convert",
        "rows_checked": local.get("rows_read"),
        "how": "the local sync's load into DuckDB, with each column's exact type",
    }
    if rejected:
        check.update(result="problem", columns=rejected)
    else:
        check.update(result="ok")
    return check


def _unconverted(rejected: list[Any], columns: list[Column]) -> list[dict[str, Any]]:
    """One entry a column: its type at the source and in DuckDB, an example and the count."""
    by_name = {c.name: c for c in columns}
    found: dict[str, dict[str, Any]] = {}
    for r in rejected:
        entry = found.get(r.column)
        if entry is None:
            column = by_name.get(r.column)
            entry = found[r.column] = {
                "column": r.column,
                "type": column.data_type if column else None,
                "loaded_as": column.duck_type if column else None,
                "example": _rejected_value(r),
                "rows": 0,
            }
        entry["rows"] += 1
    return list(found.values())


def _rejected_value(r: Any) -> str | None:
    fields = next(csv.reader([r.csv_line]), [])
    if 0 < r.index <= len(fields):
        return str(fields[r.index - 1])
    match = re.search(r'Could not convert string "(.*)" to', r.message)
    return match[1] if match else None


def _is_conversion(exc: BaseException) -> bool:
    import duckdb

    return isinstance(exc, duckdb.ConversionException | duckdb.InvalidInputException)


def _join(parts: list[Path], path: Path) -> None:
    """Write the parts, in order, as one file."""
    with path.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _example(value: Any) -> Any:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def _first_row(
    run: Callable[[str, list[Any]], tuple[Any, ...]],
    sql: str,
    width: int,
    check: dict[str, Any],
    how: str,
) -> list[Any] | None:
    """A check's query: its row, padded to `width` values; None when it was cut short or
    failed, `check` then saying which (a cancelled rehearsal still raises)."""
    try:
        return (list(run(sql, [])) + [None] * width)[:width]
    except _CutShort as exc:
        check.update(result="cut_short", why=exc.why, how=how)
    except RehearsalCancelled:
        raise
    except Exception as exc:
        check.update(result="failed", error=_first_line(exc), how=how)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_DOTTED = (
    "PostHog reads every schema of a Postgres source whose 'schema' is blank, and lists each "
    "table as schema.table"
)
