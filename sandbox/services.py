"""What a request handler needs: the store, the warehouse and the engine, and the lookups and
side effects that combine them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import anyio

from posthog_warehouse_mcp.sandbox import errors
from posthog_warehouse_mcp.sandbox.connectors import Table, connector, discover
from posthog_warehouse_mcp.sandbox.engine import SyncEngine
from posthog_warehouse_mcp.sandbox.store import Schema, Source, Store
from posthog_warehouse_mcp.sandbox.warehouse import Warehouse


def with_columns(schema: Schema, table: Table) -> Schema:
    """The schema with the columns and primary key that discovery found upstream."""
    return replace(
        schema,
        available_columns=table.available_columns,
        detected_primary_keys=list(table.primary_key),
    )


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
