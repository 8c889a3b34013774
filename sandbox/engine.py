"""The sync engine: one background thread per sync, cancellation, restart recovery, schedules.

Sources and schemas are values: the engine, like the API, replaces them in the store under its
lock and never changes one in place. A job is changed in place, by its own sync only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, Literal

from . import cdc
from .connectors import (
    Column,
    Connector,
    Export,
    SourceError,
    SyncCancelled,
    check_cancelled,
    connector,
)
from .connectors.postgres_cdc import SlotLost
from .demo import DemoDatabase
from .row_filters import RowFilterError, check_row_filters
from .serializers import secret_values
from .store import Job, LogEntry, Schema, Store, iso, new_id, now
from .warehouse import STAGING_PREFIX, Warehouse

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger(__name__)

CANCELLED_BY_USER = "Sync cancelled by user"
INTERRUPTED = "Sync interrupted: the sandbox stopped before the sync finished"
DATA_DELETED = (
    "Sync discarded: the table's data was deleted while the sync ran; the next sync imports "
    "every row"
)
SCHEMA_DELETED = "Sync discarded: the table was deleted while the sync ran"
# What a secret of the source's job inputs becomes in a log message.
REDACTED = "********"
# What a sync whose slot is gone adds to its log: the way back.
REPAIR_HINT = (
    "Repair CDC on the source (external-data-sources-repair-cdc-create, POST "
    "external_data_sources/{id}/repair_cdc/) to recreate the slot and re-sync its CDC tables"
)
# How many column names the log of a sync lists before "and N more".
_LOGGED_COLUMNS = 20

# The sync frequencies current PostHog accepts (no `1min`; `never` is should_sync false).
FREQUENCIES: dict[str, timedelta] = {
    "5min": timedelta(minutes=5),
    "15min": timedelta(minutes=15),
    "30min": timedelta(minutes=30),
    "1hour": timedelta(hours=1),
    "6hour": timedelta(hours=6),
    "12hour": timedelta(hours=12),
    "24hour": timedelta(hours=24),
    "7day": timedelta(days=7),
    "30day": timedelta(days=30),
}


def table_name(prefix: str | None, source_type: str, table: str) -> str:
    """The warehouse table PostHog names a table: `{prefix}{source_type}_{table}` lower-cased,
    a `.` in the table's name written `__` and a `/` written `_` (PostHog's `build_table_name`,
    `products/warehouse_sources/backend/temporal/data_imports/pipelines/helpers.py`)."""
    safe = table.replace("/", "_").replace(".", "__")
    return f"{prefix or ''}{source_type}_{safe}".lower()


@dataclass(frozen=True)
class Checkpoint:
    """Where a sync thread is when it calls the engine's hook.

    `progress`: the job shows the rows exported so far; `publish`: the export is done and the
    rows are about to be loaded and published; `committed` (CDC): the warehouse holds them and
    the replication slot is not yet confirmed; `finished`: the job is marked finished.
    """

    point: Literal["progress", "publish", "committed", "finished"]
    schema_id: str
    cancelled: threading.Event


@dataclass
class _Run:
    job: Job
    schema_id: str
    replace: bool
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = CANCELLED_BY_USER
    # Stops the running upstream query from another thread, while a connection is open.
    stop_upstream: Callable[[], None] | None = None
    duck: duckdb.DuckDBPyConnection | None = None
    thread: threading.Thread | None = None
    saved_at: float = 0.0
    began: float = field(default_factory=monotonic)
    # The source's secret job inputs, never written to the sync's log.
    secrets: frozenset[str] = frozenset()


class SyncEngine:
    """Starts syncs in threads so the event loop never waits on a database."""

    def __init__(
        self,
        store: Store,
        warehouse: Warehouse,
        staging_dir: Path,
        *,
        max_concurrent: int = 2,
        demo: DemoDatabase | None = None,
    ) -> None:
        self.store = store
        self.warehouse = warehouse
        self.staging_dir = staging_dir
        # The demo database: a connection failure toward its address says why.
        self.demo = demo or DemoDatabase()
        # A test seam: called in the sync thread at each Checkpoint, so a test can hold a sync
        # there and force an interleaving. None in production.
        self.hook: Callable[[Checkpoint], None] | None = None
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        # One CDC sync at a time reads a source's slot (Postgres lets one backend hold it).
        self._slot_locks: dict[str, threading.Lock] = {}

    def recover(self) -> None:
        """After a restart: jobs left Running were killed, so mark them Failed and drop staging."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.staging_dir.glob("*.csv"):
            leftover.unlink(missing_ok=True)
        dropped = self.warehouse.drop_leftover_staging()
        if dropped:
            logger.info("dropped %d staging tables left by an interrupted sync", len(dropped))
        with self.store.lock:
            for job in list(self.store.jobs.values()):
                if job.status == "Running":
                    job.status = "Failed"
                    job.latest_error = INTERRUPTED
                    job.finished_at = iso(now())
                    self.store.add_log(_entry(job, "ERROR", f"Sync failed: {INTERRUPTED}"))
                    self.store.save(job)
            for schema in list(self.store.schemas.values()):
                if schema.status == "Running":
                    self.store.save(replace(schema, status="Failed", latest_error=INTERRUPTED))

    def slot_lock(self, source_id: str) -> threading.Lock:
        """The lock a CDC sync holds while it reads and confirms its source's slot."""
        with self._lock:
            return self._slot_locks.setdefault(source_id, threading.Lock())

    def is_running(self, schema_id: str) -> bool:
        """Whether the schema has a sync in progress."""
        with self._lock:
            return schema_id in self._runs

    def snapshot(self) -> tuple[list[Schema], frozenset[str]]:
        """The live schemas and the ids of those with a sync running, read at one moment."""
        with self._lock, self.store.lock:
            return self.store.live_schemas(), frozenset(self._runs)

    def start(self, schema_id: str, *, replace_table: bool = False) -> Job | None:
        """Start a sync of one schema unless one is already running; return its job.

        `replace_table` re-imports every row and swaps the table (resync). None, and nothing
        started, if the schema is already syncing or it or its source is deleted.
        """
        with self._lock, self.store.lock:
            schema = self.store.schemas.get(schema_id)
            if schema_id in self._runs or schema is None or schema.deleted:
                return None
            source = self.store.sources.get(schema.source_id)
            if source is None or source.deleted:
                return None
            job = Job(
                id=new_id(),
                source_id=schema.source_id,
                schema_id=schema_id,
                created_at=iso(now()) or "",
                workflow_run_id=new_id(),
                cdc_write_mode=cdc.WRITE_MODES.get(schema.cdc_table_mode)
                if schema.sync_type == "cdc"
                else None,
            )
            self.store.save(job)
            self.store.save(replace(schema, status="Running"))
            self.store.save(replace(source, status="Running"))
            run = _Run(job=job, schema_id=schema_id, replace=replace_table)
            run.thread = threading.Thread(
                target=self._run, args=(run,), name=f"sync-{schema.name}", daemon=True
            )
            self._runs[schema_id] = run
        run.thread.start()
        return job

    def cancel(self, schema_id: str, reason: str = CANCELLED_BY_USER) -> bool:
        """Ask a running sync to stop; it ends Failed with `reason`. False if none was running."""
        with self._lock:
            run = self._runs.get(schema_id)
        if run is None:
            return False
        run.reason = reason
        run.cancelled.set()
        stop_upstream, duck = run.stop_upstream, run.duck
        if stop_upstream is not None:
            try:
                stop_upstream()
            except Exception:  # the query may have ended between the check and the cancel
                logger.debug("cancel of the upstream query failed", exc_info=True)
        if duck is not None:
            try:
                duck.interrupt()
            except Exception:
                logger.debug("interrupt of the warehouse query failed", exc_info=True)
        return True

    def join(self, schema_id: str, timeout: float | None = None) -> None:
        """Wait for a schema's running sync to finish (blocking; call from a worker thread)."""
        with self._lock:
            run = self._runs.get(schema_id)
        if run is not None and run.thread is not None:
            run.thread.join(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel every running sync and wait for the threads (blocking)."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self.cancel(run.schema_id, INTERRUPTED)
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout)

    def due(self, at: datetime) -> list[Schema]:
        """Schemas whose schedule says a sync is due at `at`."""
        result = []
        for schema in self.store.live_schemas():
            interval = FREQUENCIES.get(schema.sync_frequency)
            # An enabled table without a sync method imports nothing, as in PostHog.
            if not schema.should_sync or not schema.sync_type or interval is None:
                continue
            if self.is_running(schema.id):
                continue
            jobs = self.store.schema_jobs(schema.id)
            if not jobs:
                continue  # the first sync starts when the schema is enabled, not from the schedule
            last = datetime.fromisoformat(jobs[0].created_at)
            next_run = last + interval
            if schema.sync_time_of_day and interval >= timedelta(days=1):
                anchor = time.fromisoformat(schema.sync_time_of_day.replace("Z", ""))
                next_run = datetime.combine(next_run.date(), anchor, tzinfo=next_run.tzinfo)
                if next_run <= last:
                    next_run += timedelta(days=1)
            if next_run <= at:
                result.append(schema)
        return result

    def _checkpoint(
        self, point: Literal["progress", "publish", "committed", "finished"], run: _Run
    ) -> None:
        if self.hook is not None:
            self.hook(Checkpoint(point, run.schema_id, run.cancelled))

    def _progress(self, run: _Run, rows: int) -> None:
        """Show rows exported so far on the running job (saved at most twice a second)."""
        run.job.rows_synced = rows
        moment = monotonic()
        if moment - run.saved_at >= 0.5:
            run.saved_at = moment
            self.store.save(run.job)
        self._checkpoint("progress", run)
        check_cancelled(run.cancelled)

    def _log(self, run: _Run, level: str, message: str) -> None:
        """Add an entry to the sync's log, with the source's secrets masked."""
        for secret in sorted(run.secrets, key=len, reverse=True):
            message = message.replace(secret, REDACTED)
        self.store.add_log(_entry(run.job, level, message))

    def _run(self, run: _Run) -> None:
        job = run.job
        csv_path = self.staging_dir / f"{job.id}.csv"
        staging = f"{STAGING_PREFIX}{job.id.replace('-', '')}"
        error: str | None = None
        cancelled = False
        rows = 0
        acquired = False
        try:
            with self.store.lock:
                schema = self.store.schemas[run.schema_id]
                run.secrets = secret_values(self.store.sources[schema.source_id])
            self._log(run, "INFO", _started(schema, run.replace))
            while not (acquired := self._slots.acquire(timeout=0.2)):
                check_cancelled(run.cancelled)
            rows = self._sync(run, csv_path, staging)
        except SyncCancelled:
            error, cancelled = run.reason, True
        except SlotLost as exc:
            error = str(exc)
            self._log(run, "ERROR", f"{error} {REPAIR_HINT.format(id=run.job.source_id)}")
        except SourceError as exc:
            error = str(exc)
        except Exception as exc:
            if run.cancelled.is_set():
                error, cancelled = run.reason, True
            else:
                logger.warning("sync of schema %s failed", run.schema_id, exc_info=True)
                error = _describe(exc)
        finally:
            if acquired:
                self._slots.release()
            csv_path.unlink(missing_ok=True)
            try:
                with self.warehouse.locked() as cur:
                    self.warehouse.drop_staging(cur, staging)
            except Exception:
                logger.warning("could not drop staging table %s", staging, exc_info=True)
            self._finish(run, rows, error, cancelled=cancelled)

    def _sync(self, run: _Run, csv_path: Path, staging: str) -> int:
        with self.store.lock:
            schema = self.store.schemas[run.schema_id]
            source = self.store.sources[schema.source_id]
        upstream = connector(source.source_type)
        inputs = source.job_inputs
        namespace = upstream.schema_name(inputs)
        # One connection for discovery and export: authenticating costs as much as a small sync.
        with self.demo.explained(inputs), upstream.connect(inputs) as conn:
            run.stop_upstream = lambda: upstream.cancel(conn, inputs)
            try:
                # A cancel that came before there was a query to stop.
                check_cancelled(run.cancelled)
                return self._sync_with(run, upstream, conn, namespace, csv_path, staging)
            finally:
                run.stop_upstream = None

    def _sync_with(
        self,
        run: _Run,
        upstream: Connector[Any],
        conn: Any,
        namespace: str,
        csv_path: Path,
        staging: str,
    ) -> int:
        with self.store.lock:
            schema = self.store.schemas[run.schema_id]
            source = self.store.sources[schema.source_id]
        tables = upstream.discover_with(conn, namespace, only=schema.name)
        if not tables:
            raise SourceError(f"Table {schema.name} no longer exists in the source")
        table = tables[0]
        mode = schema.sync_type or "full_refresh"
        if mode == "cdc":
            return self._sync_cdc(run, conn, namespace, table, csv_path, staging)
        if mode == "xmin":
            return self._sync_xmin(run, upstream, conn, namespace, table, csv_path, staging)
        cursor_column = schema.incremental_field if mode in ("incremental", "append") else None
        if mode in ("incremental", "append") and not cursor_column:
            raise SourceError(f"{schema.name} has no incremental field set for a {mode} sync")
        primary_key = schema.primary_key_columns or table.primary_key
        if mode == "incremental" and not primary_key:
            raise SourceError(
                f"Table {schema.name} has no primary key to merge on; set primary_key_columns"
            )
        wanted = set(schema.enabled_columns or [c.name for c in table.columns])
        wanted.update(primary_key)
        if cursor_column:
            wanted.add(cursor_column)
        columns = [c for c in table.columns if c.name in wanted]
        self._log(run, "DEBUG", f"Reading {namespace}.{schema.name}: {_column_list(columns)}")
        name = schema.table_name or table_name(source.prefix, source.source_type, schema.name)
        # What this sync builds on, read under the lock that drop_table takes: all of one
        # generation of the schema's data.
        with self.warehouse.locked():
            generation = self.warehouse.generation(schema.id)
            existing = self.warehouse.table_exists(name)
            cursor_value = None
            if cursor_column and not run.replace and existing:
                # None when the saved cursor belongs to another column (incremental_field changed).
                cursor_value = self.warehouse.cursor_value(schema.id, cursor_column)
        # A table with no saved cursor (e.g. last published by a full refresh) gets every row
        # exported again: appending those on top would duplicate them, so replace the table.
        # Incremental needs no such care: it merges on the primary key.
        replace_table = run.replace or (mode == "append" and existing and cursor_value is None)
        cursor_type = next((c.incremental_type for c in columns if c.name == cursor_column), None)
        # PostHog's `incremental_type_to_operator`: `>` past the saved cursor, but `>=` for a
        # date, which holds only the day: rows added later that day share it.
        inclusive = cursor_type == "date"
        self._log(run, "DEBUG", _cursor_used(cursor_column, cursor_value, inclusive))
        if inclusive and cursor_value is not None:
            again = f"merged on {', '.join(primary_key)}"
            if mode == "append":
                again = "appended again, as PostHog appends them"
            self._log(
                run,
                "INFO",
                f"Rows with {cursor_column} >= {cursor_value} are read again: a date cursor "
                f"holds only the day, and rows added later that day share it; {again}",
            )
        lookback = schema.incremental_field_lookback_seconds if mode == "incremental" else None
        if cursor_column and cursor_value is not None and lookback:
            shifted = looked_back(cursor_value, cursor_type, lookback)
            if shifted != cursor_value:
                self._log(run, "DEBUG", f"Lookback of {lookback}s: reading from {shifted}")
                cursor_value = shifted
        try:
            filters = check_row_filters(schema.row_filters, table.available_columns)
        except RowFilterError as exc:
            raise SourceError(
                f"Row filter on schema '{schema.name}' no longer matches the current table "
                f"schema ({exc}). Fix or remove the row filter in the schema's configuration to "
                "resume syncing."
            ) from exc
        export = Export(
            namespace,
            schema.name,
            columns,
            cursor_column=cursor_column,
            cursor_value=cursor_value,
            inclusive=inclusive,
            path=csv_path,
            cancelled=run.cancelled,
            progress=lambda rows: self._progress(run, rows),
            row_filters=tuple(filters),
        )
        return self._export_and_publish(
            run,
            upstream,
            conn,
            export,
            read_from=f"{source.source_type} table {namespace}.{schema.name}",
            final=name,
            table=table,
            staging=staging,
            generation=generation,
            cursor_value=cursor_value,
            mode="full_refresh" if replace_table else mode,
            primary_key=primary_key if mode == "incremental" else [],
            cursor_column=cursor_column,
        )

    def _export_and_publish(
        self,
        run: _Run,
        upstream: Connector[Any],
        conn: Any,
        export: Export,
        *,
        read_from: str,
        final: str,
        table: Any,
        staging: str,
        generation: int,
        cursor_value: str | None,
        mode: str,
        primary_key: list[str],
        cursor_column: str | None,
        new_cursor: str | None = None,
    ) -> int:
        """Export the rows, then load and publish them (`Warehouse.publish`'s arguments); the
        rows loaded."""
        read = upstream.export(conn, export)
        self._log(run, "INFO", f"Read {_rows(read)} from {read_from}")
        self._checkpoint("publish", run)
        # Publication and its metadata in one critical section: a drop_table (delete_data) comes
        # wholly before or wholly after them, so the schema and the warehouse always agree.
        with self.warehouse.locked() as cur:
            run.duck = cur
            try:
                rows = self.warehouse.load_staging(
                    cur, export.path, staging, export.columns, run.cancelled
                )
                export.path.unlink(missing_ok=True)
                self._log(run, "INFO", f"Loaded {_rows(rows)} into the warehouse")
                check_cancelled(run.cancelled)
                self._check_still_wanted(run.schema_id, generation, cursor_value)
                action = self.warehouse.publish(
                    cur,
                    schema_id=run.schema_id,
                    staging=staging,
                    final=final,
                    mode=mode,
                    primary_key=primary_key,
                    cursor_column=cursor_column,
                    new_cursor=new_cursor,
                )
            finally:
                run.duck = None
            total = self._save_table(run.schema_id, final, table.columns)
            self._log(run, "INFO", f"Published {final} ({action}): {_rows(total)} in the table")
        return rows

    def _sync_cdc(
        self, run: _Run, conn: Any, namespace: str, table: Any, csv_path: Path, staging: str
    ) -> int:
        """A CDC sync (`cdc.py`): the snapshot, or the changes since the last one."""
        schema, source, primary_key, columns = self._keyed(
            run,
            table,
            "CDC requires a primary key on table '{}'. Add a primary key on the source table "
            "and retry.",
        )
        name = schema.table_name or table_name(source.prefix, source.source_type, schema.name)
        if name.endswith(cdc.HISTORY_SUFFIX) and schema.cdc_table_mode == "cdc_only":
            name = name[: -len(cdc.HISTORY_SUFFIX)]
        with self.warehouse.locked():
            generation = self.warehouse.generation(schema.id)

        def still_wanted() -> None:
            self._check_still_wanted(run.schema_id, generation, None)

        def active() -> list[str]:
            return [
                s.id
                for s in self.store.live_schemas()
                if s.source_id == source.id and s.sync_type == "cdc" and s.should_sync
            ]

        sync = cdc.CdcSync(
            warehouse=self.warehouse,
            job_inputs=source.job_inputs,
            namespace=namespace,
            table=schema.name,
            schema_id=schema.id,
            columns=columns,
            primary_key=primary_key,
            targets=cdc.targets(name, schema.cdc_table_mode),
            csv_path=csv_path,
            staging=staging,
            cancelled=run.cancelled,
            progress=lambda rows: self._progress(run, rows),
            log=lambda level, message: self._log(run, level, message),
            checkpoint=lambda point: self._checkpoint(point, run),  # type: ignore[arg-type]
            still_wanted=still_wanted,
            active_schema_ids=active,
            replace=run.replace,
        )
        with self.slot_lock(source.id):
            rows = sync.run(conn)
        shown = sync.targets.current or sync.targets.history or name
        total = self._save_table(run.schema_id, shown, table.columns)
        self._log(run, "INFO", f"Published {shown} (CDC, {schema.cdc_table_mode}): {_rows(total)}")
        return rows

    def _sync_xmin(
        self,
        run: _Run,
        upstream: Connector[Any],
        conn: Any,
        namespace: str,
        table: Any,
        csv_path: Path,
        staging: str,
    ) -> int:
        """An xmin sync (`cdc.py`): rows changed since the last ceiling, merged on the key."""
        schema, source, primary_key, columns = self._keyed(
            run, table, "Table {} has no primary key to merge on; set primary_key_columns"
        )
        name = schema.table_name or table_name(source.prefix, source.source_type, schema.name)
        with self.warehouse.locked():
            generation = self.warehouse.generation(schema.id)
            previous = None
            if not run.replace and self.warehouse.table_exists(name):
                saved = self.warehouse.cursor_value(schema.id, "xmin")
                previous = int(saved) if saved is not None else None
        ceiling = cdc.xmin_ceiling(conn)
        where, why = cdc.xmin_condition(previous, ceiling)
        self._log(run, "DEBUG", f"xmin ceiling {ceiling}: {why}")
        export = Export(
            namespace,
            schema.name,
            columns,
            cursor_column=None,
            cursor_value=None,
            inclusive=False,
            path=csv_path,
            cancelled=run.cancelled,
            progress=lambda rows: self._progress(run, rows),
            where=where,
        )
        return self._export_and_publish(
            run,
            upstream,
            conn,
            export,
            read_from=f"{namespace}.{schema.name} by xmin",
            final=name,
            table=table,
            staging=staging,
            generation=generation,
            cursor_value=None,
            mode="full_refresh" if previous is None else "incremental",
            primary_key=primary_key,
            cursor_column="xmin",
            new_cursor=str(ceiling),
        )

    def _keyed(
        self, run: _Run, table: Any, keyless: str
    ) -> tuple[Schema, Any, list[str], list[Column]]:
        """The schema, its source, its primary key and the columns it reads, for a sync that
        merges on the key (`keyless`: the error when there is none, the table's name in it)."""
        with self.store.lock:
            schema = self.store.schemas[run.schema_id]
            source = self.store.sources[schema.source_id]
        primary_key = schema.primary_key_columns or table.primary_key
        if not primary_key:
            raise SourceError(keyless.format(schema.name))
        wanted = set(schema.enabled_columns or [c.name for c in table.columns])
        wanted.update(primary_key)
        return schema, source, primary_key, [c for c in table.columns if c.name in wanted]

    def _check_still_wanted(
        self, schema_id: str, generation: int, cursor_value: str | None
    ) -> None:
        """Refuse to publish for a deleted schema, or rows exported past a cursor whose data was
        deleted since (they would make a partial table, and skip the deleted rows for good).

        A full export is a whole table: it publishes even if the data was deleted meanwhile. Call
        it inside `warehouse.locked()`.
        """
        with self.store.lock:
            schema = self.store.schemas.get(schema_id)
        if schema is None or schema.deleted:
            raise SourceError(SCHEMA_DELETED)
        if cursor_value is not None and self.warehouse.generation(schema_id) != generation:
            raise SourceError(DATA_DELETED)

    def _save_table(self, schema_id: str, name: str, upstream_columns: list[Column]) -> int:
        """Record the published table on the schema; return its row count."""
        by_name = {c.name: c for c in upstream_columns}
        total = self.warehouse.count(name)
        described = self.warehouse.columns(name)
        with self.store.lock:
            schema = self.store.schemas[schema_id]
            self.store.save(
                replace(
                    schema,
                    table_name=name,
                    table_id=schema.table_id or new_id(),
                    row_count=total,
                    table_columns=[
                        {
                            "key": col,
                            "name": col,
                            "type": by_name[col].hogql_type if col in by_name else "string",
                            "schema_valid": True,
                        }
                        for col, _ in described
                    ],
                )
            )
        return total

    def _finish(self, run: _Run, rows: int, error: str | None, *, cancelled: bool) -> None:
        finished = iso(now())
        # The same lock order as start(), and the run leaves _runs in the same block that marks it
        # finished: a start() in between would otherwise see "Completed" yet find the run still
        # registered, and silently start nothing. The last log entry comes first: whoever sees
        # the job finished finds its whole log.
        with self._lock, self.store.lock:
            if error is None:
                took = monotonic() - run.began
                self._log(run, "INFO", f"Sync completed: {_rows(rows)} synced in {took:.2f}s")
            elif cancelled:
                self._log(run, "WARNING", f"{error}; nothing from this sync was published")
            else:
                self._log(run, "ERROR", f"Sync failed: {error}")
            job = run.job
            job.status = "Failed" if error else "Completed"
            job.rows_synced = rows
            job.finished_at = finished
            job.latest_error = error
            self.store.save(job)
            schema = self.store.schemas.get(run.schema_id)
            if schema is not None:
                self.store.save(
                    replace(
                        schema,
                        status=job.status,
                        latest_error=error,
                        last_synced_at=schema.last_synced_at if error else finished,
                    )
                )
            self._runs.pop(run.schema_id, None)
        logger.info("sync job %s ended %s (%d rows)", job.id, job.status, rows)
        self._checkpoint("finished", run)


