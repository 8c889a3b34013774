"""The HTTP API: PostHog's 21 external data source and schema endpoints as Starlette routes."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posthog_warehouse_mcp.sandbox import errors, sources
from posthog_warehouse_mcp.sandbox.engine import FREQUENCIES, SyncEngine
from posthog_warehouse_mcp.sandbox.errors import ApiError
from posthog_warehouse_mcp.sandbox.store import Job, Schema, Source, Store, iso, new_id, now
from posthog_warehouse_mcp.sandbox.warehouse import Warehouse

logger = logging.getLogger(__name__)

ENVIRONMENT_ID = "1"
PAGE_SIZE = 100
JOBS_LIMIT = 50
SUPPORTED_SOURCE_TYPES = sources.SUPPORTED_SOURCE_TYPES
SYNC_TYPES = ("full_refresh", "incremental", "append")
# PostHog accepts these too, but they need machinery (CDC slots, webhooks) the sandbox lacks.
UNSUPPORTED_SYNC_TYPES = ("webhook", "cdc", "xmin")
INCREMENTAL_FIELD_TYPES = ("integer", "numeric", "datetime", "date", "timestamp", "objectid", "xid")
# PostHog strips every job input that is not known to be harmless (removed, not masked).
_SSH_NONSENSITIVE = ("enabled", "host", "port")
_REFRESH_ERRORS = {
    "Invalid user or password": "Could not authenticate with the source. Check the connection "
    "credentials.",
    "Could not connect to the host": "Could not resolve the source host.",
    "Could not connect to the host on the port given": "Could not connect to the source. Check "
    "the host, port, and network access.",
    "Connection timed out. Does your database have our IP addresses allowed?": "Connection timed "
    "out while fetching schemas from the source.",
}


@dataclass
class Sandbox:
    """Everything a request handler needs."""

    directory: Path
    store: Store
    warehouse: Warehouse
    engine: SyncEngine
    api_key: str | None = None


Handler = Callable[[Request, Sandbox], Awaitable[Response]]


# ---------------------------------------------------------------- request helpers


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _empty(status: int = 200) -> Response:
    return Response(status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    """The request body as a dict: JSON, or form-encoded like curl's `-d key=value`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type", "")
    data: Any
    if "multipart/form-data" in content_type:
        form = await request.form()
        data = {k: _form_value(v) for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            # curl -H 'Content-Type: application/json' -d key=value (PostHog's own doc examples)
            # sends a form body under a JSON header; read it as a form rather than refuse it.
            pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            if not pairs or raw.lstrip()[:1] in b"[{":
                raise errors.ApiError(
                    400,
                    {
                        "type": "validation_error",
                        "code": "parse_error",
                        "detail": f"JSON parse error - {exc}",
                        "attr": None,
                    },
                ) from exc
            data = {k: _form_value(v) for k, v in pairs}
    if not isinstance(data, dict):
        raise errors.validation_error(
            f"Invalid data. Expected a dictionary, but got {type(data).__name__}.",
            "non_field_errors",
        )
    return data


def _form_value(value: str) -> Any:
    """Form values are strings; JSON objects and arrays inside them are decoded."""
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


def _bool(value: Any, attr: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise errors.validation_error("Must be a valid boolean.", attr)


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(value, 0)


def _search(
    items: list[Any], term: str | None, fields: Callable[[Any], list[str | None]]
) -> list[Any]:
    """DRF SearchFilter: every whitespace/comma-separated term must match some field (icontains)."""
    terms = [t for t in re.split(r"[\s,]+", term or "") if t]
    if not terms:
        return items
    return [
        item
        for item in items
        if all(any(t.lower() in (f or "").lower() for f in fields(item)) for t in terms)
    ]


def _page(request: Request, items: list[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
    """DRF LimitOffsetPagination with PostHog's page size."""
    limit = _int_param(request, "limit", PAGE_SIZE) or PAGE_SIZE
    offset = _int_param(request, "offset", 0)
    count = len(items)

    def url(new_offset: int | None) -> str:
        params = dict(request.query_params)
        params["limit"] = str(limit)
        if new_offset:
            params["offset"] = str(new_offset)
        else:
            params.pop("offset", None)
        return str(request.url.replace_query_params(**params))

    next_url = url(offset + limit) if offset + limit < count else None
    previous = None
    if offset > 0:
        previous = url(offset - limit if offset - limit > 0 else None)
    return _json(
        {
            "count": count,
            "next": next_url,
            "previous": previous,
            "results": [render(item) for item in items[offset : offset + limit]],
        }
    )


def _parse_time(value: str) -> datetime:
    text = value.strip().replace("Z", "+00:00").replace(" ", "+", 1 if "T" in value else 0)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------- serializers


def _strip_inputs(source: Source) -> dict[str, Any]:
    """PostHog's `strip_sensitive_from_dict`: keep only known non-secret keys."""
    if source.source_type not in SUPPORTED_SOURCE_TYPES:
        return {}
    keep = sources.connector(source.source_type).NONSENSITIVE_INPUTS
    inputs = {k: source.job_inputs[k] for k in keep if k in source.job_inputs}
    ssh = source.job_inputs.get("ssh_tunnel")
    if isinstance(ssh, dict):
        kept: dict[str, Any] = {k: ssh[k] for k in _SSH_NONSENSITIVE if k in ssh}
        auth = ssh.get("auth")
        if isinstance(auth, dict):
            kept["auth"] = {k: auth[k] for k in ("selection", "username") if k in auth}
        inputs["ssh_tunnel"] = kept
    return inputs


def _schema_json(sb: Sandbox, schema: Schema, *, with_source: bool = False) -> dict[str, Any]:
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
        src = sb.store.sources[schema.source_id]
        source = {
            "id": src.id,
            "source_type": src.source_type,
            "supports_column_selection": True,
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
        "sync_frequency": schema.sync_frequency,
        "sync_time_of_day": schema.sync_time_of_day,
        "description": schema.description,
        "primary_key_columns": schema.primary_key_columns,
        "cdc_table_mode": "consolidated",
        "enabled_columns": schema.enabled_columns,
        "available_columns": schema.available_columns,
        "source": source,
    }


def _source_status(source: Source, schemas: list[Schema]) -> str | None:
    """PostHog's computed source status (doc §2): Failed, Paused, Running, Completed, stored."""
    if any(s.should_sync and s.status == "Failed" for s in schemas):
        return "Failed"
    for status in ("Paused", "Running", "Completed"):
        if any(s.status == status for s in schemas):
            return status
    return source.status


def _source_json(sb: Sandbox, source: Source) -> dict[str, Any]:
    schemas = sb.store.source_schemas(source.id)
    completed = [j for j in sb.store.source_jobs(source.id) if j.status == "Completed"]
    return {
        "id": source.id,
        "created_at": source.created_at,
        "created_by": None,
        "created_via": source.created_via,
        "status": _source_status(source, schemas),
        "source_type": source.source_type,
        # PostHog shows the first schema's error; the first one that has an error is more useful.
        "latest_error": next((s.latest_error for s in schemas if s.latest_error), None),
        "prefix": source.prefix,
        "description": source.description,
        "access_method": source.access_method,
        "engine": None,
        "last_run_at": completed[0].created_at if completed else None,
        "schemas": [_schema_json(sb, s) for s in schemas],
        "job_inputs": _strip_inputs(source),
        "revenue_analytics_config": _revenue_config(source),
        "user_access_level": "editor",
        "supports_webhooks": False,
        "supports_column_selection": True,
    }


def _revenue_config(source: Source) -> dict[str, bool]:
    return {
        "enabled": source.revenue_analytics_config.get("enabled", source.source_type == "Stripe"),
        "include_invoiceless_charges": source.revenue_analytics_config.get(
            "include_invoiceless_charges", True
        ),
    }


def _job_json(sb: Sandbox, job: Job) -> dict[str, Any]:
    schema = sb.store.schemas.get(job.schema_id)
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
        "cdc_write_mode": None,
        "billable": True,
    }


# ---------------------------------------------------------------- lookups


def _get_source(sb: Sandbox, source_id: str) -> Source:
    source = sb.store.sources.get(source_id)
    if source is None or source.deleted:
        raise errors.not_found()
    return source


def _get_schema(sb: Sandbox, schema_id: str) -> Schema:
    schema = sb.store.schemas.get(schema_id)
    if schema is None or schema.deleted:
        raise errors.not_found()
    source = sb.store.sources.get(schema.source_id)
    if source is None or source.deleted:
        raise errors.not_found()
    return schema


async def _discover(
    source_type: str, job_inputs: dict[str, Any], only: str | None = None
) -> list[sources.Table]:
    connector = sources.connector(source_type)
    try:
        tables: list[sources.Table] = await anyio.to_thread.run_sync(
            lambda: connector.discover(job_inputs, only)
        )
    except sources.SourceError as exc:
        raise errors.message(str(exc)) from exc
    return tables


def _apply_columns(schema: Schema, table: sources.Table) -> None:
    schema.available_columns = [
        {"name": c.name, "data_type": c.data_type, "is_nullable": c.nullable} for c in table.columns
    ]
    schema.detected_primary_keys = list(table.primary_key)


async def _stop_sync(sb: Sandbox, schema_id: str, reason: str) -> None:
    """Cancel a running sync and wait for its thread (in a worker: cancelling talks to Postgres)."""

    def stop() -> None:
        if sb.engine.cancel(schema_id, reason):
            sb.engine.join(schema_id, 30)

    await anyio.to_thread.run_sync(stop)


async def _drop_data(sb: Sandbox, schema: Schema) -> None:
    await _stop_sync(sb, schema.id, "Sync cancelled because the table's data was deleted")
    name = schema.table_name
    await anyio.to_thread.run_sync(lambda: sb.warehouse.drop_table(schema.id, name))
    schema.table_id = None
    schema.table_name = None
    schema.table_columns = []
    schema.row_count = None
    sb.store.save(schema)


# ---------------------------------------------------------------- schema settings validation


def _time_of_day(value: Any, attr: str = "sync_time_of_day") -> str | None:
    if value in (None, ""):
        return None
    try:
        parsed = time.fromisoformat(str(value).replace("Z", ""))
    except ValueError as exc:
        raise errors.validation_error("Invalid sync time of day", attr) from exc
    return parsed.replace(tzinfo=None, microsecond=0).isoformat()


def _column_names(schema: Schema) -> list[str]:
    return [c["name"] for c in schema.available_columns]


def _infer_field_type(schema: Schema, field: str, source_type: str) -> str | None:
    connector = sources.connector(source_type)
    for col in schema.available_columns:
        if col["name"] == field:
            found: sources.Column = connector.column(field, col["data_type"], col["is_nullable"])
            return found.incremental_type
    return None


def _apply_settings(
    schema: Schema, data: dict[str, Any], *, has_data: bool, source_type: str
) -> bool:
    """Validate a PATCH of schema settings and apply it; return True if it enabled syncing.

    Raises:
        ApiError: a DRF validation error naming the field.
    """
    updated = dataclasses.replace(schema)
    if "sync_type" in data:
        value = data["sync_type"]
        if value in UNSUPPORTED_SYNC_TYPES:
            raise errors.validation_error(
                f"Sync type '{value}' is not supported by the sandbox. "
                f"Use one of: {', '.join(SYNC_TYPES)}.",
                "sync_type",
            )
        if value is not None and value not in SYNC_TYPES:
            raise errors.invalid_choice(value, "sync_type")
        updated.sync_type = value
    if "incremental_field" in data:
        updated.incremental_field = data["incremental_field"] or None
        field = updated.incremental_field
        if field and updated.available_columns and field not in _column_names(updated):
            raise errors.validation_error(
                f"Incremental field {field} does not exist on table {schema.name}",
                "incremental_field",
            )
        cursor_type = _infer_field_type(updated, field, source_type) if field else None
        if field and updated.available_columns and cursor_type is None:
            raise errors.validation_error(
                f"Incremental field {field} of table {schema.name} cannot be used as a "
                "cursor: it must be an integer, date or timestamp column",
                "incremental_field",
            )
        # The type belongs to the field: a new field takes the request's type or its own.
        if field != schema.incremental_field or updated.available_columns:
            updated.incremental_field_type = cursor_type
    if "incremental_field_type" in data:
        value = data["incremental_field_type"]
        if value is not None and value not in INCREMENTAL_FIELD_TYPES:
            raise errors.invalid_choice(value, "incremental_field_type")
        updated.incremental_field_type = value
    if "sync_frequency" in data:
        value = data["sync_frequency"]
        if value == "1min":
            raise errors.validation_error(
                "A 1-minute sync frequency is only available for CDC schemas. The fastest "
                "frequency for other sync types is 5 minutes.",
                "sync_frequency",
            )
        if value not in FREQUENCIES:
            raise errors.invalid_choice(value, "sync_frequency")
        updated.sync_frequency = value
    if "sync_time_of_day" in data:
        updated.sync_time_of_day = _time_of_day(data["sync_time_of_day"])
    if "enabled_columns" in data:
        value = data["enabled_columns"]
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise errors.validation_error(
                "enabled_columns must be a list of column-name strings or null.", "enabled_columns"
            )
        if value is not None and updated.available_columns:
            unknown = [v for v in value if v not in _column_names(updated)]
            if unknown:
                raise errors.validation_error(
                    f"Unknown columns in enabled_columns: {unknown}. Run `Pull new schemas` to "
                    "refresh available columns.",
                    "enabled_columns",
                )
        updated.enabled_columns = value
    if "primary_key_columns" in data:
        value = data["primary_key_columns"]
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise errors.validation_error(
                'Expected a list of items but got type "str".', "primary_key_columns", "not_a_list"
            )
        if value is not None and updated.available_columns:
            unknown = [v for v in value if v not in _column_names(updated)]
            if unknown:
                raise errors.validation_error(
                    f"Unknown columns in primary_key_columns: {unknown}. Run `Pull new schemas` "
                    "to refresh available columns.",
                    "primary_key_columns",
                )
        if has_data and value != schema.primary_key_columns and schema.sync_type == "incremental":
            raise errors.validation_error(
                "Primary key cannot be changed after data has been synced. Delete the synced "
                "data first, then change the primary key.",
                "primary_key_columns",
            )
        updated.primary_key_columns = value
    if "cdc_table_mode" in data and data["cdc_table_mode"] not in (None, "consolidated"):
        if data["cdc_table_mode"] in ("cdc_only", "both"):
            raise errors.validation_error("CDC is not enabled for this team", "cdc_table_mode")
        raise errors.invalid_choice(data["cdc_table_mode"], "cdc_table_mode")
    enabling = False
    if "should_sync" in data:
        updated.should_sync = _bool(data["should_sync"], "should_sync")
        enabling = updated.should_sync and not schema.should_sync
    if updated.sync_type in ("incremental", "append"):
        if not updated.incremental_field:
            raise errors.validation_error(
                "Incremental schemas given do not have an incremental field set",
                "incremental_field",
            )
        if not updated.incremental_field_type:
            updated.incremental_field_type = _infer_field_type(
                updated, updated.incremental_field, source_type
            )
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
            f"Incremental syncs merge on a primary key, and table {schema.name} has none. "
            "Set primary_key_columns, or use append.",
            "primary_key_columns",
        )
    if updated.should_sync and updated.sync_type is None:
        raise errors.validation_error(
            "Sync type must be set up first before enabling schema", "should_sync"
        )
    schema.__dict__.update(updated.__dict__)
    return enabling


# ---------------------------------------------------------------- source endpoints


async def sources_list(request: Request, sb: Sandbox) -> Response:
    """GET external_data_sources/."""
    items = _search(
        sb.store.live_sources(),
        request.query_params.get("search"),
        lambda s: [s.source_type, s.prefix],
    )
    return _page(request, items, lambda s: _source_json(sb, s))


def _validate_prefix(sb: Sandbox, source_type: str, prefix: str | None) -> None:
    if prefix and not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
        raise errors.validation_error(
            "Prefix must contain only letters, numbers, and underscores.", "prefix"
        )
    same_type = [s for s in sb.store.live_sources() if s.source_type == source_type]
    if same_type and not prefix:
        raise errors.message("Source type already exists. Prefix is required")
    # Table names are snake-cased to lower case: prefixes differing only by case would collide.
    if any((s.prefix or "").lower() == (prefix or "").lower() for s in same_type):
        raise errors.message("Prefix already exists")


def _schema_requests(raw: Any, tables: list[sources.Table]) -> dict[str, dict[str, Any]]:
    """Validate the payload's `schemas` array like PostHog's create does."""
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
            raise errors.message(
                f"Sync type '{sync_type}' is not supported by the sandbox. "
                f"Use one of: {', '.join(SYNC_TYPES)}."
            )
    incremental = [i for i in wanted.values() if i.get("sync_type") in ("incremental", "append")]
    if any(not i.get("incremental_field") for i in incremental):
        raise errors.message("Incremental schemas given do not have an incremental field set")
    return wanted


async def sources_create(request: Request, sb: Sandbox) -> Response:
    """POST external_data_sources/: check credentials, discover tables, start enabled syncs."""
    data = await _body(request)
    source_type = data.get("source_type")
    if source_type in (None, ""):
        raise errors.required("source_type")
    payload = data.get("payload")
    if payload is None:
        raise errors.required("payload")
    if not isinstance(payload, dict):
        raise errors.validation_error(
            f'Expected a dictionary of items but got type "{type(payload).__name__}".',
            "payload",
            "not_a_dict",
        )
    prefix = data.get("prefix") or None
    if prefix is not None and len(str(prefix)) > 100:
        raise errors.validation_error(
            "Ensure this field has no more than 100 characters.", "prefix", "max_length"
        )
    created_via = data.get("created_via") or "api"
    if created_via not in ("web", "api", "mcp"):
        raise errors.invalid_choice(created_via, "created_via")
    access_method = data.get("access_method") or "warehouse"
    if access_method not in ("warehouse", "direct"):
        raise errors.invalid_choice(access_method, "access_method")
    if source_type not in SUPPORTED_SOURCE_TYPES:
        raise errors.message(
            f"The sandbox cannot create {source_type} sources. Supported source types: "
            f"{', '.join(SUPPORTED_SOURCE_TYPES)}."
        )
    if access_method == "direct":
        raise errors.message("The sandbox supports only the warehouse access method.")
    _validate_prefix(sb, source_type, prefix)
    job_inputs = {
        k: v.strip() if isinstance(v, str) else v for k, v in payload.items() if k != "schemas"
    }
    tables = await _discover(source_type, job_inputs)
    wanted = _schema_requests(payload.get("schemas"), tables)
    created = iso(now()) or ""
    source = Source(
        id=new_id(),
        source_type=source_type,
        prefix=prefix,
        description=data.get("description"),
        job_inputs=job_inputs,
        created_at=created,
        created_via=created_via,
        access_method=access_method,
    )
    schemas = []
    for table in tables:
        item = wanted.get(table.name, {})
        schema = Schema(id=new_id(), source_id=source.id, name=table.name, created_at=created)
        _apply_columns(schema, table)
        if item:
            settings: dict[str, Any] = {
                k: item[k]
                for k in (
                    "sync_type",
                    "incremental_field",
                    "incremental_field_type",
                    "primary_key_columns",
                    "sync_time_of_day",
                    "enabled_columns",
                    "sync_frequency",
                )
                if k in item
            }
            settings["should_sync"] = _bool(item.get("should_sync") or False, "should_sync")
            if settings["should_sync"] and not settings.get("sync_type"):
                settings["sync_type"] = "full_refresh"
            try:
                _apply_settings(schema, settings, has_data=False, source_type=source_type)
            except ApiError as exc:
                raise errors.message(str(exc.body.get("detail"))) from exc
        schemas.append(schema)
    sb.store.save(source)
    for schema in schemas:
        sb.store.save(schema)
    for schema in schemas:
        if schema.should_sync:
            sb.engine.start(schema)
    return _json({"id": source.id}, 201)


async def sources_retrieve(request: Request, sb: Sandbox) -> Response:
    """GET external_data_sources/{id}/."""
    return _json(_source_json(sb, _get_source(sb, request.path_params["id"])))


async def sources_partial_update(request: Request, sb: Sandbox) -> Response:
    """PATCH external_data_sources/{id}/: description and job_inputs (prefix is kept)."""
    source = _get_source(sb, request.path_params["id"])
    data = await _body(request)
    if "access_method" in data and data["access_method"] != source.access_method:
        raise errors.validation_error(
            "Access method cannot be changed. Create a new source instead."
        )
    if "job_inputs" in data:
        incoming = data["job_inputs"]
        if not isinstance(incoming, dict):
            raise errors.validation_error(
                f'Expected a dictionary of items but got type "{type(incoming).__name__}".',
                "job_inputs",
                "not_a_dict",
            )
        if (
            "host" in incoming
            and incoming["host"] != source.job_inputs.get("host")
            and "password" not in incoming
        ):
            raise errors.validation_error(
                "Changing the connection host requires re-entering your credentials."
            )
        merged = {**source.job_inputs, **incoming}
        try:
            await _discover(source.source_type, merged)
        except ApiError as exc:
            raise errors.validation_error(str(exc.body.get("message"))) from exc
        source.job_inputs = merged
    if "description" in data:
        source.description = data["description"]
    sb.store.save(source)
    return _json(_source_json(sb, source))


async def sources_destroy(request: Request, sb: Sandbox) -> Response:
    """DELETE external_data_sources/{id}/: stop syncs, drop the tables, delete everything."""
    source = _get_source(sb, request.path_params["id"])
    schemas = sb.store.source_schemas(source.id)
    # Deleted first: from here on neither a reload nor the scheduler starts a sync that could
    # publish a table after its data was dropped (the engine refuses deleted schemas/sources).
    with sb.store.lock:
        source.deleted = True
        sb.store.save(source)
        for schema in schemas:
            schema.deleted = True
            sb.store.save(schema)
    for schema in schemas:
        await _drop_data(sb, schema)
    return _empty(204)


async def sources_bulk_update_schemas(request: Request, sb: Sandbox) -> Response:
    """PATCH external_data_sources/{id}/bulk_update_schemas/: all-or-nothing schema settings."""
    source = _get_source(sb, request.path_params["id"])
    data = await _body(request)
    items = data.get("schemas")
    if items is None:
        raise errors.required("schemas")
    if not isinstance(items, list):
        raise errors.validation_error(
            f'Expected a list of items but got type "{type(items).__name__}".',
            "schemas",
            "not_a_list",
        )
    if not items:
        raise errors.validation_error("This list may not be empty.", "schemas", "empty")
    ids = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            raise errors.required("schemas")
        ids.append(str(item["id"]))
    if len(set(ids)) != len(ids):
        raise errors.validation_error("Schema updates must contain unique ids")
    owned = {s.id: s for s in sb.store.source_schemas(source.id)}
    if any(i not in owned for i in ids):
        raise errors.validation_error("One or more schemas could not be found for this source")
    # Validate every item on copies first so a bad item leaves the batch unapplied. All of it under
    # the store lock, so a sync thread finishing meanwhile is not overwritten by a stale copy; no
    # await and no engine lock in here (start() takes that before the store lock): syncs start
    # after it is released.
    staged = []
    with sb.store.lock:
        for item in items:
            schema = owned[str(item["id"])]
            copy = dataclasses.replace(schema)
            settings = {k: v for k, v in item.items() if k != "id"}
            enabling = _apply_settings(
                copy,
                settings,
                has_data=schema.table_name is not None,
                source_type=source.source_type,
            )
            staged.append((schema, copy, enabling))
        for schema, copy, _ in staged:
            schema.__dict__.update(copy.__dict__)
            sb.store.save(schema)
    for schema, _, enabling in staged:
        if enabling:
            sb.engine.start(schema)
    return _json([_schema_json(sb, schema) for schema, _, _ in staged])


async def sources_webhook(request: Request, sb: Sandbox) -> Response:
    """POST create_webhook/ and delete_webhook/: Postgres sources have no webhooks."""
    _get_source(sb, request.path_params["id"])
    raise errors.message("This source type does not support webhooks")


async def sources_jobs(request: Request, sb: Sandbox) -> Response:
    """GET external_data_sources/{id}/jobs/: newest first, at most 50, not paginated."""
    source = _get_source(sb, request.path_params["id"])
    jobs = sb.store.source_jobs(source.id)
    after, before = request.query_params.get("after"), request.query_params.get("before")
    try:
        after_t = _parse_time(after) if after else None
        before_t = _parse_time(before) if before else None
    except ValueError as exc:
        raise errors.validation_error("after and before must be ISO 8601 timestamps.") from exc
    names = request.query_params.getlist("schemas")

    def keep(job: Job) -> bool:
        created = _parse_time(job.created_at)
        if after_t is not None and created <= after_t:
            return False
        if before_t is not None and created >= before_t:
            return False
        if names:
            schema = sb.store.schemas.get(job.schema_id)
            return schema is not None and schema.name in names
        return True

    return _json([_job_json(sb, j) for j in jobs if keep(j)][:JOBS_LIMIT])


async def sources_refresh_schemas(request: Request, sb: Sandbox) -> Response:
    """POST refresh_schemas/: add schemas for new tables, retire those for vanished tables."""
    source = _get_source(sb, request.path_params["id"])
    if not source.job_inputs:
        raise errors.message("Source has no configuration.")
    try:
        tables = await _discover(source.source_type, source.job_inputs)
    except ApiError as exc:
        text = str(exc.body.get("message"))
        raise errors.message(
            _REFRESH_ERRORS.get(text, "Could not fetch schemas from source.")
        ) from exc
    existing = {s.name: s for s in sb.store.source_schemas(source.id)}
    seen = {t.name: t for t in tables}
    added = deleted = 0
    created = iso(now()) or ""
    for name, table in seen.items():
        schema = existing.get(name)
        if schema is None:
            schema = Schema(id=new_id(), source_id=source.id, name=name, created_at=created)
            added += 1
        _apply_columns(schema, table)
        sb.store.save(schema)
    for name, schema in existing.items():
        if name in seen:
            continue
        deleted += 1
        await _stop_sync(sb, schema.id, "Sync cancelled because the table no longer exists")
        if schema.table_name is None:
            schema.deleted = True
        else:
            # Keep the synced data queryable; only stop syncing a table that no longer exists.
            schema.should_sync = False
            schema.status = "Completed"
        sb.store.save(schema)
    return _json({"added": added, "deleted": deleted, "total_tables_seen": len(tables)})


async def sources_reload(request: Request, sb: Sandbox) -> Response:
    """POST external_data_sources/{id}/reload/: sync every enabled schema; 200, no body."""
    source = _get_source(sb, request.path_params["id"])
    for schema in sb.store.source_schemas(source.id):
        if schema.should_sync:
            sb.engine.start(schema)
    source.status = "Running"
    sb.store.save(source)
    return _empty()


async def sources_revenue_config(request: Request, sb: Sandbox) -> Response:
    """PATCH revenue_analytics_config/: persist the flags, answer with the full source."""
    source = _get_source(sb, request.path_params["id"])
    data = await _body(request)
    config = _revenue_config(source)
    for key in ("enabled", "include_invoiceless_charges"):
        if key in data:
            config[key] = _bool(data[key], key)
    source.revenue_analytics_config = config
    sb.store.save(source)
    return _json(_source_json(sb, source))


# ---------------------------------------------------------------- schema endpoints


async def schemas_list(request: Request, sb: Sandbox) -> Response:
    """GET external_data_schemas/ (search on name)."""
    items = _search(sb.store.live_schemas(), request.query_params.get("search"), lambda s: [s.name])
    return _page(request, items, lambda s: _schema_json(sb, s))


async def schemas_retrieve(request: Request, sb: Sandbox) -> Response:
    """GET external_data_schemas/{id}/."""
    schema = _get_schema(sb, request.path_params["id"])
    return _json(_schema_json(sb, schema, with_source=True))


async def schemas_partial_update(request: Request, sb: Sandbox) -> Response:
    """PATCH external_data_schemas/{id}/: settings; enabling starts the first sync."""
    schema = _get_schema(sb, request.path_params["id"])
    data = await _body(request)
    source_type = sb.store.sources[schema.source_id].source_type
    # Copy, validate, apply and save under the store lock: a sync thread finishing in between
    # would otherwise have its status and table overwritten by the stale copy. Nothing in here
    # awaits or takes the engine lock (start() takes it before the store lock).
    with sb.store.lock:
        enabling = _apply_settings(
            schema, data, has_data=schema.table_name is not None, source_type=source_type
        )
        sb.store.save(schema)
    if enabling:
        sb.engine.start(schema)
    return _json(_schema_json(sb, schema, with_source=True))


async def schemas_destroy(request: Request, sb: Sandbox) -> Response:
    """DELETE external_data_schemas/{id}/: drop its table and the schema."""
    schema = _get_schema(sb, request.path_params["id"])
    # Deleted before its data is dropped, so no sync can start and publish the table again.
    schema.deleted = True
    sb.store.save(schema)
    await _drop_data(sb, schema)
    return _empty(204)


async def schemas_cancel(request: Request, sb: Sandbox) -> Response:
    """POST external_data_schemas/{id}/cancel/: stop the running sync (job ends Failed)."""
    schema = _get_schema(sb, request.path_params["id"])
    if not sb.engine.is_running(schema.id):
        raise errors.detail("No running sync to cancel.")
    await _stop_sync(sb, schema.id, "Sync cancelled by user")
    return _empty()


async def schemas_delete_data(request: Request, sb: Sandbox) -> Response:
    """DELETE external_data_schemas/{id}/delete_data/: drop the table, keep the schema (200)."""
    schema = _get_schema(sb, request.path_params["id"])
    await _drop_data(sb, schema)
    return _empty()


async def schemas_incremental_fields(request: Request, sb: Sandbox) -> Response:
    """POST incremental_fields/: introspect the real table's cursor candidates."""
    schema = _get_schema(sb, request.path_params["id"])
    source = sb.store.sources[schema.source_id]
    if not source.job_inputs:
        raise errors.message("Missing job inputs")
    tables = await _discover(source.source_type, source.job_inputs, schema.name)
    if not tables:
        raise errors.message(f"Schema with name {schema.name} not found")
    table = tables[0]
    _apply_columns(schema, table)
    sb.store.save(schema)
    fields = [
        {
            "label": c.name,
            "type": c.incremental_type,
            "field": c.name,
            "field_type": c.incremental_type,
            "nullable": c.nullable,
        }
        for c in table.columns
        if c.incremental_type
    ]
    return _json(
        {
            "incremental_fields": fields,
            "incremental_available": bool(fields),
            "append_available": bool(fields),
            "cdc_available": False,
            "xmin_available": False,
            "full_refresh_available": True,
            "supports_webhooks": False,
            "webhook_only": False,
            "available_columns": [
                {"field": c.name, "label": c.name, "type": c.data_type, "nullable": c.nullable}
                for c in table.columns
            ],
            "detected_primary_keys": table.primary_key,
        }
    )


async def schemas_reload(request: Request, sb: Sandbox) -> Response:
    """POST external_data_schemas/{id}/reload/: sync this schema with its method; 200, no body."""
    schema = _get_schema(sb, request.path_params["id"])
    sb.engine.start(schema)
    return _empty()


async def schemas_resync(request: Request, sb: Sandbox) -> Response:
    """POST resync/: re-import every row, replacing the table atomically when the load is done."""
    schema = _get_schema(sb, request.path_params["id"])
    await _stop_sync(sb, schema.id, "Sync cancelled by a resync")
    sb.engine.start(schema, replace=True)
    return _empty()


async def schemas_create(request: Request, sb: Sandbox) -> Response:
    """POST external_data_schemas/: schemas come from discovery only (405, like PostHog)."""
    raise errors.method_not_allowed("POST")


# ---------------------------------------------------------------- app


_ROUTES: list[tuple[str, dict[str, Handler]]] = [
    ("external_data_sources/", {"GET": sources_list, "POST": sources_create}),
    (
        "external_data_sources/{id}/",
        {"GET": sources_retrieve, "PATCH": sources_partial_update, "DELETE": sources_destroy},
    ),
    ("external_data_sources/{id}/bulk_update_schemas/", {"PATCH": sources_bulk_update_schemas}),
    ("external_data_sources/{id}/create_webhook/", {"POST": sources_webhook}),
    ("external_data_sources/{id}/delete_webhook/", {"POST": sources_webhook}),
    ("external_data_sources/{id}/jobs/", {"GET": sources_jobs}),
    ("external_data_sources/{id}/refresh_schemas/", {"POST": sources_refresh_schemas}),
    ("external_data_sources/{id}/reload/", {"POST": sources_reload}),
    ("external_data_sources/{id}/revenue_analytics_config/", {"PATCH": sources_revenue_config}),
    ("external_data_schemas/", {"GET": schemas_list, "POST": schemas_create}),
    (
        "external_data_schemas/{id}/",
        {"GET": schemas_retrieve, "PATCH": schemas_partial_update, "DELETE": schemas_destroy},
    ),
    ("external_data_schemas/{id}/cancel/", {"POST": schemas_cancel}),
    ("external_data_schemas/{id}/delete_data/", {"DELETE": schemas_delete_data}),
    ("external_data_schemas/{id}/incremental_fields/", {"POST": schemas_incremental_fields}),
    ("external_data_schemas/{id}/reload/", {"POST": schemas_reload}),
    ("external_data_schemas/{id}/resync/", {"POST": schemas_resync}),
]


def _check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise errors.MISSING_KEY
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != api_key:
        raise errors.INVALID_KEY


def _endpoint(sb: Sandbox, methods: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            _check_auth(request, sb.api_key)
            # "@current" is PostHog's alias for the caller's current project: here, the only one.
            if request.path_params.get("environment_id") not in (ENVIRONMENT_ID, "@current"):
                raise errors.not_found()
            handler = methods.get(request.method)
            if handler is None:
                raise errors.method_not_allowed(request.method)
            return await handler(request, sb)
        except ApiError as exc:
            return _json(exc.body, exc.status)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return _json(errors.not_found().body, 404)
    if status == 405:
        return _json(errors.method_not_allowed(request.method).body, 405)
    return _json({"detail": "A server error occurred."}, status)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(
        {
            "type": "server_error",
            "code": "error",
            "detail": "A server error occurred.",
            "attr": None,
        },
        500,
    )


def build_app(sb: Sandbox) -> Starlette:
    """The ASGI app for a started sandbox (no lifespan: the caller owns start and stop)."""
    routes = []
    for prefix in ("environments", "projects"):
        for path, methods in _ROUTES:
            routes.append(
                Route(
                    f"/api/{prefix}/{{environment_id}}/{path}",
                    _endpoint(sb, methods),
                    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                )
            )
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    # Tests and benchmarks reach the store and warehouse through the app they were given.
    app.state.sandbox = sb
    return app
