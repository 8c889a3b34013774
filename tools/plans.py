"""Plan a batch of schema changes, then apply it with one approval.

``external-data-schemas-plan`` only reads: a source (its schemas) and its jobs. For each table
a change reaches it answers what changes, whether the next sync re-imports the table in full
and at what cost in rows (PostHog's rules, :func:`previews.removals`), the rows billed per
month before and after (:mod:`billing`, estimates), and what PostHog would refuse; with a plan
id when nothing is refused.

``external-data-schemas-apply-plan`` takes that id. It is confirmed once, as every destructive
call is (tools/confirm.py), showing the plan's totals; it is refused when a schema the plan
read has changed since (naming which); then it sends the changes in the plan's order through
external-data-schemas-partial-update and stops at the first failure, reporting what was
applied and what was not.

A plan id carries the changes and a digest of each schema as the plan read it, signed with the
server's key (signing.py: every instance sharing the key verifies it), bound to the caller,
expiring, and spent once when applied.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .billing import FREE_DAYS, changed_rows_per_sync, is_free_now, monthly_rows
from .confirm import Spent
from .errors import NothingSent, PostHogError
from .hooks import Caller, Send
from .models import (
    ExternalDataSchemasApplyPlanParams,
    ExternalDataSchemasPlanParams,
    SchemaSettings,
)
from .previews import removals
from .signing import Forged, seal, unseal

PLAN_SECONDS = 900
# The settings a plan may change, and whose current values its digest covers.
SETTINGS = tuple(SchemaSettings.model_fields)
# Settings that need a cursor-style sync type (PostHog's update() refuses them on their own).
_CURSOR_SETTINGS = ("incremental_field", "incremental_field_type")
_CURSOR_STYLE = ("incremental", "append", "webhook")


class PlanRefused(NothingSent):
    """A plan id that cannot be applied (forged, expired, spent, another source or caller, or
    made before its schemas changed); nothing was sent."""


@dataclass(frozen=True)
class Plans:
    """Issues and reads plan ids for one server (or several sharing `key`)."""

    key: bytes
    spent: Spent
    seconds: int = PLAN_SECONDS

    def issue(
        self, source_id: str, changes: list[dict[str, Any]], read: dict[str, str], caller: str
    ) -> tuple[str, int]:
        """A plan id for `changes` (each `{id, set}`, in order) to the source, made when its
        schemas were as `read` (schema id: digest); and when it expires (epoch seconds)."""
        expires = int(time.time()) + self.seconds
        claims = {
            "s": source_id,
            "ch": changes,
            "r": read,
            "c": caller,
            "e": expires,
            "n": secrets.token_urlsafe(9),
        }
        return seal(self.key, claims), expires

    def read(self, plan_id: str, source_id: str, caller: str) -> dict[str, Any]:
        """The claims of a plan id for this source and caller, not yet spent.

        Raises:
            PlanRefused: forged, expired, or for another source or caller.
        """
        try:
            claims = unseal(self.key, plan_id)
        except Forged:
            raise PlanRefused("the plan_id is not one this server issued") from None
        if claims.get("e", 0) < time.time():
            raise PlanRefused(
                "the plan has expired; make a new one with external-data-schemas-plan"
            )
        if claims.get("s") != source_id:
            raise PlanRefused("the plan was made for another source")
        if claims.get("c") != caller:
            raise PlanRefused("the plan was made by another caller")
        return claims

    async def spend(self, claims: dict[str, Any]) -> None:
        """Mark the plan used.

        Raises:
            PlanRefused: it was applied already; StoreUnavailable: the record cannot be reached.
        """
        if not await self.spent.spend(str(claims["n"]), float(claims["e"])):
            raise PlanRefused("the plan was applied already; make a new one to change more")


def digest(schema: dict[str, Any]) -> str:
    """What a plan remembers of a schema: its settings and its warehouse table, hashed."""
    table = schema.get("table") or {}
    state = {f: schema.get(f) for f in SETTINGS} | {"table": table.get("name")}
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _schemas(source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s.get("id")): s for s in source.get("schemas") or [] if isinstance(s, dict)}


def _requested(
    params: ExternalDataSchemasPlanParams, schemas: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The changes, each `{id, set}`, in order (those given one by one, then `set` for each
    table `match` selects); and those naming no schema of the source."""
    wanted = [{"id": str(c.id), "set": c.set} for c in params.changes or []]
    if params.set is not None:
        pattern = params.match or "*"
        wanted += [
            {"id": sid, "set": params.set}
            for sid, schema in schemas.items()
            if fnmatch.fnmatchcase(str(schema.get("name")), pattern)
        ]
    unknown = [
        {"id": w["id"], "reason": "not a schema of this source"}
        for w in wanted
        if w["id"] not in schemas
    ]
    return [w for w in wanted if w["id"] in schemas], unknown


