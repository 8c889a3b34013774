"""The HTTP API: PostHog's external data source and schema endpoints, and its data-health
endpoint, as Starlette routes.

Each handler module declares its routes beside its handlers (sandbox/routing.py): the sandbox's
own route table, written from PostHog's API rather than derived from the MCP server's endpoint
table, so that the contract tests compare two independent descriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..loopback.tokens import tokens_match
from . import (
    connect,
    drf,
    errors,
    health_routes,
    query_routes,
    schema_routes,
    setup_routes,
    source_routes,
)
from .access import ENVIRONMENT_ID
from .connect import CONNECT_PAGE, connect_page
from .errors import ErrorAnswer
from .oauth import OAuthProvider
from .routing import Handler, declared_routes
from .services import Services

logger = logging.getLogger(__name__)

# The modules whose handlers this API serves: each declares its routes (sandbox/routing.py).
ROUTE_MODULES = (source_routes, schema_routes, setup_routes, connect, health_routes, query_routes)
# Every route they declare, in matching order.
ROUTES: list[tuple[str, dict[str, Handler]]] = declared_routes()


def check_auth(request: Request, api_key: str | None, oauth: OAuthProvider | None = None) -> None:
    """PostHog's check: the personal API key, or a live OAuth access token the sandbox issued;
    `api_key=None` accepts any bearer, or none.

    Raises:
        ErrorAnswer: 401, a missing or wrong key, or an expired or revoked OAuth token.
    """
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise errors.missing_key()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise errors.invalid_key()
    if oauth is not None and oauth.accepts(token.strip()):
        return
    if not tokens_match(token.strip(), api_key):
        raise errors.invalid_key()


def _endpoint(
    services: Services, api_key: str | None, oauth: OAuthProvider, methods: dict[str, Handler]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            check_auth(request, api_key, oauth)
            # "@current" is PostHog's alias for the caller's current project: here, the only one.
            if request.path_params.get("environment_id") not in (ENVIRONMENT_ID, "@current"):
                raise errors.not_found()
            handler = methods.get(request.method)
            if handler is None:
                raise errors.method_not_allowed(request.method)
            return await handler(request, services)
        except ErrorAnswer as exc:
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


def build_app(
    services: Services, *, api_key: str | None = None, oauth: OAuthProvider | None = None
) -> Starlette:
    """The ASGI app for a started sandbox (no lifespan: the caller owns start and stop), with
    PostHog's OAuth provider (sandbox/oauth.py) beside the API."""
    oauth = oauth if oauth is not None else OAuthProvider()
    routes = [
        *oauth.routes(),
        *(
            Route(
                f"/api/{prefix}/{{environment_id}}/{path}",
                _endpoint(services, api_key, oauth, methods),
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            )
            for prefix in ("environments", "projects")
            for path, methods in ROUTES
        ),
    ]
    # The connect page: for a browser, behind its own one-time token, not the API key.
    routes.append(Route(CONNECT_PAGE.route, _page(services), methods=["GET", "POST"]))
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _server_error},
    )
    # Tests reach the store, warehouse and engine through the app they were given.
    app.state.services = services
    app.state.oauth = oauth
    return app
