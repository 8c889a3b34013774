"""Rehearsal cost: `rehearse()` of a whole table, every check included, against a raw COPY scan.

Run: `python benchmarks/rehearsal.py [--rows 1000000 4000000] [--repeat 3] [--sync-type
incremental|append]`. Everything runs on loopback: an embedded PostgreSQL upstream; each
rehearsal runs in a child process, so its peak RSS is its own. The table has no primary key
constraint, so the key's uniqueness is counted, not taken from the catalog; the row bound is
raised past the table. `append` rehearses on the integer `id`, which adds the insert-order
check at the source. Targets: rehearsal / COPY scan <= 1.5, peak RSS flat in the row count
(within 10%).

Each repeat runs a scan and then a rehearsal, so the two see the same load on the machine. The
ratio is the medians' ratio; `pairs` is the median of each repeat's own ratio, which a load
that changes between repeats (a shared machine) moves less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials  # noqa: E402

# The child: one rehearsal, its own clock and its peak RSS (Linux VmHWM), as JSON.
# The libraries are loaded before the clock starts, as in a server that has rehearsed once and
# as for the COPY scan (psycopg loaded); their loading, once a process, is reported apart.
CHILD = """
import json, sys, time
from pathlib import Path
loading = time.perf_counter()
import duckdb, psycopg
from posthog_warehouse_mcp.sandbox.rehearsal import Limits, rehearse
loaded = time.perf_counter() - loading
inputs, table = json.loads(sys.argv[1]), json.loads(sys.argv[2])
start = time.perf_counter()
answer = rehearse("Postgres", inputs, [table], limits=Limits(rows=10_000_000, seconds=3600,
                  check_seconds=3600))
took = time.perf_counter() - start
hwm = next(int(l.split()[1]) / 1024 for l in Path("/proc/self/status").read_text().splitlines()
           if l.startswith("VmHWM:"))
entry = answer["tables"][0]
print(json.dumps({"seconds": took, "loading": loaded, "peak_rss_mb": hwm,
                  "local": entry["local_sync"],
                  "checks": [[c["check"], c["result"], c.get("how", "")] for c in entry["checks"]],
                  "rows": entry["rows"]}))
"""


def seed(creds: PostgresCredentials, rows: int) -> None:
    """The benchmark table, without a primary key constraint."""
    with psycopg.connect(creds.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(
            "CREATE TABLE bench (id bigint NOT NULL, customer_id int, amount numeric(12,2), "
            "status text, created_at timestamptz, updated_at timestamptz NOT NULL)"
        )
        conn.execute(
            "INSERT INTO bench SELECT g, g %% 5000, (g %% 10000) / 100.0, "
            "(ARRAY['paid','refunded','pending'])[1 + g %% 3], "
            "now() - (%s - g) * interval '1 second', now() - (%s - g) * interval '1 second' "
            "FROM generate_series(1, %s) g",
            (rows, rows, rows),
        )
        conn.execute("VACUUM ANALYZE bench")


def copy_scan(creds: PostgresCredentials) -> float:
    """The floor: every row of the table through COPY TO STDOUT, read and dropped."""
    start = time.perf_counter()
    with psycopg.connect(creds.conninfo()) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        with conn.cursor().copy("COPY (SELECT * FROM bench) TO STDOUT WITH (FORMAT csv)") as copy:
            for _ in copy:
                pass
    return time.perf_counter() - start


def rehearsal(creds: PostgresCredentials, sync_type: str) -> dict[str, Any]:
    """One rehearsal of the whole table in a child process."""
    table: dict[str, Any] = {"name": "bench", "should_sync": True, "sync_type": sync_type}
    if sync_type == "append":
        table |= {"incremental_field": "id", "incremental_field_type": "integer"}
    else:
        table |= {
            "incremental_field": "updated_at",
            "incremental_field_type": "timestamp",
            "primary_key_columns": ["id"],
        }
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(creds.job_inputs()), json.dumps(table)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sync-type", choices=["incremental", "append"], default="incremental")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory(prefix="rehearsal-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "upstream")
        creds = pg.start()
        try:
            for rows in args.rows:
                print(f"seeding {rows:,} rows ...", file=sys.stderr)
                seed(creds, rows)
                scans, runs = [], []
                for _ in range(args.repeat):  # interleaved: both see the same machine load
                    scans.append(copy_scan(creds))
                    runs.append(rehearsal(creds, args.sync_type))
                last = runs[-1]
                assert last["rows"]["count"] == rows, last["rows"]
                lines.append(
                    (
                        rows,
                        statistics.median(scans),
                        statistics.median(r["seconds"] for r in runs),
                        statistics.median(
                            r["seconds"] / s for r, s in zip(runs, scans, strict=True)
                        ),
                        max(r["peak_rss_mb"] for r in runs),
                        statistics.median(r["loading"] for r in runs),
                        last,
                    )
                )
        finally:
            pg.stop()
    print(f"\nsync type: {args.sync_type}   repeat: {args.repeat} (medians; peak RSS: max)\n")
    print(
        f"{'rows':>10}{'COPY scan (s)':>15}{'rehearsal (s)':>15}{'ratio':>8}{'pairs':>8}"
        f"{'peak RSS MB':>13}{'loading (s)':>13}"
    )
    for rows, scan, took, pairs, rss, loading, _ in lines:
        print(
            f"{rows:>10,}{scan:>15.2f}{took:>15.2f}{took / scan:>8.2f}{pairs:>8.2f}{rss:>13.0f}"
            f"{loading:>13.2f}"
        )
    print("\ntarget: ratio <= 1.5; peak RSS within 10% across row counts")
    print("loading: DuckDB, psycopg and the rehearsal's modules, once a server process")
    if len(lines) > 1:
        low, high = min(r[4] for r in lines), max(r[4] for r in lines)
        print(f"peak RSS spread: {(high - low) / low:.1%}")
    if hasattr(os, "getloadavg"):  # the machine's other work, which the timings share it with
        print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    rows, *_, last = lines[-1]
    print(f"\nchecks of the {rows:,}-row run:")
    for name, result, how in last["checks"]:
        print(f"  {name:<22}{result:<10}{how}")
    local = last["local"]
    print(
        f"  local sync: {local['rows_loaded']:,} rows, export {local['read_seconds']:.2f}s, "
        f"export+load {local['seconds']:.2f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
