"""What discovery tells about a table before it is a schema: PostHog's `database_schema` entry
for it, and the default sync settings PostHog's `build_default_schemas` gives it (setup, and a
create that lists no tables)."""

from __future__ import annotations

from typing import Any

from .connectors import Table, TableStats

# PostHog's Postgres source (`RLS_WARNING_MESSAGE`), verbatim.
RLS_WARNING_MESSAGE = (
    "Row-level security is active on this table for the sync role, so PostHog can only read rows "
    "the policy permits, and cannot detect how many rows are hidden. Granting the sync role "
    "BYPASSRLS will silence the check."
)
# PostHog's `build_default_schemas`: the cursor columns it prefers, best first.
PREFERRED_INCREMENTAL_FIELDS = (
    "updated_at",
    "updatedat",
    "modified_at",
    "modifiedat",
    "last_modified",
    "updated",
    "modified",
    "created_at",
    "createdat",
    "created",
)


def permission_error(table: Table, stats: TableStats) -> str | None:
    """Why the connection's role cannot read the table, or None."""
    if stats.readable:
        return None
    return f"The connection's role lacks SELECT permission on {table.name}."


def table_entry(table: Table, stats: TableStats) -> dict[str, Any]:
    """One table of a `database_schema` answer, with PostHog's keys in its order."""
    cursors = table.cursor_candidates()
    fields = table.incremental_fields()
    denied = permission_error(table, stats)
    return {
        "table": table.name,
        "label": None,
        "should_sync": False,
        "incremental_fields": fields,
        # Incremental syncs merge on a primary key here; append needs only the cursor.
        "incremental_available": bool(cursors) and bool(table.primary_key),
        "append_available": bool(cursors),
        # CDC is on for the sandbox's team (PostHog gates it by team, then by table).
        "cdc_available": table.supports_cdc,
        "xmin_available": table.supports_xmin,
        "incremental_field": fields[0]["field"] if fields else None,
        "sync_type": None,
        "rows": stats.rows,
        "supports_webhooks": False,
        "webhook_only": False,
        "description": None,
        "should_sync_default": denied is None,
        "available_columns": table.column_choices,
        "detected_primary_keys": list(table.primary_key) or None,
        "permission_error": denied,
        "rls_warning": RLS_WARNING_MESSAGE if stats.row_security else None,
    }


def default_schema(entry: dict[str, Any]) -> dict[str, Any]:
    """PostHog's `build_default_schemas` for one `database_schema` entry: every readable table
    enabled, on the preferred cursor where there is one."""
    if entry["webhook_only"] or not entry["should_sync_default"]:
        return {"name": entry["table"], "should_sync": False}
    fields = {f["field"]: f for f in entry["incremental_fields"]}
    preferred = next((n for n in PREFERRED_INCREMENTAL_FIELDS if n in fields), None)
    chosen = fields[preferred] if preferred else next(iter(fields.values()), None)
    schema: dict[str, Any] = {"name": entry["table"], "should_sync": True}
    if chosen is not None and entry["incremental_available"]:
        schema["sync_type"] = "incremental"
    elif chosen is not None and entry["append_available"]:
        schema["sync_type"] = "append"
    else:
        schema["sync_type"] = "full_refresh"
    if chosen is not None and schema["sync_type"] != "full_refresh":
        schema["incremental_field"] = chosen["field"]
        schema["incremental_field_type"] = str(chosen["field_type"] or chosen["type"])
    if entry["detected_primary_keys"]:
        schema["primary_key_columns"] = entry["detected_primary_keys"]
    return schema


def default_schemas(found: list[tuple[Table, TableStats]]) -> dict[str, dict[str, Any]]:
    """`build_default_schemas` for every table found, by table name."""
    return {table.name: default_schema(table_entry(table, stats)) for table, stats in found}
