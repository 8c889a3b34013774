"""What a request handler needs: the store, the warehouse and the engine, and the lookups and
side effects that combine them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import anyio

from posthog_warehouse_mcp.sandbox import drf, errors
from posthog_warehouse_mcp.sandbox.connectors import (
    Table,
    TableStats,
    connector,
    discover,
    inspect,
)
from posthog_warehouse_mcp.sandbox.engine import SyncEngine
from posthog_warehouse_mcp.sandbox.errors import ApiError
from posthog_warehouse_mcp.sandbox.store import Schema, Source, Store, iso, new_id, now
from posthog_warehouse_mcp.sandbox.validation import validate_prefix, validate_settings
from posthog_warehouse_mcp.sandbox.warehouse import Warehouse

# The settings a create payload may give a schema.
_CREATE_SETTINGS = (
    "sync_type",
    "incremental_field",
    "incremental_field_type",
    "primary_key_columns",
    "sync_time_of_day",
    "enabled_columns",
    "sync_frequency",
)


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

    def get_source(self, source_id: str) -> Source:
        """A live source.

        Raises:
            ApiError: 404, no such source or it was deleted.
        """
        source = self.store.sources.get(source_id)
        if source is None or source.deleted:
            raise errors.not_found()
        return source

    def get_schema(self, schema_id: str) -> Schema:
        """A live schema of a live source.

        Raises:
            ApiError: 404, no such schema or it or its source was deleted.
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
        return await anyio.to_thread.run_sync(lambda: discover(upstream, job_inputs, only))

    async def inspect(
        self, source_type: str, job_inputs: dict[str, Any]
    ) -> list[tuple[Table, TableStats]]:
        """Like `discover`, with each table's catalog stats (`database_schema`, `setup`).

        Raises:
            SourceError: the source cannot be reached or read (ConnectionFailed says why).
        """
        upstream = connector(source_type)
        return await anyio.to_thread.run_sync(lambda: inspect(upstream, job_inputs))

    def create_source(
        self, new: NewSource, tables: list[Table], wanted: dict[str, dict[str, Any]]
    ) -> Source:
        """Create a source with a schema for each discovered table, the settings of `wanted`
        (by table name) applied, and start the enabled tables' syncs (create and setup).

        Raises:
            ApiError: a prefix this project's sources of the type rule out; a setting PostHog
                refuses (`{"message"}`).
        """
        created = iso(now()) or ""
        source = Source(
            id=new_id(),
            source_type=new.source_type,
            prefix=new.prefix,
            description=new.description,
            job_inputs=new.job_inputs,
            created_at=created,
            created_via=new.created_via,
            access_method=new.access_method,
        )
        schemas = []
        for table in tables:
            schema = Schema(id=new_id(), source_id=source.id, name=table.name, created_at=created)
            schema = with_columns(schema, table)
            item = wanted.get(table.name)
            if item:
                settings: dict[str, Any] = {k: item[k] for k in _CREATE_SETTINGS if k in item}
                should_sync = drf.boolean(item.get("should_sync") or False, "should_sync")
                settings["should_sync"] = should_sync
                if should_sync and not settings.get("sync_type"):
                    settings["sync_type"] = "full_refresh"
                try:
                    schema = validate_settings(schema, settings, source_type=new.source_type)
                except ApiError as exc:
                    raise errors.message(str(exc.body.get("detail"))) from exc
            schemas.append(schema)
        with self.store.lock:
            # Checked again with the save: another create may have taken the prefix meanwhile.
            validate_prefix(self.store, new.source_type, new.prefix)
            self.store.save(source)
            for schema in schemas:
                self.store.save(schema)
        for schema in schemas:
            if schema.should_sync:
                self.engine.start(schema.id)
        return source

    async def stop_sync(self, schema_id: str, reason: str) -> None:
        """Cancel a running sync and wait for its thread (in a worker: cancelling talks to the
        source)."""

        def stop() -> None:
            if self.engine.cancel(schema_id, reason):
                self.engine.join(schema_id, 30)

        await anyio.to_thread.run_sync(stop)

    async def drop_data(self, schema_id: str) -> None:
        """Stop the schema's sync, then drop its table and cursor (delete_data, destroy)."""
        await self.stop_sync(schema_id, "Sync cancelled because the table's data was deleted")
        await self.clear_data(schema_id)

    async def clear_data(self, schema_id: str) -> None:
        """Drop the schema's table and cursor and clear its table on the schema, in one step.

        It holds the warehouse's lock, which a sync holds from loading its rows until its table
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
                    self.store.save(
                        replace(
                            schema, table_id=None, table_name=None, table_columns=[], row_count=None
                        )
                    )

        await anyio.to_thread.run_sync(clear)
