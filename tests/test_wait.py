"""wait_seconds: a sync-starting tool follows the jobs it started and reports progress."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.support import SCHEMA_ID, SOURCE, SOURCE_ID, Recorder, Seen, connect

pytestmark = pytest.mark.anyio

OLD = {"id": "old", "status": "Completed", "rows_synced": 5, "schema": {"name": "orders"}}


def scripted(job_states: list[str | None]) -> Recorder:
    """An upstream whose new job for 'orders' goes through ``job_states`` (None = not yet)."""
    polls: list[int] = []

    def respond(request: Request, seen: Seen) -> Response:
        if seen.method == "POST":
            return Response(status_code=200)
        if seen.path.endswith("/jobs/"):
            state = job_states[min(len(polls), len(job_states) - 1)]
            polls.append(1)
            jobs: list[dict[str, Any]] = [OLD]
            if state is not None:
                jobs.insert(
                    0,
                    {
                        "id": "new",
                        "status": state,
                        "rows_synced": 42,
                        "latest_error": None,
                        "schema": {"name": "orders"},
                    },
                )
            return JSONResponse(jobs)
        if "/external_data_schemas/" in seen.path:
            return JSONResponse({"id": SCHEMA_ID, "name": "orders", "source": {"id": SOURCE_ID}})
        return JSONResponse(SOURCE)

    return Recorder(respond=respond)


# Each run waits out the product's real poll interval (about a second): the default run speaks
# the era desktop clients use, `-m slow` adds the other.
@pytest.mark.parametrize("mode", ["legacy", pytest.param("auto", marks=pytest.mark.slow)])
async def test_reload_waits_for_the_new_job_and_reports_progress(mode: str) -> None:
    # snapshot, then: not started yet, running, completed
    recorder = scripted([None, None, "Running", "Completed"])
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with connect(recorder, mode=mode) as client:
        result = await client.call_tool(
            "external-data-sources-reload",
            {"id": SOURCE_ID, "wait_seconds": 30},
            progress_callback=on_progress,
        )
    assert result.is_error is False, result.content
    wait = result.structured_content["wait"]
    assert wait["finished"] is True
    assert wait["jobs"] == [
        {
            "id": "new",
            "schema": "orders",
            "status": "Completed",
            "rows_synced": 42,
            "latest_error": None,
            "finished_at": None,
        }
    ]
    assert updates and updates[-1][:2] == (1.0, 1.0)
    posts = [s for s in recorder.seen if s.method == "POST"]
    assert len(posts) == 1 and posts[0].body == {}


async def test_schema_resync_wait_times_out_with_a_hint() -> None:
    recorder = scripted([None, "Running"])
    async with connect(recorder) as client:
        result = await client.call_tool(
            "external-data-schemas-resync", {"id": SCHEMA_ID, "wait_seconds": 1}
        )
    wait = result.structured_content["wait"]
    assert wait["finished"] is False
    assert wait["jobs"][0]["status"] == "Running"
    assert "external-data-sources-jobs" in wait["hint"]


async def test_without_wait_the_tool_returns_at_once() -> None:
    recorder = scripted([None])
    async with connect(recorder) as client:
        result = await client.call_tool("external-data-schemas-reload", {"id": SCHEMA_ID})
    assert result.structured_content == {"ok": True, "status_code": 200}
    assert [s.method for s in recorder.seen] == ["POST"]
