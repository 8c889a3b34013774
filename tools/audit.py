"""The health audit (external-data-sources-audit): every source and table checked in one call,
each finding with its cause, what it affects and the safe next step (PostHog's recovery rules:
reload first, cancel then reload when stuck, resync only for bad data). It only reads: it never
acts, and it talks to the configured host only.

CDC (Postgres change data capture) adds two findings. A lost slot: a CDC table whose last sync
failed with PostHog's slot-missing or publication-missing text; reloads fail until
repair-cdc recreates the slot. A slot holding back WAL: PostHog's API reports no slot lag (its
sweeper reads it on the source database, only logs it, and at `cdc_lag_critical_threshold_mb`
drops a PostHog-managed slot), so the audit infers it from what the API gives: the slot is
confirmed only up to the oldest position of the source's active CDC tables, so while one of them
fails, is stuck or is stale, the source database keeps every change since for the slot.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import PermissionDenied
from .hooks import Caller, Send
from .models import NoParams, SyncFrequency

_UNITS = {"min": "minutes", "hour": "hours", "day": "days"}


def _interval(frequency: str) -> timedelta:
    match = re.fullmatch(r"(\d+)(min|hour|day)", frequency)
    if match is None:
        raise ValueError(f"not a sync frequency: {frequency!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


# Each sync_frequency PostHog accepts, as a timedelta ("15min" -> 15 minutes).
INTERVALS = {frequency.value: _interval(frequency.value) for frequency in SyncFrequency}
_CREDENTIAL_WORDS = ("password", "credential", "authentication", "permission denied", "401", "403")
_BILLING = ("Billing limits", "Billing limits too low", "BillingLimitReached", "BillingLimitTooLow")
MAX_PAGES = 10
# Phrases of PostHog's texts for a CDC sync whose replication slot or publication is gone
# (`cdc/errors.py`, SLOT_MISSING and PUBLICATION_MISSING).
_CDC_LOST = (
    "replication slot no longer exists",
    "publication used for change data capture no longer exists",
)
# PostHog's default `cdc_lag_critical_threshold_mb`.
_CDC_CRITICAL_MB = 10240


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _where(source: dict[str, Any], table: Any = "") -> str:
    """Where a finding is: the source's type and prefix, and the table's name when it has one."""
    return " ".join(f"{source.get('source_type')} {source.get('prefix') or ''} {table}".split())


def _finding(
    kind: str,
    where: str,
    cause: str,
    affects: str,
    next_step: str,
    *,
    source: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One finding; the ids of its source and table, when it has them, are what the next
    step's tools take (sync logs, reload, cancel), so no list call is needed to find them."""
    finding = {"kind": kind, "where": where, "cause": cause, "affects": affects, "next": next_step}
    if source is not None and source.get("id") is not None:
        finding["source_id"] = str(source["id"])
    if schema is not None and schema.get("id") is not None:
        finding["schema_id"] = str(schema["id"])
    return finding


def _cdc_lost(schema: dict[str, Any]) -> bool:
    """Whether an active CDC table's last sync failed because its slot or publication is gone."""
    error = str(schema.get("latest_error") or "").lower()
    return (
        schema.get("sync_type") == "cdc"
        and bool(schema.get("should_sync"))
        and schema.get("status") == "Failed"
        and any(phrase in error for phrase in _CDC_LOST)
    )


def _table_findings(
    source: dict[str, Any], schema: dict[str, Any], running_jobs: set[str], at: datetime
) -> list[dict[str, Any]]:
    where = _where(source, schema.get("name"))
    status = schema.get("status")
    error = schema.get("latest_error")
    if not schema.get("should_sync") or _cdc_lost(schema):
        return []  # a lost slot is one finding for the source (_cdc_findings)
    if status in _BILLING:
        return [
            _finding(
                "billing_limit",
                where,
                f"The table's sync stopped at a billing limit ({status}).",
                "This table stays stale until the limit changes.",
                "No technical fix: raise the billing limit, or set should_sync false on tables "
                "that matter less.",
                source=source,
                schema=schema,
            )
        ]
    if status == "Failed":
        credentials = any(word in str(error).lower() for word in _CREDENTIAL_WORDS)
        step = (
            "The credentials are refused: get new ones from the user "
            "(data-warehouse-source-connect-link), send them with "
            "external-data-sources-partial-update (job_inputs), then external-data-sources-reload."
            if credentials
            else "Read external-data-sync-logs (level ERROR) for the table, fix the cause, then "
            "external-data-schemas-reload. Resync only if the data itself is wrong, and only "
            "with the user's yes."
        )
        return [
            _finding(
                "failed",
                where,
                f"The last sync failed: {error}",
                "This table.",
                step,
                source=source,
                schema=schema,
            )
        ]
    if status == "Running" and str(schema.get("id")) not in running_jobs:
        return [
            _finding(
                "stuck",
                where,
                "Marked Running, but no sync of the table is running.",
                "This table syncs no more until the status is cleared.",
                "external-data-schemas-cancel (it clears the status), then "
                "external-data-schemas-reload. Not resync.",
                source=source,
                schema=schema,
            )
        ]
    interval = INTERVALS.get(str(schema.get("sync_frequency")))
    last = _when(schema.get("last_synced_at"))
    if (
        interval is not None
        and status != "Running"
        and last is not None
        and at - last > 2 * interval
    ):
        return [
            _finding(
                "stale",
                where,
                f"Last synced {schema.get('last_synced_at')}, more than twice its "
                f"{schema.get('sync_frequency')} frequency ago.",
                "Queries on this table see old data.",
                "external-data-schemas-reload; if it fails or stays stale, read "
                "external-data-sync-logs for the table.",
                source=source,
                schema=schema,
            )
        ]
    return []


