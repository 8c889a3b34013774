"""Rehearsals on this machine: the sandbox's sync engine run against the user's own database
(sandbox/rehearsal.py), in a worker thread, with progress and cancellation.

The server lends this to the rehearse tool (tools/rehearsal.py). The sandbox is imported at
the first rehearsal, so a server that never rehearses never loads it; without the sandbox's
extra installed, a rehearsal says which extra to install.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread

from ..tools.rehearsal import Rehearsal, RehearsalRefused

EXTRA = "pip install 'posthog-warehouse-mcp[sandbox]'"
# Reads a credential the local connect page stored for a source type, without spending it
# (None: none such).
StoredCredential = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def rehearser(
    stored: StoredCredential | None = None,
) -> Callable[[Rehearsal], Awaitable[dict[str, Any]]]:
    """A :data:`~..tools.rehearsal.Rehearse` for this server. ``stored`` reads the in-process
    sandbox's stored credentials; None where credentials are kept by PostHog, which never gives
    one back."""

    async def rehearse(request: Rehearsal) -> dict[str, Any]:
        try:
            from ..sandbox import rehearsal as engine
        except ImportError:
            raise RehearsalRefused(f"rehearsal runs the sandbox's sync engine; {EXTRA}") from None
        inputs = dict(request.job_inputs)
        if request.credential_id is not None:
            found = (
                await stored(request.credential_id, request.source_type)
                if stored is not None
                else None
            )
            if found is None:
                raise RehearsalRefused(
                    "a credential stored in PostHog cannot be read back, so it cannot be "
                    "rehearsed here; pass the connection fields with secret references "
                    '({"env": "POSTHOG_SECRET_<NAME>"}) instead'
                    if stored is None
                    else f"no stored {request.source_type} credential {request.credential_id} "
                    "(expired, used, or for another source type)"
                )
            inputs = {**found, **inputs}
        limits = engine.Limits(rows=request.rows, seconds=request.seconds)
        cancelled = threading.Event()

        def progress(done: float, total: float | None, message: str) -> None:
            report = request.progress
            if report is not None:

                async def send() -> None:
                    await report(done, total, message)

                anyio.from_thread.run(send)

        def run() -> dict[str, Any]:
            answer: dict[str, Any] = engine.rehearse(
                request.source_type,
                inputs,
                request.tables,
                prefix=request.prefix,
                limits=limits,
                progress=progress,
                cancelled=cancelled,
            )
            return answer

        try:
            # A cancelled call leaves the thread to stop at its next check and clean up.
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except engine.RehearsalError as exc:
            raise RehearsalRefused(str(exc)) from None
        except engine.RehearsalCancelled:
            raise RehearsalRefused("the rehearsal was cancelled") from None
        except ImportError as exc:  # a driver the extra brings (psycopg, duckdb...)
            raise RehearsalRefused(
                f"rehearsal needs {exc.name or 'a driver'}, part of the sandbox's extra; {EXTRA}"
            ) from None
        finally:
            cancelled.set()  # a cancelled (or finished) call: the sync stops at its next check

    return rehearse
