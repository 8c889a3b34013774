"""The `external_data_schemas` endpoints."""

from __future__ import annotations

from dataclasses import asdict, replace

from starlette.requests import Request
from starlette.responses import Response

from . import drf, errors
from .connectors import SourceError, postgres_cdc
from .routing import route
from .serializers import schema_json
from .services import Services, with_columns
from .validation import log_filter, validate_settings


@route("GET", "external_data_schemas/")
async def schemas_list(request: Request, services: Services) -> Response:
    """GET external_data_schemas/ (search on name)."""
    items = drf.search(
        services.store.live_schemas(), request.query_params.get("search"), lambda s: [s.name]
    )
    return drf.page(request, items, lambda s: schema_json(services.store, s))


@route("GET", "external_data_schemas/{id}/")
async def schemas_retrieve(request: Request, services: Services) -> Response:
    """GET external_data_schemas/{id}/."""
    schema = services.get_schema(request.path_params["id"])
    return drf.answer(schema_json(services.store, schema, with_source=True))


@route("PATCH", "external_data_schemas/{id}/")
async def schemas_partial_update(request: Request, services: Services) -> Response:
    """PATCH external_data_schemas/{id}/: settings; enabling starts the first sync."""
    store = services.store
    schema = services.get_schema(request.path_params["id"])
    schema_id = schema.id
    data = await drf.body(request)
    capable = await services.xmin_capable(schema, data)
    # Read, validate and save under the store lock, from the schema as it is now: a sync that
    # finished while the body was read is kept. Nothing in here awaits or takes the engine lock
    # (start() takes it before the store lock).
    with store.lock:
        before = services.get_schema(schema_id)
        source = store.sources[before.source_id]
        updated = validate_settings(
            before,
            data,
            source_type=source.source_type,
            cdc_enabled=postgres_cdc.settings_of(source.job_inputs) is not None,
            xmin_capable=capable,
        )
        store.save(updated)
    if updated.should_sync and not before.should_sync:
        services.engine.start(schema_id)
    return drf.answer(schema_json(store, store.schemas[schema_id], with_source=True))


@route("DELETE", "external_data_schemas/{id}/")
async def schemas_destroy(request: Request, services: Services) -> Response:
    """DELETE external_data_schemas/{id}/: drop its table and the schema."""
    store = services.store
    # Deleted before its data is dropped, so no sync can start and publish the table again.
    with store.lock:
        schema = services.get_schema(request.path_params["id"])
        store.save(replace(schema, deleted=True))
    await services.drop_data(schema.id)
    return drf.empty(204)


@route("POST", "external_data_schemas/{id}/cancel/")
async def schemas_cancel(request: Request, services: Services) -> Response:
    """POST external_data_schemas/{id}/cancel/: stop the running sync (job ends Failed). A
    table marked Running with no sync running gets its latest job's status (Failed if none),
    as PostHog repairs it."""
    schema = services.get_schema(request.path_params["id"])
    if services.engine.is_running(schema.id):
        await services.stop_sync(schema.id, "Sync cancelled by user")
        return drf.empty()
    with services.store.lock:
        current = services.get_schema(schema.id)
        if current.status != "Running" or services.engine.is_running(schema.id):
            raise errors.bad_request_detail("No running sync to cancel.")
        jobs = services.store.schema_jobs(schema.id)
        latest = jobs[0] if jobs else None
        services.store.save(
            replace(
                current,
                status=latest.status if latest is not None else "Failed",
                latest_error=latest.latest_error if latest is not None else current.latest_error,
            )
        )
    return drf.answer({"detail": "No sync was running. The sync status has been updated."})


@route("DELETE", "external_data_schemas/{id}/delete_data/")
async def schemas_delete_data(request: Request, services: Services) -> Response:
    """DELETE external_data_schemas/{id}/delete_data/: drop the table and its cursor and reset
    the table's status and last sync, keeping the schema and its settings (200). A running sync
    is left to finish, as in PostHog: it publishes only a whole table."""
    schema = services.get_schema(request.path_params["id"])
    if schema.table_name is None:
        return drf.empty()  # nothing synced: PostHog changes nothing
    await services.clear_data(schema.id, reset=True)
    return drf.empty()


@route("POST", "external_data_schemas/{id}/incremental_fields/")
async def schemas_incremental_fields(request: Request, services: Services) -> Response:
    """POST incremental_fields/: introspect the real table's cursor candidates."""
    store = services.store
    schema = services.get_schema(request.path_params["id"])
    source = store.sources[schema.source_id]
    if not source.job_inputs:
        raise errors.bad_request_message("Missing job inputs")
    try:
        tables = await services.discover(source.source_type, source.job_inputs, schema.name)
    except SourceError as exc:
        raise errors.bad_request_message(str(exc)) from exc
    if not tables:
        raise errors.bad_request_message(f"Schema with name {schema.name} not found")
    table = tables[0]
    with store.lock:
        store.save(with_columns(services.get_schema(schema.id), table))
    cursors = table.cursor_candidates(nullable=True)
    return drf.answer(
        {
            "incremental_fields": table.incremental_fields(nullable=True),
            "incremental_available": bool(cursors),
            "append_available": bool(cursors),
            # PostHog tells a table's CDC support only on a source with CDC enabled.
            "cdc_available": table.supports_cdc if source.job_inputs.get("cdc_enabled") else None,
            "xmin_available": table.supports_xmin,
            "full_refresh_available": True,
            "supports_webhooks": False,
            "webhook_only": False,
            "available_columns": table.column_choices,
            "detected_primary_keys": table.primary_key,
        }
    )


@route("POST", "external_data_schemas/{id}/reload/")
async def schemas_reload(request: Request, services: Services) -> Response:
    """POST external_data_schemas/{id}/reload/: sync this schema with its method; 200, no body."""
    schema = services.get_schema(request.path_params["id"])
    services.engine.start(schema.id)
    return drf.empty()


@route("POST", "external_data_schemas/{id}/resync/")
async def schemas_resync(request: Request, services: Services) -> Response:
    """POST resync/: re-import every row, replacing the table atomically when the load is done."""
    schema = services.get_schema(request.path_params["id"])
    await services.stop_sync(schema.id, "Sync cancelled by a resync")
    services.engine.start(schema.id, replace_table=True)
    return drf.empty()


@route("GET", "external_data_schemas/{id}/logs/")
async def schemas_logs(request: Request, services: Services) -> Response:
    """GET external_data_schemas/{id}/logs/: the schema's sync log, newest first, filtered like
    PostHog's log entries (limit, after, before, level, search, instance_id) and paginated."""
    schema = services.get_schema(request.path_params["id"])
    entries = services.store.logs(schema.id, log_filter(request.query_params))
    return drf.page(request, entries, asdict)


@route("POST", "external_data_schemas/")
async def schemas_create(request: Request, services: Services) -> Response:
    """POST external_data_schemas/: schemas come from discovery only (405, like PostHog)."""
    raise errors.method_not_allowed("POST")
