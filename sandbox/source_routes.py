"""The `external_data_sources` endpoints."""

from __future__ import annotations

import fnmatch
from dataclasses import replace
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from . import drf, errors
from .connect import take_credential
from .connectors import (
    SUPPORTED_SOURCE_TYPES,
    ConnectionFailed,
    SourceError,
    Table,
    TableStats,
    Unreachable,
    postgres,
    postgres_cdc,
    source_configs,
)
from .discovery import default_schemas
from .routing import route
from .serializers import (
    connection_json,
    job_json,
    revenue_config,
    schema_json,
    source_json,
    webhook_info,
)
from .services import NewSource, Services, job_inputs_of, with_columns
from .store import Job, Schema, Source, iso, new_id, now
from .validation import (
    check_bulk_fields,
    check_prefix,
    schema_requests,
    source_type_choice,
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


@route("GET", "external_data_sources/")
async def sources_list(request: Request, services: Services) -> Response:
    """GET external_data_sources/ (search on type and prefix)."""
    items = drf.search(
        services.store.live_sources(),
        request.query_params.get("search"),
        lambda s: [s.source_type, s.prefix],
    )
    return drf.page(request, items, lambda s: source_json(services.store, s))


@route("POST", "external_data_sources/")
async def sources_create(request: Request, services: Services) -> Response:
    """POST external_data_sources/: check the prefix, the config and the credentials, discover
    the tables, create a schema for each listed one (for every one, with PostHog's defaults,
    when none is listed) and start the enabled syncs."""
    data = await drf.body(request)
    source_type = source_type_choice(data)
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
        raise errors.bad_request_message(
            f"The sandbox cannot create {source_type} sources. Supported source types: "
            f"{', '.join(SUPPORTED_SOURCE_TYPES)}."
        )
    if access_method == "direct":
        raise errors.bad_request_message("The sandbox supports only the warehouse access method.")
    check_prefix(prefix)
    validate_prefix(services.store, source_type, prefix)
    credential = take_credential(services, source_type, payload)
    cdc_wanted = drf.boolean(payload.get("cdc_enabled") or False, "cdc_enabled")
    if cdc_wanted and source_type != "Postgres":
        raise errors.bad_request_message(f"CDC is not supported for source type: {source_type}")
    job_inputs = job_inputs_of(payload)
    found = await services.inspect_new(source_type, job_inputs)
    tables = [table for table, _ in found]
    wanted = schema_requests(payload.get("schemas"), tables, cdc_enabled=cdc_wanted)
    if wanted is None:
        # Omitting `schemas` means "sync what you found", as PostHog's setup does.
        wanted = default_schemas(found)
    source_id = new_id()
    if cdc_wanted:
        # PostHog creates the slot (and its publication) before the source exists, and
        # refuses the source when that fails.
        job_inputs = await services.setup_cdc(source_id, job_inputs, payload)
    new = NewSource(
        source_type, job_inputs, prefix, data.get("description"), created_via, access_method
    )
    try:
        source = services.create_source(new, tables, wanted, source_id=source_id)
    except errors.ErrorAnswer:
        if cdc_wanted:
            await services.drop_cdc(replace_inputs(source_id, new))
        raise
    if credential is not None:  # single use: the source owns the details now
        services.store.delete_credential(credential.id)
    return drf.answer({"id": source.id}, 201)


@route("GET", "external_data_sources/{id}/")
async def sources_retrieve(request: Request, services: Services) -> Response:
    """GET external_data_sources/{id}/."""
    source = services.get_source(request.path_params["id"])
    return drf.answer(source_json(services.store, source))


@route("PATCH", "external_data_sources/{id}/")
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
        # The slot, publication and lag settings are made when CDC is set up; changed here,
        # the sync and the slot sweeper would act on a slot this source does not own.
        changed_cdc = sorted(
            k
            for k in postgres.CDC_INPUTS
            if k in incoming and incoming[k] != source.job_inputs.get(k)
        )
        if changed_cdc:
            raise errors.validation_error(
                f"{', '.join(changed_cdc)} cannot be changed here: change data capture's "
                "settings are made when it is set up. Nothing was changed.",
                "job_inputs",
            )
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
    auto_sync = drf.boolean(
        data.get("auto_sync_new_schemas", source.auto_sync_new_schemas), "auto_sync_new_schemas"
    )
    patterns = source.auto_sync_schema_patterns
    if "auto_sync_schema_patterns" in data:
        patterns = auto_sync_patterns(data["auto_sync_schema_patterns"])
    with services.store.lock:
        current = services.get_source(source.id)
        updated = replace(
            current,
            job_inputs=job_inputs,
            description=data.get("description", current.description),
            auto_sync_new_schemas=auto_sync,
            auto_sync_schema_patterns=patterns,
        )
        services.store.save(updated)
    return drf.answer(source_json(services.store, updated))


def auto_sync_patterns(value: Any) -> list[str] | None:
    """`auto_sync_schema_patterns` as PostHog's ListField checks it.

    Raises:
        ErrorAnswer: DRF's list or item error.
    """
    attr = "auto_sync_schema_patterns"
    if value is None:
        return None
    if not isinstance(value, list):
        raise errors.validation_error(
            f'Expected a list of items but got type "{type(value).__name__}".', attr, "not_a_list"
        )
    if len(value) > 100:
        raise errors.validation_error(
            "Ensure this field has no more than 100 elements.", attr, "max_length"
        )
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise errors.validation_error("This field may not be blank.", attr, "blank")
        if len(item) > 250:
            raise errors.validation_error(
                "Ensure this field has no more than 250 characters.", attr, "max_length"
            )
    return list(value)


@route("DELETE", "external_data_sources/{id}/")
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
    await services.drop_cdc(source)
    return drf.empty(204)


def replace_inputs(source_id: str, new: NewSource) -> Source:
    """The source a failed create would have made: what `drop_cdc` needs to clean up after it."""
    return Source(
        id=source_id,
        source_type=new.source_type,
        prefix=new.prefix,
        description=None,
        job_inputs=new.job_inputs,
        created_at="",
    )


# Why apply_sync_defaults could not fill a schema's settings: its table is not on the source.
NOT_DISCOVERED = "not found on the source; pull new schemas to refresh the table list"


@route("PATCH", "external_data_sources/{id}/bulk_update_schemas/")
async def sources_bulk_update_schemas(request: Request, services: Services) -> Response:
    """PATCH external_data_sources/{id}/bulk_update_schemas/, as current PostHog does it: a
    field error refuses the whole batch; then each schema is saved on its own, and those that
    cannot be are named in a 400 while the others stay saved."""
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
    for index, item in enumerate(items):
        check_bulk_fields(item, f"schemas__{index}__")
    ids = [str(item["id"]) for item in items]
    if len(set(ids)) != len(ids):
        raise errors.validation_error("Schema updates must contain unique ids")
    store = services.store
    source = services.get_source(source_id)
    owned = {s.id: s for s in store.source_schemas(source.id)}
    if any(i not in owned for i in ids):
        raise errors.validation_error("One or more schemas could not be found for this source")
    # The bulk serializer has no lookback field: PostHog drops it.
    changes = {
        i: {k: v for k, v in item.items() if k not in ("id", "incremental_field_lookback_seconds")}
        for i, item in zip(ids, items, strict=True)
    }
    failed = await _fill_sync_defaults(services, source, owned, changes)
    capable = {i: await services.xmin_capable(owned[i], change) for i, change in changes.items()}
    staged = []
    # Validate and save each schema under the store lock, from the schema as it is now (a sync
    # that finished while the body was read is kept). Nothing in here awaits or takes the
    # engine lock (start() takes it before the store lock): syncs start after it is released.
    with store.lock:
        for schema_id, change in changes.items():
            if schema_id in failed:
                continue
            before = services.get_schema(schema_id)
            try:
                updated = validate_settings(
                    before,
                    change,
                    source_type=source.source_type,
                    cdc_enabled=postgres_cdc.settings_of(source.job_inputs) is not None,
                    xmin_capable=capable[schema_id],
                )
            except errors.ErrorAnswer as exc:
                failed[schema_id] = reason_of(exc)
                continue
            store.save(updated)
            staged.append((before, updated))
    for before, updated in staged:
        if updated.should_sync and not before.should_sync:
            services.engine.start(updated.id)
    if failed:
        reasons = "; ".join(f"{owned[i].name} ({reason})" for i, reason in failed.items())
        raise errors.ErrorAnswer(
            400,
            {
                "type": "server_error",
                "code": "bulk_schema_save_failed",
                "detail": f"These schemas in the batch could not be saved: {reasons}. Any other "
                "schemas in the batch were saved successfully — retry the ones listed here.",
                "attr": None,
            },
        )
    return drf.answer([schema_json(store, store.schemas[before.id]) for before, _ in staged])


def reason_of(exc: errors.ErrorAnswer) -> str:
    """A refused change as PostHog names it in a bulk answer: `field: message`, or the message."""
    detail = str(exc.body.get("detail") or exc.body.get("message") or exc.body)
    attr = exc.body.get("attr")
    return f"{attr}: {detail}" if attr else detail


async def _fill_sync_defaults(
    services: Services,
    source: Source,
    owned: dict[str, Schema],
    changes: dict[str, dict[str, Any]],
) -> dict[str, str]:
    """PostHog's `apply_sync_defaults`: a schema with no sync method, given none, gets the
    default settings of its table (the caller's values win; enabling stays the caller's).
    Return the schemas that could not get them, with why."""
    needing = [
        i
        for i, change in changes.items()
        if change.pop("apply_sync_defaults", False)
        and change.get("sync_type") is None
        and owned[i].sync_type is None
    ]
    if not needing:
        return {}
    try:
        found = await services.inspect(source.source_type, source.job_inputs)
    except SourceError:
        reason = "could not read the source to pick default sync settings; check the source "
        return {i: reason + "credentials" for i in needing}
    defaults = default_schemas(found)
    failed = {}
    for schema_id in needing:
        settings = defaults.get(owned[schema_id].name)
        if settings is None:
            failed[schema_id] = (
                "not found on the source; pull new schemas to refresh the table list"
            )
            continue
        change = changes[schema_id]
        for key, value in settings.items():
            if key not in ("name", "should_sync") and change.get(key) is None:
                change[key] = value
    return failed


@route("POST", "external_data_sources/{id}/create_webhook/")
@route("POST", "external_data_sources/{id}/delete_webhook/")
async def sources_webhook(request: Request, services: Services) -> Response:
    """POST create_webhook/ and delete_webhook/: these source types have no webhooks."""
    services.get_source(request.path_params["id"])
    raise errors.bad_request_message("This source type does not support webhooks")


@route("POST", "external_data_sources/{id}/repair_cdc/")
async def sources_repair_cdc(request: Request, services: Services) -> Response:
    """POST repair_cdc/, as PostHog's `repair_cdc_source` does it: only on evidence that the slot
    or publication is gone (a sync failed for it, or the database says so), stop the CDC syncs,
    forget every CDC table's position, recreate the slot (and the publication PostHog manages),
    clear the errors and start the active tables' fresh snapshots."""
    source = services.get_source(request.path_params["id"])
    if source.source_type != "Postgres":
        raise errors.bad_request_message(
            f"CDC is not supported for source type: {source.source_type}"
        )
    settings = postgres_cdc.settings_of(source.job_inputs)
    if settings is None:
        raise errors.bad_request_message("CDC is not enabled on this source.")
    if source.id in _REPAIRING:
        raise errors.ErrorAnswer(
            409,
            {"message": "A repair is already running for this source. Try again in a few minutes."},
        )
    _REPAIRING.add(source.id)
    try:
        reset = await _repair(services, source, settings)
    finally:
        _REPAIRING.discard(source.id)
    return drf.answer({"success": True, "schemas_reset": reset})


# The sources whose repair is running (PostHog's per-source Redis lock).
_REPAIRING: set[str] = set()
_LOST = (postgres_cdc.SLOT_MISSING, postgres_cdc.PUBLICATION_MISSING)


async def _repair(services: Services, source: Source, settings: postgres_cdc.CdcSettings) -> int:
    store = services.store
    every = [s for s in store.source_schemas(source.id) if s.sync_type == "cdc"]
    active = [s for s in every if s.should_sync]
    if not active:
        raise errors.bad_request_message(
            "There are no active CDC schemas on this source to repair."
        )
    broken = any(s.latest_error in _LOST for s in active)

    def probe() -> postgres_cdc.SlotStatus:
        with postgres.connect(source.job_inputs) as conn:
            return postgres_cdc.status(conn, settings)

    try:
        if not broken:
            found = await anyio.to_thread.run_sync(probe)
            if found.slot_exists and found.publication_exists:
                raise errors.bad_request_message(
                    "CDC looks healthy on this source — the replication slot and publication "
                    "both exist. Repair is only available when one of them is missing, because "
                    "it forces a full re-sync of every CDC schema."
                )
        for schema in every:
            await services.stop_sync(schema.id, "Sync cancelled by a CDC repair")
        namespace = postgres.schema_name(source.job_inputs)

        def recreate() -> str:
            for schema in every:
                services.warehouse.reset_cdc(schema.id)
            with services.engine.slot_lock(source.id), postgres.connect(source.job_inputs) as conn:
                tables = [(namespace, s.name) for s in active]
                return postgres_cdc.recreate(conn, settings, tables)

        point = await anyio.to_thread.run_sync(recreate)
    except SourceError as exc:
        raise errors.bad_request_message(
            f"Could not connect to source to repair CDC: {exc}"
        ) from exc
    with store.lock:
        current = services.get_source(source.id)
        store.save(
            replace(current, job_inputs={**current.job_inputs, "cdc_consistent_point": point})
        )
        for schema in every:
            latest = store.schemas[schema.id]
            store.save(replace(latest, latest_error=None))
    for schema in active:
        services.engine.start(schema.id)
    return len(active)


@route("POST", "external_data_sources/{id}/update_webhook_inputs/")
async def sources_update_webhook_inputs(request: Request, services: Services) -> Response:
    """POST update_webhook_inputs/: PostHog's checks in its order; no source type here takes
    webhooks, so a configured source gets its answer for those."""
    source = services.get_source(request.path_params["id"])
    if not source.job_inputs:
        raise errors.bad_request_message("Source has no configuration")
    raise errors.bad_request_message("This source type does not support webhooks")


@route("GET", "external_data_sources/{id}/webhook_info/")
async def sources_webhook_info(request: Request, services: Services) -> Response:
    """GET external_data_sources/{id}/webhook_info/: no source type here takes webhooks."""
    services.get_source(request.path_params["id"])
    return drf.answer(webhook_info())


@route("GET", "external_data_sources/wizard/")
async def sources_wizard(request: Request, services: Services) -> Response:
    """GET external_data_sources/wizard/: every source type's setup form, by type; filtered on
    the server by `?source_type=A,B` (400 naming the unknown ones)."""
    configs = source_configs()
    requested = request.query_params.get("source_type")
    if requested:
        wanted = [t.strip() for t in requested.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in configs]
        if unknown:
            raise errors.bad_request_message(
                f"Unknown source_type(s): {', '.join(sorted(unknown))}. Omit source_type to list "
                "every available type."
            )
        configs = {t: config for t, config in configs.items() if t in wanted}
    response = drf.answer(configs)
    # The catalog is the same for everyone and changes only with the code, as in PostHog.
    response.headers["Cache-Control"] = "private, max-age=600"
    return response


@route("GET", "external_data_sources/connections/")
async def sources_connections(request: Request, services: Services) -> Response:
    """GET external_data_sources/connections/: the sources usable as direct-query connections
    (direct access, or live queries enabled), newest first; a plain list."""
    usable = [
        s
        for s in services.store.live_sources()
        if s.access_method == "direct" or s.direct_query_enabled
    ]
    return drf.answer([connection_json(s) for s in usable])


@route("GET", "external_data_sources/{id}/jobs/")
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


@route("POST", "external_data_sources/{id}/refresh_schemas/")
async def sources_refresh_schemas(request: Request, services: Services) -> Response:
    """POST refresh_schemas/: add schemas for new tables, retire those for vanished tables."""
    store = services.store
    source = services.get_source(request.path_params["id"])
    if not source.job_inputs:
        raise errors.bad_request_message("Source has no configuration.")
    try:
        found = await services.inspect(source.source_type, source.job_inputs)
    except SourceError as exc:
        raise errors.bad_request_message(_refresh_error(exc)) from exc
    tables = [table for table, _ in found]
    seen = {t.name: t for t in tables}
    created = iso(now()) or ""
    with store.lock:
        existing = {s.name: s for s in store.source_schemas(source.id)}
        for name, table in seen.items():
            schema = existing.get(name) or Schema(
                id=new_id(), source_id=source.id, name=name, created_at=created
            )
            store.save(with_columns(schema, table))
    new_names = [name for name in seen if name not in existing]
    auto_enabled = _auto_enable(services, source, new_names, found)
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
    return drf.answer(
        {
            "added": len(new_names),
            "deleted": len(gone),
            "auto_enabled": len(auto_enabled),
            "total_tables_seen": len(tables),
        }
    )


def _auto_enable(
    services: Services, source: Source, names: list[str], found: list[tuple[Table, TableStats]]
) -> list[str]:
    """PostHog's `auto_enable_new_schemas`: with the source's auto_sync_new_schemas on, enable
    the new tables its patterns match (all, without patterns) with the default settings, and
    start their first syncs; return their names."""
    if not source.auto_sync_new_schemas or not names:
        return []
    defaults = default_schemas([(t, st) for t, st in found if t.name in names])
    enabled = []
    with services.store.lock:
        for schema in services.store.source_schemas(source.id):
            settings = defaults.get(schema.name)
            if settings is None or not settings["should_sync"] or schema.sync_type is not None:
                continue
            if not matches_auto_sync(schema.name, source.auto_sync_schema_patterns):
                continue
            services.store.save(
                replace(
                    schema,
                    should_sync=True,
                    sync_type=settings["sync_type"],
                    incremental_field=settings.get("incremental_field"),
                    incremental_field_type=settings.get("incremental_field_type"),
                    primary_key_columns=settings.get("primary_key_columns"),
                )
            )
            enabled.append(schema.id)
    for schema_id in enabled:
        services.engine.start(schema_id)
    return enabled


def matches_auto_sync(name: str, patterns: list[str] | None) -> bool:
    """PostHog's glob match of a new table's name (qualified or bare, any case)."""
    cleaned = [p.strip().lower() for p in patterns or [] if isinstance(p, str) and p.strip()]
    if not cleaned:
        return True
    candidates = {name.lower(), name.rpartition(".")[2].lower()}
    return any(fnmatch.fnmatchcase(c, p) for p in cleaned for c in candidates)


def _refresh_error(exc: SourceError) -> str:
    reason = exc.reason if isinstance(exc, ConnectionFailed) else None
    message = (
        _REFRESH_ERRORS.get(reason, "Could not fetch schemas from source.")
        if reason
        else ("Could not fetch schemas from source.")
    )
    hint = exc.hint if isinstance(exc, ConnectionFailed) else ""
    return f"{message} {hint}" if hint else message


@route("POST", "external_data_sources/{id}/reload/")
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


@route("PATCH", "external_data_sources/{id}/revenue_analytics_config/")
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
