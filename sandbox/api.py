"""The HTTP API: PostHog's external data source and schema endpoints, and its data-health
endpoint, as Starlette routes.

The route table is the sandbox's own, written from PostHog's API rather than derived from the
MCP server's endpoint table, so that the contract tests compare two independent descriptions.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import drf, errors
from .connect import (
    PAGE_PREFIX,
    connect_page,
    sources_connect_link,
    sources_stored_credentials,
)
from .errors import ApiError
from .health_routes import data_health_issues
from .query_routes import query
from .schema_routes import (
    schemas_cancel,
    schemas_create,
    schemas_delete_data,
    schemas_destroy,
    schemas_incremental_fields,
    schemas_list,
    schemas_logs,
    schemas_partial_update,
    schemas_reload,
    schemas_resync,
    schemas_retrieve,
)
from .services import Services
from .setup_routes import (
    sources_check_cdc_prerequisites,
    sources_database_schema,
    sources_preview_resource,
    sources_setup,
)
from .source_routes import (
    sources_bulk_update_schemas,
    sources_connections,
    sources_create,
    sources_destroy,
    sources_jobs,
    sources_list,
    sources_partial_update,
    sources_refresh_schemas,
    sources_reload,
    sources_retrieve,
    sources_revenue_config,
    sources_update_webhook_inputs,
    sources_webhook,
    sources_webhook_info,
    sources_wizard,
)

logger = logging.getLogger(__name__)

ENVIRONMENT_ID = "1"

Handler = Callable[[Request, Services], Awaitable[Response]]

# In matching order: the list-level actions come before `{id}/`, which would take their names.
ROUTES: list[tuple[str, dict[str, Handler]]] = [
    ("external_data_sources/", {"GET": sources_list, "POST": sources_create}),
    ("external_data_sources/connections/", {"GET": sources_connections}),
    ("external_data_sources/wizard/", {"GET": sources_wizard}),
    ("external_data_sources/connect_link/", {"GET": sources_connect_link}),
    ("external_data_sources/stored_credentials/", {"GET": sources_stored_credentials}),
    ("external_data_sources/database_schema/", {"POST": sources_database_schema}),
    ("external_data_sources/setup/", {"POST": sources_setup}),
    ("external_data_sources/preview_resource/", {"POST": sources_preview_resource}),
    ("external_data_sources/check_cdc_prerequisites/", {"POST": sources_check_cdc_prerequisites}),
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
    ("external_data_sources/{id}/update_webhook_inputs/", {"POST": sources_update_webhook_inputs}),
    ("external_data_sources/{id}/webhook_info/", {"GET": sources_webhook_info}),
    ("external_data_schemas/", {"GET": schemas_list, "POST": schemas_create}),
    (
        "external_data_schemas/{id}/",
        {"GET": schemas_retrieve, "PATCH": schemas_partial_update, "DELETE": schemas_destroy},
    ),
    ("external_data_schemas/{id}/cancel/", {"POST": schemas_cancel}),
    ("external_data_schemas/{id}/delete_data/", {"DELETE": schemas_delete_data}),
    ("external_data_schemas/{id}/incremental_fields/", {"POST": schemas_incremental_fields}),
    ("external_data_schemas/{id}/logs/", {"GET": schemas_logs}),
    ("external_data_schemas/{id}/reload/", {"POST": schemas_reload}),
    ("external_data_schemas/{id}/resync/", {"POST": schemas_resync}),
    ("data_warehouse/data_health_issues/", {"GET": data_health_issues}),
    ("query/", {"POST": query}),
]


def check_auth(request: Request, api_key: str | None) -> None:
    """PostHog's personal API key check; `api_key=None` accepts any bearer, or none.

    Raises:
        ApiError: 401, a missing or wrong key.
    """
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise errors.missing_key()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), api_key):
        raise errors.invalid_key()


def _endpoint(
    services: Services, api_key: str | None, methods: dict[str, Handler]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            check_auth(request, api_key)
            # "@current" is PostHog's alias for the caller's current project: here, the only one.
            if request.path_params.get("environment_id") not in (ENVIRONMENT_ID, "@current"):
                raise errors.not_found()
            handler = methods.get(request.method)
            if handler is None:
                raise errors.method_not_allowed(request.method)
            return await handler(request, services)
        except ApiError as exc:
            return drf.answer(exc.body, exc.status)

    return endpoint


def _page(services: Services) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await connect_page(request, services)

    return endpoint


# Starlette's routing answers 404 (no route) and 405 (a method no route takes) itself.
async def _not_found(request: Request, exc: Exception) -> Response:
    return drf.answer(errors.not_found().body, 404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return drf.answer(errors.method_not_allowed(request.method).body, 405)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return drf.answer(
        {
            "type": "server_error",
            "code": "error",
            "detail": "A server error occurred.",
            "attr": None,
        },
        500,
    )


def build_app(services: Services, *, api_key: str | None = None) -> Starlette:
    """The ASGI app for a started sandbox (no lifespan: the caller owns start and stop)."""
    routes = [
        Route(
            f"/api/{prefix}/{{environment_id}}/{path}",
            _endpoint(services, api_key, methods),
            methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
        )
        for prefix in ("environments", "projects")
        for path, methods in ROUTES
    ]
    # The connect page: for a browser, behind its own one-time token, not the API key.
    routes.append(Route(PAGE_PREFIX + "{token}", _page(services), methods=["GET", "POST"]))
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _server_error},
    )
    # Tests reach the store, warehouse and engine through the app they were given.
    app.state.services = services
    return app
