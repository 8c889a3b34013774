"""What a request handler needs: the store, the warehouse and the engine, and the lookups and
side effects that combine them."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ..loopback.tokens import OneTimeTokens
from . import errors
from .cloud_rules import CloudRules
from .connectors import (
    SUPPORTED_SOURCE_TYPES,
    SourceError,
    Table,
    TableStats,
    connector,
    discover,
    inspect,
    postgres,
    postgres_cdc,
)
from .connectors import config as form
from .demo import DemoDatabase
from .engine import SyncEngine
from .errors import ErrorAnswer
from .queries import Queries
from .query_pool import QueryLimits
from .store import Schema, Source, Store, iso, new_id, now
from .validation import create_settings, validate_prefix
from .warehouse import Warehouse

logger = logging.getLogger(__name__)

# How long a connect page's link stays usable.
CONNECT_LINK_SECONDS = 3600.0


def with_columns(schema: Schema, table: Table) -> Schema:
    """The schema with the columns and primary key that discovery found upstream."""
    return replace(
        schema,
        available_columns=table.available_columns,
        detected_primary_keys=list(table.primary_key),
    )


def job_inputs_of(payload: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A create payload's connection fields as the source keeps them: strings stripped, without
    the `schemas` array (and the keys in `drop`)."""
    return {
        k: v.strip() if isinstance(v, str) else v
        for k, v in payload.items()
        if k != "schemas" and k not in drop
    }


@dataclass(frozen=True)
class NewSource:
    """What a new source is created with, besides its tables and their settings."""

    source_type: str
    job_inputs: dict[str, Any]
    prefix: str | None
    description: str | None
    created_via: str
    access_method: str = "warehouse"


