"""PostHog's query API over the DuckDB warehouse: `HogQLQuery` and `DatabaseSchemaQuery`.

A HogQL query is checked, translated and run in a worker process (`query_worker.py`) on the
published copies of the tables it names, inside a read-only transaction, with PostHog's row
limits; `query_pool.py` gives it a turn and stops it at its time or memory limit. A copy is
written whole before a query can name it, so a query never sees a table half published, and
never blocks a sync's write.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio

from .cdc import HISTORY_SUFFIX
from .engine import table_name
from .hogql import NESTED_TOO_DEEPLY, Catalog, QueryError, compile_query
from .query_pool import QueryLimits, QueryPool, WorkerFailed
from .store import Schema, Source, Store
from .warehouse import Warehouse

logger = logging.getLogger(__name__)

# PostHog's API limits (`LimitContext.QUERY`): rows without a LIMIT, and the most with one.
DEFAULT_ROWS = 100
MAX_ROWS = 50_000
# The longest query text the sandbox reads: execute-sql's 20,000 characters and its wrapper,
# with room to spare. Parsing takes about a second per 20,000 characters of `1+1+...`.
MAX_QUERY_CHARS = 30_000


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hogql_name(source: Source, table: str) -> str:
    """PostHog's `get_data_warehouse_table_name` of a warehouse table: `shop_postgres_orders`
    is `postgres.shop.orders`, or `postgres.orders` without a prefix."""
    source_type = source.source_type.lower()
    prefix = (source.prefix or "").strip("_").lower()
    stored = table_name(source.prefix, source.source_type, "")
    stripped = table[len(stored) :] if table.lower().startswith(stored) else table
    return (f"{source_type}.{prefix}.{stripped}" if prefix else f"{source_type}.{stripped}").lower()


def schema_tables(schema: Schema) -> list[str]:
    """A schema's published warehouse tables: its own, and a `both` CDC table's change log
    `<table>_cdc`, which PostHog registers as a table of its own, named as any other
    (`register_cdc_companion_table`); `cdc_only`'s log is the schema's own table."""
    if not schema.table_name:
        return []
    tables = [schema.table_name]
    if schema.sync_type == "cdc" and schema.cdc_table_mode == "both":
        tables.append(schema.table_name + HISTORY_SUFFIX)
    return tables


def _source_label(source: Source) -> str:
    """How an error names a source: its id, and its description when it has one."""
    described = f', "{source.description}"' if source.description else ""
    return f"source {source.id}{described}"


def _no_data(source: Source, schema: Schema) -> str:
    """Why a schema's table holds no data now, and what brings it back."""
    where = f"It is table {schema.name} of {_source_label(source)}, which holds no data now"
    if schema.status == "Running":
        return f"{where}: its sync is running. Query it once the sync completes."
    if not schema.should_sync:
        return (
            f"{where}: it is not synced. Turn its sync on (should_sync) to import it "
            "(external-data-schemas-partial-update)."
        )
    return (
        f"{where}: it was not synced since it was created or since its data was deleted "
        "(external-data-schemas-delete-data). Sync it to query it "
        "(external-data-schemas-reload)."
    )


