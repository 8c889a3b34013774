"""The endpoint table: one row per PostHog data-warehouse endpoint, the single source of truth.

The MCP tool list, argument validation, routing, annotations, read-only mode, toolsets, the
manifest's tool list and docs/tools.md's tool table all derive from (or are checked against)
:data:`ENDPOINTS`. Paths are relative to ``/api/{prefix}/{environment_id}/``.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel

from . import models as m
from .audit import audit
from .hooks import Hook, Preview
from .plans import apply_plan, plan_changes, plan_preview
from .previews import (
    bulk_settings_preview,
    schema_preview,
    settings_preview,
    source_preview,
    webhook_preview,
)
from .rehearsal import rehearse
from .requests import (
    flat_body,
    hogql_query_body,
    schema_query_body,
    sync_logs_query,
)
from .results import offer_link, query_rows, warehouse_tables
from .waiting import wait_for_jobs, wait_for_sync

# LOCAL: a tool answered on this machine, whose hook sends nothing to PostHog.
Method = Literal["GET", "POST", "PATCH", "DELETE", "LOCAL"]
LOCAL_PATH = "(this machine)"
Toolset = Literal["sources", "schemas", "sync", "webhooks", "revenue", "setup", "diagnose", "query"]
TOOLSETS: tuple[Toolset, ...] = get_args(Toolset)

DESTRUCTIVE_WARNING = "DESTRUCTIVE: confirm with the user before calling. "

# The personal-API-key scopes PostHog requires for a row (its MCP tool YAML's `scopes`).
READ = ("external_data_source:read",)
WRITE = ("external_data_source:write",)
# PostHog's data-health endpoint lives on the warehouse-view API and needs its scope too.
HEALTH = ("warehouse_view:read", "external_data_source:read")
# PostHog's query endpoint (a read, though it is a POST).
QUERY = ("query:read",)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One PostHog endpoint exposed as one MCP tool: name, method and path, then keywords."""

    name: str = field(kw_only=False)
    method: Method = field(kw_only=False)
    path: str = field(kw_only=False)
    params: type[BaseModel]
    response: type[BaseModel]
    title: str
    description: str
    toolset: Toolset
    scopes: tuple[str, ...]
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    aliases: tuple[str, ...] = ()
    # Whether a failed request may be sent again; by default, what the idempotent hint says.
    retry_safe: bool | None = None
    inject_body: Mapping[str, Any] = field(default_factory=dict)
    # Per-tool behaviour around the request (tools/hooks.py), e.g. following a sync it starts.
    hook: Hook | None = None
    # The query string from the validated arguments, where PostHog's tool does not send them
    # as given (tools/requests.py).
    build_query: Callable[[BaseModel], dict[str, Any]] | None = None
    build_body: Callable[[BaseModel], dict[str, Any]] | None = None
    # What a destructive call will do, read before it is confirmed (tools/previews.py).
    preview: Preview | None = None
    # Fields left out of the answer (dotted paths, `*` for each list item), as PostHog's own
    # tool definitions exclude them (`response.exclude` in its tools.yaml).
    exclude: tuple[str, ...] = ()

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Names of the ``{placeholders}`` in :attr:`path`."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.path) if f)

    @property
    def is_read_only(self) -> bool:
        """Read-only hint: GET unless the row says otherwise."""
        return self.method == "GET" if self.read_only is None else self.read_only

    @property
    def read_scoped(self) -> bool:
        """Whether a key with only read scopes can call it (what read-only mode offers)."""
        return all(scope.endswith(":read") for scope in self.scopes)

    @property
    def is_destructive(self) -> bool:
        """Destructive hint: DELETE unless the row says otherwise."""
        return self.method == "DELETE" if self.destructive is None else self.destructive

    @property
    def is_idempotent(self) -> bool:
        """Idempotent hint: not POST unless the row says otherwise."""
        return self.method != "POST" if self.idempotent is None else self.idempotent

    @property
    def is_retry_safe(self) -> bool:
        """Whether a failed request may be retried: sending it twice does no harm."""
        return self.is_idempotent if self.retry_safe is None else self.retry_safe

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
        params=m.ExternalDataSourceListParams,
        response=m.PaginatedExternalDataSourceList,
        title="List data warehouse sources",
        description=(
            "Start here: connected sources (Postgres, Stripe...) with status, last run and their "
            "schemas (tables). Paginated."
        ),
        toolset="sources",
        scopes=READ,
        exclude=("results.*.schemas.*.table.columns", "results.*.schemas.*.available_columns"),
    ),
    Endpoint(
        "external-data-sources-create",
        "POST",
        SOURCES,
        params=m.ExternalDataSourceCreateParams,
        response=m.ExternalDataSourceCreated,
        title="Create data warehouse source",
        description=(
            "'Connect my Postgres/Stripe': run db-schema first, then send payload.schemas with "
            "the tables the user chose; omitting schemas enables EVERY table. Each call creates "
            "another source. Returns {id}."
        ),
        toolset="sources",
        scopes=WRITE,
        idempotent=False,
        inject_body={"created_via": "mcp"},
    ),
    Endpoint(
        "external-data-sources-retrieve",
        "GET",
        SOURCE,
        params=m.IdParams,
        response=m.ExternalDataSource,
        title="Get data warehouse source",
        description="One source with every schema's sync settings, status and latest_error.",
        toolset="sources",
        scopes=READ,
    ),
    Endpoint(
        "external-data-sources-partial-update",
        "PATCH",
        SOURCE,
        params=m.ExternalDataSourcePartialUpdateParams,
        response=m.ExternalDataSource,
        title="Update data warehouse source",
        description=(
            "Change a source's description, connection settings (job_inputs, merged; a new host "
            "needs the password) or auto-sync of new tables. Table settings: "
            "schemas-partial-update."
        ),
        toolset="sources",
        scopes=WRITE,
    ),
    Endpoint(
        "external-data-sources-destroy",
        "DELETE",
        SOURCE,
        params=m.ConfirmedIdParams,
        response=m.Ack,
        title="Delete data warehouse source",
        description=(
            "Delete a source, cancel its syncs and drop all its synced tables. Irreversible: the "
            "source must be recreated and resynced."
        ),
        toolset="sources",
        scopes=WRITE,
        preview=source_preview(
            "delete the source, cancel its syncs and drop every table below.",
            "none: create the source again and re-import every table (billed again).",
        ),
    ),
    Endpoint(
        "external-data-sources-bulk-update-schemas-partial-update",
        "PATCH",
        SOURCE + "bulk_update_schemas/",
        params=m.ExternalDataSourceBulkUpdateSchemasParams,
        response=m.ExternalDataSchemaList,
        title="Update many table schemas",
        description=(
            "Change several tables of one source in one call (e.g. enable five). Tables PostHog "
            "refuses are named in the error; the others are saved. Asks first if data would go."
        ),
        toolset="schemas",
        scopes=WRITE,
        preview=bulk_settings_preview,
    ),
    Endpoint(
        "external-data-sources-create-webhook-create",
        "POST",
        SOURCE + "create_webhook/",
        params=m.ExternalDataSourceCreateWebhookParams,
        response=m.WebhookResult,
        title="Create source webhook",
        description=(
            "Register a webhook with the vendor for tables synced by webhook (Stripe). Each call "
            "registers another endpoint: only call when none exists."
        ),
        toolset="webhooks",
        scopes=WRITE,
        idempotent=False,
    ),
    Endpoint(
        "external-data-sources-delete-webhook-create",
        "POST",
        SOURCE + "delete_webhook/",
        params=m.ConfirmedIdParams,
        response=m.WebhookResult,
        title="Delete source webhook",
        description=(
            "Remove a source's webhook; refused while tables still sync by webhook (switch them "
            "first)."
        ),
        toolset="webhooks",
        scopes=WRITE,
        destructive=True,
        idempotent=True,
        preview=webhook_preview(
            "remove the webhook at the provider and in PostHog; webhook tables get no rows.",
            "external-data-sources-create-webhook-create registers a new one.",
        ),
    ),
    Endpoint(
        "external-data-sources-repair-cdc-create",
        "POST",
        SOURCE + "repair_cdc/",
        params=m.ConfirmedIdParams,
        response=m.RepairCdcResult,
        title="Repair CDC",
        description=(
            "Recreate a CDC source's lost replication slot or publication; every CDC table then "
            "re-syncs in full (billed). PostHog refuses a source whose CDC looks healthy."
        ),
        toolset="sync",
        scopes=WRITE,
        destructive=True,
        idempotent=True,
        preview=source_preview(
            "recreate the replication slot and publication, and re-snapshot every CDC table of "
            "the source: each is re-imported in full (billed).",
            "none needed: changes made while the slot was lost cannot be read again; the "
            "re-snapshot brings the tables up to date.",
        ),
    ),
    Endpoint(
        "external-data-sources-jobs",
        "GET",
        SOURCE + "jobs/",
        params=m.ExternalDataSourceJobsParams,
        response=m.ExternalDataJobList,
        title="List sync jobs",
        description=(
            "Sync history of a source, newest first (max 50): status, rows_synced, latest_error. "
            "Use it to watch a sync or see why one failed."
        ),
        toolset="sync",
        scopes=READ,
        aliases=("external-data-sources-jobs-retrieve",),
    ),
    Endpoint(
        "external-data-sources-refresh-schemas",
        "POST",
        SOURCE + "refresh_schemas/",
        params=m.IdParams,
        response=m.RefreshSchemasResult,
        title="Refresh available schemas",
        description=(
            "'A new table is missing': rediscover the source's tables; new ones are added, not "
            "syncing (unless auto-sync is on). Moves no data."
        ),
        toolset="sync",
        scopes=WRITE,
        idempotent=True,
        aliases=("external-data-sources-refresh-schemas-create",),
    ),
    Endpoint(
        "external-data-sources-reload",
        "POST",
        SOURCE + "reload/",
        params=m.SyncParams,
        response=m.Ack,
        title="Sync a source now",
        description=(
            "Sync every enabled table of a source now with its sync type. Returns at once; "
            "watch sources-jobs."
        ),
        toolset="sync",
        scopes=WRITE,
        idempotent=False,
        hook=wait_for_sync("source"),
        aliases=("external-data-sources-reload-create",),
    ),
    Endpoint(
        "external-data-sources-revenue-analytics-config-partial-update",
        "PATCH",
        SOURCE + "revenue_analytics_config/",
        params=m.ExternalDataSourceRevenueAnalyticsConfigParams,
        response=m.ExternalDataSource,
        title="Configure revenue analytics",
        description="Turn a source's use in revenue analytics on or off. Returns the source.",
        toolset="revenue",
        scopes=WRITE,
    ),
    Endpoint(
        "external-data-schemas-list",
        "GET",
        SCHEMAS,
        params=m.ExternalDataSchemaListParams,
        response=m.PaginatedExternalDataSchemaList,
        title="List table schemas",
        description=(
            "All tables of all sources with sync settings and status; search by name. Paginated."
        ),
        toolset="schemas",
        scopes=READ,
        exclude=("results.*.table.columns", "results.*.available_columns"),
    ),
    Endpoint(
        "external-data-schemas-retrieve",
        "GET",
        SCHEMA,
        params=m.IdParams,
        response=m.ExternalDataSchema,
        title="Get table schema",
        description="One table's sync settings, status, latest_error and available columns.",
        toolset="schemas",
        scopes=READ,
    ),
    Endpoint(
        "external-data-schemas-partial-update",
        "PATCH",
        SCHEMA,
        params=m.ExternalDataSchemaPartialUpdateParams,
        response=m.ExternalDataSchema,
        title="Update table schema",
        description=(
            "Change one table: enable or pause, sync type, cursor, key, frequency, row filters. "
            "Send sync_type with cursor changes. A new cursor column or key needs a resync; "
            "frequency and pause don't. A change that makes the next sync remove data asks first."
        ),
        toolset="schemas",
        scopes=WRITE,
        preview=settings_preview,
    ),
    Endpoint(
        "external-data-schemas-destroy",
        "DELETE",
        SCHEMA,
        params=m.ConfirmedIdParams,
        response=m.Ack,
        title="Delete table schema",
        description=(
            "Remove a table from its source and drop its synced data. To keep the table listed, "
            "use delete-data or set should_sync false."
        ),
        toolset="schemas",
        scopes=WRITE,
        preview=schema_preview(
            "remove the table from its source and drop its synced rows.",
            "refresh-schemas brings the table back (not enabled); its rows are re-imported "
            "(billed) once enabled.",
        ),
    ),
    Endpoint(
        "external-data-schemas-cancel",
        "POST",
        SCHEMA + "cancel/",
        params=m.IdParams,
        response=m.Ack,
        title="Cancel running sync",
        description=(
            "Stop a table's running sync, or clear a status stuck in Running with no sync; then "
            "reload. The previous data stays."
        ),
        toolset="sync",
        scopes=WRITE,
        idempotent=True,
        aliases=("external-data-schemas-cancel-create",),
    ),
    Endpoint(
        "external-data-schemas-delete-data",
        "DELETE",
        SCHEMA + "delete_data/",
        params=m.ConfirmedIdParams,
        response=m.Ack,
        title="Delete synced table data",
        description=(
            "Drop a table's synced data but keep the schema and settings; sync again with reload."
        ),
        toolset="schemas",
        scopes=WRITE,
        aliases=("external-data-schemas-delete-data-destroy",),
        preview=schema_preview(
            "drop the table's synced rows; the table and its settings stay.",
            "the next reload re-imports every row (billed again).",
        ),
    ),
    Endpoint(
        "external-data-schemas-incremental-fields-create",
        "POST",
        SCHEMA + "incremental_fields/",
        params=m.IdParams,
        response=m.IncrementalFieldsResult,
        title="List incremental field candidates",
        description=(
            "Inspect the source table's columns: which can be an incremental cursor and whether "
            "incremental or append is possible. Changes nothing."
        ),
        toolset="schemas",
        scopes=WRITE,
        read_only=True,
        idempotent=True,
    ),
    Endpoint(
        "external-data-schemas-reload",
        "POST",
        SCHEMA + "reload/",
        params=m.SyncParams,
        response=m.Ack,
        title="Sync a table now",
        description=(
            "'My orders table is stale': sync it now with its sync type (new rows only for "
            "incremental). Try this before resync. Returns at once."
        ),
        toolset="sync",
        scopes=WRITE,
        idempotent=False,
        hook=wait_for_sync("schema"),
        aliases=("external-data-schemas-reload-create",),
    ),
    Endpoint(
        "external-data-schemas-resync",
        "POST",
        SCHEMA + "resync/",
        params=m.ConfirmedSyncParams,
        response=m.Ack,
        title="Resync table from scratch",
        description=(
            "Only for wrong data (duplicates, missing rows) or after a new cursor column or "
            "key: drops the table and re-imports every row, billed again. Never a first fix."
        ),
        toolset="sync",
        scopes=WRITE,
        destructive=True,
        idempotent=False,
        hook=wait_for_sync("schema"),
        aliases=("external-data-schemas-resync-create",),
        preview=schema_preview(
            "cancel a running sync, drop the table and re-import every row (billed again).",
            "none: the re-import replaces the table; rows deleted at the source are gone.",
        ),
    ),
    Endpoint(
        "external-data-sources-wizard",
        "GET",
        SOURCES + "wizard/",
        params=m.ExternalDataSourcesWizardParams,
        response=m.SourceTypeConfigs,
        title="List data warehouse source types you can import",
        description=(
            "The fields a source type needs to connect (name, type, required, secret) and "
            "whether it can be connected here. Call it before create with the type you need."
        ),
        toolset="setup",
        scopes=READ,
    ),
    Endpoint(
        "external-data-sources-webhook-info-retrieve",
        "GET",
        SOURCE + "webhook_info/",
        params=m.IdParams,
        response=m.WebhookInfo,
        title="Get webhook status for a source",
        description=(
            "Whether the source's type supports webhooks, whether one exists, its URL, which "
            "events map to which tables, and what the vendor reports about it."
        ),
        toolset="webhooks",
        scopes=READ,
    ),
    Endpoint(
        "external-data-sources-connections-list",
        "GET",
        SOURCES + "connections/",
        params=m.NoParams,
        response=m.DirectConnectionList,
        title="List direct-query connections",
        description=(
            "Sources that can be queried live (direct connections, or synced sources with live "
            "queries on): id, prefix, engine, access_method, supports_hogql."
        ),
        toolset="sources",
        scopes=READ,
    ),
    Endpoint(
        "external-data-sync-logs",
        "GET",
        SCHEMAS + "{schema_id}/logs/",
        params=m.ExternalDataSyncLogsParams,
        response=m.PaginatedSyncLogList,
        title="Get sync job logs",
        description=(
            "'Why did my sync fail?': a table's sync log, newest first, with the driver's "
            "error. Filter by job (workflow_run_id from sources-jobs), level and text."
        ),
        toolset="diagnose",
        scopes=READ,
        build_query=sync_logs_query,
    ),
    Endpoint(
        "external-data-sources-db-schema",
        "POST",
        SOURCES + "database_schema/",
        params=m.ExternalDataSourcesDbSchemaParams,
        response=m.DiscoveredTableList,
        title="Discover tables and sync methods for a source",
        description=(
            "List the tables a source would import before creating it: columns, primary keys, "
            "cursor candidates, row estimates, permission and RLS warnings. Checks credentials, "
            "creates nothing."
        ),
        toolset="setup",
        scopes=WRITE,
        read_only=True,
        idempotent=True,
        build_body=flat_body,
    ),
    Endpoint(
        "external-data-sources-rehearse",
        "LOCAL",
        LOCAL_PATH,
        params=m.ExternalDataSourcesRehearseParams,
        response=m.RehearsalReport,
        title="Rehearse an import on this machine",
        description=(
            "Before create: a real, bounded sync of the chosen tables here: key, cursor and "
            "type problems with fixes, PostHog's names, first-sync rows, billed rows a month "
            "(estimates), schemas for create. Sends nothing to PostHog."
        ),
        toolset="setup",
        scopes=(),
        read_only=True,
        idempotent=True,
        hook=rehearse,
    ),
    Endpoint(
        "data-warehouse-source-setup",
        "POST",
        SOURCES + "setup/",
        params=m.DataWarehouseSourceSetupParams,
        response=m.SourceSetupResult,
        title="Set up a data warehouse source (one step)",
        description=(
            "Create a source with EVERY table enabled (incremental where a cursor exists) and "
            "start syncing. For chosen tables use db-schema, then create. Returns {id}."
        ),
        toolset="setup",
        scopes=WRITE,
        idempotent=False,
    ),
    Endpoint(
        "external-data-sources-update-webhook-inputs-create",
        "POST",
        SOURCE + "update_webhook_inputs/",
        params=m.ExternalDataSourceUpdateWebhookInputsParams,
        response=m.WebhookResult,
        title="Update webhook inputs (signing secret, etc.)",
        description=(
            "Set a webhook's own fields (e.g. a rotated signing_secret) on a source whose "
            "webhook exists; only the type's webhook fields are accepted."
        ),
        toolset="webhooks",
        scopes=WRITE,
        idempotent=True,
    ),
    Endpoint(
        "external-data-sources-preview-resource",
        "POST",
        SOURCES + "preview_resource/",
        params=m.ExternalDataSourcePreviewResourceParams,
        response=m.ResourcePreview,
        title="Preview rows for a Custom REST source resource",
        description=(
            "A live sample of one resource of a Custom REST source, to check its manifest "
            "before creating it. Only source_type 'Custom'."
        ),
        toolset="setup",
        scopes=WRITE,
        read_only=True,
        idempotent=True,
    ),
    Endpoint(
        "external-data-sources-check-cdc-prerequisites-create",
        "POST",
        SOURCES + "check_cdc_prerequisites/",
        params=m.ExternalDataSourcesCheckCdcPrerequisitesParams,
        response=m.CdcPrerequisites,
        title="Check Postgres CDC prerequisites",
        description=(
            "Before sync_type 'cdc', or when a CDC sync fails: checks a live Postgres "
            "(version, wal_level=logical, replication role, free slots, tables' primary key "
            "and SELECT, publication). Returns {valid, errors}."
        ),
        toolset="setup",
        scopes=WRITE,
        read_only=True,
        idempotent=True,
        build_body=flat_body,
    ),
    Endpoint(
        "data-warehouse-data-health-issues-retrieve",
        "GET",
        "data_warehouse/data_health_issues/",
        params=m.NoParams,
        response=m.DataHealthIssueList,
        title="List data pipeline health issues",
        description=(
            "'What is broken?': failed or billing-limited table syncs, sources in Error, failed "
            "views, exports and transformations, each with its error. Needs warehouse_view:read "
            "too."
        ),
        toolset="diagnose",
        scopes=HEALTH,
    ),
    Endpoint(
        "external-data-sources-jobs-wait",
        "GET",
        SOURCE + "jobs/",
        params=m.ExternalDataSourceJobsWaitParams,
        response=m.ExternalDataJobList,
        title="Wait for running syncs",
        description="Keep following a source's running syncs after a capped wait ran out.",
        toolset="sync",
        scopes=READ,
        hook=wait_for_jobs,
    ),
    Endpoint(
        "data-warehouse-source-connect-link",
        "GET",
        SOURCES + "connect_link/",
        params=m.DataWarehouseSourceConnectLinkParams,
        response=m.ConnectLink,
        title="Get a secure connect link for a source",
        description=(
            "Instead of asking for a password in chat: a page where the user types the "
            "credentials. Then stored-credentials-list and setup with {credential_id}."
        ),
        toolset="setup",
        scopes=READ,
        hook=offer_link,
    ),
    Endpoint(
        "data-warehouse-stored-credentials-list",
        "GET",
        SOURCES + "stored_credentials/",
        params=m.DataWarehouseStoredCredentialsListParams,
        response=m.StoredCredentialList,
        title="List stored source credentials awaiting setup",
        description=(
            "Credentials typed on the connect page, newest first (ids only; single use, 24 h)."
        ),
        toolset="setup",
        scopes=READ,
    ),
    Endpoint(
        "external-data-sources-audit",
        "GET",
        SOURCES,
        params=m.NoParams,
        response=m.AuditReport,
        title="Audit data warehouse health",
        description=(
            "'Is anything broken?': failed, stuck, stale and billing-limited tables, source and "
            "webhook errors, data health; each with cause and safe next step. Only reads."
        ),
        toolset="diagnose",
        scopes=READ,
        hook=audit,
    ),
    Endpoint(
        "external-data-schemas-plan",
        "GET",
        SOURCE,
        params=m.ExternalDataSchemasPlanParams,
        response=m.SchemaPlan,
        title="Plan changes to many tables",
        description=(
            "Before changing several tables: per table the change, any full re-import (rows), "
            "billed rows a month before/after (estimates), PostHog's refusals. Only reads; "
            "gives plan_id for apply-plan."
        ),
        toolset="schemas",
        scopes=READ,
        hook=plan_changes,
    ),
    Endpoint(
        "external-data-schemas-apply-plan",
        "GET",
        SOURCE,
        params=m.ExternalDataSchemasApplyPlanParams,
        response=m.PlanApplied,
        title="Apply a plan of table changes",
        description=(
            "Apply a plan_id: refused if a table changed since the plan; stops at the first "
            "failure, saying what was applied."
        ),
        toolset="schemas",
        scopes=WRITE,
        read_only=False,
        destructive=True,
        idempotent=False,
        retry_safe=True,  # its own request reads the source; each change is its own row's
        hook=apply_plan,
        preview=plan_preview,
    ),
    Endpoint(
        "execute-sql",
        "POST",
        "query/",
        params=m.ExecuteSqlParams,
        response=m.QueryResult,
        title="Execute SQL query",
        description=(
            "Check what a sync loaded: one read-only HogQL SELECT over the warehouse (e.g. "
            "count() and a duplicate-key check after a sync; a new column after "
            "refresh-schemas). Returns columns, types and rows."
        ),
        toolset="query",
        scopes=QUERY,
        read_only=True,
        idempotent=True,
        build_body=hogql_query_body,
        hook=query_rows,
    ),
    Endpoint(
        "read-data-warehouse-schema",
        "POST",
        "query/",
        params=m.ReadDataWarehouseSchemaParams,
        response=m.WarehouseSchema,
        title="Read data warehouse schema",
        description=(
            "The synced tables as SQL sees them: the name to query and column types; with "
            "details, row count, source and last sync."
        ),
        toolset="query",
        scopes=QUERY,
        read_only=True,
        idempotent=True,
        build_body=schema_query_body,
        hook=warehouse_tables,
    ),
)

BY_NAME: Mapping[str, Endpoint] = {
    name: row for row in ENDPOINTS for name in (row.name, *row.aliases)
}


def lookup(name: str) -> Endpoint | None:
    """Return the row for a tool name or one of its aliases."""
    return BY_NAME.get(name)
