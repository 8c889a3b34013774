"""PostHog's checks on what a client sends: schema settings (one validator a field), prefixes,
the `schemas` of a create payload and the logs endpoint's query string."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import time
from typing import Any, TypeVar

from posthog_warehouse_mcp.sandbox import drf, errors
from posthog_warehouse_mcp.sandbox.connectors import Connector, Table, connector
from posthog_warehouse_mcp.sandbox.engine import FREQUENCIES
from posthog_warehouse_mcp.sandbox.store import LogFilter, Schema, Store

SYNC_TYPES = ("full_refresh", "incremental", "append")
# PostHog accepts these too, but they need machinery (CDC slots, webhooks) the sandbox lacks.
UNSUPPORTED_SYNC_TYPES = ("webhook", "cdc", "xmin")
INCREMENTAL_FIELD_TYPES = ("integer", "numeric", "datetime", "date", "timestamp", "objectid", "xid")
CURSOR_SYNC_TYPES = ("incremental", "append")
LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX = 50, 500

_V = TypeVar("_V")


@dataclass(frozen=True)
class _Patch:
    """A settings change being validated: the schema before it, and its source's connector."""

    before: Schema
    connector: Connector[Any]


def validate_settings(schema: Schema, data: Mapping[str, Any], *, source_type: str) -> Schema:
    """Validate a PATCH of schema settings; return the schema with it applied.

    `schema` itself is left as it was.

    Raises:
        ApiError: a DRF validation error naming the field.
    """
    patch = _Patch(schema, connector(source_type))
    updated = schema
    for name, validate in _FIELDS.items():
        if name in data:
            updated = validate(data[name], updated, patch)
    return _check_whole(updated, patch)


def unsupported_sync_type(value: object) -> str:
    """Why the sandbox refuses a sync type PostHog may accept."""
    return (
        f"Sync type '{value}' is not supported by the sandbox. Use one of: {', '.join(SYNC_TYPES)}."
    )


