"""PostHog's checks on what a client sends: schema settings (one validator a field, then the
rules across fields of its `update()`), prefixes, the `schemas` of a create payload and the logs
endpoint's query string. Texts are current PostHog's (`warehouse_sources` viewsets)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Any, TypeVar
from uuid import UUID

from . import drf, errors
from .connectors import Connector, Table, connector, known_source_type
from .engine import FREQUENCIES
from .row_filters import RowFilterError, check_row_filters
from .store import LogFilter, Schema, Store

SYNC_TYPES = ("full_refresh", "incremental", "append")
# Postgres's log-based sync types: real in the sandbox, but a rehearsal cannot run them.
LOG_SYNC_TYPES = ("cdc", "xmin")
# PostHog accepts this too, but it needs machinery (webhooks) the sandbox lacks.
UNSUPPORTED_SYNC_TYPES = ("webhook",)
# In PostHog's order: its "Unknown sync type" message lists them so.
ALL_SYNC_TYPES = (*SYNC_TYPES, *UNSUPPORTED_SYNC_TYPES, *LOG_SYNC_TYPES)
CDC_NOT_ENABLED = "CDC must be enabled on the source before selecting it as a sync type."
XMIN_POSTGRES_ONLY = "xmin replication is only available for Postgres sources."
XMIN_NOT_AVAILABLE = (
    "xmin replication is not available for table '{}'. It requires a Postgres heap table or "
    "materialized view on PostgreSQL 13+."
)
INCREMENTAL_FIELD_TYPES = ("integer", "numeric", "datetime", "date", "timestamp", "objectid", "xid")
CURSOR_SYNC_TYPES = ("incremental", "append")
# The sync types whose cursor settings a PATCH may change without naming sync_type.
_CURSOR_STYLE = ("incremental", "append", "webhook")
_CURSOR_SETTINGS = (
    "incremental_field",
    "incremental_field_type",
    "incremental_field_lookback_seconds",
    "primary_key_columns",
)
MAX_LOOKBACK_SECONDS = 5_184_000  # 60 days
LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX = 50, 500

_V = TypeVar("_V")


@dataclass(frozen=True)
class _Patch:
    """A settings change being validated: the schema before it, and its source's connector."""

    before: Schema
    connector: Connector[Any]
    source_type: str
    cdc_enabled: bool
    # Whether the source says the table can sync by xmin (None: not asked).
    xmin_capable: bool | None = None


def validate_settings(
    schema: Schema,
    data: Mapping[str, Any],
    *,
    source_type: str,
    cdc_enabled: bool = False,
    xmin_capable: bool | None = None,
) -> Schema:
    """Validate a PATCH of schema settings; return the schema with it applied. A PATCH to
    sync_type `xmin` needs `xmin_capable`: what the source says of the table now, as PostHog
    runs discovery for it (`Services.xmin_capable`).

    `schema` itself is left as it was.

    Raises:
        ErrorAnswer: a DRF validation error (naming the field where PostHog's does).
    """
    patch = _Patch(schema, connector(source_type), source_type, cdc_enabled, xmin_capable)
    updated = schema
    for name, validate in _FIELDS.items():
        if name in data:
            updated = validate(data[name], updated, patch)
    return _check_whole(updated, data, patch)


def create_settings(
    schema: Schema, item: Mapping[str, Any], *, source_type: str, cdc_enabled: bool = False
) -> Schema:
    """A new schema with the settings a create payload gives it (`schema_requests` checked
    them): as sent, except `sync_frequency`, which PostHog ignores at create (every table
    starts on its default interval), and a primary key, which defaults to the detected one.

    Raises:
        ErrorAnswer: a field PostHog's serializer refuses.
    """
    patch = _Patch(schema, connector(source_type), source_type, cdc_enabled)
    updated = replace(
        schema, should_sync=drf.boolean(item.get("should_sync") or False, "should_sync")
    )
    for name, validate in _FIELDS.items():
        if name in item and name not in ("sync_frequency", "should_sync"):
            updated = validate(item[name], updated, patch)
    if updated.sync_type != "incremental":
        updated = replace(updated, incremental_field_lookback_seconds=None)
    if not updated.primary_key_columns and updated.detected_primary_keys:
        updated = replace(updated, primary_key_columns=list(updated.detected_primary_keys))
    _check_key(updated, patch)
    return updated


