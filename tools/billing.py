"""Rows billed per month for a table's sync settings: estimates, each with its basis.

PostHog bills the rows its billable sync jobs write (a job's `rows_synced`, when `billable` is
not false: a repair PostHog itself caused is free), except in a source's first 7 days, whose
jobs go to a free historical meter (`products/warehouse_sources/backend/billing.py`,
`FREE_HISTORICAL_WINDOW`; `billable` defaults to true in `models/external_data_job.py`), once
per destination. Scheduled and user-started syncs are billable; only operator runs are not
(`ad_hoc_sync.py`, `resync_schemas_non_billable`). `rows_synced` grows by every row a job
reads (`update_job_row_count` in the pipeline), so a full refresh writes every row at every
sync; incremental and append syncs write the rows that changed since the last one; a table
that does not sync writes none. These are estimates: the rate of change comes from past syncs
(or, for a rehearsal, from the rows a date or timestamp column dates to the last week), and the
row count from the last sync (or the rehearsal's count).

Plans (plans.py) and rehearsals (rehearsal.py, on what sandbox/rehearsal.py measured) both
estimate here, so the two answer alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

# A source's first days, whose syncs PostHog does not bill.
FREE_DAYS = 7
DAYS_A_MONTH = 30

RULES = (
    "PostHog bills the rows each completed, billable sync job reads (rows_synced), once per "
    f"destination; the jobs of a source's first {FREE_DAYS} days are free (its free historical "
    "meter). Scheduled and user-started syncs, resyncs included, are billable. A full refresh "
    "reads the whole table each sync; incremental and append syncs read the rows past the saved "
    "cursor. Failed and cancelled jobs bill nothing."
)

# Syncs in a 30-day month, per sync frequency (PostHog's choices).
SYNCS_PER_MONTH: dict[str, float] = {
    "5min": DAYS_A_MONTH * 24 * 12,
    "15min": DAYS_A_MONTH * 24 * 4,
    "30min": DAYS_A_MONTH * 24 * 2,
    "1hour": DAYS_A_MONTH * 24,
    "6hour": DAYS_A_MONTH * 4,
    "12hour": DAYS_A_MONTH * 2,
    "24hour": DAYS_A_MONTH,
    "7day": DAYS_A_MONTH / 7,
    "30day": DAYS_A_MONTH / 30,
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


def rehearsed(table: dict[str, Any]) -> None:
    """Complete a rehearsed table's `estimates` with what PostHog would bill: its first sync
    (free) and a month of syncs at its settings (`sync_type`, `sync_frequency`,
    `incremental_field_type`), from its row count and its `recent_changes` check."""
    estimates = table.setdefault("estimates", {})
    first = estimates.setdefault("first_sync", {})
    total = first.get("rows")
    first["billed_rows"] = 0
    first["billed_basis"] = (
        f"a source's first {FREE_DAYS} days of syncs go to PostHog's free historical meter, "
        "so a first sync that completes within them is not billed"
    )
    given = table.get("sync_frequency")
    frequency = str(given or DEFAULT_FREQUENCY)
    table["sync_frequency"] = frequency
    syncs = SYNCS_PER_MONTH.get(frequency, SYNCS_PER_MONTH[DEFAULT_FREQUENCY])
    monthly: dict[str, Any] = {"sync_frequency": frequency, "syncs_per_month": round(syncs, 1)}
    if given is None:
        monthly["sync_frequency_note"] = f"none given: PostHog starts a table on {frequency}"
    if table.get("sync_type") == "full_refresh":
        billed = None if total is None else round(total * syncs)
        basis = f"{total:,} rows read by each of {syncs:g} syncs" if total is not None else ""
    else:
        billed, basis = _changed_per_month(table, syncs)
    monthly["billed_rows_estimate"] = billed
    monthly["basis"] = basis
    monthly["after_free_days"] = (
        f"the estimate is for a month after the source's first {FREE_DAYS} days, which are "
        "free; each destination beyond the first bills the rows again"
    )
    estimates["monthly"] = monthly


def _changed_per_month(table: dict[str, Any], syncs: float) -> tuple[int | None, str]:
    """An incremental or append table's rows a month: the rows its time column dates to the
    last days, scaled to a month (plus the day a date cursor reads again at each sync)."""
    checks = table.get("checks", [])
    recent: dict[str, Any] = next((c for c in checks if c.get("check") == "recent_changes"), {})
    changed, days = recent.get("rows"), recent.get("days")
    if not recent:
        return None, "unknown: no date or timestamp column shows how fast the table changes"
    if changed is None or not days:
        return None, "unknown: the count of recent rows was cut short"
    billed = round(changed * DAYS_A_MONTH / days)
    basis = (
        f"{changed:,} rows with {recent.get('column')} in the last {days} days, scaled to "
        f"{DAYS_A_MONTH} days: a lower bound, as a row changed twice in the week counts once"
    )
    if table.get("incremental_field_type") == "date":
        again = round(changed / days * syncs)
        billed += again
        basis += (
            f"; plus about {again:,} rows read again because a date cursor re-reads its last day "
            "at each sync"
        )
    return billed, basis