def _sync_type(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value in UNSUPPORTED_SYNC_TYPES:
        raise errors.validation_error(unsupported_sync_type(value), "sync_type")
    if value is not None and value not in SYNC_TYPES:
        raise errors.invalid_choice(value, "sync_type")
    return replace(updated, sync_type=value)


def _incremental_field(value: Any, updated: Schema, patch: _Patch) -> Schema:
    field = value or None
    known = _column_names(updated)
    if field and known and field not in known:
        raise errors.validation_error(
            f"Incremental field {field} does not exist on table {updated.name}",
            "incremental_field",
        )
    cursor_type = _cursor_type(updated, field, patch.connector) if field else None
    if field and known and cursor_type is None:
        raise errors.validation_error(
            f"Incremental field {field} of table {updated.name} cannot be used as a cursor: it "
            "must be an integer, date or timestamp column",
            "incremental_field",
        )
    # The type belongs to the field: a new field takes the request's type or its own.
    if field != patch.before.incremental_field or known:
        return replace(updated, incremental_field=field, incremental_field_type=cursor_type)
    return replace(updated, incremental_field=field)


def _incremental_field_type(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is not None and value not in INCREMENTAL_FIELD_TYPES:
        raise errors.invalid_choice(value, "incremental_field_type")
    return replace(updated, incremental_field_type=value)


def _sync_frequency(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value == "1min":
        raise errors.validation_error(
            "A 1-minute sync frequency is only available for CDC schemas. The fastest frequency "
            "for other sync types is 5 minutes.",
            "sync_frequency",
        )
    if value not in FREQUENCIES:
        raise errors.invalid_choice(value, "sync_frequency")
    return replace(updated, sync_frequency=value)


def _sync_time_of_day(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value in (None, ""):
        return replace(updated, sync_time_of_day=None)
    try:
        parsed = time.fromisoformat(str(value).replace("Z", ""))
    except ValueError as exc:
        raise errors.validation_error("Invalid sync time of day", "sync_time_of_day") from exc
    return replace(updated, sync_time_of_day=parsed.replace(tzinfo=None, microsecond=0).isoformat())


def _enabled_columns(value: Any, updated: Schema, patch: _Patch) -> Schema:
    malformed = "enabled_columns must be a list of column-name strings or null."
    return replace(
        updated, enabled_columns=_columns_of(value, "enabled_columns", updated, malformed)
    )


def _primary_key_columns(value: Any, updated: Schema, patch: _Patch) -> Schema:
    malformed = 'Expected a list of items but got type "str".'
    columns = _columns_of(value, "primary_key_columns", updated, malformed, "not_a_list")
    before = patch.before
    has_data = before.table_name is not None
    if has_data and columns != before.primary_key_columns and before.sync_type == "incremental":
        raise errors.validation_error(
            "Primary key cannot be changed after data has been synced. Delete the synced data "
            "first, then change the primary key.",
            "primary_key_columns",
        )
    return replace(updated, primary_key_columns=columns)


def _cdc_table_mode(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value in ("cdc_only", "both"):
        raise errors.validation_error("CDC is not enabled for this team", "cdc_table_mode")
    if value not in (None, "consolidated"):
        raise errors.invalid_choice(value, "cdc_table_mode")
    return updated


def _should_sync(value: Any, updated: Schema, patch: _Patch) -> Schema:
    return replace(updated, should_sync=drf.boolean(value, "should_sync"))


# In PostHog's order: the first invalid field in it is the one reported.
_FIELDS: dict[str, Callable[[Any, Schema, _Patch], Schema]] = {
    "sync_type": _sync_type,
    "incremental_field": _incremental_field,
    "incremental_field_type": _incremental_field_type,
    "sync_frequency": _sync_frequency,
    "sync_time_of_day": _sync_time_of_day,
    "enabled_columns": _enabled_columns,
    "primary_key_columns": _primary_key_columns,
    "cdc_table_mode": _cdc_table_mode,
    "should_sync": _should_sync,
}


def _check_whole(updated: Schema, patch: _Patch) -> Schema:
    """The checks that involve several fields, on the schema as the PATCH leaves it."""
    if updated.sync_type in CURSOR_SYNC_TYPES:
        if not updated.incremental_field:
            raise errors.validation_error(
                "Incremental schemas given do not have an incremental field set",
                "incremental_field",
            )
        if not updated.incremental_field_type:
            inferred = _cursor_type(updated, updated.incremental_field, patch.connector)
            updated = replace(updated, incremental_field_type=inferred)
        if not updated.incremental_field_type:
            raise errors.validation_error(
                "Incremental schemas given do not have an incremental field type set",
                "incremental_field_type",
            )
    if (
        updated.sync_type == "incremental"
        and updated.available_columns
        and not (updated.primary_key_columns or updated.detected_primary_keys)
    ):
        raise errors.validation_error(
            f"Incremental syncs merge on a primary key, and table {updated.name} has none. "
            "Set primary_key_columns, or use append.",
            "primary_key_columns",
        )
    if updated.should_sync and updated.sync_type is None:
        raise errors.validation_error(
            "Sync type must be set up first before enabling schema", "should_sync"
        )
    return updated


def _column_names(schema: Schema) -> list[str]:
    return [c["name"] for c in schema.available_columns]


def _columns_of(
    value: Any, attr: str, schema: Schema, malformed: str, code: str = "invalid"
) -> list[str] | None:
    """A list of the table's column names, or None; `malformed` and `code` make the field's
    own error for anything else."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.validation_error(malformed, attr, code)
    known = _column_names(schema)
    unknown = [v for v in value if known and v not in known]
    if unknown:
        raise errors.validation_error(
            f"Unknown columns in {attr}: {unknown}. Run `Pull new schemas` to refresh available "
            "columns.",
            attr,
        )
    return value


def _cursor_type(schema: Schema, field: str, upstream: Connector[Any]) -> str | None:
    """The incremental type of a column, None if it cannot be a cursor (or is unknown)."""
    for col in schema.available_columns:
        if col["name"] == field:
            return upstream.column(field, col["data_type"], col["is_nullable"]).incremental_type
    return None


def validate_prefix(store: Store, source_type: str, prefix: str | None) -> None:
    """PostHog's prefix rules for a new source.

    Raises:
        ApiError: a malformed prefix, or one that a source of the same type has.
    """
    if prefix and not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
        raise errors.validation_error(
            "Prefix must contain only letters, numbers, and underscores.", "prefix"
        )
    same_type = [s for s in store.live_sources() if s.source_type == source_type]
    if same_type and not prefix:
        raise errors.message("Source type already exists. Prefix is required")
    # Table names are snake-cased to lower case: prefixes differing only by case would collide.
    if any((s.prefix or "").lower() == (prefix or "").lower() for s in same_type):
        raise errors.message("Prefix already exists")


def schema_requests(raw: Any, tables: list[Table]) -> dict[str, dict[str, Any]]:
    """Validate the payload's `schemas` array like PostHog's create does; by table name.

    Raises:
        ApiError: PostHog's `{"message"}` answer.
    """
    if not isinstance(raw, list) or not raw:
        raise errors.message("Schemas not given")
    wanted: dict[str, dict[str, Any]] = {}
    for item in raw:
        if not isinstance(item, dict) or not item.get("name"):
            raise errors.message("Schemas not given")
        wanted[str(item["name"])] = item
    known = {t.name for t in tables}
    if any(name not in known for name in wanted):
        raise errors.message("Schemas given do not exist in source")
    for item in wanted.values():
        sync_type = item.get("sync_type")
        if sync_type is not None and sync_type not in SYNC_TYPES:
            raise errors.message(unsupported_sync_type(sync_type))
    incremental = [i for i in wanted.values() if i.get("sync_type") in CURSOR_SYNC_TYPES]
    if any(not i.get("incremental_field") for i in incremental):
        raise errors.message("Incremental schemas given do not have an incremental field set")
    return wanted


def log_filter(params: Mapping[str, str]) -> LogFilter:
    """PostHog's `LogEntryRequestSerializer` on the logs endpoint's query string.

    `level` is split on commas (not trimmed) and upper-cased, as `fetch_log_entries` does.

    Raises:
        ApiError: the first invalid parameter, in the serializer's field order.
    """

    def field(name: str, parse: Callable[[str, str], _V]) -> _V | None:
        value = params.get(name)
        return None if value is None else parse(value, name)

    limit = field("limit", _log_limit)
    after = field("after", drf.datetime_field)
    before = field("before", drf.datetime_field)
    level = field("level", drf.char_field)
    return LogFilter(
        limit=LOG_LIMIT_DEFAULT if limit is None else limit,
        after=after,
        before=before,
        levels=None if level is None else [part.upper() for part in level.split(",")],
        search=field("search", drf.char_field),
        instance_id=field("instance_id", drf.char_field),
    )


def _log_limit(value: str, attr: str) -> int:
    return drf.integer_field(value, attr, min_value=1, max_value=LOG_LIMIT_MAX)