def check_bulk_fields(item: Mapping[str, Any], prefix: str) -> None:
    """The field checks a bulk update runs on every item before saving any (PostHog's
    serializers): one failing refuses the whole batch. `prefix` names the item in the batch.

    Raises:
        ErrorAnswer: DRF's error for the first bad field.
    """
    try:
        UUID(str(item["id"]))
    except ValueError as exc:
        raise errors.validation_error("Must be a valid UUID.", f"{prefix}id") from exc
    sync_type = item.get("sync_type")
    if sync_type is not None and sync_type not in ALL_SYNC_TYPES:
        raise errors.invalid_choice(sync_type, "sync_type")
    field_type = item.get("incremental_field_type")
    if field_type is not None and field_type not in INCREMENTAL_FIELD_TYPES:
        raise errors.invalid_choice(field_type, "incremental_field_type")
    if item.get("sync_frequency") is not None:
        refused = frequency_refused(item["sync_frequency"])
        if refused is not None:
            raise refused
    if item.get("sync_time_of_day") is not None:
        try:
            time.fromisoformat(str(item["sync_time_of_day"]))
        except ValueError as exc:
            raise errors.validation_error(
                "Time has wrong format. Use one of these formats instead: hh:mm[:ss[.uuuuuu]].",
                "sync_time_of_day",
            ) from exc
    for attr in ("primary_key_columns", "enabled_columns"):
        value = item.get(attr)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise errors.validation_error(
                f'Expected a list of items but got type "{type(value).__name__}".',
                attr,
                "not_a_list",
            )
    if item.get("cdc_table_mode") not in (None, "consolidated", "cdc_only", "both"):
        raise errors.invalid_choice(item["cdc_table_mode"], "cdc_table_mode")
    if "should_sync" in item:
        drf.boolean(item["should_sync"], "should_sync")


def unsupported_sync_type(value: object) -> str:
    """Why the sandbox refuses a sync type PostHog may accept."""
    return (
        f"Sync type '{value}' is not supported by the sandbox. Use one of: "
        f"{', '.join((*SYNC_TYPES, *LOG_SYNC_TYPES))}."
    )