def _refusals(schema: dict[str, Any], change: dict[str, Any]) -> list[str]:
    """What PostHog's partial update refuses of `change` on `schema`, in its words (the rules
    it can tell from the schema alone; it checks the columns itself when the plan is applied)."""
    found = []
    sync_type = change.get("sync_type") or schema.get("sync_type")
    if "sync_type" not in change and schema.get("sync_type") not in _CURSOR_STYLE:
        unappliable = [f for f in _CURSOR_SETTINGS if change.get(f) is not None]
        if unappliable:
            found.append(
                f"{', '.join(unappliable)} cannot be applied to a schema with sync type "
                f"{schema.get('sync_type') or 'not set'} on its own. Include sync_type in the "
                "same request to change the sync type."
            )
    key = change.get("primary_key_columns")
    merged_on = schema.get("primary_key_columns") if schema.get("table") else None
    if key is not None and merged_on and key != merged_on:
        found.append(
            "Primary key cannot be changed after data has been synced. Delete the synced data "
            "first, then change the primary key."
        )
    should_sync = change.get("should_sync", schema.get("should_sync"))
    if should_sync and not sync_type:
        found.append("Sync type must be set up first before enabling schema")
    return found


def _table_jobs(jobs: list[dict[str, Any]], name: Any) -> list[dict[str, Any]]:
    def schema_of(job: dict[str, Any]) -> Any:
        schema = job.get("schema")
        return schema.get("name") if isinstance(schema, dict) else schema

    return [j for j in jobs if schema_of(j) == name]


def _entry(
    schema: dict[str, Any], change: dict[str, Any], jobs: list[dict[str, Any]], *, free: bool
) -> dict[str, Any]:
    table = schema.get("table") or {}
    rows = table.get("row_count")
    after = {**schema, **change}
    changes = {
        field: [schema.get(field), value]
        for field, value in change.items()
        if schema.get(field) != value
    }
    removes = removals(schema, change)
    per_sync = changed_rows_per_sync(_table_jobs(jobs, schema.get("name")))
    entry: dict[str, Any] = {
        "id": schema.get("id"),
        "name": schema.get("name"),
        "table": table.get("name"),
        "changes": changes,
        "reimports": bool(removes),
        "removes": removes,
        "rows_reimported": (rows if rows is not None else "unknown") if removes else 0,
        "reimport_billed": bool(removes) and not free,
        "billed_rows_per_month": {
            "before": monthly_rows(schema, table_rows=rows, rows_per_sync=per_sync),
            "after": monthly_rows(after, table_rows=rows, rows_per_sync=per_sync),
        },
    }
    refused = _refusals(schema, change)
    if refused:
        entry["refused"] = refused
    return entry


def _sum(values: list[Any]) -> int | str:
    known = [v for v in values if isinstance(v, int)]
    missing = len(values) - len(known)
    return sum(known) if not missing else f"{sum(known)} + {missing} not known"


def _totals(entries: list[dict[str, Any]], *, free: bool) -> dict[str, Any]:
    billed = [e["billed_rows_per_month"] for e in entries]
    totals: dict[str, Any] = {
        "tables": len(entries),
        "tables_changed": sum(1 for e in entries if e["changes"]),
        "tables_reimported": sum(1 for e in entries if e["reimports"]),
        "rows_reimported": _sum([e["rows_reimported"] for e in entries if e["reimports"]]),
        "billed_rows_per_month_before": _sum([b["before"]["rows"] for b in billed]),
        "billed_rows_per_month_after": _sum([b["after"]["rows"] for b in billed]),
        "estimates": "billed rows are estimates: full refresh from the row count, incremental "
        "and append from the rows of recent syncs",
    }
    if free:
        totals["free"] = (
            f"the source is in its first {FREE_DAYS} days, whose syncs PostHog does not bill: "
            "a re-import now is free"
        )
    return totals


