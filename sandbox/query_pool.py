"""The query workers (`query_worker.py`): how many queries run at once, how many wait for a turn,
and how a query is stopped, whatever it is doing.

- At most `workers` queries run at once, each in a worker process; at most `queue` more wait
  for a turn, first come first served; past that a query is answered busy at once (429 with
  Retry-After, as PostHog throttles).
- A query's time limit counts from its arrival: waiting for a turn and starting a worker are
  part of it. A query that ran out of time is stopped by ending its worker, and answered busy
  if it spent most of the time waiting for its turn (a retry gets the whole limit).
- While a query runs, the workers' resident memory is read every 20 ms; when together they hold
  more than `memory_mb`, the one holding most is ended and its query answered with the limit.
  This holds on Linux, macOS and Windows alike (psutil), where `RLIMIT_AS` would not.
- A caller that stops waiting (the MCP server's POSTHOG_TIMEOUT cancels its request to the
  in-process sandbox) ends the worker too. An ended worker is replaced at the next query.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psutil  # type: ignore[import-untyped]  # no stubs; a sandbox dependency
from anyio.streams.buffered import BufferedByteReceiveStream

from .hogql import QueryError
from .query_worker import HEADER, MAX_FRAME, frame

if TYPE_CHECKING:
    from anyio.abc import Process

logger = logging.getLogger(__name__)

# How often the workers' memory is read while a query runs.
WATCH_SECONDS = 0.02
# What a worker keeps of the sandbox's environment: enough to start Python, no secret.
_ENVIRONMENT = (
    "PATH",
    "SYSTEMROOT",
    "WINDIR",
    "TEMP",
    "TMP",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "PYTHONPATH",
    "PYTHONHOME",
)


@dataclass(frozen=True)
class QueryLimits:
    """What queries may take of the machine."""

    # PostHog's max_execution_time for personal-API-key queries; here waiting counts too.
    seconds: float = 10.0
    # Queries running at once, each in its own worker process.
    workers: int = 2
    # Queries waiting for a turn; one more is answered busy.
    queue: int = 4
    # The workers' resident memory, together (a worker alone is about 80 MB).
    memory_mb: int = 640
    # DuckDB's own limit in each worker for what its buffer manager holds (it spills past it).
    duckdb_memory_mb: int = 160


class Busy(Exception):
    """No turn for the query: the queue is full, or its time ran out before a turn came."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WorkerFailed(Exception):
    """A worker failed in a way no query explains (it would not start, or a bug in it)."""


class _Gone(Exception):
    """The worker's pipe closed: the process ended."""


@dataclass(eq=False)
class _Worker:
    """One worker process and the end of its pipe the sandbox reads."""

    process: Process
    replies: BufferedByteReceiveStream
    usage: psutil.Process | None
    spill: Path
    ended: bool = False
    # The memory it held when the watch ended it, in MB.
    over_memory: int | None = None

    async def exchange(self, kind: bytes, request: dict[str, Any]) -> tuple[bytes, bytes]:
        """Send one frame and read the answer's kind and payload.

        Raises:
            _Gone: the process ended (or sent a frame no worker sends).
        """
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(frame(kind, json.dumps(request).encode()))
            (size,) = HEADER.unpack(await self.replies.receive_exactly(HEADER.size))
            if not 1 <= size <= MAX_FRAME:
                raise _Gone(f"a frame of {size} bytes")
            body = await self.replies.receive_exactly(size)
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            OSError,
        ) as exc:
            raise _Gone(type(exc).__name__) from None
        return body[:1], body[1:]

    def rss(self) -> int:
        """Its resident memory in bytes (0 once it has ended)."""
        try:
            return int(self.usage.memory_info().rss) if self.usage is not None else 0
        except psutil.Error:
            return 0

    def end(self) -> None:
        """Kill it now (the pipe's reader then sees it gone)."""
        self.ended = True
        with contextlib.suppress(ProcessLookupError, OSError):
            self.process.kill()


