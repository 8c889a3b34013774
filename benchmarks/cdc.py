"""CDC sync cost: changes applied per second against a full refresh, and the lag after a burst.

Run: `python -m benchmarks.cdc [--rows 1000000] [--updates 100000] [--burst 10000]
[--per-transaction 100] [--repeat 3] [--mode consolidated|cdc_only|both]`. Everything runs on
loopback: an embedded PostgreSQL with wal_level `logical` and the sandbox CLI as a subprocess
(so its peak RSS is its own). Two sources read the same table: one by CDC (PostHog-managed slot
and publication), one by full refresh.

(a) Each repeat updates `--updates` rows upstream in one statement, then syncs the CDC table
(the changes since the last sync) and refreshes the other table whole: both times, the changes
applied a second, and the ratio CDC / full refresh (the medians' ratio, and `pairs`, the median
of each repeat's own ratio, which a load changing between repeats moves less).

(b) Each repeat times a CDC sync with nothing to apply (the fixed cost), then makes `--burst`
changes upstream in transactions of `--per-transaction` rows, the last one marking row 1, and
measures from the last commit to the moment the sandbox's query API (`execute-sql`'s endpoint)
shows the mark, the sync triggered at once: the warehouse lag. Polled every 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sync_throughput import (  # noqa: E402
    API,
    job_seconds,
    peak_rss_mb,
    run_sync,
    seed,
    standalone_sandbox,
)
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials  # noqa: E402

# How long (a) and (b) may take in all, and how long one lag may take before it counts as lost.
BUDGET_SECONDS = 900
LAG_TIMEOUT = 120


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) again from its current RSS (Linux `clear_refs`)."""
    # Not Linux, or not allowed: the peak is then the run's so far.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def create_source(
    client: httpx.Client,
    creds: PostgresCredentials,
    prefix: str,
    schema: dict[str, Any],
    **extra: Any,
) -> tuple[str, str]:
    """Create a source syncing `bench` and wait for its first sync; its id and the table's."""
    payload = {**creds.job_inputs(), "schemas": [{"name": "bench", **schema}], **extra}
    created = client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "prefix": prefix, "payload": payload},
    )
    created.raise_for_status()
    source_id = created.json()["id"]
    jobs_url = f"{API}/external_data_sources/{source_id}/jobs/"
    deadline = time.monotonic() + 600
    while not [j for j in client.get(jobs_url).json() if j["status"] != "Running"]:
        if time.monotonic() > deadline:
            raise TimeoutError("the first sync did not finish within 600 s")
        time.sleep(0.05)
    source = client.get(f"{API}/external_data_sources/{source_id}/").json()
    return source_id, source["schemas"][0]["id"]


def query(client: httpx.Client, hogql: str) -> list[list[Any]]:
    """Rows of a HogQL query through the sandbox's query API."""
    answer = client.post(f"{API}/query/", json={"query": {"kind": "HogQLQuery", "query": hogql}})
    answer.raise_for_status()
    rows: list[list[Any]] = answer.json()["results"]
    return rows


def upstream(creds: PostgresCredentials, *statements: tuple[str, tuple[Any, ...]]) -> float:
    """Run statements upstream, each its own transaction; return how long they took."""
    start = time.perf_counter()
    with psycopg.connect(creds.conninfo(), autocommit=True) as conn:
        for sql, params in statements:
            conn.execute(sql.encode(), params)
    return time.perf_counter() - start


