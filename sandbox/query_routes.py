"""`query/`: PostHog's query endpoint, for the two kinds the warehouse can answer."""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response

from . import drf, errors
from .hogql import QueryError
from .query_pool import Busy, WorkerFailed
from .routing import route
from .services import Services

# The query kinds the sandbox runs; PostHog has many more (trends, funnels...).
KINDS = ("HogQLQuery", "DatabaseSchemaQuery")


@route("POST", "query/")
async def query(request: Request, services: Services) -> Response:
    """POST query/: `{"query": {"kind": "HogQLQuery", "query": "SELECT ..."}}` answers rows,
    columns and types; `{"kind": "DatabaseSchemaQuery"}` the warehouse tables. A query PostHog
    would refuse gets its `hogql_query_error` body; one the sandbox has no turn for, PostHog's
    429 (throttled) with Retry-After."""
    data = await drf.body(request)
    spec = data.get("query")
    if not isinstance(spec, dict):
        raise errors.required("query")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise errors.validation_error(
            f"The sandbox runs only these query kinds: {', '.join(KINDS)}.", "query"
        )
    queries = services.queries
    if kind == "DatabaseSchemaQuery":
        return drf.answer(await anyio.to_thread.run_sync(queries.database_schema))
    hogql = spec.get("query")
    if not isinstance(hogql, str) or not hogql.strip():
        raise errors.validation_error("This field is required.", "query", "required")
    try:
        answer = await queries.run_hogql(hogql)
    except QueryError as exc:
        raise errors.validation_error(str(exc), None, "hogql_query_error") from None
    except Busy as exc:
        body = {"type": "throttled_error", "code": "throttled", "detail": str(exc), "attr": None}
        response = drf.answer(body, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except WorkerFailed:
        raise errors.server_error() from None  # logged where it failed
    # The worker wrote the body as Starlette's JSONResponse would.
    return Response(answer, media_type="application/json")
