"""Metadata store: sources, schemas and jobs as JSON rows in SQLite, cached in memory; and the
sync log entries, in SQLite only."""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
import uuid
from dataclasses import asdict, astuple, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """Render a time the way DRF does (ISO 8601 with `Z`)."""
    if value is None:
        return None
    # Fixed width (always microseconds) so that stored times also sort as strings.
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A new object id (PostHog uses UUIDs)."""
    return str(uuid.uuid4())


@dataclass
class Source:
    """An external data source (`ExternalDataSource`)."""

    id: str
    source_type: str
    prefix: str | None
    description: str | None
    job_inputs: dict[str, Any]
    created_at: str
    created_via: str = "api"
    access_method: str = "warehouse"
    status: str | None = None
    revenue_analytics_config: dict[str, bool] = field(default_factory=dict)
    # Enable tables that refresh_schemas finds later, with default settings (only those whose
    # names match one of the patterns, when there are patterns).
    auto_sync_new_schemas: bool = False
    auto_sync_schema_patterns: list[str] | None = None
    # PostHog's per-source "live queries" toggle; the sandbox never sets it (no direct query).
    direct_query_enabled: bool = False
    deleted: bool = False


@dataclass
class Schema:
    """A table of a source (`ExternalDataSchema`) and the warehouse table it syncs into."""

    id: str
    source_id: str
    name: str
    created_at: str
    should_sync: bool = False
    sync_type: str | None = None
    incremental_field: str | None = None
    incremental_field_type: str | None = None
    sync_frequency: str = "6hour"
    sync_time_of_day: str | None = None
    primary_key_columns: list[str] | None = None
    enabled_columns: list[str] | None = None
    # Seconds an incremental sync re-reads before its saved cursor (timestamp/date cursors).
    incremental_field_lookback_seconds: int | None = None
    # PostHog's `{column, operator, value}` predicates, ANDed onto the export's WHERE clause.
    row_filters: list[dict[str, Any]] | None = None
    available_columns: list[dict[str, Any]] = field(default_factory=list)
    detected_primary_keys: list[str] = field(default_factory=list)
    status: str | None = None
    latest_error: str | None = None
    last_synced_at: str | None = None
    table_id: str | None = None
    table_name: str | None = None
    table_columns: list[dict[str, Any]] = field(default_factory=list)
    row_count: int | None = None
    description: str | None = None
    # What a CDC sync writes: `consolidated`, `cdc_only` or `both` (ignored by other types).
    cdc_table_mode: str = "consolidated"
    deleted: bool = False


@dataclass
class Job:
    """One sync run of one schema (`ExternalDataJob`)."""

    id: str
    source_id: str
    schema_id: str
    created_at: str
    status: str = "Running"
    rows_synced: int = 0
    finished_at: str | None = None
    latest_error: str | None = None
    workflow_run_id: str | None = None
    # A CDC sync's write mode: `incremental_merge` or `scd2_append` (None for other types).
    cdc_write_mode: str | None = None


@dataclass
class Credential:
    """Connection details a person typed on the connect page, for one source's setup: single
    use, expiring (PostHog's `PendingSourceCredential`). Kept only in this 0600 store."""

    id: str
    source_type: str
    job_inputs: dict[str, Any]
    created_at: str
    expires_at: str


@dataclass(frozen=True)
class LogEntry:
    """One line of a sync's log (PostHog's `log_entries` row of source `external_data_jobs`)."""

    log_source_id: str  # the schema's id
    instance_id: str  # the job's workflow_run_id
    timestamp: str
    level: str  # DEBUG, INFO, WARNING or ERROR
    message: str


@dataclass(frozen=True)
class LogFilter:
    """Which log entries to read, as PostHog's `fetch_log_entries` filters them."""

    limit: int
    instance_id: str | None = None
    after: datetime | None = None  # timestamp > after
    before: datetime | None = None  # timestamp < before
    levels: list[str] | None = None  # upper-cased names
    search: str | None = None  # an ILIKE pattern inside %...%


T = TypeVar("T", Source, Schema, Job, Credential)

_TABLES: dict[type[Any], str] = {
    Source: "sources",
    Schema: "schemas",
    Job: "jobs",
    Credential: "credentials",
}


class Store:
    """All metadata, written through to SQLite on every change so a kill loses nothing."""

    def __init__(self, path: Path) -> None:
        # Source credentials live here: owner-only (SQLite gives its -wal/-shm files the same).
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # One lock for API handlers (event loop) and sync threads; every operation is short.
        self.lock = threading.RLock()
        self.sources: dict[str, Source] = {}
        self.schemas: dict[str, Schema] = {}
        self.jobs: dict[str, Job] = {}
        self.credentials: dict[str, Credential] = {}
        for table in _TABLES.values():
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, doc TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS logs (schema_id TEXT, instance_id TEXT, timestamp TEXT, "
            "level TEXT, message TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS logs_schema ON logs (schema_id, timestamp)")
        self._db.create_function("ilike", 2, _ilike, deterministic=True)
        self._load(Source, self.sources)
        self._load(Schema, self.schemas)
        self._load(Job, self.jobs)
        self._load(Credential, self.credentials)

    def _load(self, kind: type[T], into: dict[str, T]) -> None:
        names = {f.name for f in fields(kind)}
        for (doc,) in self._db.execute(f"SELECT doc FROM {_TABLES[kind]} ORDER BY rowid"):
            data = {k: v for k, v in json.loads(doc).items() if k in names}
            obj = kind(**data)
            if isinstance(obj, Schema) and (current := _as_current_posthog(obj)) is not obj:
                self.save(current)
                continue
            into[obj.id] = obj

    def save(self, obj: Source | Schema | Job | Credential) -> None:
        """Persist one object (insert or replace) and keep it in the cache."""
        with self.lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {_TABLES[type(obj)]} (id, doc) VALUES (?, ?)",
                (obj.id, json.dumps(asdict(obj))),
            )
            if isinstance(obj, Source):
                self.sources[obj.id] = obj
            elif isinstance(obj, Schema):
                self.schemas[obj.id] = obj
            elif isinstance(obj, Credential):
                self.credentials[obj.id] = obj
            else:
                self.jobs[obj.id] = obj

    def delete_credential(self, credential_id: str) -> None:
        """Forget a stored credential for good (used, or expired)."""
        with self.lock:
            self._db.execute("DELETE FROM credentials WHERE id = ?", (credential_id,))
            self.credentials.pop(credential_id, None)

    def live_sources(self) -> list[Source]:
        """Sources not deleted, newest first."""
        with self.lock:
            items = [s for s in self.sources.values() if not s.deleted]
        return sorted(items, key=lambda s: s.created_at, reverse=True)

    def source_schemas(self, source_id: str) -> list[Schema]:
        """A source's live schemas, by name."""
        with self.lock:
            items = [s for s in self.schemas.values() if s.source_id == source_id and not s.deleted]
        return sorted(items, key=lambda s: s.name)

    def live_schemas(self) -> list[Schema]:
        """All live schemas of live sources, newest first."""
        with self.lock:
            items = [
                s
                for s in self.schemas.values()
                if not s.deleted
                and s.source_id in self.sources
                and not self.sources[s.source_id].deleted
            ]
        return sorted(items, key=lambda s: (s.created_at, s.name), reverse=True)

    def schema_jobs(self, schema_id: str) -> list[Job]:
        """A schema's jobs, newest first."""
        with self.lock:
            items = [j for j in self.jobs.values() if j.schema_id == schema_id]
        return sorted(items, key=lambda j: j.created_at, reverse=True)

    def source_jobs(self, source_id: str) -> list[Job]:
        """A source's jobs, newest first."""
        with self.lock:
            items = [j for j in self.jobs.values() if j.source_id == source_id]
        return sorted(items, key=lambda j: j.created_at, reverse=True)

    def add_log(self, entry: LogEntry) -> None:
        """Persist one sync log entry."""
        with self.lock:
            self._db.execute(
                "INSERT INTO logs (schema_id, instance_id, timestamp, level, message) "
                "VALUES (?, ?, ?, ?, ?)",
                astuple(entry),
            )

    def logs(self, schema_id: str, where: LogFilter) -> list[LogEntry]:
        """A schema's log entries that pass `where`, newest first, at most `where.limit`."""
        clauses, params = ["schema_id = ?"], [schema_id]
        if where.instance_id:
            clauses.append("instance_id = ?")
            params.append(where.instance_id)
        if where.after is not None:
            clauses.append("timestamp > ?")
            params.append(iso(where.after) or "")
        if where.before is not None:
            clauses.append("timestamp < ?")
            params.append(iso(where.before) or "")
        if where.search:
            clauses.append("ilike(?, message)")
            params.append(where.search)
        if where.levels:
            clauses.append(f"upper(level) IN ({', '.join('?' * len(where.levels))})")
            params.extend(where.levels)
        with self.lock:
            rows = self._db.execute(
                "SELECT schema_id, instance_id, timestamp, upper(level), message FROM logs "
                f"WHERE {' AND '.join(clauses)} ORDER BY timestamp DESC, rowid DESC LIMIT ?",
                (*params, where.limit),
            ).fetchall()
        return [LogEntry(*row) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self.lock:
            self._db.close()


def _as_current_posthog(schema: Schema) -> Schema:
    """A schema saved by an older sandbox, with the settings current PostHog refuses replaced by
    what it does instead: `1min` becomes its floor, `5min`; `never` (which it tells you to express
    as should_sync false) stops the schedule that way, keeping the default interval."""
    if schema.sync_frequency == "1min":
        return replace(schema, sync_frequency="5min")
    if schema.sync_frequency == "never":
        return replace(schema, sync_frequency="6hour", should_sync=False)
    return schema


def _ilike(pattern: str, value: str) -> bool:
    """ClickHouse's `value ILIKE '%pattern%'`: `%` any text, `_` any character, `\\` escapes
    either; case-insensitive."""
    return _like_regex(pattern).search(value) is not None


@functools.lru_cache(maxsize=64)
def _like_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.findall(r"\\.|.", pattern, re.DOTALL):
        if token == "%":
            parts.append(".*")
        elif token == "_":
            parts.append(".")
        else:
            parts.append(re.escape(token[-1]))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