def throughput(
    client: httpx.Client,
    creds: PostgresCredentials,
    pid: int,
    ids: dict[str, tuple[str, str]],
    args: Any,
) -> dict[str, list[float]]:
    """(a): per repeat, `--updates` rows updated, then the CDC sync and a full refresh."""
    step = max(1, args.rows // args.updates)
    found: dict[str, list[float]] = {
        k: [] for k in ("write", "cdc", "cdc_job", "full", "rss_cdc", "rss_full")
    }
    for round_ in range(args.repeat):
        found["write"].append(
            upstream(
                creds,
                (
                    "UPDATE bench SET amount = amount + 1, updated_at = clock_timestamp() "
                    "WHERE id %% %s = %s AND id <= %s",
                    (step, round_ % step, step * args.updates),
                ),
            )
        )
        for kind in ("cdc", "full"):
            source_id, schema_id = ids[kind]
            reset_peak_rss(pid)
            elapsed, job, _ = run_sync(
                client, source_id, f"{API}/external_data_schemas/{schema_id}/reload/"
            )
            found[kind].append(elapsed)
            found[f"rss_{kind}"].append(peak_rss_mb(pid))
            if kind == "cdc":
                found["cdc_job"].append(job_seconds(job))
                if job["rows_synced"] != args.updates:
                    raise RuntimeError(f"the CDC sync applied {job['rows_synced']} changes")
    return found


def lag(
    client: httpx.Client,
    creds: PostgresCredentials,
    ids: dict[str, tuple[str, str]],
    table: str,
    args: Any,
) -> dict[str, list[float]]:
    """(b): per repeat, a CDC sync with nothing to apply, then a burst and its warehouse lag."""
    source_id, schema_id = ids["cdc"]
    reload_url = f"{API}/external_data_schemas/{schema_id}/reload/"
    found: dict[str, list[float]] = {k: [] for k in ("empty", "burst", "lag", "lag_job")}
    live = " AND NOT _ph_deleted" if table.endswith("bench") else " AND valid_to IS NULL"
    for round_ in range(args.repeat):
        found["empty"].append(run_sync(client, source_id, reload_url)[0])
        mark = f"burst-{round_}"
        chunks: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE bench SET amount = amount + 1 WHERE id > %s AND id <= %s",
                (first, min(first + args.per_transaction, args.burst)),
            )
            for first in range(1, args.burst, args.per_transaction)
        ]
        chunks.append(("UPDATE bench SET status = %s WHERE id = 1", (mark,)))
        found["burst"].append(upstream(creds, *chunks))
        committed = time.perf_counter()
        jobs_url = f"{API}/external_data_sources/{source_id}/jobs/"
        before = {job["id"] for job in client.get(jobs_url).json()}
        client.post(reload_url).raise_for_status()
        while query(client, f"SELECT status FROM {table} WHERE id = 1{live}") != [[mark]]:
            if time.perf_counter() - committed > LAG_TIMEOUT:
                raise TimeoutError(f"the burst did not reach the warehouse in {LAG_TIMEOUT} s")
            time.sleep(0.01)
        found["lag"].append(time.perf_counter() - committed)
        job = next(j for j in client.get(jobs_url).json() if j["id"] not in before)
        found["lag_job"].append(job_seconds(job))
    return found


def main(argv: list[str]) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--per-transaction", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--mode", choices=["consolidated", "cdc_only", "both"], default="consolidated"
    )
    args = parser.parse_args(argv)
    if not (
        0 < args.updates <= args.rows and 1 < args.burst <= args.rows and 1 <= args.repeat <= 10
    ):
        parser.error("need 0 < --updates <= --rows, 1 < --burst <= --rows, 1 <= --repeat <= 10")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
        workdir = Path(tmp)
        pg = EmbeddedPostgres(workdir / "upstream", settings={"wal_level": "logical"})
        creds = pg.start()
        try:
            print(f"seeding {args.rows:,} rows ...", file=sys.stderr)
            seed(creds, args.rows)
            with (
                standalone_sandbox(workdir) as (base_url, proc),
                httpx.Client(base_url=base_url, timeout=60) as client,
            ):
                snapshot_start = time.perf_counter()
                cdc_schema = {"should_sync": True, "sync_type": "cdc", "cdc_table_mode": args.mode}
                ids = {"cdc": create_source(client, creds, "cdc_", cdc_schema, cdc_enabled=True)}
                snapshot = time.perf_counter() - snapshot_start
                full_schema = {"should_sync": True, "sync_type": "full_refresh"}
                ids["full"] = create_source(client, creds, "full_", full_schema)
                print("(a) CDC sync against a full refresh ...", file=sys.stderr)
                a = throughput(client, creds, proc.pid, ids, args)
                table = (
                    "postgres.cdc.bench" if args.mode != "cdc_only" else "postgres.cdc.bench_cdc"
                )
                live = (
                    "NOT _ph_deleted"
                    if args.mode != "cdc_only"
                    else "valid_to IS NULL AND NOT _ph_deleted"
                )
                totals = [
                    query(client, f"SELECT count(), sum(amount) FROM {name} WHERE {where}")
                    for name, where in ((table, live), ("postgres.full.bench", "true"))
                ]
                if time.perf_counter() - started > BUDGET_SECONDS:
                    raise TimeoutError(f"(a) alone took over {BUDGET_SECONDS} s: use smaller sizes")
                print("(b) warehouse lag after a burst ...", file=sys.stderr)
                b = lag(client, creds, ids, table, args)
        finally:
            pg.stop()
    report(args, snapshot, a, b, totals, time.perf_counter() - started)
    return 0


