"""The `external_data_sources` endpoints."""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from posthog_warehouse_mcp.sandbox import drf, errors
from posthog_warehouse_mcp.sandbox.connectors import (
    SUPPORTED_SOURCE_TYPES,
    ConnectionFailed,
    SourceError,
    Unreachable,
    source_configs,
)
from posthog_warehouse_mcp.sandbox.serializers import (
    connection_json,
    job_json,
    revenue_config,
    schema_json,
    source_json,
    webhook_info,
)
from posthog_warehouse_mcp.sandbox.services import NewSource, Services, job_inputs_of, with_columns
from posthog_warehouse_mcp.sandbox.store import Job, Schema, iso, new_id, now
from posthog_warehouse_mcp.sandbox.validation import (
    schema_requests,
    validate_prefix,
    validate_settings,
)

JOBS_LIMIT = 50
# What refresh_schemas says, in place of the create endpoint's message, for a known cause.
_REFRESH_ERRORS = {
    Unreachable.CREDENTIALS: "Could not authenticate with the source. Check the connection "
    "credentials.",
    Unreachable.HOST: "Could not resolve the source host.",
    Unreachable.PORT: "Could not connect to the source. Check the host, port, and network access.",
    Unreachable.TIMEOUT: "Connection timed out while fetching schemas from the source.",
}


async def sources_list(request: Request, services: Services) -> Response:
    """GET external_data_sources/ (search on type and prefix)."""
    items = drf.search(
        services.store.live_sources(),
        request.query_params.get("search"),
        lambda s: [s.source_type, s.prefix],
    )
    return drf.page(request, items, lambda s: source_json(services.store, s))


async def sources_create(request: Request, services: Services) -> Response:
    """POST external_data_sources/: check credentials, discover tables, start enabled syncs."""
    data = await drf.body(request)
    source_type = data.get("source_type")
    if source_type in (None, ""):
        raise errors.required("source_type")
    if data.get("payload") is None:
        raise errors.required("payload")
    payload = drf.expect_dict(data["payload"], "payload")
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
    validate_prefix(services.store, source_type, prefix)
    job_inputs = job_inputs_of(payload)
    try:
        tables = await services.discover(source_type, job_inputs)
    except SourceError as exc:
        raise errors.message(str(exc)) from exc
    wanted = schema_requests(payload.get("schemas"), tables)
    new = NewSource(
        source_type, job_inputs, prefix, data.get("description"), created_via, access_method
    )
    source = services.create_source(new, tables, wanted)
    return drf.answer({"id": source.id}, 201)


async def sources_retrieve(request: Request, services: Services) -> Response:
    """GET external_data_sources/{id}/."""
    source = services.get_source(request.path_params["id"])
    return drf.answer(source_json(services.store, source))


async def sources_partial_update(request: Request, services: Services) -> Response:
    """PATCH external_data_sources/{id}/: description and job_inputs (prefix is kept)."""
    source = services.get_source(request.path_params["id"])
    data = await drf.body(request)
    if "access_method" in data and data["access_method"] != source.access_method:
        raise errors.validation_error(
            "Access method cannot be changed. Create a new source instead."
        )
    job_inputs = source.job_inputs
    if "job_inputs" in data:
        incoming = drf.expect_dict(data["job_inputs"], "job_inputs")
        if (
            "host" in incoming
            and incoming["host"] != source.job_inputs.get("host")
            and "password" not in incoming
        ):
            raise errors.validation_error(
                "Changing the connection host requires re-entering your credentials."
            )
        job_inputs = {**source.job_inputs, **incoming}
        try:
            await services.discover(source.source_type, job_inputs)
        except SourceError as exc:
            raise errors.validation_error(str(exc)) from exc
    with services.store.lock:
        current = services.get_source(source.id)
        updated = replace(
            current,
            job_inputs=job_inputs,
            description=data.get("description", current.description),
        )
        services.store.save(updated)
    return drf.answer(source_json(services.store, updated))