async def plan_changes(call: Caller[ExternalDataSchemasPlanParams], send: Send) -> dict[str, Any]:
    """external-data-schemas-plan: read the source and its jobs, answer the plan."""
    source = await call.call("external-data-sources-retrieve", id=str(call.params.id))
    schemas = _schemas(source)
    wanted, unknown = _requested(call.params, schemas)
    jobs = (await call.call("external-data-sources-jobs", id=str(call.params.id)))["results"]
    free = is_free_now(source)
    entries = [_entry(schemas[w["id"]], w["set"], jobs, free=free) for w in wanted]
    refused = [
        *unknown,
        *({"id": e["id"], "reason": r} for e in entries for r in e.get("refused", [])),
    ]
    totals = _totals(entries, free=free)
    answer: dict[str, Any] = {"tables": entries, "totals": totals, "refused": refused}
    if refused or not any(e["changes"] for e in entries) or call.plans is None:
        answer["plan_id"] = None
        if not entries:
            answer["note"] = "no change names a table of this source: nothing to plan"
        return answer
    read = {w["id"]: digest(schemas[w["id"]]) for w in wanted}
    plan_id, expires = call.plans.issue(str(call.params.id), wanted, read, call.caller)
    answer["plan_id"] = plan_id
    answer["expires_at"] = datetime.fromtimestamp(expires, UTC).isoformat()
    return answer


def _claims(call: Caller[ExternalDataSchemasApplyPlanParams]) -> dict[str, Any]:
    """The plan's claims, before anything is read.

    Raises:
        PlanRefused: no plan store, or a plan id that cannot be used.
    """
    if call.plans is None:
        raise PlanRefused("this server keeps no plans")
    return call.plans.read(call.params.plan_id, str(call.params.id), call.caller)


def _unchanged(claims: dict[str, Any], source: dict[str, Any]) -> None:
    """Refuse a plan whose schemas are no longer as it read them.

    Raises:
        PlanRefused: naming the tables that changed.
    """
    schemas = _schemas(source)
    changed = [
        str(schemas.get(sid, {}).get("name") or sid)
        for sid, was in claims["r"].items()
        if sid not in schemas or digest(schemas[sid]) != was
    ]
    if changed:
        raise PlanRefused(
            f"these tables changed since the plan was made: {', '.join(changed)}; make a new "
            "plan with external-data-schemas-plan"
        )


async def plan_preview(call: Caller[ExternalDataSchemasApplyPlanParams]) -> dict[str, Any]:
    """What applying the plan will do, for the person to confirm: its totals and each table's
    changes. Reads only."""
    claims = _claims(call)
    source = await call.call("external-data-sources-retrieve", id=str(call.params.id))
    _unchanged(claims, source)
    schemas = _schemas(source)
    jobs = (await call.call("external-data-sources-jobs", id=str(call.params.id)))["results"]
    free = is_free_now(source)
    entries = [_entry(schemas[c["id"]], c["set"], jobs, free=free) for c in claims["ch"]]
    totals = _totals(entries, free=free)
    return {
        "effect": (
            f"apply {totals['tables_changed']} schema changes to source "
            f"{source.get('prefix') or source.get('source_type')}: "
            f"{totals['tables_reimported']} tables re-imported in full "
            f"({totals['rows_reimported']} rows, {'free now' if free else 'billed again'}); "
            "billed rows a month "
            f"{totals['billed_rows_per_month_before']} -> "
            f"{totals['billed_rows_per_month_after']} (estimates)"
        ),
        "tables": [
            {
                "name": e["name"],
                "table": e["table"],
                "rows": (schemas[str(e["id"])].get("table") or {}).get("row_count"),
                "changes": [f"{k}: {old} -> {new}" for k, (old, new) in e["changes"].items()],
                "removes": e["removes"],
            }
            for e in entries
        ],
        "undo": "Each table's settings can be set back; rows a sync re-imported or removed come "
        "back only by syncing again (billed).",
    }


async def apply_plan(
    call: Caller[ExternalDataSchemasApplyPlanParams], send: Send
) -> dict[str, Any]:
    """external-data-schemas-apply-plan: check the plan against the source now, spend it, and
    send its changes in order, stopping at the first failure."""
    claims = _claims(call)
    source = await call.call("external-data-sources-retrieve", id=str(call.params.id))
    _unchanged(claims, source)
    assert call.plans is not None  # _claims refused otherwise
    await call.plans.spend(claims)
    names = {sid: s.get("name") for sid, s in _schemas(source).items()}
    applied: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    changes = list(claims["ch"])
    for index, change in enumerate(changes):
        try:
            await call.call(
                "external-data-schemas-partial-update", id=change["id"], **change["set"]
            )
        except PostHogError as exc:
            failed = {"id": change["id"], "name": names.get(change["id"]), "error": str(exc)}
            rest = changes[index + 1 :]
            break
        applied.append({"id": change["id"], "name": names.get(change["id"]), "set": change["set"]})
    else:
        rest = []
    return {
        "applied": applied,
        "failed": failed,
        "not_applied": [{"id": c["id"], "name": names.get(c["id"])} for c in rest],
    }
