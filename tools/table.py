"""The endpoint table: one row per PostHog data-warehouse endpoint, the single source of truth.

The MCP tool list, argument validation, routing, annotations, read-only mode, toolsets, the
manifest's tool list and the README's tool table all derive from (or are checked against)
:data:`ENDPOINTS`. Paths are relative to ``/api/{prefix}/{environment_id}/``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from posthog_warehouse_mcp.tools import models as m

Method = Literal["GET", "POST", "PATCH", "DELETE"]
Toolset = Literal["sources", "schemas", "sync", "webhooks", "revenue"]
TOOLSETS: tuple[Toolset, ...] = ("sources", "schemas", "sync", "webhooks", "revenue")

DESTRUCTIVE_WARNING = "DESTRUCTIVE: confirm with the user before calling. "


@dataclass(frozen=True)
class Endpoint:
    """One PostHog endpoint exposed as one MCP tool."""

    name: str
    method: Method
    path: str
    params: type[BaseModel]
    response: type[BaseModel]
    title: str
    description: str
    toolset: Toolset
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    aliases: tuple[str, ...] = ()
    inject_body: Mapping[str, Any] = field(default_factory=dict)
    # Starts a sync of a "source" or a "schema": the wait_seconds hook follows its jobs.
    starts_sync: Literal["source", "schema"] | None = None

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Names of the ``{placeholders}`` in :attr:`path`."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.path) if f)

    @property
    def is_read_only(self) -> bool:
        """Read-only hint: GET unless the row says otherwise."""
        return self.method == "GET" if self.read_only is None else self.read_only

    @property
    def is_destructive(self) -> bool:
        """Destructive hint: DELETE unless the row says otherwise."""
        return self.method == "DELETE" if self.destructive is None else self.destructive

    @property
    def is_idempotent(self) -> bool:
        """Idempotent hint, which also decides whether a failed request may be retried."""
        return self.method != "POST" if self.idempotent is None else self.idempotent

    @property
    def full_description(self) -> str:
        """The description the model reads, with the confirmation warning on destructive tools."""
        prefix = DESTRUCTIVE_WARNING if self.is_destructive else ""
        return prefix + self.description

    @property
    def sends_body(self) -> bool:
        """Whether non-path arguments go in a JSON body (else in the query string)."""
        return self.method in ("POST", "PATCH")


SOURCES = "external_data_sources/"
SOURCE = "external_data_sources/{id}/"
SCHEMAS = "external_data_schemas/"
SCHEMA = "external_data_schemas/{id}/"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "external-data-sources-list",
        "GET",
        SOURCES,
        m.ExternalDataSourceListParams,
        m.PaginatedExternalDataSourceList,
        "List data warehouse sources",
        "Start here: connected sources (Postgres, Stripe...) with status, last run and their "
        "schemas (tables). Paginated.",
        "sources",
    ),
    Endpoint(
        "external-data-sources-create",
        "POST",
        SOURCES,
        m.ExternalDataSourceCreateParams,
        m.ExternalDataSourceCreated,
        "Create data warehouse source",
        "Connect a new source: PostHog checks the credentials, discovers its tables and starts "
        "syncing the tables marked should_sync. Returns {id}. Each call creates another source.",
        "sources",
        idempotent=False,
        inject_body={"created_via": "mcp"},
    ),
    Endpoint(
        "external-data-sources-retrieve",
        "GET",
        SOURCE,
        m.IdParams,
        m.ExternalDataSource,
        "Get data warehouse source",
        "One source with every schema's sync settings, status and latest_error.",
        "sources",
    ),
    Endpoint(
        "external-data-sources-partial-update",
        "PATCH",
        SOURCE,
        m.ExternalDataSourcePartialUpdateParams,
        m.ExternalDataSource,
        "Update data warehouse source",
        "Change a source's description or connection settings (job_inputs, merged; a new host "
        "needs the password again). Table settings: schemas-partial-update.",
        "sources",
    ),
    Endpoint(
        "external-data-sources-destroy",
        "DELETE",
        SOURCE,
        m.IdParams,
        m.Ack,
        "Delete data warehouse source",
        "Delete a source, cancel its syncs and drop all its synced tables. Irreversible: the "
        "source must be recreated and resynced.",
        "sources",
    ),
    Endpoint(
        "external-data-sources-bulk-update-schemas-partial-update",
        "PATCH",
        SOURCE + "bulk_update_schemas/",
        m.ExternalDataSourceBulkUpdateSchemasParams,
        m.ExternalDataSchemaList,
        "Update many table schemas",
        "Change sync settings of several tables of one source in one call (e.g. enable five "
        "tables). Returns the updated schemas.",
        "schemas",
    ),
    Endpoint(
        "external-data-sources-create-webhook-create",
        "POST",
        SOURCE + "create_webhook/",
        m.ExternalDataSourceCreateWebhookParams,
        m.WebhookResult,
        "Create source webhook",
        "Register a webhook with the vendor for tables synced by webhook (Stripe). Each call "
        "registers another endpoint: only call when none exists.",
        "webhooks",
        idempotent=False,
    ),
    Endpoint(
        "external-data-sources-delete-webhook-create",
        "POST",
        SOURCE + "delete_webhook/",
        m.IdParams,
        m.WebhookResult,
        "Delete source webhook",
        "Remove a source's webhook; refused while tables still sync by webhook (switch them "
        "first).",
        "webhooks",
        destructive=True,
        idempotent=True,
    ),
    Endpoint(
        "external-data-sources-jobs",
        "GET",
        SOURCE + "jobs/",
        m.ExternalDataSourceJobsParams,
        m.ExternalDataJobList,
        "List sync jobs",
        "Sync history of a source, newest first (max 50): status, rows_synced, latest_error. "
        "Use it to watch a sync or see why one failed.",
        "sync",
        aliases=("external-data-sources-jobs-retrieve",),
    ),
    Endpoint(
        "external-data-sources-refresh-schemas",
        "POST",
        SOURCE + "refresh_schemas/",
        m.IdParams,
        m.RefreshSchemasResult,
        "Refresh available schemas",
        "Rediscover the source's tables (new ones appear as schemas, not syncing); moves no "
        "data. Returns {added, deleted, total_tables_seen}.",
        "sync",
        idempotent=True,
        aliases=("external-data-sources-refresh-schemas-create",),
    ),
    Endpoint(
        "external-data-sources-reload",
        "POST",
        SOURCE + "reload/",
        m.SyncParams,
        m.Ack,
        "Sync a source now",
        "Start a sync of every enabled table of a source now, without waiting for the "
        "schedule. Returns at once; watch sources-jobs.",
        "sync",
        idempotent=False,
        starts_sync="source",
        aliases=("external-data-sources-reload-create",),
    ),
    Endpoint(
        "external-data-sources-revenue-analytics-config-partial-update",
        "PATCH",
        SOURCE + "revenue_analytics_config/",
        m.ExternalDataSourceRevenueAnalyticsConfigParams,
        m.ExternalDataSource,
        "Configure revenue analytics",
        "Turn a source's use in revenue analytics on or off. Returns the source.",
        "revenue",
    ),
    Endpoint(
        "external-data-schemas-list",
        "GET",
        SCHEMAS,
        m.ExternalDataSchemaListParams,
        m.PaginatedExternalDataSchemaList,
        "List table schemas",
        "All tables of all sources with sync settings and status; search by name. Paginated.",
        "schemas",
    ),
    Endpoint(
        "external-data-schemas-retrieve",
        "GET",
        SCHEMA,
        m.IdParams,
        m.ExternalDataSchema,
        "Get table schema",
        "One table's sync settings, status, latest_error and available columns.",
        "schemas",
    ),
    Endpoint(
        "external-data-schemas-partial-update",
        "PATCH",
        SCHEMA,
        m.ExternalDataSchemaPartialUpdateParams,
        m.ExternalDataSchema,
        "Update table schema",
        "Enable or pause a table and set its sync type, cursor, key and frequency. For "
        "incremental, pick the cursor with incremental-fields first.",
        "schemas",
    ),
    Endpoint(
        "external-data-schemas-destroy",
        "DELETE",
        SCHEMA,
        m.IdParams,
        m.Ack,
        "Delete table schema",
        "Remove a table from its source and drop its synced data. To keep the table listed, "
        "use delete-data or set should_sync false.",
        "schemas",
    ),
    Endpoint(
        "external-data-schemas-cancel",
        "POST",
        SCHEMA + "cancel/",
        m.IdParams,
        m.Ack,
        "Cancel running sync",
        "Stop a table's running sync (job becomes Failed); the previous data stays. Errors if "
        "no sync is running.",
        "sync",
        idempotent=True,
        aliases=("external-data-schemas-cancel-create",),
    ),
    Endpoint(
        "external-data-schemas-delete-data",
        "DELETE",
        SCHEMA + "delete_data/",
        m.IdParams,
        m.Ack,
        "Delete synced table data",
        "Drop a table's synced data but keep the schema and settings; sync again with reload.",
        "schemas",
        aliases=("external-data-schemas-delete-data-destroy",),
    ),
    Endpoint(
        "external-data-schemas-incremental-fields-create",
        "POST",
        SCHEMA + "incremental_fields/",
        m.IdParams,
        m.IncrementalFieldsResult,
        "List incremental field candidates",
        "Inspect the source table's columns: which can be an incremental cursor and whether "
        "incremental or append is possible. Changes nothing.",
        "schemas",
        read_only=True,
        idempotent=True,
    ),
    Endpoint(
        "external-data-schemas-reload",
        "POST",
        SCHEMA + "reload/",
        m.SyncParams,
        m.Ack,
        "Sync a table now",
        "Sync one table now with its sync type (incremental adds/merges new rows). Returns at "
        "once. To rebuild from scratch use resync.",
        "sync",
        idempotent=False,
        starts_sync="schema",
        aliases=("external-data-schemas-reload-create",),
    ),
    Endpoint(
        "external-data-schemas-resync",
        "POST",
        SCHEMA + "resync/",
        m.SyncParams,
        m.Ack,
        "Resync table from scratch",
        "Drop the table's synced data and re-import every row (cancels a running sync). Use "
        "when data is wrong; costly on big tables.",
        "sync",
        destructive=True,
        idempotent=False,
        starts_sync="schema",
        aliases=("external-data-schemas-resync-create",),
    ),
)

BY_NAME: Mapping[str, Endpoint] = {
    name: row for row in ENDPOINTS for name in (row.name, *row.aliases)
}


def lookup(name: str) -> Endpoint | None:
    """Return the row for a tool name or one of its aliases."""
    return BY_NAME.get(name)