async def sources_destroy(request: Request, services: Services) -> Response:
    """DELETE external_data_sources/{id}/: stop syncs, drop the tables, delete everything."""
    store = services.store
    # Deleted first: from here on neither a reload nor the scheduler starts a sync that could
    # publish a table after its data was dropped (the engine refuses deleted schemas/sources).
    with store.lock:
        source = services.get_source(request.path_params["id"])
        schemas = store.source_schemas(source.id)
        store.save(replace(source, deleted=True))
        for schema in schemas:
            store.save(replace(schema, deleted=True))
    for schema in schemas:
        await services.drop_data(schema.id)
    return drf.empty(204)


async def sources_bulk_update_schemas(request: Request, services: Services) -> Response:
    """PATCH external_data_sources/{id}/bulk_update_schemas/: all-or-nothing schema settings."""
    source_id = services.get_source(request.path_params["id"]).id
    data = await drf.body(request)
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
    if not all(isinstance(item, dict) and item.get("id") for item in items):
        raise errors.required("schemas")
    ids = [str(item["id"]) for item in items]
    if len(set(ids)) != len(ids):
        raise errors.validation_error("Schema updates must contain unique ids")
    store = services.store
    # Read, validate every item and save under the store lock, from the schemas as they are now
    # (a sync that finished while the body was read is kept). Nothing in here awaits or takes the
    # engine lock (start() takes it before the store lock): syncs start after it is released.
    with store.lock:
        source = services.get_source(source_id)
        owned = {s.id: s for s in store.source_schemas(source.id)}
        if any(i not in owned for i in ids):
            raise errors.validation_error("One or more schemas could not be found for this source")
        staged = [
            (
                owned[i],
                validate_settings(
                    owned[i],
                    {k: v for k, v in item.items() if k != "id"},
                    source_type=source.source_type,
                ),
            )
            for i, item in zip(ids, items, strict=True)
        ]
        for _, updated in staged:
            store.save(updated)
    for before, updated in staged:
        if updated.should_sync and not before.should_sync:
            services.engine.start(updated.id)
    return drf.answer([schema_json(store, store.schemas[before.id]) for before, _ in staged])


async def sources_webhook(request: Request, services: Services) -> Response:
    """POST create_webhook/ and delete_webhook/: these source types have no webhooks."""
    services.get_source(request.path_params["id"])
    raise errors.message("This source type does not support webhooks")


async def sources_update_webhook_inputs(request: Request, services: Services) -> Response:
    """POST update_webhook_inputs/: PostHog's checks in its order; no source type here takes
    webhooks, so a configured source gets its answer for those."""
    source = services.get_source(request.path_params["id"])
    if not source.job_inputs:
        raise errors.message("Source has no configuration")
    raise errors.message("This source type does not support webhooks")


async def sources_webhook_info(request: Request, services: Services) -> Response:
    """GET external_data_sources/{id}/webhook_info/: no source type here takes webhooks."""
    services.get_source(request.path_params["id"])
    return drf.answer(webhook_info())


async def sources_wizard(request: Request, services: Services) -> Response:
    """GET external_data_sources/wizard/: every source type's setup form, by type; filtered on
    the server by `?source_type=A,B` (400 naming the unknown ones)."""
    configs = source_configs()
    requested = request.query_params.get("source_type")
    if requested:
        wanted = [t.strip() for t in requested.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in configs]
        if unknown:
            raise errors.message(
                f"Unknown source_type(s): {', '.join(sorted(unknown))}. Omit source_type to list "
                "every available type."
            )
        configs = {t: config for t, config in configs.items() if t in wanted}
    response = drf.answer(configs)
    # The catalog is the same for everyone and changes only with the code, as in PostHog.
    response.headers["Cache-Control"] = "private, max-age=600"
    return response