def looked_back(cursor: str, cursor_type: str | None, seconds: int) -> str:
    """PostHog's `apply_incremental_lookback`: a timestamp cursor moved back by `seconds`, a
    date cursor by the whole days in them; any other cursor as it was."""
    if cursor_type == "timestamp":
        return (datetime.fromisoformat(cursor) - timedelta(seconds=seconds)).isoformat(sep=" ")
    if cursor_type == "date":
        return (date.fromisoformat(cursor) - timedelta(days=seconds // 86400)).isoformat()
    return cursor


def _entry(job: Job, level: str, message: str) -> LogEntry:
    """A log entry of the job's sync, now; PostHog's `instance_id` is its workflow_run_id."""
    return LogEntry(
        log_source_id=job.schema_id,
        instance_id=job.workflow_run_id or job.id,
        timestamp=iso(now()) or "",
        level=level,
        message=message,
    )


def _started(schema: Schema, replace_table: bool) -> str:
    """The first log entry of a sync: what it syncs, and how it will write the table."""
    sync_type = schema.sync_type or "full_refresh"
    if replace_table:
        mode = "resync (every row, replacing the table)"
    else:
        mode = {
            "incremental": "merge on the primary key",
            "append": "append new rows",
            "cdc": f"change data capture, {schema.cdc_table_mode}",
            "xmin": "merge rows changed since the last xmin ceiling",
        }.get(sync_type, "replace the table")
    return f"Sync started for table {schema.name}: sync type {sync_type}, mode {mode}"


def _column_list(columns: list[Column]) -> str:
    names = [c.name for c in columns]
    shown = ", ".join(names[:_LOGGED_COLUMNS])
    more = len(names) - _LOGGED_COLUMNS
    return f"{len(names)} columns ({shown}{f' and {more} more' if more > 0 else ''})"


def _cursor_used(column: str | None, value: str | None, inclusive: bool) -> str:
    if column is None:
        return "No cursor: reading every row"
    if value is None:
        return f"No saved cursor for {column}: reading every row"
    return f"Cursor: rows where {column} {'>=' if inclusive else '>'} {value}"


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _describe(exc: BaseException) -> str:
    """An error text for `latest_error`: the driver's first line, never a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
