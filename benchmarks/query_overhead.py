"""execute-sql's overhead over running the same SQL directly in DuckDB.

Run: `python -m benchmarks.query_overhead [--rows 1000000] [--runs 7]`. An embedded PostgreSQL
upstream is seeded with the sync benchmark's table, synced into an in-process sandbox, and the
MCP server (in memory, the sandbox as its upstream) answers execute-sql. Two queries, a count
and a group-by, are timed three ways in the same invocation, interleaved: through the tool, as
the translated SQL on a DuckDB cursor of the same warehouse, and a no-op tool call
(`SELECT 1`) for the fixed cost of a call. Target (project issue 12):
(tool - no-op) / direct <= 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sync_throughput import seed  # noqa: E402
from posthog_warehouse_mcp.sandbox import open_sandbox  # noqa: E402
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres  # noqa: E402
from posthog_warehouse_mcp.sandbox.hogql import compile_query  # noqa: E402
from posthog_warehouse_mcp.server.app import create_server  # noqa: E402
from posthog_warehouse_mcp.server.config import Settings  # noqa: E402

API = "/api/environments/1"
QUERIES = {
    "count": "SELECT count() FROM postgres.bench",
    "group-by": "SELECT status, count(), sum(amount) FROM postgres.bench GROUP BY status",
}
TARGET = 1.5


async def median(runs: int, action: Callable[[], Awaitable[Any]]) -> float:
    """Median seconds of `runs` calls (one warm-up first)."""
    await action()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def main(rows: int, runs: int) -> int:
    from mcp import Client

    base = Path(tempfile.mkdtemp(prefix="query-bench-"))
    upstream = EmbeddedPostgres(base / "pgdata")
    creds = upstream.start()
    try:
        seed(creds, rows)
        async with open_sandbox(base / "sandbox", demo=False) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as http:
                table = {"name": "bench", "should_sync": True, "sync_type": "full_refresh"}
                payload = {**creds.job_inputs(), "schemas": [table]}
                created = await http.post(
                    f"{API}/external_data_sources/",
                    json={"source_type": "Postgres", "payload": payload},
                )
                source_id = created.json()["id"]
                while True:
                    jobs = (await http.get(f"{API}/external_data_sources/{source_id}/jobs/")).json()
                    if jobs and jobs[0]["status"] != "Running":
                        break
                    await anyio.sleep(0.2)
            settings = Settings(
                personal_api_key="bench", environment_id="1", host="http://s", sandbox=False
            )
            services = app.state.services
            async with Client(create_server(settings, transport=transport)) as client:

                async def tool(query: str) -> None:
                    result = await client.call_tool("execute-sql", {"query": query})
                    assert not result.is_error, result

                noop = await median(runs, lambda: tool("SELECT 1"))
                print(f"rows: {rows:,}; runs: {runs} (medians, seconds)")
                print(f"{'query':10} {'tool':>8} {'no-op':>8} {'direct':>8} {'ratio':>6}  target")
                worst = 0.0
                for name, query in QUERIES.items():
                    sql = compile_query(
                        query, services.queries.names(), default_limit=100, max_limit=50_000
                    ).sql

                    async def direct(sql: str = sql) -> None:
                        cursor = services.warehouse.cursor()
                        try:
                            await anyio.to_thread.run_sync(lambda: cursor.execute(sql).fetchall())
                        finally:
                            cursor.close()

                    through = await median(runs, lambda query=query: tool(query))
                    plain = await median(runs, direct)
                    ratio = (through - noop) / plain
                    worst = max(worst, ratio)
                    verdict = "met" if ratio <= TARGET else "MISSED"
                    print(
                        f"{name:10} {through:8.4f} {noop:8.4f} {plain:8.4f} {ratio:6.2f}  "
                        f"<= {TARGET} {verdict}"
                    )
        return 0 if worst <= TARGET else 1
    finally:
        upstream.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    raise SystemExit(anyio.run(main, args.rows, args.runs))