async def sources_connections(request: Request, services: Services) -> Response:
    """GET external_data_sources/connections/: the sources usable as direct-query connections
    (direct access, or live queries enabled), newest first; a plain list."""
    usable = [
        s
        for s in services.store.live_sources()
        if s.access_method == "direct" or s.direct_query_enabled
    ]
    return drf.answer([connection_json(s) for s in usable])


async def sources_jobs(request: Request, services: Services) -> Response:
    """GET external_data_sources/{id}/jobs/: newest first, at most 50, not paginated."""
    store = services.store
    source = services.get_source(request.path_params["id"])
    jobs = store.source_jobs(source.id)
    after, before = request.query_params.get("after"), request.query_params.get("before")
    try:
        after_t = drf.parse_time(after) if after else None
        before_t = drf.parse_time(before) if before else None
    except ValueError as exc:
        raise errors.validation_error("after and before must be ISO 8601 timestamps.") from exc
    names = request.query_params.getlist("schemas")

    def keep(job: Job) -> bool:
        created = drf.parse_time(job.created_at)
        if after_t is not None and created <= after_t:
            return False
        if before_t is not None and created >= before_t:
            return False
        if names:
            schema = store.schemas.get(job.schema_id)
            return schema is not None and schema.name in names
        return True

    return drf.answer([job_json(store, j) for j in jobs if keep(j)][:JOBS_LIMIT])


async def sources_refresh_schemas(request: Request, services: Services) -> Response:
    """POST refresh_schemas/: add schemas for new tables, retire those for vanished tables."""
    store = services.store
    source = services.get_source(request.path_params["id"])
    if not source.job_inputs:
        raise errors.message("Source has no configuration.")
    try:
        tables = await services.discover(source.source_type, source.job_inputs)
    except SourceError as exc:
        raise errors.message(_refresh_error(exc)) from exc
    seen = {t.name: t for t in tables}
    created = iso(now()) or ""
    with store.lock:
        existing = {s.name: s for s in store.source_schemas(source.id)}
        for name, table in seen.items():
            schema = existing.get(name) or Schema(
                id=new_id(), source_id=source.id, name=name, created_at=created
            )
            store.save(with_columns(schema, table))
    gone = [schema for name, schema in existing.items() if name not in seen]
    for schema in gone:
        await services.stop_sync(schema.id, "Sync cancelled because the table no longer exists")
        with store.lock:
            current = store.schemas[schema.id]
            if current.table_name is None:
                store.save(replace(current, deleted=True))
            else:
                # Keep the synced data queryable; only stop syncing a table that no longer exists.
                store.save(replace(current, should_sync=False, status="Completed"))
    added = len(seen.keys() - existing.keys())
    return drf.answer({"added": added, "deleted": len(gone), "total_tables_seen": len(tables)})


def _refresh_error(exc: SourceError) -> str:
    reason = exc.reason if isinstance(exc, ConnectionFailed) else None
    if reason is None or reason not in _REFRESH_ERRORS:
        return "Could not fetch schemas from source."
    return _REFRESH_ERRORS[reason]


async def sources_reload(request: Request, services: Services) -> Response:
    """POST external_data_sources/{id}/reload/: sync every enabled schema; 200, no body."""
    store = services.store
    source = services.get_source(request.path_params["id"])
    for schema in store.source_schemas(source.id):
        if schema.should_sync:
            services.engine.start(schema.id)
    with store.lock:
        store.save(replace(services.get_source(source.id), status="Running"))
    return drf.empty()


async def sources_revenue_config(request: Request, services: Services) -> Response:
    """PATCH revenue_analytics_config/: persist the flags, answer with the full source."""
    source_id = services.get_source(request.path_params["id"]).id
    data = await drf.body(request)
    flags: dict[str, bool] = {
        key: drf.boolean(data[key], key)
        for key in ("enabled", "include_invoiceless_charges")
        if key in data
    }
    with services.store.lock:
        current = services.get_source(source_id)
        updated = replace(current, revenue_analytics_config={**revenue_config(current), **flags})
        services.store.save(updated)
    return drf.answer(source_json(services.store, updated))