def _sync_type(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value in UNSUPPORTED_SYNC_TYPES:
        raise errors.validation_error(unsupported_sync_type(value), "sync_type")
    if value is not None and value not in (*SYNC_TYPES, *LOG_SYNC_TYPES):
        raise errors.invalid_choice(value, "sync_type")
    if value == "cdc" and patch.source_type != "Postgres":
        raise errors.validation_error(
            f"CDC is not supported for {patch.source_type} sources.", "sync_type"
        )
    if value == "xmin" and patch.source_type != "Postgres":
        raise errors.validation_error(XMIN_POSTGRES_ONLY, "sync_type")
    if value == "xmin" and patch.xmin_capable is False:
        raise errors.validation_error(XMIN_NOT_AVAILABLE.format(updated.name), "sync_type")
    if value == "cdc" and value != patch.before.sync_type and not patch.cdc_enabled:
        raise errors.validation_error(CDC_NOT_ENABLED, "sync_type")
    return replace(updated, sync_type=value)


def _check_key(updated: Schema, patch: _Patch) -> None:
    """CDC and xmin merge on a primary key: a table switched to either needs one, sent with
    the switch or detected (PostHog's `_apply_primary_key_columns`)."""
    switched = updated.sync_type in LOG_SYNC_TYPES and updated.sync_type != patch.before.sync_type
    if switched and not (updated.primary_key_columns or updated.detected_primary_keys):
        label = "CDC" if updated.sync_type == "cdc" else "xmin replication"
        raise errors.validation_error(
            f"{label} requires a primary key on table '{updated.name}'. Provide "
            "primary_key_columns or refresh schema discovery to pick one up.",
            "sync_type",
        )


def _incremental_field(value: Any, updated: Schema, patch: _Patch) -> Schema:
    field = value or None
    known = _column_names(updated)
    if field and known and field not in known:
        raise errors.validation_error(
            f"Incremental field {field} does not exist on table {updated.name}",
            "incremental_field",
        )
    if field and known and _cursor_type(updated, field, patch.connector) is None:
        raise errors.validation_error(
            f"Incremental field {field} of table {updated.name} cannot be used as a cursor: it "
            "must be an integer, date or timestamp column",
            "incremental_field",
        )
    # PostHog takes the field as given and never infers its type.
    return replace(updated, incremental_field=field)


def _incremental_field_type(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is not None and value not in INCREMENTAL_FIELD_TYPES:
        raise errors.invalid_choice(value, "incremental_field_type")
    return replace(updated, incremental_field_type=value)


def frequency_refused(value: Any) -> errors.ErrorAnswer | None:
    """PostHog's answer to a sync_frequency it refuses, or None: `never` has its own text."""
    if value == "never":
        return errors.validation_error(
            '"never" is not a sync frequency. To stop syncing this table, set should_sync to '
            "false.",
            "sync_frequency",
            "invalid_input",
        )
    if value not in FREQUENCIES:
        return errors.validation_error(
            f'"{value}" is not a valid sync frequency. The fastest sync frequency is 5 minutes.',
            "sync_frequency",
            "invalid_choice",
        )
    return None


def _sync_frequency(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is None:
        return updated  # PostHog ignores a null frequency
    refused = frequency_refused(value)
    if refused is not None:
        raise refused
    return replace(updated, sync_frequency=value)


def time_of_day(value: Any) -> str:
    """A `sync_time_of_day` as PostHog checks it: DRF's TimeField, then `%H:%M:%S` exactly.

    Raises:
        ErrorAnswer: the field's format error, or PostHog's "Invalid sync time of day".
    """
    text = str(value)
    try:
        time.fromisoformat(text)
    except ValueError as exc:
        raise errors.validation_error(
            "Time has wrong format. Use one of these formats instead: hh:mm[:ss[.uuuuuu]].",
            "sync_time_of_day",
            "invalid",
        ) from exc
    try:
        return datetime.strptime(text, "%H:%M:%S").time().isoformat()
    except ValueError as exc:
        raise errors.validation_error("Invalid sync time of day", None, "invalid_input") from exc


def _sync_time_of_day(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is None:
        return replace(updated, sync_time_of_day=None)
    return replace(updated, sync_time_of_day=time_of_day(value))


def _lookback(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is None:
        return replace(updated, incremental_field_lookback_seconds=None)
    seconds = drf.integer_field(
        str(value),
        "incremental_field_lookback_seconds",
        min_value=0,
        max_value=MAX_LOOKBACK_SECONDS,
    )
    return replace(updated, incremental_field_lookback_seconds=seconds)


def _row_filters(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is None:
        return replace(updated, row_filters=None)
    try:
        check_row_filters(value, updated.available_columns)
    except RowFilterError as exc:
        raise errors.validation_error(f"Invalid row filter: {exc}", None, "invalid_input") from exc
    return replace(updated, row_filters=list(value) or None)


def _enabled_columns(value: Any, updated: Schema, patch: _Patch) -> Schema:
    malformed = "enabled_columns must be a list of column-name strings or null."
    return replace(
        updated, enabled_columns=_columns_of(value, "enabled_columns", updated, malformed)
    )


def _primary_key_columns(value: Any, updated: Schema, patch: _Patch) -> Schema:
    if value is None:
        return replace(updated, primary_key_columns=None)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.validation_error(
            'Expected a list of items but got type "str".', "primary_key_columns", "not_a_list"
        )
    known = _column_names(updated)
    unknown = [v for v in value if known and v not in known]
    if unknown:
        raise errors.validation_error(
            f"'{updated.name}' has no column named {', '.join(unknown)} to merge on.",
            "primary_key_columns",
        )
    before = patch.before
    # A first key may be set at any time; only replacing one that rows were merged on is refused.
    merged_on = before.primary_key_columns if before.table_name is not None else None
    if merged_on and value != merged_on:
        raise errors.validation_error(
            "Primary key cannot be changed after data has been synced. Delete the synced data "
            "first, then change the primary key.",
            "primary_key_columns",
        )
    return replace(updated, primary_key_columns=value)


def _cdc_table_mode(value: Any, updated: Schema, patch: _Patch) -> Schema:
    # PostHog checks the choice and keeps it; it matters only while the table is CDC.
    if value not in (None, "consolidated", "cdc_only", "both"):
        raise errors.invalid_choice(value, "cdc_table_mode")
    return updated if value is None else replace(updated, cdc_table_mode=value)


def _should_sync(value: Any, updated: Schema, patch: _Patch) -> Schema:
    return replace(updated, should_sync=drf.boolean(value, "should_sync"))


# In PostHog's order: the first invalid field in it is the one reported.
_FIELDS: dict[str, Callable[[Any, Schema, _Patch], Schema]] = {
    "sync_type": _sync_type,
    "incremental_field": _incremental_field,
    "incremental_field_type": _incremental_field_type,
    "incremental_field_lookback_seconds": _lookback,
    "sync_frequency": _sync_frequency,
    "sync_time_of_day": _sync_time_of_day,
    "enabled_columns": _enabled_columns,
    "primary_key_columns": _primary_key_columns,
    "cdc_table_mode": _cdc_table_mode,
    "row_filters": _row_filters,
    "should_sync": _should_sync,
}


def _check_whole(updated: Schema, data: Mapping[str, Any], patch: _Patch) -> Schema:
    """The rules of PostHog's `update()` that involve several fields."""
    _check_key(updated, patch)
    if "sync_type" not in data and updated.sync_type not in _CURSOR_STYLE:
        unappliable = [f for f in _CURSOR_SETTINGS if data.get(f) is not None]
        if unappliable:
            raise errors.validation_error(
                f"{', '.join(unappliable)} cannot be applied to a schema with sync type "
                f"{updated.sync_type or 'not set'} on its own. Include sync_type in the same "
                "request to change the sync type.",
                None,
                "invalid_input",
            )
    if updated.sync_type != "incremental":
        # PostHog keeps a lookback only on incremental tables: append would duplicate rows.
        updated = replace(updated, incremental_field_lookback_seconds=None)
    switching = "sync_type" in data and patch.before.sync_type != "incremental"
    if updated.sync_type == "incremental" and (switching or "primary_key_columns" in data):
        _check_merge_key(updated)
    if updated.should_sync and updated.sync_type is None:
        raise errors.validation_error(
            "Sync type must be set up first before enabling schema", "should_sync"
        )
    return updated


def no_merge_key(name: str) -> str:
    """PostHog's refusal of an incremental table with nothing to merge on."""
    return (
        f"'{name}' has no primary key to sync incrementally on. Choose a primary key for it, or "
        "switch it to full table replication."
    )


def _check_merge_key(schema: Schema) -> None:
    """An incremental table needs a key: its own, one detected upstream, or an `id` column."""
    columns = _column_names(schema)
    if not columns or schema.primary_key_columns or schema.detected_primary_keys:
        return
    if "id" in columns:
        return
    raise errors.validation_error(no_merge_key(schema.name), "primary_key_columns")


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


def source_type_choice(data: dict[str, Any]) -> str:
    """The body's `source_type`, checked as PostHog's serializers' ChoiceField checks it.

    Raises:
        ErrorAnswer: DRF's required or invalid-choice error.
    """
    source_type = data.get("source_type")
    if source_type in (None, ""):
        raise errors.required("source_type")
    if not isinstance(source_type, str) or not known_source_type(source_type):
        raise errors.invalid_choice(source_type, "source_type")
    return source_type


def check_prefix(prefix: str | None) -> None:
    """PostHog's `validate_source_prefix` (underscores around it are dropped from table names).

    Raises:
        ErrorAnswer: a DRF validation error without a field.
    """
    if not prefix:
        return
    cleaned = prefix.strip("_")
    if not cleaned:
        raise errors.validation_error(
            "Prefix cannot consist of only underscores", None, "invalid_input"
        )
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", cleaned):
        raise errors.validation_error(
            "Prefix must contain only letters, numbers, and underscores, and start with a "
            "letter or underscore",
            None,
            "invalid_input",
        )


def validate_prefix(store: Store, source_type: str, prefix: str | None) -> None:
    """PostHog's rules for a new source's prefix among the project's sources of its type: one
    without a prefix rules out another without one; a prefix (compared exactly) is used once.

    Raises:
        ErrorAnswer: PostHog's `{"message"}` answer.
    """
    same_type = [s for s in store.live_sources() if s.source_type == source_type]
    if not prefix and any(not s.prefix for s in same_type):
        raise errors.bad_request_message(
            "You already have a source of this type. Add a table prefix so this connection's "
            "tables don't clash with your existing source."
        )
    if prefix and any(s.prefix == prefix for s in same_type):
        raise errors.bad_request_message(
            f"Another source of this type already uses the prefix '{prefix}'. Choose a "
            "different prefix so this connection's tables don't clash."
        )


def schema_requests(
    raw: Any, tables: list[Table], *, cdc_enabled: bool = False
) -> dict[str, dict[str, Any]] | None:
    """The tables a create payload's `schemas` lists, checked as PostHog's create checks them,
    by table name; None when it lists none (PostHog then enables every table, with defaults).

    Raises:
        ErrorAnswer: PostHog's `{"message"}` answer.
    """
    if raw is not None and not isinstance(raw, list):
        raise errors.bad_request_message(
            "The 'schemas' field must be a list of the tables to sync."
        )
    if not raw:
        return None
    wanted: dict[str, dict[str, Any]] = {}
    for item in raw:
        if not isinstance(item, dict) or not item.get("name"):
            raise errors.bad_request_message("Schemas given do not exist in source")
        wanted[str(item["name"])] = item
    by_name = {t.name: t for t in tables}
    if any(name not in by_name for name in wanted):
        raise errors.bad_request_message("Schemas given do not exist in source")
    unknown = sorted(
        {str(i["sync_type"]) for i in wanted.values() if i.get("sync_type") is not None}
        - set(ALL_SYNC_TYPES)
    )
    if unknown:
        raise errors.bad_request_message(
            f"Unknown sync type: {', '.join(unknown)}. Use one of: {', '.join(ALL_SYNC_TYPES)}."
        )
    for item in wanted.values():
        if item.get("sync_type") in UNSUPPORTED_SYNC_TYPES:
            raise errors.bad_request_message(unsupported_sync_type(item["sync_type"]))
    # PostHog's create checks for CDC tables (`ExternalDataSourceSerializers.create`).
    requested = [n for n, i in wanted.items() if i.get("sync_type") == "cdc"]
    if requested and not cdc_enabled:
        raise errors.bad_request_message(
            f"{CDC_NOT_ENABLED} The following schemas requested CDC: {', '.join(requested)}."
        )
    keyless = [
        n
        for n in requested
        if not by_name[n].primary_key and not wanted[n].get("primary_key_columns")
    ]
    if keyless:
        raise errors.bad_request_message(
            "CDC requires a primary key on each table. The following tables have no primary "
            f"key: {', '.join(keyless)}."
        )
    for name, item in wanted.items():
        if not item.get("should_sync") or item.get("sync_type") not in CURSOR_SYNC_TYPES:
            continue
        if item.get("incremental_field") is None:
            raise errors.bad_request_message(
                "Incremental schemas given do not have an incremental field set"
            )
        if item.get("incremental_field_type") is None:
            raise errors.bad_request_message(
                "Incremental schemas given do not have an incremental field type set"
            )
        table = by_name[name]
        names = [c.name for c in table.columns]
        if (
            item["sync_type"] == "incremental"
            and not item.get("primary_key_columns")
            and names
            and not table.primary_key
            and "id" not in names
        ):
            raise errors.bad_request_message(
                f"Table '{name}' has no primary key to sync incrementally on. Choose a primary "
                "key for it, or switch it to full table replication."
            )
        lookback = item.get("incremental_field_lookback_seconds")
        if lookback is not None and (
            isinstance(lookback, bool)
            or not isinstance(lookback, int | float)
            or lookback != int(lookback)
            or not 0 <= lookback <= MAX_LOOKBACK_SECONDS
        ):
            raise errors.bad_request_message(
                "incremental_field_lookback_seconds must be an integer between 0 and 5184000 "
                f"(60 days) for schema '{name}'."
            )
    for name, item in wanted.items():
        try:
            check_row_filters(item.get("row_filters"), by_name[name].available_columns)
        except RowFilterError as exc:
            raise errors.bad_request_message(
                f"Invalid row filter for schema '{name}': {exc}"
            ) from exc
    return wanted


def log_filter(params: Mapping[str, str]) -> LogFilter:
    """PostHog's `LogEntryRequestSerializer` on the logs endpoint's query string.

    `level` is split on commas (not trimmed) and upper-cased, as `fetch_log_entries` does.

    Raises:
        ErrorAnswer: the first invalid parameter, in the serializer's field order.
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
