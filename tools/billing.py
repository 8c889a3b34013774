"""Rows billed per month for a table's sync settings: estimates, each with its basis.

PostHog bills the rows its billable sync jobs write (a job's `rows_synced`, when `billable` is
not false: a repair PostHog itself caused is free), except in a source's first 7 days, whose
jobs go to a free historical meter (`products/warehouse_sources/backend/billing.py`,
`FREE_HISTORICAL_WINDOW`; `billable` defaults to true in `models/external_data_job.py`). A full
refresh writes every row at every
sync; incremental and append syncs write the rows that changed since the last one; a table
that does not sync writes none. These are estimates: the rate of change comes from past syncs
(or, for a rehearsal, from the cursor column), and the row count from the last sync.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

# A source's first days, whose syncs PostHog does not bill.
FREE_DAYS = 7

# Syncs in a 30-day month, per sync frequency (PostHog's choices).
SYNCS_PER_MONTH: dict[str, float] = {
    "5min": 30 * 24 * 12,
    "15min": 30 * 24 * 4,
    "30min": 30 * 24 * 2,
    "1hour": 30 * 24,
    "6hour": 30 * 4,
    "12hour": 30 * 2,
    "24hour": 30,
    "7day": 30 / 7,
    "30day": 1,
}
# PostHog's sync frequency for a table that has none set.
DEFAULT_FREQUENCY = "6hour"


def free_until(source: dict[str, Any]) -> datetime | None:
    """When a source's free first days end (None: its creation time is not known)."""
    try:
        created = datetime.fromisoformat(str(source.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return created + timedelta(days=FREE_DAYS)


def is_free_now(source: dict[str, Any], at: datetime | None = None) -> bool:
    """Whether a sync of this source now is in its free first days."""
    until = free_until(source)
    return until is not None and (at or datetime.now(UTC)) < until


def changed_rows_per_sync(jobs: Iterable[dict[str, Any]]) -> int | None:
    """The median rows of a table's recent billable, completed syncs after its first (which
    imported every row); None with fewer than two such syncs."""
    rows = [
        int(job["rows_synced"])
        for job in jobs
        if job.get("status") == "Completed"
        and job.get("billable") is not False
        and isinstance(job.get("rows_synced"), int)
    ]
    recent = rows[:-1]  # newest first: the oldest is the first sync
    return int(statistics.median(recent)) if recent else None


def monthly_rows(
    settings: dict[str, Any], *, table_rows: int | None, rows_per_sync: int | None
) -> dict[str, Any]:
    """The estimate for one table's settings (`should_sync`, `sync_type`, `sync_frequency`):
    `rows` (None when it cannot be told) and `basis`, how it was reached."""
    if not settings.get("should_sync"):
        return {"rows": 0, "basis": "does not sync"}
    frequency = str(settings.get("sync_frequency") or DEFAULT_FREQUENCY)
    syncs = SYNCS_PER_MONTH.get(frequency, SYNCS_PER_MONTH[DEFAULT_FREQUENCY])
    kind = settings.get("sync_type")
    if kind == "full_refresh":
        if table_rows is None:
            return {"rows": None, "basis": "full refresh; the table's row count is not known yet"}
        return {
            "rows": round(table_rows * syncs),
            "basis": f"full refresh: {table_rows} rows x {syncs:g} syncs ({frequency})",
        }
    if kind in ("incremental", "append", "xmin"):
        if rows_per_sync is None:
            return {
                "rows": None,
                "basis": f"{kind}: the rows changed per sync are not known yet (no past syncs)",
            }
        return {
            "rows": round(rows_per_sync * syncs),
            "basis": f"{kind}: {rows_per_sync} changed rows a sync (median of recent syncs) x "
            f"{syncs:g} syncs ({frequency})",
        }
    return {"rows": None, "basis": f"{kind or 'no sync type'}: no estimate"}
