"""What each destructive row will affect, read before the person is asked (``Endpoint.preview``).

A preview only reads (read-only rows, by tool name) and answers the effect, the tables and rows
it reaches and the way back; tools/confirm.py decides when one is needed. A row whose calls are
destructive only sometimes (a settings change that makes the next sync remove rows) answers
None when this call removes nothing, and the call acts without asking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .hooks import Caller, Preview
from .models import (
    ExternalDataSchemaPartialUpdateParams,
    ExternalDataSourceBulkUpdateSchemasParams,
    IdParams,
)

# Makes a row's preview from its effect and its way back.
PreviewFor = Callable[[str, str], Preview]


def _table(schema: dict[str, Any]) -> dict[str, Any]:
    table = schema.get("table") or {}
    return {
        "name": schema.get("name"),
        "table": table.get("name"),
        "rows": table.get("row_count"),
        "sync_type": schema.get("sync_type"),
    }


def _reading(read: str, describe: Callable[[dict[str, Any]], dict[str, Any]]) -> PreviewFor:
    """A preview maker for rows whose id `read` (a read-only tool) looks up: the preview is
    the effect, what `describe` draws from that answer, and the way back."""

    def make(effect: str, undo: str) -> Preview:
        async def preview(call: Caller[IdParams]) -> dict[str, Any]:
            found = await call.call(read, id=str(call.params.id))
            return {"effect": effect, **describe(found), "undo": undo}

        return preview

    return make


# What a call on one table affects: that table, its rows.
schema_preview = _reading(
    "external-data-schemas-retrieve", lambda schema: {"tables": [_table(schema)]}
)
# What a call on a source affects: every table of it.
source_preview = _reading(
    "external-data-sources-retrieve",
    lambda source: {
        "source": {k: source.get(k) for k in ("source_type", "prefix", "status")},
        "tables": [_table(s) for s in source.get("schemas") or [] if isinstance(s, dict)],
    },
)
# What removing a source's webhook affects: the webhook and the tables it feeds.
webhook_preview = _reading(
    "external-data-sources-webhook-info-retrieve",
    lambda info: {"webhook": {k: info.get(k) for k in ("exists", "webhook_url", "schema_mapping")}},
)


# ---------------------------------------------- settings changes that remove synced data
#
# A PATCH of a schema's settings deletes nothing by itself, but some changes make the next
# sync remove rows or columns from the warehouse table. Read from PostHog's
# ExternalDataSchemaSerializer.update (products/warehouse_sources/backend/presentation/views/
# external_data_schema.py) and the sync's handle_reset_or_full_refresh
# (pipelines/common/extract.py): a full_refresh sync wipes the table and rebuilds it from the
# source through the row filters; incremental, append and xmin syncs merge or append and never
# delete rows, so a row filter applies only to rows read later; a change across xmin, leaving
# CDC's cdc_only mode, a CDC re-enable or a new cdc_table_mode target sets reset_pipeline (the
# table is wiped and re-imported); a new cursor column does too when PostHog cannot find its
# latest value in the table; a disabled column leaves queries at once.

_WIPES = "the table is wiped and every row re-imported at the next sync (billed again)"
_CDC_TARGETS = {
    "consolidated": {"consolidated"},
    "cdc_only": {"history"},
    "both": {"consolidated", "history"},
}


def removals(schema: dict[str, Any], change: dict[str, Any]) -> list[str]:
    """What a settings `change` (the fields a PATCH sends) will remove from `schema`'s synced
    table, by PostHog's rules; empty when it removes nothing (or nothing is synced yet)."""
    if not schema.get("table"):
        return []
    old = schema.get("sync_type")
    new = change.get("sync_type") or old
    found: list[str] = []
    if new != old:
        if "xmin" in (old, new):
            found.append(f"sync_type {old} -> {new}: {_WIPES}")
        elif old == "cdc" and schema.get("cdc_table_mode") == "cdc_only":
            found.append(f"leaving CDC's cdc_only mode: {_WIPES}")
        elif new == "cdc":
            found.append("sync_type -> cdc: a full snapshot replaces the table")
        elif new == "full_refresh":
            history = " and the rows appended over time" if old == "append" else ""
            found.append(
                f"sync_type {old} -> full_refresh: every sync replaces the table with the source's "
                f"rows as they are then (rows deleted at the source{history} go), and re-imports "
                "every row (billed)"
            )
    if (
        "incremental_field" in change
        and change["incremental_field"] != schema.get("incremental_field")
        and new in ("incremental", "append")
        and old in ("incremental", "append")
    ):
        found.append(
            "a new cursor column: unless PostHog finds the column's latest value in the synced "
            f"table, {_WIPES}"
        )
    mode = change.get("cdc_table_mode")
    if (
        new == "cdc"
        and mode
        and _CDC_TARGETS.get(mode, set())
        - _CDC_TARGETS.get(schema.get("cdc_table_mode") or "", set())
    ):
        found.append(f"cdc_table_mode -> {mode}: a full snapshot replaces the table")
    if old == "cdc" and change.get("should_sync") is True and schema.get("should_sync") is False:
        found.append(f"re-enabling a CDC table: {_WIPES}")
    filters = change.get("row_filters")
    if new == "full_refresh" and filters and filters != schema.get("row_filters"):
        found.append("new row filters: the next sync keeps only the rows that match them")
    columns = change.get("enabled_columns")
    if isinstance(columns, list):
        gone = _disabled(schema, columns)
        if gone:
            found.append(
                f"columns no longer synced: {', '.join(gone)} (gone from queries at once"
                + (", and from the data at the next sync)" if new == "full_refresh" else ")")
            )
    return found


