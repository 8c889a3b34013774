"""The list-level `external_data_sources` actions that take connection details rather than a
source: `database_schema/` (discover without storing), `setup/` (create with default schemas),
`check_cdc_prerequisites/` (Postgres only) and `preview_resource/` (Custom REST sources only)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from . import drf, errors
from .connect import take_credential
from .connectors import (
    SourceError,
    known_source_type,
    postgres,
    postgres_cdc,
)
from .discovery import default_schemas, table_entry
from .routing import route
from .services import NewSource, Services, job_inputs_of
from .validation import (
    check_prefix,
    source_type_choice,
    validate_prefix,
)

logger = logging.getLogger(__name__)

NO_TABLES = "No tables found for this source. Check the credentials and permissions."
# The source types whose CDC prerequisites can be checked (PostHog's `source_type_supports_cdc`).
CDC_SOURCE_TYPES = ("Postgres",)
# The keys of a `check_cdc_prerequisites` body that are not connection fields.
_CDC_OPTIONS = (
    "source_type",
    "tables",
    "cdc_management_mode",
    "cdc_slot_name",
    "cdc_publication_name",
)


def unresolved_secrets(values: dict[str, Any]) -> None:
    """PostHog's check for `{"secretRef": ...}` values a client forgot to resolve.

    Raises:
        ErrorAnswer: 400 naming the keys.
    """
    keys = [k for k, v in values.items() if isinstance(v, dict) and "secretRef" in v]
    if keys:
        raise errors.bad_request_message(
            f"Unresolved secret reference(s) for: {', '.join(keys)}. These fields are still "
            "`{'secretRef': ...}` objects — PostHog cannot resolve them. Resolve the secret to "
            "its real value before calling (or collect credentials via "
            "data-warehouse-source-connect-link and pass the resulting credential_id instead)."
        )


@route("POST", "external_data_sources/database_schema/")
async def sources_database_schema(request: Request, services: Services) -> Response:
    """POST external_data_sources/database_schema/: the body is the connection fields, flat,
    beside `source_type`; answers the tables a source would offer. Nothing is stored."""
    data = await drf.body(request)
    source_type = data.get("source_type")
    if not source_type:
        raise errors.bad_request_message("Missing required parameter: source_type")
    unresolved_secrets(data)
    if not isinstance(source_type, str) or not known_source_type(source_type):
        raise errors.bad_request_message(f"Unknown source_type '{source_type}'")
    job_inputs = job_inputs_of(data, "source_type", "access_method")
    found = await services.inspect_new(source_type, job_inputs)
    return drf.answer([table_entry(table, stats) for table, stats in found])


@route("POST", "external_data_sources/setup/")
async def sources_setup(request: Request, services: Services) -> Response:
    """POST external_data_sources/setup/: check, discover, enable every readable table with
    PostHog's default sync settings and create the source in one call; 201 `{"id"}`."""
    data = await drf.body(request)
    source_type = source_type_choice(data)
    payload = drf.expect_dict(data.get("payload") or {}, "payload")
    prefix = data.get("prefix") or None
    description = data.get("description")
    for attr, value, limit in (("prefix", prefix, 100), ("description", description, 400)):
        if value is not None and len(str(value)) > limit:
            raise errors.validation_error(
                f"Ensure this field has no more than {limit} characters.", attr, "max_length"
            )
    if drf.boolean(data.get("direct_query_enabled") or False, "direct_query_enabled"):
        raise errors.bad_request_message("The sandbox does not support direct query.")
    unresolved_secrets(payload)
    credential = take_credential(services, source_type, payload)
    check_prefix(prefix)
    validate_prefix(services.store, source_type, prefix)
    job_inputs = job_inputs_of(payload, "credential_id")
    found = await services.inspect_new(source_type, job_inputs)
    if not found:
        raise errors.bad_request_message(NO_TABLES)
    wanted = default_schemas(found)
    new = NewSource(source_type, job_inputs, prefix, description, "mcp")
    source = services.create_source(new, [table for table, _ in found], wanted)
    if credential is not None:  # single use: the source owns the details now
        services.store.delete_credential(credential.id)
    return drf.answer({"id": source.id}, 201)


@route("POST", "external_data_sources/preview_resource/")
async def sources_preview_resource(request: Request, services: Services) -> Response:
    """POST external_data_sources/preview_resource/: only Custom REST sources can preview, and
    the sandbox has none; PostHog's serializer checks come first."""
    data = await drf.body(request)
    source_type = source_type_choice(data)
    if data.get("resource_name") in (None, ""):
        raise errors.required("resource_name")
    raise errors.bad_request_message(f"Preview is not supported for source type '{source_type}'.")


@route("POST", "external_data_sources/check_cdc_prerequisites/")
async def sources_check_cdc_prerequisites(request: Request, services: Services) -> Response:
    """POST external_data_sources/check_cdc_prerequisites/: connect to the Postgres given (its
    connection fields flat beside `source_type`) and answer `{"valid", "errors"}`; 400 when it
    cannot be checked at all."""
    data = await drf.body(request)
    if data.get("source_type") not in CDC_SOURCE_TYPES:
        raise errors.bad_request_message(
            "CDC prerequisite checks are only supported for CDC enabled sources."
        )
    # PostHog's order: the config, the host, then the management mode.
    job_inputs = services.connectable("Postgres", job_inputs_of(data, *_CDC_OPTIONS))
    mode = data.get("cdc_management_mode", "posthog")
    if mode not in postgres_cdc.MODES:
        raise errors.bad_request_message("cdc_management_mode must be 'posthog' or 'self_managed'.")
    tables = data.get("tables") or []
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise errors.bad_request_message("tables must be a list of table names.")
    publication = data.get("cdc_publication_name") or None

    def check() -> list[str]:
        with postgres.connect(job_inputs) as conn:
            return postgres_cdc.prerequisite_errors(
                conn,
                mode=mode,
                tables=tables,
                schema=postgres.schema_name(job_inputs),
                publication=publication,
            )

    try:
        found = await anyio.to_thread.run_sync(check)
    except Exception as exc:  # PostHog answers 400 for any failure to check, with its text
        if not isinstance(exc, SourceError):
            logger.info("CDC prerequisite check failed", exc_info=exc)
        reason = str(exc.__cause__ or exc).strip()
        raise errors.bad_request_message(
            f"Could not connect to Postgres to check prerequisites: {reason}"
        ) from exc
    return drf.answer({"valid": not found, "errors": found})
