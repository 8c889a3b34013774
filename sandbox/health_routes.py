"""`data_warehouse/data_health_issues/`: what is broken in the project's data pipeline.

PostHog's answer (`DataWarehouseViewSet.data_health_issues`) lists enabled table syncs that
failed or hit the billing limit, sources in Error, and failed views, batch exports and
transformations. The sandbox has no views, exports, transformations or billing, and never stores
a source in Error, so of those it reports failed syncs. It adds two issues it can see that
PostHog's endpoint does not report: an enabled table whose last sync is older than twice its
frequency ("stale"), and a table marked Running with no sync running ("stuck").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import drf
from .engine import FREQUENCIES
from .routing import route
from .services import Services
from .store import Schema, now

# PostHog's issue status for each failed schema status.
_FAILED = {"Failed": "failed", "BillingLimitReached": "billing_limit"}


def _issue(services: Services, schema: Schema, status: str, error: str | None) -> dict[str, Any]:
    """One `external_data_sync` entry, with PostHog's keys in its order."""
    source = services.store.sources.get(schema.source_id)
    return {
        "id": schema.id,
        "name": schema.name,
        "type": "external_data_sync",
        "source_type": source.source_type if source is not None else None,
        "status": status,
        "error": error,
        "failed_at": schema.last_synced_at,
        "url": f"/data-warehouse/sources/{schema.source_id}",
    }


def _stale_since(schema: Schema, at: datetime) -> str | None:
    """Why an enabled table is stale (last sync older than twice its frequency), or None."""
    interval = FREQUENCIES.get(schema.sync_frequency)
    last = schema.last_synced_at or schema.created_at
    if interval is None or not last:
        return None
    if at - datetime.fromisoformat(last) <= 2 * interval:
        return None
    synced = f"last synced at {schema.last_synced_at}" if schema.last_synced_at else "never synced"
    return f"Stale: {synced}, but set to sync every {schema.sync_frequency}"


def health_issues(services: Services, at: datetime) -> list[dict[str, Any]]:
    """The issues, newest failure first and those without a time last (PostHog's order)."""
    issues = []
    schemas, syncing = services.engine.snapshot()
    for schema in schemas:
        if not schema.should_sync:
            continue
        running = schema.id in syncing
        if schema.status in _FAILED:
            issue = _issue(services, schema, _FAILED[schema.status], schema.latest_error)
        elif schema.status == "Running" and not running:
            stuck = "Marked Running, but no sync of this table is running"
            issue = _issue(services, schema, "stuck", stuck)
        elif not running and (stale := _stale_since(schema, at)) is not None:
            issue = _issue(services, schema, "stale", stale)
        else:
            continue
        issues.append(issue)
    issues.sort(key=lambda i: i["failed_at"] or "", reverse=True)
    issues.sort(key=lambda i: i["failed_at"] is None)
    return issues


@route("GET", "data_warehouse/data_health_issues/")
async def data_health_issues(request: Request, services: Services) -> Response:
    """GET data_warehouse/data_health_issues/: `{"results", "count"}`."""
    issues = health_issues(services, now())
    return drf.answer({"results": issues, "count": len(issues)})