@dataclass(frozen=True)
class Turn:
    """A query's turn: its deadline, and how long it waited for the turn."""

    pool: QueryPool
    deadline: float
    waited: float

    async def run(self, request: dict[str, Any]) -> tuple[bytes, bytes]:
        """Run the query in a worker by the deadline; return the kind and payload the worker
        answered (`query_worker.py`).

        Raises:
            QueryError: the query was stopped: out of time, or over the memory limit; or it
                ended its worker.
            WorkerFailed: no worker could be started.
        """
        return await self.pool._run(self, request)

    def out_of_time(self) -> QueryError | Busy:
        """The error of a query stopped at its deadline: busy if it spent most of its time
        waiting for the turn (a retry gets the whole limit), else too slow."""
        limit = self.pool.limits.seconds
        if self.waited >= limit / 2:
            wait = self.pool._retry_after()
            return Busy(
                f"The sandbox was busy: the query waited {self.waited:.1f} of its {limit:g} "
                f"seconds for a turn while other queries ran, and ran out of time. Retry in "
                f"{wait} seconds.",
                retry_after=wait,
            )
        note = (
            f" ({self.waited:.1f} s of it waiting for a turn while other queries ran)"
            if self.waited >= 0.5
            else ""
        )
        return QueryError(
            f"The query took longer than {limit:g} seconds{note} and was stopped. Filter or "
            "aggregate more."
        )


