"""The proof for a query's memory: the attack run's queries that took gigabytes (F1) are stopped
at the limit, and the sandbox with every process it started stays under 1 GB meanwhile."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from tests.sandbox.support import API, sandbox_process, wait_until_up
from tests.support import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The sandbox's time limit for a query, and how late an answer may come on a busy machine.
DEADLINE = 10.0
MARGIN = 10.0
PEAK_BOUND = 1024 * 1024 * 1024


class TreeMemory:
    """The peak resident memory of a process and all its descendants, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def total(self) -> int:
        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # ended between the listing and the reading
                total += proc.memory_info().rss
        return total

    def sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.total())
            except psutil.Error:
                return

    @contextmanager
    def watching(self) -> Iterator[TreeMemory]:
        thread = threading.Thread(target=self.sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT length(repeat(repeat('x', 1000000), 3000))",  # M1: 5,870 MB before
        "SELECT length(range(50000000))",  # M2, M3: 4,033 MB and 15.5 to 37.5 s before
        "SELECT length(repeat('x', 1000000000))",  # M6: 2,364 MB, and it ran
    ],
)
async def test_a_query_that_allocates_without_bound_is_stopped_at_the_memory_limit(
    tmp_path: Path, query: str
) -> None:
    port = free_port()
    with sandbox_process(tmp_path / "sandbox", port) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            await wait_until_up(client)
            with TreeMemory(proc.pid).watching() as memory:
                started = anyio.current_time()
                response = await client.post(
                    f"{API}/query/", json={"query": {"kind": "HogQLQuery", "query": query}}
                )
                took = anyio.current_time() - started
            after = await client.post(
                f"{API}/query/", json={"query": {"kind": "HogQLQuery", "query": "SELECT 1"}}
            )
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    # The limit it met, named: memory (640 MB for the workers together), or else time.
    assert ("memory" in detail and "640 MB" in detail) or "longer than 10 seconds" in detail, detail
    assert took < DEADLINE + MARGIN, took
    assert memory.peak < PEAK_BOUND, f"peak {memory.peak / 2**20:.0f} MB"
    assert after.json()["results"] == [[1]]
