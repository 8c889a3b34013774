"""The sandbox's route table, declared beside each handler:

    @route("GET", "external_data_sources/{id}/jobs/")
    async def sources_jobs(request: Request, services: Services) -> Response: ...

The table is the sandbox's own, written from PostHog's API rather than derived from the MCP
server's endpoint table, so that the contract tests compare two independent descriptions. A new
endpoint is a handler and its ``@route`` line in one of the modules sandbox/api.py serves
(``ROUTE_MODULES``); paths are relative to ``/api/{environments|projects}/{environment_id}/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from .services import Services

Handler = Callable[[Request, Services], Awaitable[Response]]
Method = Literal["GET", "POST", "PATCH", "DELETE"]
H = TypeVar("H", bound=Handler)

_DECLARED: dict[str, dict[str, Handler]] = {}


def route(method: Method, path: str) -> Callable[[H], H]:
    """Serve ``method path`` with the decorated handler (stack one per route it serves).

    Raises:
        ValueError: another handler already serves ``method path``.
    """

    def declare(handler: H) -> H:
        methods = _DECLARED.setdefault(path, {})
        taken = methods.get(method)
        if taken is not None and taken is not handler:
            raise ValueError(f"{method} {path}: already served by {taken!r}")
        methods[method] = handler
        return handler

    return declare


def _matching_order(path: str) -> list[tuple[bool, str]]:
    return [(segment.startswith("{"), segment) for segment in path.split("/")]


def declared_routes() -> list[tuple[str, dict[str, Handler]]]:
    """Every declared path with its handlers by method, in matching order: a literal segment
    before a ``{placeholder}`` in the same place, so that ``external_data_sources/wizard/`` is
    not taken for a source id."""
    return sorted(_DECLARED.items(), key=lambda item: _matching_order(item[0]))