class QueryPool:
    """The worker processes queries run in, their turns, and their limits."""

    def __init__(self, published: Path, spill: Path, limits: QueryLimits | None = None) -> None:
        """Workers read the copies in `published` and spill to folders under `spill`; none
        starts before the first query."""
        self.published = published
        self.spill = spill
        self.limits = limits or QueryLimits()
        self.waiting = 0
        self._turns: anyio.CapacityLimiter | None = None
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._deadlines: dict[object, float] = {}  # the running queries' deadlines
        self._started = 0

    @property
    def running(self) -> int:
        """Queries holding a turn now."""
        return len(self._deadlines)

    @asynccontextmanager
    async def turn(self, deadline: float) -> AsyncIterator[Turn]:
        """Wait for a turn to run a query, until `deadline` (`anyio.current_time()`); hold it for
        the block.

        Raises:
            Busy: the queue is full, or the deadline passed before a turn came.
        """
        turns = self._turn_limiter()
        arrived = anyio.current_time()
        token = object()
        got = False
        try:
            turns.acquire_on_behalf_of_nowait(token)  # refused while others wait: first come...
            got = True
        except anyio.WouldBlock:
            if self.waiting >= self.limits.queue:
                wait = self._retry_after()
                raise Busy(
                    f"The sandbox is busy: {_queries(self.running)} running and {self.waiting} "
                    f"more waiting for a turn, as many as it holds. Retry in {wait} seconds.",
                    retry_after=wait,
                ) from None
            self.waiting += 1
            try:
                with anyio.move_on_after(deadline - arrived):
                    await turns.acquire_on_behalf_of(token)
                    got = True
            finally:
                self.waiting -= 1
        if not got:
            wait = self._retry_after()
            raise Busy(
                f"The sandbox was busy: the query waited {self.limits.seconds:g} seconds, its "
                f"whole time limit, for a turn while {_queries(self.running)} ran. Retry in "
                f"{wait} seconds.",
                retry_after=wait,
            )
        self._deadlines[token] = deadline
        try:
            yield Turn(self, deadline, anyio.current_time() - arrived)
        finally:
            del self._deadlines[token]
            turns.release_on_behalf_of(token)

    async def aclose(self) -> None:
        """End every worker and delete their spill folders."""
        for worker in list(self._workers):
            await self._end(worker)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self.spill, ignore_errors=True))

    def _turn_limiter(self) -> anyio.CapacityLimiter:
        # Made in the event loop that serves the queries.
        if self._turns is None:
            self._turns = anyio.CapacityLimiter(self.limits.workers)
        return self._turns

    def _retry_after(self) -> int:
        """Whole seconds until the first running query ends at the latest."""
        now = anyio.current_time()
        soonest = min(self._deadlines.values(), default=now + 1)
        return max(1, math.ceil(soonest - now))

    async def _run(self, turn: Turn, request: dict[str, Any]) -> tuple[bytes, bytes]:
        worker: _Worker | None = None
        reply: tuple[bytes, bytes] | None = None
        try:
            with anyio.move_on_after(turn.deadline - anyio.current_time()) as clock:
                worker = await self._worker()
                async with anyio.create_task_group() as watch:
                    watch.start_soon(self._watch)
                    with contextlib.suppress(_Gone):
                        reply = await worker.exchange(b"Q", request)
                    watch.cancel_scope.cancel()
        finally:
            if worker is not None and reply is None:
                await self._end(worker)
        if worker is not None and reply is not None:
            self._idle.append(worker)
            return reply
        if worker is not None and worker.over_memory is not None:
            logger.info("stopped a query holding %d MB (the limit)", worker.over_memory)
            raise QueryError(
                f"The query used too much memory and was stopped: the sandbox's queries may hold "
                f"{self.limits.memory_mb} MB together, and this one held {worker.over_memory} "
                "MB. Filter or aggregate more, and avoid building very large strings or lists."
            )
        if clock.cancelled_caught:
            raise turn.out_of_time()
        assert worker is not None
        code = worker.process.returncode
        logger.warning("a query ended its worker process (exit code %s)", code)
        raise QueryError(
            f"The query ended the process that ran it (exit code {code}); the sandbox starts "
            "another. Try a simpler query."
        )

    async def _worker(self) -> _Worker:
        """An idle worker, or a new one."""
        while self._idle:
            worker = self._idle.pop()
            if not worker.ended:
                return worker
            await self._end(worker)  # ended by the memory watch while idle
        return await self._start()

    async def _start(self) -> _Worker:
        self._started += 1
        spill = self.spill / f"worker-{self._started}"

        def fresh() -> None:
            shutil.rmtree(spill, ignore_errors=True)
            spill.mkdir(parents=True)

        try:
            await anyio.to_thread.run_sync(fresh)
            process = await anyio.open_process(
                [sys.executable, "-c", _boot()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # the sandbox's own log
                env={k: v for k, v in os.environ.items() if k in _ENVIRONMENT},
            )
        except OSError as exc:
            logger.error("could not start a query worker: %s", exc)
            raise WorkerFailed("could not start a query worker") from None
        assert process.stdout is not None
        try:
            usage = psutil.Process(process.pid)
        except psutil.Error:
            usage = None  # ended at once: the first exchange says so
        worker = _Worker(process, BufferedByteReceiveStream(process.stdout), usage, spill)
        self._workers.add(worker)
        config = {
            "copies": str(self.published),
            "spill": str(spill),
            "memory_mb": self.limits.duckdb_memory_mb,
            "parent": os.getpid(),
        }
        try:
            kind, payload = await worker.exchange(b"C", config)
        except _Gone:
            await self._end(worker)
            logger.error("a query worker ended while starting (exit code %s)", process.returncode)
            raise WorkerFailed("the query worker ended while starting") from None
        except BaseException:
            await self._end(worker)
            raise
        if kind != b"R":
            await self._end(worker)
            detail = payload[:200].decode(errors="replace")
            logger.error("a query worker could not start: %s", detail)
            raise WorkerFailed("a query worker could not start")
        return worker

    async def _end(self, worker: _Worker) -> None:
        """Kill a worker, wait for it, and delete its spill folder."""
        worker.end()
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(10):
                await worker.process.aclose()
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(worker.spill, ignore_errors=True))

    async def _watch(self) -> None:
        """While a query runs: end the worker holding the most when the workers together hold
        more than the limit."""
        budget = self.limits.memory_mb * 1024 * 1024
        while True:
            await anyio.sleep(WATCH_SECONDS)
            sizes = {w: w.rss() for w in self._workers if not w.ended}
            if sizes and sum(sizes.values()) > budget:
                largest = max(sizes, key=lambda w: sizes[w])
                largest.over_memory = sizes[largest] // (1024 * 1024)
                largest.end()


def _queries(count: int) -> str:
    return "1 query" if count == 1 else f"{count} queries"


def _boot() -> str:
    """The worker's command: this package's `query_worker.main`, imported from where this
    module was (so it runs the same code, whatever the worker's sys.path)."""
    package = __name__.split(".")[0]
    root = Path(sys.modules[package].__file__ or ".").resolve().parent.parent
    return (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        f"from {__package__}.query_worker import main; raise SystemExit(main())"
    )