@dataclass
class Services:
    """The sandbox's parts, and what the request handlers do with them."""

    store: Store
    warehouse: Warehouse
    engine: SyncEngine
    # PostHog Cloud's host and TLS rules for new sources, when the sandbox enforces them.
    cloud_rules: CloudRules | None = None
    # The address a browser reaches the sandbox at (its connect page), once it listens on one.
    public_url: str | None = None
    # What queries may take (time, turns, memory); None: the defaults.
    query_limits: QueryLimits | None = None
    # The demo database, running or not: a failed connection toward it says why.
    demo: DemoDatabase = field(default_factory=DemoDatabase)

    @functools.cached_property
    def connect_links(self) -> OneTimeTokens[str]:
        """The connect page's one-time tokens, each for a source type."""
        return OneTimeTokens(CONNECT_LINK_SECONDS)

    @functools.cached_property
    def queries(self) -> Queries:
        """Queries over the warehouse (`query/`); no worker starts before the first query."""
        return Queries(self.store, self.warehouse, limits=self.query_limits)

    def get_source(self, source_id: str) -> Source:
        """A live source.

        Raises:
            ErrorAnswer: 404, no such source or it was deleted.
        """
        source = self.store.sources.get(source_id)
        if source is None or source.deleted:
            raise errors.not_found()
        return source

    def get_schema(self, schema_id: str) -> Schema:
        """A live schema of a live source.

        Raises:
            ErrorAnswer: 404, no such schema or it or its source was deleted.
        """
        schema = self.store.schemas.get(schema_id)
        if schema is None or schema.deleted:
            raise errors.not_found()
        self.get_source(schema.source_id)
        return schema

    async def discover(
        self, source_type: str, job_inputs: dict[str, Any], only: str | None = None
    ) -> list[Table]:
        """Connect to the source (in a worker thread) and list its tables.

        Raises:
            SourceError: the source cannot be reached or read (ConnectionFailed says why).
        """
        upstream = connector(source_type)

        def run() -> list[Table]:
            with self.demo.explained(job_inputs):
                return discover(upstream, job_inputs, only)

        return await anyio.to_thread.run_sync(run)

    async def inspect(
        self, source_type: str, job_inputs: dict[str, Any]
    ) -> list[tuple[Table, TableStats]]:
        """Like `discover`, with each table's catalog stats (`database_schema`, `setup`).

        Raises:
            SourceError: the source cannot be reached or read (ConnectionFailed says why).
        """
        upstream = connector(source_type)

        def run() -> list[tuple[Table, TableStats]]:
            with self.demo.explained(job_inputs):
                return inspect(upstream, job_inputs)

        return await anyio.to_thread.run_sync(run)

    def connectable(self, source_type: str, job_inputs: dict[str, Any]) -> dict[str, Any]:
        """A new connection's fields checked as PostHog checks them before connecting (the
        form's required fields, then Cloud's host rule when the sandbox enforces it); the job
        inputs to connect with (Cloud's TLS rule added).

        Raises:
            ErrorAnswer: 400 `{"message"}`, PostHog's reason.
        """
        fields = connector(source_type).SOURCE_CONFIG["fields"]
        missing = form.missing_required(fields, job_inputs)
        if missing:
            raise errors.bad_request_message(f"Invalid source config: {', '.join(missing)}")
        if self.cloud_rules is None:
            return job_inputs
        self.cloud_rules.check_host(job_inputs)
        return self.cloud_rules.connection(source_type, job_inputs)

    async def inspect_new(
        self, source_type: str, job_inputs: dict[str, Any]
    ) -> list[tuple[Table, TableStats]]:
        """Check a new source's connection fields as PostHog does before it creates anything
        (create, setup, `database_schema`): the form's required fields, Cloud's host and TLS
        rules when the sandbox enforces them, then the credentials, by connecting; answer the
        tables with their catalog stats.

        Raises:
            ErrorAnswer: 400 `{"message"}`, PostHog's reason.
        """
        if source_type not in SUPPORTED_SOURCE_TYPES:
            raise errors.not_connectable(source_type)
        job_inputs = self.connectable(source_type, job_inputs)
        try:
            return await self.inspect(source_type, job_inputs)
        except SourceError as exc:
            raise errors.bad_request_message(str(exc)) from exc

    def create_source(
        self,
        new: NewSource,
        tables: list[Table],
        wanted: dict[str, dict[str, Any]],
        *,
        source_id: str | None = None,
    ) -> Source:
        """Create a source with a schema for each table `wanted` lists (by name), with its
        settings, and start the syncs of the enabled ones that have a sync type (create, setup).

        Raises:
            ErrorAnswer: a prefix this project's sources of the type rule out; a setting PostHog
                refuses (`{"message"}`).
        """
        created = iso(now()) or ""
        source = Source(
            id=source_id or new_id(),
            source_type=new.source_type,
            prefix=new.prefix,
            description=new.description,
            job_inputs=new.job_inputs,
            created_at=created,
            created_via=new.created_via,
            access_method=new.access_method,
            status="Running",
        )
        schemas = []
        for table in tables:
            item = wanted.get(table.name)
            if item is None:
                continue  # PostHog creates schemas only for the tables listed
            schema = Schema(id=new_id(), source_id=source.id, name=table.name, created_at=created)
            try:
                schema = create_settings(
                    with_columns(schema, table),
                    item,
                    source_type=new.source_type,
                    cdc_enabled=postgres_cdc.settings_of(new.job_inputs) is not None,
                )
            except ErrorAnswer as exc:
                raise errors.bad_request_message(str(exc.body.get("detail"))) from exc
            schemas.append(schema)
        with self.store.lock:
            # Checked again with the save: another create may have taken the prefix meanwhile.
            validate_prefix(self.store, new.source_type, new.prefix)
            self.store.save(source)
            for schema in schemas:
                self.store.save(schema)
        for schema in schemas:
            # An enabled table without a sync method imports nothing, as in PostHog.
            if schema.should_sync and schema.sync_type:
                self.engine.start(schema.id)
        return source

    async def stop_sync(self, schema_id: str, reason: str) -> None:
        """Cancel a running sync and wait for its thread (in a worker: cancelling talks to the
        source)."""

        def stop() -> None:
            if self.engine.cancel(schema_id, reason):
                self.engine.join(schema_id, 30)

        await anyio.to_thread.run_sync(stop)

    async def setup_cdc(
        self, source_id: str, job_inputs: dict[str, Any], payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Create a new source's replication slot (and publication, PostHog-managed); the job
        inputs with its CDC settings.

        Raises:
            ErrorAnswer: PostHog's 400 when the slot or publication cannot be created.
        """

        def run() -> tuple[dict[str, Any], str | None]:
            with self.demo.explained(job_inputs), postgres.connect(job_inputs) as conn:
                return postgres_cdc.setup_resources(conn, source_id, payload)

        try:
            fields, error = await anyio.to_thread.run_sync(run)
        except SourceError as exc:
            raise errors.bad_request_message(str(exc)) from exc
        if error is not None:
            raise errors.bad_request_message(error)
        return {**job_inputs, **fields}

    async def drop_cdc(self, source: Source) -> None:
        """Drop a deleted CDC source's slot, and its publication when PostHog manages it
        (PostHog's `cleanup_resources`: best effort, a failure is logged)."""
        settings = postgres_cdc.settings_of(source.job_inputs)
        if settings is None:
            return

        try:
            await anyio.to_thread.run_sync(_cleanup, source, settings)
        except Exception:
            logger.warning("could not drop the CDC slot of source %s", source.id, exc_info=True)

    async def xmin_capable(self, schema: Schema, change: Mapping[str, Any]) -> bool | None:
        """For a settings `change` to sync_type xmin of a Postgres table: whether its source says
        the table can sync by xmin now (PostHog runs discovery for it, and answers no when that
        fails). None for any other change."""
        with self.store.lock:
            source = self.store.sources[schema.source_id]
        if change.get("sync_type") != "xmin" or source.source_type != "Postgres":
            return None
        try:
            found = await self.discover(source.source_type, source.job_inputs, schema.name)
        except SourceError:
            return False
        return any(t.name == schema.name and t.supports_xmin for t in found)

    def sweep_cdc_slots(self) -> None:
        """PostHog's CDC slot sweeper (`cleanup_orphan_slots_activity`), one pass; blocking, for
        a worker thread. A deleted source's PostHog-managed slot and publication are dropped
        (again, if its delete could not reach the database), unless a live source on the same
        server names that slot. A live source's slot holding back WAL past its thresholds is
        logged, dropped, or marks a self-managed source `Error` (`postgres_cdc.sweep`); a
        dropped slot fails the next sync with the repair as the way back. A source whose sync
        holds its slot now is left to the next pass; a database that cannot be reached is
        logged and skipped."""
        with self.store.lock:
            sources = list(self.store.sources.values())
        cdc_sources = [
            (source, settings)
            for source in sources
            if (settings := postgres_cdc.settings_of(source.job_inputs)) is not None
        ]
        live = {
            _slot_of(s.job_inputs, settings.slot) for s, settings in cdc_sources if not s.deleted
        }
        for source, settings in cdc_sources:
            try:
                if not source.deleted:
                    self._sweep(source, settings)
                elif (
                    settings.mode == "posthog"
                    and _slot_of(source.job_inputs, settings.slot) not in live
                ):
                    _cleanup(source, settings)
            except Exception:
                logger.warning("CDC sweep of source %s failed", source.id, exc_info=True)

    def _sweep(self, source: Source, settings: postgres_cdc.CdcSettings) -> None:
        # Not while a sync of the source reads or confirms the slot: the next pass looks.
        slot_lock = self.engine.slot_lock(source.id)
        if not slot_lock.acquire(blocking=False):
            return
        try:
            with postgres.connect(source.job_inputs) as conn:
                lag = postgres_cdc.status(conn, settings).lag_bytes
                if lag is None:
                    logger.warning("CDC source %s: slot %s not found", source.id, settings.slot)
                    return
                action = postgres_cdc.sweep(settings, lag)
                if action == "drop":
                    postgres_cdc.cleanup_resources(conn, settings)
        finally:
            slot_lock.release()
        if action == "none":
            return
        logger.warning(
            "CDC source %s: slot %s holds back %.1f MB of WAL (warning at %d MB, critical at "
            "%d MB)%s",
            source.id,
            settings.slot,
            lag / (1024 * 1024),
            settings.lag_warning_mb,
            settings.lag_critical_mb,
            "; dropped it and its publication" if action == "drop" else "",
        )
        if action in ("drop", "error"):
            with self.store.lock:
                current = self.store.sources.get(source.id)
                if current is not None and not current.deleted:
                    self.store.save(replace(current, status="Error"))

    async def drop_data(self, schema_id: str) -> None:
        """Stop the schema's sync, then drop its table and cursor (delete_data, destroy)."""
        await self.stop_sync(schema_id, "Sync cancelled because the table's data was deleted")
        await self.clear_data(schema_id)

    async def clear_data(self, schema_id: str, *, reset: bool = False) -> None:
        """Drop the schema's table and cursor and clear its table on the schema, in one step.

        `reset` also clears the status and last sync (delete_data). It holds the warehouse's
        lock, which a sync holds from loading its rows until its table
        is recorded on the schema: so a publication comes wholly before (and is dropped) or
        wholly after (and is a complete table: the engine refuses rows exported past a cursor
        of the dropped generation). A sync still running is left to finish either way.
        """

        def clear() -> None:
            with self.warehouse.locked() as cur:
                # Only a publication changes table_name, and none can run now.
                self.warehouse.drop_table(cur, schema_id, self.store.schemas[schema_id].table_name)
                with self.store.lock:
                    schema = self.store.schemas[schema_id]
                    cleared = replace(
                        schema, table_id=None, table_name=None, table_columns=[], row_count=None
                    )
                    if reset:  # delete_data: the table starts over as never synced
                        cleared = replace(cleared, status=None, last_synced_at=None)
                    self.store.save(cleared)

        await anyio.to_thread.run_sync(clear)


def _cleanup(source: Source, settings: postgres_cdc.CdcSettings) -> None:
    """Drop a CDC source's slot, and its publication when PostHog manages it (blocking)."""
    with postgres.connect(source.job_inputs) as conn:
        postgres_cdc.cleanup_resources(conn, settings)


def _slot_of(job_inputs: dict[str, Any], slot: str) -> tuple[str, str, str]:
    """A replication slot as the server that holds it names it: its host, port and name (slot
    names are one namespace a server)."""
    return (str(job_inputs.get("host") or ""), str(job_inputs.get("port") or ""), slot)
