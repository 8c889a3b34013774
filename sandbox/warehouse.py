"""The DuckDB warehouse: staging loads and atomic publication of synced tables, and the copies of
published tables that queries read (`query_worker.py`)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .connectors import (
    Column,
    SourceError,
    check_cancelled,
    quote_ident,
)

if TYPE_CHECKING:
    import duckdb

STAGING_PREFIX = "_staging_"
_STATE = "_sandbox_sync_state"
# Each CDC table's position: the first commit position its warehouse tables do not hold yet.
_CDC_STATE = "_sandbox_cdc_state"
# How a CDC table's change-log (`_cdc`) table is keyed in _STATE, beside the table's own row.
CDC_HISTORY_KEY = "{}:cdc"
# The columns PostHog's CDC adds (`cdc/batcher.py`): to every CDC table, and SCD2's to the log.
CDC_OP, CDC_TIMESTAMP, CDC_SEQ = "_ph_cdc_op", "_ph_cdc_timestamp", "_ph_cdc_seq"
DELETED, DELETED_AT = "_ph_deleted", "_ph_deleted_at"
VALID_FROM, VALID_TO = "valid_from", "valid_to"
# Staging-only columns of a batch of changes: the columns left out (unchanged TOAST values, a
# DELETE's non-key columns), separated by OMITTED_SEPARATOR, and the change's place in the batch.
OMITTED, ORDER = "_sandbox_omitted", "_sandbox_order"
OMITTED_SEPARATOR = "\x1f"
# Where the copies queries read live: `<table>.<publication>.duckdb`, one a table.
PUBLISHED_DIR = "published"


@dataclass(frozen=True)
class Rejected:
    """A value DuckDB could not convert to its column's type: the column, its place in the CSV
    row (1-based), the row as the file has it, and DuckDB's message."""

    column: str
    index: int
    csv_line: str
    message: str