def _disabled(schema: dict[str, Any], enabled: list[str]) -> list[str]:
    current = schema.get("enabled_columns")
    if current is None:
        table = schema.get("table") or {}
        current = [c.get("name") for c in table.get("columns") or [] if isinstance(c, dict)]
        if not current:  # the columns are not known: any change may drop some
            return ["(columns not listed in the change)"]
    return [str(c) for c in current if c not in enabled]


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _kept_condition(filters: list[dict[str, Any]]) -> str | None:
    """The filters as one HogQL condition; None where a value cannot be written exactly (an
    IN list given as text is split by PostHog by the column's type)."""
    parts = []
    for item in filters:
        column = "`" + str(item["column"]).replace("`", "") + "`"
        operator, value = item["operator"], item["value"]
        if operator in ("IN", "NOT IN"):
            if not isinstance(value, list) or not value:
                return None
            parts.append(f"{column} {operator} ({', '.join(_literal(v) for v in value)})")
        else:
            parts.append(f"{column} {operator} {_literal(value)}")
    return " AND ".join(f"({p})" for p in parts)


async def _rows_removed(call: Caller[Any], schema: dict[str, Any], change: dict[str, Any]) -> Any:
    """How many synced rows the next sync removes, where a HogQL count can tell: a new row
    filter on a full_refresh table. "unknown" (with why) where it cannot; None when no row
    count applies (the whole table is re-imported, or only columns go)."""
    filters = change.get("row_filters")
    if not filters or (change.get("sync_type") or schema.get("sync_type")) != "full_refresh":
        return None
    name = str((schema.get("table") or {}).get("name") or "")
    condition = _kept_condition(filters)
    if not name.replace("_", "").replace(".", "").isalnum() or condition is None:
        return "unknown (the filters cannot be counted exactly here)"
    query = f"SELECT count(), countIf({condition}) FROM {name}"
    try:
        answer = await call.call("execute-sql", query=query, limit=1)
        total, kept = (int(v) for v in answer["results"][0][:2])
    except Exception as exc:  # any failure to count leaves the count unknown, not the call
        return f"unknown (counting failed: {type(exc).__name__})"
    return total - kept


async def _settings_change(
    call: Caller[Any], schema: dict[str, Any], change: dict[str, Any]
) -> dict[str, Any] | None:
    found = removals(schema, change)
    if not found:
        return None
    entry = {**_table(schema), "removes": found}
    rows = await _rows_removed(call, schema, change)
    if rows is not None:
        if rows == 0 and len(found) == 1:
            return None  # the new filters keep every synced row: nothing is removed
        entry["rows_removed"] = rows
    return entry


_SETTINGS_EFFECT = (
    "change sync settings so that the next sync removes synced data from the warehouse"
)
_SETTINGS_UNDO = (
    "Change the settings back before the next sync. After it, the rows come back only by "
    "syncing them again from the source (billed)."
)


def _changes(model: Any) -> dict[str, Any]:
    changed: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
    for key in ("id", "confirmation_token", "wait_seconds"):
        changed.pop(key, None)
    return changed


async def settings_preview(
    call: Caller[ExternalDataSchemaPartialUpdateParams],
) -> dict[str, Any] | None:
    """external-data-schemas-partial-update: a preview only when the change removes data."""
    schema = await call.call("external-data-schemas-retrieve", id=str(call.params.id))
    entry = await _settings_change(call, schema, _changes(call.params))
    if entry is None:
        return None
    return {"effect": _SETTINGS_EFFECT, "tables": [entry], "undo": _SETTINGS_UNDO}


async def bulk_settings_preview(
    call: Caller[ExternalDataSourceBulkUpdateSchemasParams],
) -> dict[str, Any] | None:
    """external-data-sources-bulk-update-schemas-partial-update: the tables whose change
    removes data; none, no preview."""
    source = await call.call("external-data-sources-retrieve", id=str(call.params.id))
    schemas = {str(s.get("id")): s for s in source.get("schemas") or [] if isinstance(s, dict)}
    entries = []
    for update in call.params.schemas:
        schema = schemas.get(str(update.id))
        if schema is None:
            continue  # PostHog refuses an id that is not this source's; nothing to preview
        if schema.get("table") is not None and "columns" not in (schema.get("table") or {}):
            schema = await call.call("external-data-schemas-retrieve", id=str(update.id))
        entry = await _settings_change(call, schema, _changes(update))
        if entry is not None:
            entries.append(entry)
    if not entries:
        return None
    return {"effect": _SETTINGS_EFFECT, "tables": entries, "undo": _SETTINGS_UNDO}