def _cdc_findings(
    source: dict[str, Any], schemas: list[dict[str, Any]], findings: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A CDC source's lost slot, or its slot holding back WAL while a CDC table is behind
    (`findings`: the source's table findings, which say which tables are)."""
    lost = [s for s in schemas if _cdc_lost(s)]
    if lost:
        names = ", ".join(str(s.get("name")) for s in lost)
        return [
            _finding(
                "cdc_slot_lost",
                _where(source),
                f"The CDC sync of {names} cannot read changes: {lost[0].get('latest_error')}",
                "Every CDC table of the source gets no new changes; reloads fail the same way.",
                "external-data-sources-repair-cdc-create with the source id: it recreates the "
                "replication slot (and a PostHog-managed publication) and re-snapshots every CDC "
                "table. Not reload, not resync.",
                source=source,
            )
        ]
    active = {
        str(s.get("id")): str(s.get("name"))
        for s in schemas
        if s.get("sync_type") == "cdc" and s.get("should_sync")
    }
    behind = {active[f["schema_id"]] for f in findings if f.get("schema_id") in active}
    if not behind:
        return []
    names = ", ".join(sorted(behind))
    critical = (source.get("job_inputs") or {}).get("cdc_lag_critical_threshold_mb")
    return [
        _finding(
            "cdc_wal",
            _where(source),
            f"The replication slot is confirmed only as far as the source's least recent CDC "
            f"table, so while {names} does not sync, the source database keeps every change "
            "since for the slot. PostHog's API does not report how much.",
            "The source database's disk. Past cdc_lag_critical_threshold_mb "
            f"({critical or _CDC_CRITICAL_MB} MB) PostHog drops a PostHog-managed slot "
            "(cdc_auto_drop_slot), and every CDC table of the source then needs a new snapshot.",
            f"Fix {names} first (its own finding says how). If the source database is short of "
            "disk, pause it (should_sync false) so the slot moves on for the other tables.",
            source=source,
        )
    ]


async def audit(call: Caller[NoParams], send: Send) -> dict[str, Any]:
    """external-data-sources-audit's hook. Its own request is the sources list, made through
    that row so the page is read as a page (the row's response is the report)."""
    at = datetime.now(UTC)
    findings: list[dict[str, Any]] = []
    checked = {"sources": 0, "tables": 0}
    # The sources list proves the key, its read scope and the environment on the configured host;
    # when it fails, the error (naming the scope or the key's region) is the audit's answer.
    page = await call.call("external-data-sources-list", limit=100)
    sources = list(page.get("results") or [])
    offset = len(sources)
    for _ in range(MAX_PAGES - 1):
        if not page.get("next"):
            break
        page = await call.call("external-data-sources-list", limit=100, offset=offset)
        sources += list(page.get("results") or [])
        offset += len(page.get("results") or [])
    for source in sources:
        checked["sources"] += 1
        schemas = [s for s in source.get("schemas") or [] if isinstance(s, dict)]
        checked["tables"] += len(schemas)
        if source.get("status") == "Error":
            findings.append(
                _finding(
                    "source_error",
                    _where(source),
                    f"The source is in error: {source.get('latest_error')}",
                    "Every table of the source.",
                    "Check the connection details with the user (data-warehouse-source-"
                    "connect-link), external-data-sources-partial-update, then "
                    "external-data-sources-reload.",
                    source=source,
                )
            )
        running: set[str] = set()
        if any(s.get("status") == "Running" for s in schemas):
            jobs = await call.call("external-data-sources-jobs", id=str(source["id"]))
            for job in jobs.get("results") or []:
                target = job.get("schema")
                if job.get("status") == "Running" and isinstance(target, dict):
                    running.add(str(target.get("id")))
        tables: list[dict[str, Any]] = []
        for schema in schemas:
            tables += _table_findings(source, schema, running, at)
        findings += tables + _cdc_findings(source, schemas, tables)
        if any(s.get("sync_type") == "webhook" and s.get("should_sync") for s in schemas):
            info = await call.call(
                "external-data-sources-webhook-info-retrieve", id=str(source["id"])
            )
            external = info.get("external_status") or {}
            if not info.get("exists") or external.get("error"):
                findings.append(
                    _finding(
                        "webhook",
                        _where(source),
                        "Tables sync by webhook, but "
                        + (external.get("error") or "no webhook is registered."),
                        "The webhook tables receive no new rows.",
                        "external-data-sources-create-webhook-create (once), or register "
                        "webhook_info's URL at the provider by hand.",
                        source=source,
                    )
                )
    health: dict[str, Any] = {"checked": True}
    try:
        issues = await call.call("data-warehouse-data-health-issues-retrieve")
    except PermissionDenied:
        health = {
            "checked": False,
            "why": "the key lacks warehouse_view:read (views, exports and transformations "
            "are not checked)",
        }
    else:
        for issue in issues.get("results") or []:
            if issue.get("type") in ("external_data_sync", "source"):
                continue  # found above, from the tables themselves
            findings.append(
                _finding(
                    str(issue.get("type")),
                    str(issue.get("name")),
                    f"{issue.get('status')}: {issue.get('error')}",
                    "What reads from it.",
                    f"Open {issue.get('url')} in PostHog; it is outside these tools.",
                )
            )
    return {"findings": findings, "checked": checked | {"data_health": health}}
