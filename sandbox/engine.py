"""The sync engine: one background thread per sync, cancellation, restart recovery, schedules."""

from __future__ import annotations

import logging
import re
import threading
import time as time_module
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from posthog_warehouse_mcp.sandbox import sources
from posthog_warehouse_mcp.sandbox.sources import SourceError, SyncCancelled
from posthog_warehouse_mcp.sandbox.store import Job, Schema, Store, iso, new_id, now
from posthog_warehouse_mcp.sandbox.warehouse import STAGING_PREFIX, Warehouse

logger = logging.getLogger(__name__)

CANCELLED_BY_USER = "Sync cancelled by user"
INTERRUPTED = "Sync interrupted: the sandbox stopped before the sync finished"

FREQUENCIES: dict[str, timedelta | None] = {
    "never": None,
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
    """The warehouse table name PostHog would give: `{prefix}{source_type}_{table}`, snake case."""
    raw = f"{prefix or ''}{source_type.lower()}_{table}"
    return re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")


@dataclass
class _Run:
    job: Job
    schema_id: str
    replace: bool
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = CANCELLED_BY_USER
    conn: Any = None
    connector: Any = None
    duck: Any = None
    thread: threading.Thread | None = None
    saved_at: float = 0.0


class SyncEngine:
    """Starts syncs in threads so the event loop never waits on a database."""

    def __init__(
        self,
        store: Store,
        warehouse: Warehouse,
        staging_dir: Path,
        *,
        max_concurrent: int = 2,
        sync_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.warehouse = warehouse
        self.staging_dir = staging_dir
        self.sync_delay = sync_delay
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def recover(self) -> None:
        """After a restart: jobs left Running were killed, so mark them Failed and drop staging."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.staging_dir.glob("*.csv"):
            leftover.unlink(missing_ok=True)
        dropped = self.warehouse.drop_leftover_staging()
        if dropped:
            logger.info("dropped %d staging tables left by an interrupted sync", len(dropped))
        for job in list(self.store.jobs.values()):
            if job.status == "Running":
                job.status = "Failed"
                job.latest_error = INTERRUPTED
                job.finished_at = iso(now())
                self.store.save(job)
        for schema in list(self.store.schemas.values()):
            if schema.status == "Running":
                schema.status = "Failed"
                schema.latest_error = INTERRUPTED
                self.store.save(schema)

    def is_running(self, schema_id: str) -> bool:
        """Whether the schema has a sync in progress."""
        with self._lock:
            return schema_id in self._runs

    def start(self, schema: Schema, *, replace: bool = False) -> Job | None:
        """Start a sync of one schema unless one is already running; return its job.

        None, and nothing started, if the schema is already syncing or it or its source is deleted.
        """
        with self._lock, self.store.lock:
            if schema.id in self._runs:
                return None
            stored = self.store.schemas.get(schema.id, schema)
            source = self.store.sources.get(schema.source_id)
            if schema.deleted or stored.deleted or source is None or source.deleted:
                return None
            job = Job(
                id=new_id(),
                source_id=schema.source_id,
                schema_id=schema.id,
                created_at=iso(now()) or "",
                workflow_run_id=new_id(),
            )
            self.store.save(job)
            schema.status = "Running"
            self.store.save(schema)
            source.status = "Running"
            self.store.save(source)
            run = _Run(job=job, schema_id=schema.id, replace=replace)
            run.thread = threading.Thread(
                target=self._run, args=(run,), name=f"sync-{schema.name}", daemon=True
            )
            self._runs[schema.id] = run
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
        conn, connector, duck = run.conn, run.connector, run.duck
        if conn is not None and connector is not None:
            try:
                source = self.store.sources[self.store.schemas[schema_id].source_id]
                connector.cancel(conn, source.job_inputs)
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
            if not schema.should_sync or interval is None or self.is_running(schema.id):
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

    def _progress(self, run: _Run, rows: int) -> float:
        """Show rows exported so far on the running job (saved at most twice a second)."""
        run.job.rows_synced = rows
        moment = time_module.monotonic()
        if moment - run.saved_at >= 0.5:
            run.saved_at = moment
            self.store.save(run.job)
        return self.sync_delay

    def _run(self, run: _Run) -> None:
        job = run.job
        csv_path = self.staging_dir / f"{job.id}.csv"
        staging = f"{STAGING_PREFIX}{job.id.replace('-', '')}"
        error: str | None = None
        rows = 0
        acquired = False
        try:
            while not (acquired := self._slots.acquire(timeout=0.2)):
                if run.cancelled.is_set():
                    raise SyncCancelled
            rows = self._sync(run, csv_path, staging)
        except SyncCancelled:
            error = run.reason
        except SourceError as exc:
            error = str(exc)
        except Exception as exc:
            if run.cancelled.is_set():
                error = run.reason
            else:
                logger.warning("sync of schema %s failed", run.schema_id, exc_info=True)
                error = _describe(exc)
        finally:
            if acquired:
                self._slots.release()
            csv_path.unlink(missing_ok=True)
            try:
                with self.warehouse.write_lock:
                    self.warehouse.drop_staging(self.warehouse.cursor(), staging)
            except Exception:
                logger.warning("could not drop staging table %s", staging, exc_info=True)
            self._finish(run, rows, error)

    def _sync(self, run: _Run, csv_path: Path, staging: str) -> int:
        schema = self.store.schemas[run.schema_id]
        source = self.store.sources[schema.source_id]
        connector = sources.connector(source.source_type)
        namespace = connector.schema_name(source.job_inputs)
        # One connection for discovery and export: authenticating costs as much as a small sync.
        with connector.connect(source.job_inputs) as conn:
            run.conn = conn
            run.connector = connector
            try:
                return self._sync_with(run, conn, namespace, csv_path, staging)
            finally:
                run.conn = None

    def _sync_with(self, run: _Run, conn: Any, namespace: str, csv_path: Path, staging: str) -> int:
        schema = self.store.schemas[run.schema_id]
        source = self.store.sources[schema.source_id]
        connector = run.connector
        tables: list[sources.Table] = connector.discover_with(conn, namespace, only=schema.name)
        if not tables:
            raise SourceError(f"Table {schema.name} no longer exists in the source")
        table = tables[0]
        mode = schema.sync_type or "full_refresh"
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
        name = schema.table_name or table_name(source.prefix, source.source_type, schema.name)
        existing = self.warehouse.table_exists(name)
        cursor_value = None
        if cursor_column and not run.replace and existing:
            # None when the saved cursor belongs to another column (incremental_field changed).
            cursor_value = self.warehouse.cursor_value(schema.id, cursor_column)
        # A table with no saved cursor (e.g. last published by a full refresh) gets every row
        # exported again: appending those on top would duplicate them, so replace the table.
        # Incremental needs no such care: it merges on the primary key.
        replace = run.replace or (mode == "append" and existing and cursor_value is None)
        connector.export(
            conn,
            namespace,
            schema.name,
            columns,
            cursor_column=cursor_column,
            cursor_value=cursor_value,
            # Merge dedups on the key, so re-reading the boundary rows is safe and loses nothing.
            inclusive=mode == "incremental",
            path=csv_path,
            cancelled=run.cancelled,
            progress=lambda rows: self._progress(run, rows),
        )
        with self.warehouse.write_lock:
            cur = self.warehouse.cursor()
            run.duck = cur
            try:
                rows = self.warehouse.load_staging(cur, csv_path, staging, columns, run.cancelled)
                csv_path.unlink(missing_ok=True)
                if run.cancelled.is_set():
                    raise SyncCancelled
                self.warehouse.publish(
                    cur,
                    schema_id=schema.id,
                    staging=staging,
                    final=name,
                    mode="full_refresh" if replace else mode,
                    primary_key=primary_key if mode == "incremental" else [],
                    cursor_column=cursor_column,
                )
                run.duck = None
                total = self.warehouse.count(name)
                described = self.warehouse.columns(name)
            finally:
                run.duck = None
        by_name = {c.name: c for c in table.columns}
        with self.store.lock:
            schema = self.store.schemas[run.schema_id]
            schema.table_name = name
            schema.table_id = schema.table_id or new_id()
            schema.row_count = total
            schema.table_columns = [
                {
                    "key": col,
                    "name": col,
                    "type": by_name[col].hogql_type if col in by_name else "string",
                    "schema_valid": True,
                }
                for col, _ in described
            ]
            self.store.save(schema)
        return rows

    def _finish(self, run: _Run, rows: int, error: str | None) -> None:
        finished = iso(now())
        # The same lock order as start(), and the run leaves _runs in the same block that marks it
        # finished: a start() in between would otherwise see "Completed" yet find the run still
        # registered, and silently start nothing.
        with self._lock, self.store.lock:
            job = run.job
            job.status = "Failed" if error else "Completed"
            job.rows_synced = rows
            job.finished_at = finished
            job.latest_error = error
            self.store.save(job)
            schema = self.store.schemas.get(run.schema_id)
            if schema is not None:
                schema.status = "Failed" if error else "Completed"
                schema.latest_error = error
                if not error:
                    schema.last_synced_at = finished
                self.store.save(schema)
            self._runs.pop(run.schema_id, None)
        logger.info("sync job %s ended %s (%d rows)", job.id, job.status, rows)


def _describe(exc: BaseException) -> str:
    """An error text for `latest_error`: the driver's first line, never a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
