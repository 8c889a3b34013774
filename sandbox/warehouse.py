"""The DuckDB warehouse: staging loads and atomic publication of synced tables."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


class DirectoryInUse(RuntimeError):
    """Another process has the sandbox directory's warehouse open."""


class Warehouse:
    """One read-write DuckDB connection for the process; sync threads use cursors of it.

    Each schema's data has a generation, which every `drop_table` increments: a sync that read
    the table and its cursor in one generation can tell that they were deleted before it
    publishes. Generations live in memory; after a restart no sync is running.
    """

    def __init__(
        self, path: Path, *, staging_dir: Path | None = None, memory_limit: str = "256MB"
    ) -> None:
        """Open (or create) the warehouse file.

        File access is then locked for good: DuckDB may read and write only its own files, the
        spill folder and `staging_dir` (where syncs stage their CSV files), so no query can read
        or write anything else, attach a database or load an extension.

        Raises:
            DirectoryInUse: another process has the file open.
        """
        import duckdb

        self.path = path
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            raise DirectoryInUse(
                f"{path} is in use by another process: a sandbox directory serves one process "
                "at a time (stop the other sandbox or use another --dir)"
            ) from exc
        # Bounded memory: the sandbox's peak during a 1M-row sync must stay well under 500 MB.
        self._con.execute(f"SET memory_limit = '{memory_limit}'")
        self._con.execute("SET preserve_insertion_order = false")
        spill = path.with_name(path.name + ".tmp")
        allowed = [spill, *([staging_dir] if staging_dir is not None else [])]
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

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection handle for one thread."""
        return self._con.cursor()

    @contextmanager
    def locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the write lock and yield a cursor: no publish or drop happens meanwhile."""
        with self._write_lock:
            yield self.cursor()

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
        types = ", ".join(f"{_sql_str(c.name)}: {_sql_str(c.duck_type)}" for c in columns)
        cur.execute(
            f"CREATE TABLE {quote_ident(staging)} AS SELECT * FROM read_csv(?, header = false, "
            f"auto_detect = false, columns = {{{types}}}, quote = '\"', escape = '\"', "
            "allow_quoted_nulls = false, new_line = '\\n')",
            [str(csv_path)],
        )
        row = cur.execute(f"SELECT count(*) FROM {quote_ident(staging)}").fetchone()
        return int(row[0]) if row else 0

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
    ) -> str:
        """Move staged rows into the published table in one transaction, with the new cursor.

        `full_refresh` swaps the table, `incremental` merges on the primary key, `append` inserts.
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
        new_cursor: str | None = None
        if cursor_column is not None:
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
                    cur.execute(f"CREATE TABLE {fin} AS {_dedupe(stg, primary_key, cursor_column)}")
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
                    source = _dedupe(stg, primary_key, cursor_column)
                else:
                    source = f"SELECT * FROM {stg}"
                cur.execute(f"INSERT INTO {fin} BY NAME {source}")
                cur.execute(f"DROP TABLE {stg}")
            cur.execute(
                f"INSERT OR REPLACE INTO {_STATE} "
                "(schema_id, table_name, cursor_value, cursor_column) VALUES (?, ?, ?, ?)",
                [schema_id, final, new_cursor, cursor_column if new_cursor is not None else None],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return action

    def _add_new_columns(self, cur: duckdb.DuckDBPyConnection, stg: str, fin: str) -> None:
        """Columns that appeared upstream since the last sync are added to the published table."""

        def describe(name: str) -> dict[str, str]:
            return {r[0]: r[1] for r in cur.execute(f"DESCRIBE {name}").fetchall()}

        existing = describe(fin)
        for name, dtype in describe(stg).items():
            if name not in existing:
                cur.execute(f"ALTER TABLE {fin} ADD COLUMN {quote_ident(name)} {dtype}")

    def drop_staging(self, cur: duckdb.DuckDBPyConnection, staging: str) -> None:
        """Drop a staging table if it exists."""
        cur.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")

    def drop_table(self, cur: duckdb.DuckDBPyConnection, schema_id: str, name: str | None) -> None:
        """Drop a published table, forget its cursor and start the schema's next generation.

        Call it inside `locked()`.
        """
        cur.execute("BEGIN TRANSACTION")
        if name:
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
        cur.execute(f"DELETE FROM {_STATE} WHERE schema_id = ?", [schema_id])
        cur.execute("COMMIT")
        self._generations[schema_id] = self.generation(schema_id) + 1

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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dedupe(stg: str, primary_key: list[str], cursor_column: str | None) -> str:
    keys = ", ".join(quote_ident(k) for k in primary_key)
    order = f" ORDER BY {quote_ident(cursor_column)} DESC" if cursor_column else ""
    return f"SELECT * FROM {stg} QUALIFY row_number() OVER (PARTITION BY {keys}{order}) = 1"