def report(
    args: Any,
    snapshot: float,
    a: dict[str, list[float]],
    b: dict[str, list[float]],
    totals: list[list[list[Any]]],
    took: float,
) -> None:
    """Print both tables."""
    med = statistics.median
    cdc, full = med(a["cdc"]), med(a["full"])
    pairs = med(c / f for c, f in zip(a["cdc"], a["full"], strict=True))
    print(
        f"\nrows: {args.rows:,}   mode: {args.mode}   repeat: {args.repeat} "
        "(medians; peak RSS: max)\n"
    )
    print(f"(a) {args.updates:,} updates in one transaction, then a CDC sync and a full refresh")
    print(f"{'measure':<48}{'value':>12}")
    print(f"{'first CDC sync: the snapshot (s)':<48}{snapshot:>12.2f}")
    print(f"{'upstream UPDATE of the rows (s)':<48}{med(a['write']):>12.2f}")
    print(f"{'CDC sync, seen by the API (s)':<48}{cdc:>12.2f}")
    print(f"{'  same, job created→finished (s)':<48}{med(a['cdc_job']):>12.2f}")
    print(f"{'  changes applied a second':<48}{args.updates / cdc:>12,.0f}")
    print(f"{'full refresh of the same table (s)':<48}{full:>12.2f}")
    print(f"{'  rows a second':<48}{args.rows / full:>12,.0f}")
    print(f"{'CDC sync / full refresh':<48}{cdc / full:>12.3f}")
    print(f"{'  pairs (median of each repeat ratio)':<48}{pairs:>12.3f}")
    print(f"{'sandbox peak RSS during a CDC sync (MB)':<48}{max(a['rss_cdc']):>12.0f}")
    print(f"{'sandbox peak RSS during a full refresh (MB)':<48}{max(a['rss_full']):>12.0f}")
    same = "yes" if totals[0] == totals[1] else f"NO: {totals[0]} against {totals[1]}"
    print(f"{'CDC table = full refresh (count, sum)':<48}{same:>12}")
    transactions = -(-(args.burst - 1) // args.per_transaction) + 1
    print(
        f"\n(b) a burst of {args.burst:,} changes in {transactions} transactions, then a CDC sync"
    )
    print(f"{'measure':<48}{'value':>12}")
    print(f"{'CDC sync with nothing to apply (s)':<48}{med(b['empty']):>12.2f}")
    print(f"{'the burst upstream (s)':<48}{med(b['burst']):>12.2f}")
    print(f"{'lag: last commit → visible in a query (s)':<48}{med(b['lag']):>12.2f}")
    print(f"{'  of which the sync job (s)':<48}{med(b['lag_job']):>12.2f}")
    print(f"{'  worst of the repeats (s)':<48}{max(b['lag']):>12.2f}")
    print(f"{'lag / empty CDC sync':<48}{med(b['lag']) / med(b['empty']):>12.2f}")
    if hasattr(os, "getloadavg"):  # the machine's other work, which the timings share it with
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"whole run: {took:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