class Queries:
    """Runs queries against the warehouse's published tables."""

    def __init__(
        self,
        store: Store,
        warehouse: Warehouse,
        *,
        limits: QueryLimits | None = None,
        spill: Path | None = None,
    ) -> None:
        """Queries run in worker processes that spill under `spill` (default: `query.tmp/`
        next to the warehouse)."""
        self.store = store
        self.warehouse = warehouse
        self.pool = QueryPool(
            warehouse.published_dir, spill or warehouse.path.with_name("query.tmp"), limits
        )

    def synced_tables(self) -> list[tuple[Source, Schema]]:
        """Every schema with a published table, and its source."""
        found = []
        with self.store.lock:
            for schema in self.store.live_schemas():
                if schema.table_name:
                    found.append((self.store.sources[schema.source_id], schema))
        return found

    def names(self) -> dict[str, str]:
        """Every name a query may use for a table (its stored name and its dotted HogQL name,
        lower case), to the DuckDB table."""
        return dict(self.catalog().tables)

    def catalog(self) -> Catalog:
        """The names a query may use, the source of each table, and why the names of the
        tables that hold no data now (PostHog deletes a table whose data is deleted, and its
        name is then unknown, as it is before the first sync) are unknown."""
        with self.store.lock:
            schemas = [(self.store.sources[s.source_id], s) for s in self.store.live_schemas()]
        names: dict[str, str] = {}
        owners: dict[str, str] = {}
        empty: dict[str, str] = {}
        for source, schema in schemas:
            for table in schema_tables(schema):
                names[table.lower()] = table
                names[hogql_name(source, table)] = table
                owners[table] = _source_label(source)
        for source, schema in schemas:
            if schema.table_name:
                continue
            why = _no_data(source, schema)
            stored = table_name(source.prefix, source.source_type, schema.name)
            for name in (hogql_name(source, stored), stored):
                if name not in names:
                    empty.setdefault(name, why)
        return Catalog(names, owners, empty)

    async def run_hogql(self, hogql: str) -> bytes:
        """Run one HogQL SELECT; answer PostHog's `HogQLQueryResponse`, as JSON.

        The query is compiled (in a thread: sqlglot takes a second for the longest) once it has
        a turn, so that no more than the running queries' parses compete with the server, and
        within its time limit.

        Raises:
            QueryError: refused before running, DuckDB's own error (a missing column...), or
                stopped at the time or memory limit.
            Busy: no turn for the query (the queue is full, or its time passed, or most of
                it, waiting).
            WorkerFailed: the query could not be run (logged).
        """
        if len(hogql) > MAX_QUERY_CHARS:
            raise QueryError(
                f"The query is longer than {MAX_QUERY_CHARS} characters ({len(hogql)}). Shorten it."
            )
        async with self.pool.turn(anyio.current_time() + self.pool.limits.seconds) as turn:
            for _ in range(2):  # a copy replaced between the request and its reading: ask again
                with anyio.move_on_after(turn.deadline - anyio.current_time()):
                    request = await anyio.to_thread.run_sync(
                        self._request, hogql, abandon_on_cancel=True
                    )
                    kind, payload = await turn.run(request)
                    if kind == b"A":
                        return payload
                    detail = str(json.loads(payload).get("detail", ""))
                    if kind == b"E":
                        raise QueryError(detail)
                    if kind != b"S":
                        logger.error("the query worker failed: %s", detail)
                        raise WorkerFailed(detail)
                    continue
                raise turn.out_of_time()
        raise QueryError("The tables changed while the query started; run it again.")

    def _request(self, hogql: str) -> dict[str, Any]:
        """What a worker needs to run `hogql`: the query compiled against the tables published
        now, and the copy of each table it reads (written now if the table was published since
        its last copy). Blocking; run it in a worker thread.

        Raises:
            QueryError: refused (not one SELECT, an unknown table...).
        """
        catalog = self.catalog()
        try:
            compiled = compile_query(hogql, catalog, default_limit=DEFAULT_ROWS, max_limit=MAX_ROWS)
        except QueryError as exc:
            if str(exc) == NESTED_TOO_DEEPLY:
                logger.info("refused a query nested too deeply (%d characters)", len(hogql))
            raise
        files = {}
        for table in sorted(compiled.tables):
            try:
                copy = self.warehouse.copy_for_query(table)
            except Exception as exc:  # the disk, DuckDB: nothing the query's author can fix
                logger.error("could not copy %s for queries: %s", table, _first_line(exc))
                raise WorkerFailed(f"could not copy {table} for queries") from None
            if copy is None:
                raise QueryError(f"Unknown table `{table}`: it was deleted just now.")
            files[table] = str(copy)
        return {
            "hogql": hogql,
            "sql": compiled.sql,
            "files": files,
            # The worker lets go of the copies of tables no longer published.
            "published": sorted(set(catalog.tables.values())),
            "limit": compiled.limit,
            "own_limit": compiled.own_limit,
        }

    async def aclose(self) -> None:
        """End the query workers."""
        await self.pool.aclose()

    def database_schema(self) -> dict[str, Any]:
        """PostHog's `DatabaseSchemaQueryResponse` for the warehouse tables: keyed by the
        dotted name, with fields, row count, the schema and the source they come from."""
        tables: dict[str, Any] = {}
        for source, schema, table, columns, row_count in self._published():
            name = hogql_name(source, table)
            jobs = [j for j in self.store.source_jobs(source.id) if j.status == "Completed"]
            tables[name] = {
                "type": "data_warehouse",
                "id": schema.table_id,
                "name": name,
                "fields": {
                    c["name"]: {
                        "name": c["name"],
                        "hogql_value": c["name"],
                        "type": c.get("type", "string"),
                        "schema_valid": bool(c.get("schema_valid", True)),
                    }
                    for c in columns
                },
                "search_aliases": [table],
                "format": "DuckDB",
                "url_pattern": "",
                "row_count": row_count,
                "schema": {
                    "id": schema.id,
                    "name": schema.name,
                    "should_sync": schema.should_sync,
                    "incremental": schema.sync_type == "incremental",
                    "status": schema.status,
                    "last_synced_at": str(schema.last_synced_at),
                },
                "source": {
                    "id": source.id,
                    "status": source.status,
                    "source_type": source.source_type,
                    "access_method": source.access_method,
                    "prefix": source.prefix or "",
                    "last_synced_at": jobs[0].created_at if jobs else None,
                },
            }
        return {"tables": tables, "joins": []}

    def _published(self) -> list[tuple[Source, Schema, str, list[dict[str, Any]], int | None]]:
        """Each published table: its source and schema, its name, columns and row count (a CDC
        change log beside the schema's table is described from the warehouse)."""
        found = []
        for source, schema in self.synced_tables():
            own, *logs = schema_tables(schema)
            found.append((source, schema, own, schema.table_columns, schema.row_count))
            for log in logs:
                if not self.warehouse.table_exists(log):
                    continue  # the mode became `both` since the last sync
                types = {c["name"]: c.get("type", "string") for c in schema.table_columns}
                described = self.warehouse.columns(log)
                columns = [{"name": n, "type": types.get(n, "string")} for n, _ in described]
                found.append((source, schema, log, columns, self.warehouse.count(log)))
        return found