class DirectoryInUse(RuntimeError):
    """Another process has the sandbox directory's warehouse open; `pid` is that process, when
    DuckDB's lock error names it."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class Warehouse:
    """One read-write DuckDB connection for the process; sync threads use cursors of it.

    Each schema's data has a generation, which every `drop_table` increments: a sync that read
    the table and its cursor in one generation can tell that they were deleted before it
    publishes. Generations live in memory; after a restart no sync is running.

    Queries run in other processes, which cannot open this file while this one has it open
    read-write; they read copies (`copy_for_query`). Each publication gets an id, saved with
    the table in the same transaction; a table's copy is written when a query first reads the
    table after a publication, from one snapshot of the id and the rows, and is named after the
    id. So a copy is always one whole publication, and syncs never pay for copies nobody reads.
    """

    def __init__(
        self,
        path: Path,
        *,
        staging_dir: Path | None = None,
        published_dir: Path | None = None,
        memory_limit: str = "256MB",
    ) -> None:
        """Open (or create) the warehouse file; delete copies of publications no longer current.

        File access is then locked for good: DuckDB may read and write only its own files, the
        spill folder, `staging_dir` (where syncs stage their CSV files) and `published_dir` (the
        copies queries read; default `published/` next to the file), so no query can read or
        write anything else, attach another database or load an extension.

        Raises:
            DirectoryInUse: another process has the file open.
        """
        import duckdb

        self.path = path
        self.published_dir = published_dir or path.with_name(PUBLISHED_DIR)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            found = re.search(r"\(PID (\d+)\)", str(exc))
            pid = int(found[1]) if found else None
            holder = f" (pid {pid})" if pid else ""
            raise DirectoryInUse(
                f"{path} is in use by another process{holder}: a sandbox directory serves one "
                "process at a time (stop the other sandbox or use another --dir)",
                pid=pid,
            ) from exc
        # Bounded memory: the sandbox's peak during a 1M-row sync must stay well under 500 MB.
        self._con.execute(f"SET memory_limit = '{memory_limit}'")
        self._con.execute("SET preserve_insertion_order = false")
        spill = path.with_name(path.name + ".tmp")
        allowed = [spill, self.published_dir, *([staging_dir] if staging_dir else [])]
        for folder in allowed:
            folder.mkdir(parents=True, exist_ok=True)
        self._con.execute(f"SET temp_directory = '{spill}'")
        listed = ", ".join("'" + str(f).replace("'", "''") + "/'" for f in allowed)
        self._con.execute(f"SET allowed_directories = [{listed}]")
        # Irreversible for this process: DuckDB refuses to turn it back on.
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")
        # DuckDB resolves concurrent writers optimistically and aborts on conflict; one writer at a
        # time keeps every publication deterministic, and the slow part (COPY) runs outside it.
        self._write_lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {_STATE} "
            "(schema_id VARCHAR PRIMARY KEY, table_name VARCHAR, cursor_value VARCHAR, "
            "cursor_column VARCHAR)"
        )
        # The id of the table's latest publication (tables published before ids existed get one).
        self._con.execute(f"ALTER TABLE {_STATE} ADD COLUMN IF NOT EXISTS publication VARCHAR")
        self._con.execute(
            f"UPDATE {_STATE} SET publication = replace(uuid()::VARCHAR, '-', '') "
            "WHERE publication IS NULL"
        )
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {_CDC_STATE} (schema_id VARCHAR PRIMARY KEY, "
            "position BIGINT)"
        )
        # One copier a table; the copies no longer current whose deletion failed (Windows: a
        # query worker still has it open), tried again after the next copy or drop.
        self._copiers: dict[str, threading.Lock] = {}
        self._files_lock = threading.Lock()
        self._stale: set[Path] = set()
        # Each table's latest publication as last committed, and the copy last written: when
        # they agree, a query needs neither DuckDB nor the file system to find its copy.
        self._latest: dict[str, str] = {
            str(name): str(publication)
            for name, publication in self._con.execute(
                f"SELECT table_name, publication FROM {_STATE} WHERE table_name IS NOT NULL"
            ).fetchall()
        }
        self._copies: dict[str, tuple[str, Path]] = {}
        current = {self._copy_path(name, p) for name, p in self._latest.items()}
        self._retire(f for f in self.published_dir.iterdir() if f not in current)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection handle for one thread."""
        return self._con.cursor()

    @contextmanager
    def locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the write lock and yield a cursor: no publish or drop happens meanwhile."""
        with self._write_lock:
            yield self.cursor()

    def copy_for_query(self, name: str) -> Path | None:
        """The file holding the published table `name` as last published, for a query process
        to open read-only; written now if the table was published since its last copy (about
        0.3 s a million rows). None if no table `name` is published.

        It takes no write lock: a sync may publish meanwhile, and the copy is then the
        publication before it, whole. Blocking; call it from a worker thread.
        """
        with self._files_lock:
            copier = self._copiers.setdefault(name, threading.Lock())
            latest, copied = self._latest.get(name), self._copies.get(name)
        if latest is not None and copied is not None and copied[0] == latest:
            return copied[1]
        with copier:
            cur = self.cursor()
            try:
                publication = self._publication(cur, name)
                if publication is None:
                    return None
                path: Path | None = self._copy_path(name, publication)
                if path is not None and not path.is_file():
                    path = self._write_copy(cur, name)
            finally:
                cur.close()
            if path is None:
                return None
            with self._files_lock:
                # Named `<table>.<publication>.duckdb`: the name says which publication it is.
                self._copies[name] = (path.name[len(name) + 1 : -len(".duckdb")], path)
        self._retire(f for f in self.published_dir.glob(f"{name}.*.duckdb") if f != path)
        return path

    def _publication(self, cur: duckdb.DuckDBPyConnection, name: str) -> str | None:
        row = cur.execute(
            f"SELECT publication FROM {_STATE} WHERE table_name = ? LIMIT 1", [name]
        ).fetchone()
        return None if row is None else str(row[0])

    def _copy_path(self, name: str, publication: str) -> Path:
        return self.published_dir / f"{name}.{publication}.duckdb"

    def _write_copy(self, cur: duckdb.DuckDBPyConnection, name: str) -> Path | None:
        """Copy the table as one transaction sees it, with the id of the publication it sees,
        into a file named after that id; None if the table is gone."""
        temporary = self.published_dir / f".{uuid.uuid4().hex}.tmp"
        database = f"_copy_{uuid.uuid4().hex[:12]}"
        path: Path | None = None
        cur.execute(f"ATTACH {_sql_str(str(temporary))} AS {database}")
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                publication = self._publication(cur, name)
                if publication is not None:
                    path = self._copy_path(name, publication)
                    cur.execute(
                        f"CREATE TABLE {database}.main.{quote_ident(name)} AS "
                        f"SELECT * FROM main.{quote_ident(name)}"
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.execute(f"DETACH {database}")
            if path is None:
                temporary.unlink(missing_ok=True)
        if path is not None:
            os.replace(temporary, path)
        return path

    def _retire(self, paths: Iterable[Path] = ()) -> None:
        """Delete copies no longer current (and those a sweep could not delete before). A query
        process that has one open reads it until its next query (POSIX); where an open file
        cannot be deleted (Windows), it stays until a later sweep."""
        with self._files_lock:
            self._stale.update(paths)
            for path in list(self._stale):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                    self._stale.discard(path)

    def generation(self, schema_id: str) -> int:
        """How many times the schema's data was dropped (hold `locked()` to rely on it)."""
        return self._generations.get(schema_id, 0)

    def drop_leftover_staging(self) -> list[str]:
        """Drop staging tables left by a sync that was killed; its published table is untouched."""
        with self.locked() as cur:
            names = [
                row[0]
                for row in cur.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, ?)",
                    [STAGING_PREFIX],
                ).fetchall()
            ]
            for name in names:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
        return names

    def table_exists(self, name: str) -> bool:
        """Whether a published table exists."""
        cur = self.cursor()
        row = cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
            [name],
        ).fetchone()
        return bool(row and row[0])

    def count(self, name: str) -> int:
        """Rows in a published table."""
        row = self.cursor().execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()
        return int(row[0]) if row else 0

    def cursor_value(self, schema_id: str, cursor_column: str | None) -> str | None:
        """The incremental cursor saved with the schema's last publication, if it is a value of
        `cursor_column` (a cursor saved for another column is no cursor for this one)."""
        row = (
            self.cursor()
            .execute(
                f"SELECT cursor_value, cursor_column FROM {_STATE} WHERE schema_id = ?",
                [schema_id],
            )
            .fetchone()
        )
        if row is None or cursor_column is None or row[1] != cursor_column:
            return None
        return str(row[0]) if row[0] is not None else None

    def table_owner(self, cur: duckdb.DuckDBPyConnection, name: str) -> str | None:
        """The schema whose publications wrote the table `name` (DuckDB names ignore case)."""
        row = cur.execute(
            f"SELECT schema_id FROM {_STATE} WHERE lower(table_name) = lower(?) LIMIT 1", [name]
        ).fetchone()
        return None if row is None else str(row[0])

    def load_staging(
        self,
        cur: duckdb.DuckDBPyConnection,
        csv_path: Path,
        staging: str,
        columns: list[Column],
        cancelled: threading.Event,
    ) -> int:
        """Load a COPY CSV file into a new staging table; return its row count."""
        check_cancelled(cancelled)
        cur.execute(
            f"CREATE TABLE {quote_ident(staging)} AS SELECT * FROM {_read_csv(columns)}",
            [str(csv_path)],
        )
        row = cur.execute(f"SELECT count(*) FROM {quote_ident(staging)}").fetchone()
        return int(row[0]) if row else 0

    def create_staging(
        self, cur: duckdb.DuckDBPyConnection, staging: str, columns: list[Column]
    ) -> None:
        """Create an empty staging table with the columns' exact types, unless it exists."""
        typed = ", ".join(f"{quote_ident(c.name)} {c.duck_type}" for c in columns)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(staging)} ({typed})")

    def append_staging(
        self,
        cur: duckdb.DuckDBPyConnection,
        csv_path: Path,
        staging: str,
        columns: list[Column],
    ) -> None:
        """Add the rows of a COPY CSV file to a staging table (created by the first call), as
        `load_staging` loads one: the parts of an export can load while it runs."""
        self.create_staging(cur, staging, columns)
        cur.execute(
            f"INSERT INTO {quote_ident(staging)} SELECT * FROM {_read_csv(columns)}",
            [str(csv_path)],
        )

    def count_staging(self, cur: duckdb.DuckDBPyConnection, staging: str) -> int:
        """Rows in a staging table."""
        row = cur.execute(f"SELECT count(*) FROM {quote_ident(staging)}").fetchone()
        return int(row[0]) if row else 0

    def load_convertible(
        self,
        cur: duckdb.DuckDBPyConnection,
        csv_path: Path,
        staging: str,
        columns: list[Column],
    ) -> tuple[int, list[Rejected]]:
        """Load the rows of a COPY CSV file whose values all convert (after `load_staging`
        refused the file); return their count and the values that did not convert, one a
        rejected row and column, in file order."""
        cur.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")
        cur.execute(
            f"CREATE TABLE {quote_ident(staging)} AS SELECT * FROM "
            f"{_read_csv(columns, store_rejects=True)}",
            [str(csv_path)],
        )
        row = cur.execute(f"SELECT count(*) FROM {quote_ident(staging)}").fetchone()
        rejected = [
            Rejected(str(name), int(index), str(line), str(message))
            for name, index, line, message in cur.execute(
                "SELECT column_name, column_idx, csv_line, error_message FROM reject_errors "
                "ORDER BY line, column_idx"
            ).fetchall()
        ]
        return (int(row[0]) if row else 0), rejected

    def publish(
        self,
        cur: duckdb.DuckDBPyConnection,
        *,
        schema_id: str,
        staging: str,
        final: str,
        mode: str,
        primary_key: list[str],
        cursor_column: str | None,
        new_cursor: str | None = None,
    ) -> str:
        """Move staged rows into the published table in one transaction, with the new cursor.

        `full_refresh` swaps the table, `incremental` merges on the primary key, `append` inserts.
        The cursor saved is `new_cursor` when given (xmin's ceiling), else the staged rows' highest
        value of `cursor_column`.
        Call it inside `locked()`. Returns what it did, for the sync's log: "created the table",
        "replaced the table", "merged on <key>" or "appended the rows".

        Raises:
            SourceError: another schema's publications wrote the table `final`.
        """
        stg, fin = quote_ident(staging), quote_ident(final)
        owner = self.table_owner(cur, final)
        if owner is not None and owner != schema_id:
            raise SourceError(
                f"Warehouse table {final} already belongs to another table of this project; "
                "give one of the sources another prefix"
            )
        # A cursor given (xmin's ceiling) is not a column of the rows: nothing orders them by it.
        order_by = cursor_column if new_cursor is None else None
        if cursor_column is not None and new_cursor is None:
            row = cur.execute(
                f"SELECT max({quote_ident(cursor_column)})::VARCHAR FROM {stg}"
            ).fetchone()
            new_cursor = row[0] if row else None
        if new_cursor is None:
            new_cursor = (
                self.cursor_value(schema_id, cursor_column) if mode != "full_refresh" else None
            )
        exists = self.table_exists(final)
        merge = mode == "incremental" and bool(primary_key)
        if not exists:
            action = "created the table"
        elif mode == "full_refresh":
            action = "replaced the table"
        else:
            action = f"merged on {', '.join(primary_key)}" if merge else "appended the rows"
        cur.execute("BEGIN TRANSACTION")
        try:
            if mode == "full_refresh" or not exists:
                cur.execute(f"DROP TABLE IF EXISTS {fin}")
                if merge:
                    cur.execute(f"CREATE TABLE {fin} AS {_dedupe(stg, primary_key, order_by)}")
                    cur.execute(f"DROP TABLE {stg}")
                else:
                    cur.execute(f"ALTER TABLE {stg} RENAME TO {fin}")
            else:
                self._add_new_columns(cur, stg, fin)
                if merge:
                    match = " AND ".join(
                        f"{fin}.{quote_ident(k)} IS NOT DISTINCT FROM {stg}.{quote_ident(k)}"
                        for k in primary_key
                    )
                    cur.execute(f"DELETE FROM {fin} USING {stg} WHERE {match}")
                    source = _dedupe(stg, primary_key, order_by)
                else:
                    source = f"SELECT * FROM {stg}"
                cur.execute(f"INSERT INTO {fin} BY NAME {source}")
                cur.execute(f"DROP TABLE {stg}")
            publication = uuid.uuid4().hex
            cur.execute(
                f"INSERT OR REPLACE INTO {_STATE} (schema_id, table_name, cursor_value, "
                "cursor_column, publication) VALUES (?, ?, ?, ?, ?)",
                [
                    schema_id,
                    final,
                    new_cursor,
                    cursor_column if new_cursor is not None else None,
                    publication,
                ],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        with self._files_lock:
            self._latest[final] = publication
        return action

    def _add_new_columns(
        self,
        cur: duckdb.DuckDBPyConnection,
        stg: str,
        fin: str,
        *,
        skip: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Columns that appeared upstream since the last sync are added to the published table."""
        existing = dict(_describe(cur, fin))
        for name, dtype in _describe(cur, stg):
            if name not in existing and name not in skip:
                cur.execute(f"ALTER TABLE {fin} ADD COLUMN {quote_ident(name)} {dtype}")

    def drop_staging(self, cur: duckdb.DuckDBPyConnection, staging: str) -> None:
        """Drop a staging table if it exists."""
        cur.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")

    def drop_table(self, cur: duckdb.DuckDBPyConnection, schema_id: str, name: str | None) -> None:
        """Drop a published table, forget its cursor and start the schema's next generation.

        Call it inside `locked()`.
        """
        keys = [schema_id, CDC_HISTORY_KEY.format(schema_id)]
        names = {name} if name else set()
        names.update(
            str(row[0])
            for row in cur.execute(
                f"SELECT table_name FROM {_STATE} WHERE schema_id IN (?, ?) "
                "AND table_name IS NOT NULL",
                keys,
            ).fetchall()
        )
        cur.execute("BEGIN TRANSACTION")
        for dropped in names:
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(dropped)}")
        cur.execute(f"DELETE FROM {_STATE} WHERE schema_id IN (?, ?)", keys)
        cur.execute(f"DELETE FROM {_CDC_STATE} WHERE schema_id = ?", [schema_id])
        cur.execute("COMMIT")
        self._generations[schema_id] = self.generation(schema_id) + 1
        for dropped in names:
            with self._files_lock:
                self._latest.pop(dropped, None)
                self._copies.pop(dropped, None)
            self._retire(self.published_dir.glob(f"{dropped}.*.duckdb"))

    def cdc_position(self, schema_id: str) -> int | None:
        """The first commit position a CDC table's warehouse tables do not hold yet; None
        before its snapshot."""
        row = (
            self.cursor()
            .execute(f"SELECT position FROM {_CDC_STATE} WHERE schema_id = ?", [schema_id])
            .fetchone()
        )
        return None if row is None or row[0] is None else int(row[0])

    def reset_cdc(self, schema_id: str) -> None:
        """Forget a CDC table's position: its next sync takes a new snapshot (its tables stay
        queryable until that snapshot replaces them)."""
        with self.locked() as cur:
            cur.execute(f"DELETE FROM {_CDC_STATE} WHERE schema_id = ?", [schema_id])

    def cdc_positions(self, schema_ids: Iterable[str]) -> dict[str, int]:
        """The positions of these CDC tables that have one."""
        wanted = list(schema_ids)
        if not wanted:
            return {}
        rows = self.cursor().execute(
            f"SELECT schema_id, position FROM {_CDC_STATE} WHERE list_contains(?, schema_id)",
            [wanted],
        )
        return {str(k): int(v) for k, v in rows.fetchall() if v is not None}

    def publish_cdc(
        self,
        cur: duckdb.DuckDBPyConnection,
        *,
        schema_id: str,
        staging: str,
        targets: CdcTargets,
        primary_key: list[str],
        position: int,
        snapshot_at: str | None = None,
    ) -> None:
        """Publish a CDC table's snapshot (`snapshot_at` given: the staged rows replace its
        tables) or a batch of its changes (merged into the current rows, appended to the change
        log), with its new position, in one transaction: a sync killed before it leaves the
        tables and position as they were, and one killed after it skips these changes.

        The current-rows table follows PostHog's `incremental_merge` (one row a key, a delete
        kept as the row's last values with `_ph_deleted` true); the change log its `scd2_append`
        (every change a row, `valid_to` closed by the key's next change). Call inside `locked()`.

        Raises:
            SourceError: another schema's publications wrote one of the tables.
        """
        for key, name in targets.keyed(schema_id):
            owner = self.table_owner(cur, name)
            if owner is not None and owner != key:
                raise SourceError(
                    f"Warehouse table {name} already belongs to another table of this project; "
                    "give one of the sources another prefix"
                )
        stg = quote_ident(staging)
        published: dict[str, str] = {}
        cur.execute("BEGIN TRANSACTION")
        try:
            if snapshot_at is not None:
                self._cdc_snapshot(cur, stg, targets, position, snapshot_at)
            else:
                self._cdc_changes(cur, stg, targets, primary_key)
            cur.execute(f"DROP TABLE {stg}")
            for key, name in targets.keyed(schema_id):
                publication = uuid.uuid4().hex
                cur.execute(
                    f"INSERT OR REPLACE INTO {_STATE} (schema_id, table_name, cursor_value, "
                    "cursor_column, publication) VALUES (?, ?, NULL, NULL, ?)",
                    [key, name, publication],
                )
                published[name] = publication
            for key in (schema_id, CDC_HISTORY_KEY.format(schema_id)):
                if key not in dict(targets.keyed(schema_id)):
                    self._forget(cur, key)
            cur.execute(
                f"INSERT OR REPLACE INTO {_CDC_STATE} (schema_id, position) VALUES (?, ?)",
                [schema_id, position],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        with self._files_lock:
            self._latest.update(published)

    def _forget(self, cur: duckdb.DuckDBPyConnection, key: str) -> None:
        """Drop a table a CDC table no longer writes (its table mode changed), in the caller's
        transaction."""
        row = cur.execute(f"SELECT table_name FROM {_STATE} WHERE schema_id = ?", [key]).fetchone()
        if row is not None and row[0]:
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(str(row[0]))}")
        cur.execute(f"DELETE FROM {_STATE} WHERE schema_id = ?", [key])

    def _cdc_snapshot(
        self,
        cur: duckdb.DuckDBPyConnection,
        stg: str,
        targets: CdcTargets,
        position: int,
        snapshot_at: str,
    ) -> None:
        at = f"{_sql_str(snapshot_at)}::TIMESTAMPTZ"
        live = f"false AS {DELETED}, NULL::TIMESTAMPTZ AS {DELETED_AT}"
        # The current rows carry no change; the log has each row as inserted by the snapshot.
        meta = {
            targets.current: f"NULL::VARCHAR AS {CDC_OP}, NULL::TIMESTAMPTZ AS {CDC_TIMESTAMP}, "
            f"NULL::BIGINT AS {CDC_SEQ}, {live}",
            targets.history: f"'I' AS {CDC_OP}, {at} AS {CDC_TIMESTAMP}, "
            f"{int(position)}::BIGINT AS {CDC_SEQ}, {live}, {at} AS {VALID_FROM}, "
            f"NULL::TIMESTAMPTZ AS {VALID_TO}",
        }
        for name, columns in meta.items():
            if name is not None:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
                cur.execute(f"CREATE TABLE {quote_ident(name)} AS SELECT *, {columns} FROM {stg}")

    def _cdc_changes(
        self,
        cur: duckdb.DuckDBPyConnection,
        stg: str,
        targets: CdcTargets,
        primary_key: list[str],
    ) -> None:
        staged = [n for n, _ in _describe(cur, stg)]
        data = [c for c in staged if c not in (CDC_OP, CDC_TIMESTAMP, CDC_SEQ, OMITTED, ORDER)]
        keys = ", ".join(quote_ident(k) for k in primary_key)

        def match(a: str, b: str) -> str:
            return " AND ".join(
                f"{a}.{quote_ident(k)} IS NOT DISTINCT FROM {b}.{quote_ident(k)}"
                for k in primary_key
            )

        # Values the stream left out (an unchanged TOAST value, a delete's non-key columns) are
        # the row's last known ones: the current row, or the log's open version of it.
        known = None
        if targets.current is not None and self.table_exists(targets.current):
            known = quote_ident(targets.current)
        elif targets.history is not None and self.table_exists(targets.history):
            known = f"(SELECT * FROM {quote_ident(targets.history)} WHERE {VALID_TO} IS NULL)"
        if known is not None:
            known_columns = {n for n, _ in _describe(cur, known)}
            omitted = cur.execute(
                f"SELECT DISTINCT unnest(string_split({OMITTED}, chr(31))) FROM {stg} "
                f"WHERE {OMITTED} IS NOT NULL"
            ).fetchall()
            for (column,) in omitted:
                if column not in known_columns or column not in data:
                    continue
                col = quote_ident(column)
                cur.execute(
                    f"UPDATE {stg} SET {col} = k.{col} FROM {known} k WHERE {match(stg, 'k')} "
                    f"AND list_contains(string_split({stg}.{OMITTED}, chr(31)), ?)",
                    [column],
                )
        flags = (
            f"({CDC_OP} = 'D') AS {DELETED}, "
            f"CASE WHEN {CDC_OP} = 'D' THEN {CDC_TIMESTAMP} END AS {DELETED_AT}"
        )
        picked = ", ".join(quote_ident(c) for c in data)
        meta = f"{CDC_OP}, {CDC_TIMESTAMP}, {CDC_SEQ}, {flags}"
        if targets.current is not None:
            fin = quote_ident(targets.current)
            self._add_new_columns(cur, stg, fin, skip={OMITTED, ORDER})
            cur.execute(
                f"DELETE FROM {fin} USING (SELECT DISTINCT {keys} FROM {stg}) s "
                f"WHERE {match(fin, 's')}"
            )
            cur.execute(
                f"INSERT INTO {fin} BY NAME SELECT {picked}, {meta} FROM {stg} "
                f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {ORDER} DESC) = 1"
            )
        if targets.history is not None:
            log = quote_ident(targets.history)
            self._add_new_columns(cur, stg, log, skip={OMITTED, ORDER})
            cur.execute(
                f"UPDATE {log} SET {VALID_TO} = f.first_at FROM (SELECT {keys}, "
                f"min_by({CDC_TIMESTAMP}, {ORDER}) AS first_at FROM {stg} GROUP BY {keys}) f "
                f"WHERE {log}.{VALID_TO} IS NULL AND {match(log, 'f')}"
            )
            cur.execute(
                f"INSERT INTO {log} BY NAME SELECT {picked}, {meta}, "
                f"{CDC_TIMESTAMP} AS {VALID_FROM}, lead({CDC_TIMESTAMP}) OVER "
                f"(PARTITION BY {keys} ORDER BY {ORDER}) AS {VALID_TO} FROM {stg} ORDER BY {ORDER}"
            )

    def columns(self, name: str) -> list[tuple[str, str]]:
        """Name and DuckDB type of each column of a published table."""
        return [
            (r[0], r[1]) for r in self.cursor().execute(f"DESCRIBE {quote_ident(name)}").fetchall()
        ]

    def close(self) -> None:
        """Checkpoint and close the database file."""
        with self._write_lock:
            self._con.execute("CHECKPOINT")
            self._con.close()
        self._retire()


@dataclass(frozen=True)
class CdcTargets:
    """The warehouse tables a CDC table writes: its current rows (`consolidated`, `both`) and
    its change log, `<table>_cdc` (`cdc_only`, `both`), as PostHog names them."""

    current: str | None
    history: str | None

    def keyed(self, schema_id: str) -> list[tuple[str, str]]:
        """Each table with the key its state is saved under."""
        keyed = []
        if self.current is not None:
            keyed.append((schema_id, self.current))
        if self.history is not None:
            keyed.append((CDC_HISTORY_KEY.format(schema_id), self.history))
        return keyed


def _describe(cur: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in cur.execute(f"DESCRIBE {relation}").fetchall()]


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_csv(columns: list[Column], *, store_rejects: bool = False) -> str:
    """DuckDB's reading of a COPY CSV file (its path the one parameter), with the exact column
    types; `store_rejects` keeps the rows that convert and lists the others in `reject_errors`."""
    types = ", ".join(f"{_sql_str(c.name)}: {_sql_str(c.duck_type)}" for c in columns)
    rejects = ", store_rejects = true" if store_rejects else ""
    return (
        f"read_csv(?, header = false, auto_detect = false, columns = {{{types}}}, quote = '\"', "
        f"escape = '\"', allow_quoted_nulls = false, new_line = '\\n'{rejects})"
    )


def _dedupe(stg: str, primary_key: list[str], cursor_column: str | None) -> str:
    keys = ", ".join(quote_ident(k) for k in primary_key)
    order = f" ORDER BY {quote_ident(cursor_column)} DESC" if cursor_column else ""
    return f"SELECT * FROM {stg} QUALIFY row_number() OVER (PARTITION BY {keys}{order}) = 1"
