"""Requests not sent as the arguments are given: a row's ``build_query`` or ``build_body``.

PostHog's own MCP tools translate a few arguments before sending them; these functions do the
same, so the endpoint receives exactly what PostHog's tool would send.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from .models import (
    ExecuteSqlParams,
    ExternalDataSourcesDbSchemaParams,
    ExternalDataSyncLogsParams,
    LogLevel,
)

LEVELS: list[str] = list(get_args(LogLevel))


def sync_logs_query(params: BaseModel) -> dict[str, Any]:
    """The query external-data-sync-logs sends, as PostHog's tool builds it.

    A minimum level becomes the list of levels from it up, the job's workflow_run_id is the
    endpoint's ``instance_id``, and the limit is always sent (the endpoint's own default is 50).
    """
    assert isinstance(params, ExternalDataSyncLogsParams)
    query: dict[str, Any] = {
        "limit": params.limit,
        "level": ",".join(LEVELS[LEVELS.index(params.level) :]),
    }
    if params.job_id is not None:
        query["instance_id"] = params.job_id
    if params.search is not None:
        query["search"] = params.search
    return query


def flat_body(params: BaseModel) -> dict[str, Any]:
    """The body of a tool that takes connection fields, as PostHog's endpoint reads them.

    ``database_schema/`` and ``check_cdc_prerequisites/`` read the connection fields flat
    beside ``source_type`` (setup and create nest them in ``payload`` instead), so the
    ``payload`` argument is spread into the body with the tool's other arguments beside it.
    Those come last, so a payload key of the same name cannot replace them.
    """
    assert isinstance(params, ExternalDataSourcesDbSchemaParams)
    given = params.model_dump(mode="json", exclude_unset=True, exclude={"payload"})
    return {**params.payload, **given}


def hogql_query_body(params: BaseModel) -> dict[str, Any]:
    """The query endpoint's body for execute-sql: the query inside an outer SELECT whose LIMIT
    is one row more than the caller's, so the answer shows whether rows were left out.

    The query goes on its own lines, so a trailing `--` comment cannot swallow the bracket.
    """
    assert isinstance(params, ExecuteSqlParams)
    text = params.query.strip().rstrip(";").rstrip()
    wrapped = f"SELECT * FROM (\n{text}\n) LIMIT {params.limit + 1}"
    return {"query": {"kind": "HogQLQuery", "query": wrapped}, "name": "execute-sql"}


def schema_query_body(params: BaseModel) -> dict[str, Any]:
    """The query endpoint's body for read-data-warehouse-schema (filters apply to the answer)."""
    return {"query": {"kind": "DatabaseSchemaQuery"}}
