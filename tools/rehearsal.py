"""external-data-sources-rehearse: a real, bounded sync of the user's own tables on this machine,
before PostHog syncs (and bills) anything.

The hook reads the call's connection as `create` takes it (connection fields plus the schemas
to try), resolves secret references under the server's policy, and hands the rest to the
server's rehearsal (:data:`Rehearse`, server/rehearsal.py), which runs the sandbox's sync engine
into a temporary local warehouse. Nothing goes to PostHog: the row is local.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import billing
from .errors import NothingSent
from .hooks import Caller, Progress, Send
from .models import ExternalDataSourcesRehearseParams
from .secrets import resolve


class RehearsalRefused(NothingSent):
    """A rehearsal that cannot run here (no sandbox extra, a source type it cannot connect,
    bad tables or settings, an unreachable database); the message says why."""


@dataclass(frozen=True)
class Rehearsal:
    """What to rehearse: the connection (secrets resolved), the tables and settings to try
    (PostHog's `payload.schemas`), and the bounds."""

    source_type: str
    job_inputs: dict[str, Any]
    tables: list[dict[str, Any]]
    prefix: str | None
    rows: int
    seconds: float
    # A credential the local connect page stored, read without being spent.
    credential_id: str | None = None
    progress: Progress | None = None


# Runs a rehearsal on this machine and answers its report (server/rehearsal.py).
Rehearse = Callable[[Rehearsal], Awaitable[dict[str, Any]]]


async def rehearse(call: Caller[ExternalDataSourcesRehearseParams], send: Send) -> dict[str, Any]:
    """The row's hook: never sends its own request.

    Raises:
        RehearsalRefused: the server cannot rehearse, or the rehearsal refused its input.
        SecretRefused: a secret reference the server's policy refuses.
    """
    if call.rehearse is None:
        raise RehearsalRefused("this server cannot run rehearsals")
    params = call.params
    payload = dict(params.payload)
    tables = payload.pop("schemas", None)
    credential_id = payload.pop("credential_id", None)
    if not isinstance(tables, list) or not tables:
        raise RehearsalRefused(
            "payload.schemas must list the tables to rehearse, as create takes them "
            "([{name, sync_type, ...}]; external-data-sources-db-schema lists the tables)"
        )
    if call.secrets is not None:
        payload = resolve(payload, call.secrets, tool="external-data-sources-rehearse")
    seconds = min(float(params.seconds), call.wait_cap)
    report = await call.rehearse(
        Rehearsal(
            source_type=params.source_type,
            job_inputs=payload,
            tables=tables,
            prefix=params.prefix,
            rows=params.rows,
            seconds=seconds,
            credential_id=str(credential_id) if credential_id is not None else None,
            progress=call.progress,
        )
    )
    for table in report.get("tables", []):
        billing.rehearsed(table)
    report["billing_rules"] = billing.RULES
    if seconds < params.seconds:
        report.setdefault("notes", []).append(
            f"seconds was cut to {seconds:g}, the longest this server lets a call run "
            "(POSTHOG_WAIT_CAP_SECONDS)"
        )
    return report
