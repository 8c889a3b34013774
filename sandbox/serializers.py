"""PostHog's serializers: sources, schemas and jobs as the API renders them."""

from __future__ import annotations

from typing import Any

from .connectors import SUPPORTED_SOURCE_TYPES, connector
from .store import Job, Schema, Source, Store

# PostHog strips every job input that is not known to be harmless (removed, not masked).
_SSH_NONSENSITIVE = ("enabled", "host", "port")


def strip_inputs(source: Source) -> dict[str, Any]:
    """PostHog's `strip_sensitive_from_dict`: keep only known non-secret keys."""
    if source.source_type not in SUPPORTED_SOURCE_TYPES:
        return {}
    keep = connector(source.source_type).NONSENSITIVE_INPUTS
    inputs = {k: source.job_inputs[k] for k in keep if k in source.job_inputs}
    ssh = source.job_inputs.get("ssh_tunnel")
    if isinstance(ssh, dict):
        kept: dict[str, Any] = {k: ssh[k] for k in _SSH_NONSENSITIVE if k in ssh}
        auth = ssh.get("auth")
        if isinstance(auth, dict):
            kept["auth"] = {k: auth[k] for k in ("selection", "username") if k in auth}
        inputs["ssh_tunnel"] = kept
    return inputs


def secret_values(source: Source) -> frozenset[str]:
    """The job-input values that `strip_inputs` removes (passwords, connection strings, SSH
    keys...): what a sync's log must never show."""

    def removed(full: dict[str, Any], kept: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        for key, value in full.items():
            if isinstance(value, dict):
                inner = kept.get(key)
                found |= removed(value, inner if isinstance(inner, dict) else {})
            elif isinstance(value, str) and value and key not in kept:
                found.add(value)
        return found

    return frozenset(removed(source.job_inputs, strip_inputs(source)))


def schema_json(store: Store, schema: Schema, *, with_source: bool = False) -> dict[str, Any]:
    """`ExternalDataSchemaSerializer`; the retrieve view adds a short `source`."""
    table = None
    if schema.table_name and schema.table_id:
        table = {
            "id": schema.table_id,
            "name": schema.table_name,
            "columns": schema.table_columns,
            "row_count": schema.row_count,
        }
    source = None
    if with_source:
        src = store.sources[schema.source_id]
        source = {
            "id": src.id,
            "source_type": src.source_type,
            "access_method": src.access_method,
            "supports_column_selection": True,
            "supports_row_filters": True,
            "user_access_level": "editor",
        }
    return {
        "id": schema.id,
        "name": schema.name,
        "label": None,
        "table": table,
        "should_sync": schema.should_sync,
        "last_synced_at": schema.last_synced_at,
        "latest_error": schema.latest_error,
        "incremental": schema.sync_type == "incremental",
        "status": schema.status,
        "sync_type": schema.sync_type,
        "incremental_field": schema.incremental_field,
        "incremental_field_type": schema.incremental_field_type,
        "incremental_field_lookback_seconds": schema.incremental_field_lookback_seconds,
        "sync_frequency": schema.sync_frequency,
        "sync_time_of_day": schema.sync_time_of_day,
        "description": schema.description,
        "primary_key_columns": schema.primary_key_columns,
        "cdc_table_mode": schema.cdc_table_mode,
        "enabled_columns": schema.enabled_columns,
        "row_filters": schema.row_filters,
        # Postgres and MySQL filter on any column: PostHog's null.
        "row_filter_columns": None,
        "available_columns": schema.available_columns,
        "source": source,
    }


def source_status(source: Source, schemas: list[Schema]) -> str | None:
    """PostHog's computed source status: from its active schemas (enabled, or with an error),
    Failed, Paused, Running, Completed in that order; else the stored one."""
    active = [s for s in schemas if s.should_sync or s.latest_error]
    if any(s.should_sync and s.status == "Failed" for s in active):
        return "Failed"
    for status in ("Paused", "Running", "Completed"):
        if any(s.status == status for s in active):
            return status
    return source.status


def source_json(store: Store, source: Source) -> dict[str, Any]:
    """`ExternalDataSourceSerializers`, with the schemas and stripped job inputs."""
    schemas = store.source_schemas(source.id)
    completed = [j for j in store.source_jobs(source.id) if j.status == "Completed"]
    return {
        "id": source.id,
        "created_at": source.created_at,
        "created_by": None,
        "created_via": source.created_via,
        "status": source_status(source, schemas),
        "source_type": source.source_type,
        # PostHog shows the first schema's error; the first one that has an error is more useful.
        "latest_error": next((s.latest_error for s in schemas if s.latest_error), None),
        "prefix": source.prefix,
        "description": source.description,
        "access_method": source.access_method,
        "engine": None,
        "last_run_at": completed[0].created_at if completed else None,
        "schemas": [schema_json(store, s) for s in schemas],
        "job_inputs": strip_inputs(source),
        "revenue_analytics_config": revenue_config(source),
        "direct_query_enabled": source.direct_query_enabled,
        "auto_sync_new_schemas": source.auto_sync_new_schemas,
        "auto_sync_schema_patterns": source.auto_sync_schema_patterns,
        "user_access_level": "editor",
        "supports_webhooks": False,
        "supports_column_selection": True,
    }


def revenue_config(source: Source) -> dict[str, bool]:
    """The source's revenue analytics flags, with PostHog's defaults."""
    return {
        "enabled": source.revenue_analytics_config.get("enabled", source.source_type == "Stripe"),
        "include_invoiceless_charges": source.revenue_analytics_config.get(
            "include_invoiceless_charges", True
        ),
    }


def job_json(store: Store, job: Job) -> dict[str, Any]:
    """`ExternalDataJobSerializers`, with a short `schema`."""
    schema = store.schemas.get(job.schema_id)
    return {
        "id": job.id,
        "created_at": job.created_at,
        "created_by": None,
        "finished_at": job.finished_at,
        "status": job.status,
        "schema": None
        if schema is None
        else {
            "id": schema.id,
            "name": schema.name,
            "label": None,
            "should_sync": schema.should_sync,
            "last_synced_at": schema.last_synced_at,
            "sync_type": schema.sync_type,
        },
        "rows_synced": job.rows_synced,
        "latest_error": job.latest_error,
        "workflow_run_id": job.workflow_run_id,
        "cdc_write_mode": job.cdc_write_mode,
        "billable": True,
        # The warehouse destinations the run wrote to; the sandbox has only its own warehouse.
        "destination_ids": [],
    }


def webhook_info() -> dict[str, Any]:
    """`webhook_info` of a source whose type is not a `WebhookSource`: every type the sandbox
    connects (Postgres, MySQL)."""
    unset = ("auto_creation_blocked_reason", "hog_function", "webhook_url", "external_status")
    return {"supports_webhooks": False, "exists": False, "schema_mapping": {}} | dict.fromkeys(
        unset
    )


def connection_json(source: Source) -> dict[str, Any]:
    """`ExternalDataSourceConnectionOptionSerializer`. No source here was ever connected for
    direct queries, so there is no detected engine, and no HogQL compiles against it."""
    schema = source.job_inputs.get("schema")
    return {
        "id": source.id,
        "schema_name": None if schema is None else str(schema),
        "prefix": source.prefix,
        "engine": None,
        "source_type": source.source_type,
        "access_method": source.access_method,
        "supports_hogql": False,
        "is_builtin_managed_warehouse": False,
        "description": source.description,
    }
