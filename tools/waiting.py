"""The ``wait_seconds`` hook of the sync-starting rows: start a sync, then follow its jobs.

Agents otherwise write a polling loop of tool calls. Here the tool snapshots the source's
jobs, starts the sync, and polls the jobs until the ones it started finish or the time runs
out, reporting MCP progress on the way. It calls other rows of the table by tool name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio

from .hooks import Caller, Hook, Send
from .models import ExternalDataSourceJobsWaitParams, SyncParams

# The longest a call waits for syncs: below the ~60 s a desktop client allows a tool call.
DEFAULT_WAIT_CAP = 45.0
POLL_FIRST = 0.1
POLL_MAX = 3.0
FINISHED = frozenset(
    {"Completed", "Failed", "Cancelled", "Billing limits", "Billing limit too low"}
)


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    schema = job.get("schema")
    name = schema.get("name") if isinstance(schema, dict) else schema
    return {
        "id": job.get("id"),
        "schema": name,
        "status": job.get("status"),
        "rows_synced": job.get("rows_synced"),
        "latest_error": job.get("latest_error"),
        "finished_at": job.get("finished_at"),
    }


def _newest_per_table(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest job of each table (PostHog lists jobs newest first)."""
    seen: dict[Any, dict[str, Any]] = {}
    for job in jobs:
        seen.setdefault(_job_view(job)["schema"], job)
    return list(seen.values())


async def _source_of_schema(call: Caller[Any], schema: dict[str, Any]) -> str | None:
    source = schema.get("source")
    if isinstance(source, dict) and source.get("id"):
        return str(source["id"])
    offset = 0
    while True:
        page = await call.call("external-data-sources-list", limit=100, offset=offset)
        for item in page.get("results", []):
            if any(s.get("id") == schema.get("id") for s in item.get("schemas") or []):
                return str(item["id"])
        if not page.get("next"):
            return None
        offset += 100


def wait_for_sync(scope: Literal["source", "schema"]) -> Hook:
    """The hook of a row whose call starts a sync: with ``wait_seconds``, follow its jobs.

    ``scope`` says what the row's id is: a ``source`` (every enabled table syncs) or a
    ``schema`` (one table).
    """

    async def hook(call: Caller[SyncParams], send: Send) -> dict[str, Any]:
        return await _start_and_follow(call, send, scope)

    return hook


async def _start_and_follow(
    call: Caller[SyncParams], start: Send, scope: Literal["source", "schema"]
) -> dict[str, Any]:
    wait = float(call.params.wait_seconds)
    if wait <= 0:
        return await start()
    ident = str(call.params.id)
    if scope == "source":
        source_id: str | None = ident
        source = await call.call("external-data-sources-retrieve", id=ident)
        names = [s["name"] for s in source.get("schemas") or [] if s.get("should_sync")]
    else:
        schema = await call.call("external-data-schemas-retrieve", id=ident)
        source_id = await _source_of_schema(call, schema)
        names = [schema["name"]] if schema.get("name") else []
    if source_id is None or not names:
        result = await start()
        result["wait"] = {"finished": False, "reason": "no enabled tables to follow", "jobs": []}
        return result

    async def jobs() -> list[dict[str, Any]]:
        listed = await call.call("external-data-sources-jobs", id=source_id, schemas=names)
        return list(listed.get("results", []))

    # Jobs already finished are history; one still running (say, started when the table was
    # enabled) is a sync of this table that PostHog will not start twice, so it is followed.
    history = {job.get("id") for job in await jobs() if job.get("status") in FINISHED}
    result = await start()
    result["wait"] = await follow(call, jobs, names, history, source_id, wait)
    return result


async def follow(
    call: Caller[Any],
    jobs: Callable[[], Awaitable[list[dict[str, Any]]]],
    names: list[str],
    history: set[Any],
    source_id: str,
    wait: float,
) -> dict[str, Any]:
    """Poll the tables' newest jobs (not those in `history`) until all have finished or the
    wait, capped by the server's wait cap, runs out; report progress on the way."""
    cap = min(wait, call.wait_cap)
    began = time.monotonic()
    deadline = began + cap
    delay = POLL_FIRST
    latest: list[dict[str, Any]] = []
    while True:
        latest = _newest_per_table([j for j in await jobs() if j.get("id") not in history])
        done = [job for job in latest if job.get("status") in FINISHED]
        finished = len(latest) >= len(names) and len(done) == len(latest)
        if call.progress is not None:
            rows = sum(int(job.get("rows_synced") or 0) for job in latest)
            await call.progress(
                float(len(done)),
                float(len(names)),
                f"{len(done)}/{len(names)} syncs finished, {rows} rows so far",
            )
        if finished or time.monotonic() >= deadline:
            break
        await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, POLL_MAX)
    outcome: dict[str, Any] = {
        "finished": finished,
        "waited_seconds": round(time.monotonic() - began, 1),
        "jobs": [_job_view(job) for job in latest],
    }
    if not finished:
        capped = f" (this server waits at most {call.wait_cap:g} s per call)" if wait > cap else ""
        outcome["hint"] = (
            f"Still running{capped}. To keep waiting, call external-data-sources-jobs-wait "
            f'with id "{source_id}" and schemas {names}.'
        )
    return outcome


async def wait_for_jobs(
    call: Caller[ExternalDataSourceJobsWaitParams], send: Send
) -> dict[str, Any]:
    """external-data-sources-jobs-wait's hook: follow the tables' running syncs (the newest
    job of each named table, or of every table with one running) for another capped period;
    at once when none is running."""
    params = call.params

    async def jobs() -> list[dict[str, Any]]:
        listed = await send()
        return list(listed.get("results", []))

    listed = await jobs()
    current = _newest_per_table(listed)
    wanted = list(params.schemas or []) or [
        str(_job_view(job)["schema"]) for job in current if job.get("status") not in FINISHED
    ]
    if all(job.get("status") in FINISHED for job in current):
        outcome: dict[str, Any] = {"finished": True, "waited_seconds": 0.0}
        return {"results": [_job_view(job) for job in current], "wait": outcome}
    # Jobs older than the newest of their table are history.
    newest = {job.get("id") for job in current}
    history = {job.get("id") for job in listed if job.get("id") not in newest}
    wait = float(params.wait_seconds)
    source_id = str(params.id)
    outcome = await follow(call, jobs, wanted, history, source_id, wait)
    return {"results": outcome.pop("jobs"), "wait": outcome}
