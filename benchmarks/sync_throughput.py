"""Sandbox sync throughput: full refresh vs a COPY→DuckDB baseline, incremental reload, peak RSS.

Run: `python -m benchmarks.sync_throughput [--rows 1000000] [--repeat 3] [--shared-buffers 1GB]`.
Everything runs on loopback: an embedded PostgreSQL upstream (stock settings unless
`--shared-buffers` is given) and the sandbox CLI as a subprocess (so its peak RSS is its own).
Prints a table; the targets are shown beside the numbers.

The incremental reload is also split, by the timestamps of its job's log, into the upstream's
read of the changed rows (the COPY, from the log's "Cursor:" line to its "Read" line) and the
rest (connecting, loading, merging, publishing).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres, PostgresCredentials  # noqa: E402

API = "/api/environments/1"
COLUMNS = {
    "id": "BIGINT",
    "customer_id": "INTEGER",
    "amount": "DECIMAL(12,2)",
    "status": "VARCHAR",
    "created_at": "TIMESTAMPTZ",
    "updated_at": "TIMESTAMPTZ",
}


def seed(creds: PostgresCredentials, rows: int) -> None:
    """Create the benchmark table upstream."""
    with psycopg.connect(creds.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), "
            "status text, created_at timestamptz, updated_at timestamptz NOT NULL)"
        )
        conn.execute(
            "INSERT INTO bench SELECT g, g %% 5000, (g %% 10000) / 100.0, "
            "(ARRAY['paid','refunded','pending'])[1 + g %% 3], "
            "timestamptz '2025-01-01' + g * interval '1 second', "
            "timestamptz '2025-01-01' + g * interval '1 second' "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("CREATE INDEX bench_updated_at ON bench (updated_at)")
        conn.execute("VACUUM ANALYZE bench")


def baseline(creds: PostgresCredentials, workdir: Path) -> float:
    """The hand-written floor: COPY TO STDOUT as CSV into a file, DuckDB read_csv into a table."""
    csv_path = workdir / "baseline.csv"
    db_path = workdir / "baseline.duckdb"
    db_path.unlink(missing_ok=True)
    start = time.perf_counter()
    with psycopg.connect(creds.conninfo()) as conn, csv_path.open("wb") as out:
        conn.execute("SET TIME ZONE 'UTC'")
        with conn.cursor().copy("COPY (SELECT * FROM bench) TO STDOUT WITH (FORMAT csv)") as copy:
            for data in copy:
                out.write(data)
    types = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
    with duckdb.connect(str(db_path)) as db:
        db.execute(
            f"CREATE TABLE bench AS SELECT * FROM read_csv('{csv_path}', header = false, "
            f"auto_detect = false, columns = {{{types}}})"
        )
    elapsed = time.perf_counter() - start
    csv_path.unlink()
    return elapsed


def dlt_full_refresh(creds: PostgresCredentials, workdir: Path, backend: str) -> float:
    """The same table through dlt's sql_database source into DuckDB (replace), for comparison."""
    import dlt
    from dlt.sources.sql_database import sql_table

    url = (
        f"postgresql+psycopg://{creds.user}:{creds.password}@{creds.host}:{creds.port}/"
        f"{creds.database}"
    )
    db_path = workdir / f"dlt_{backend}.duckdb"
    db_path.unlink(missing_ok=True)
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        pipelines_dir=str(workdir / "dlt"),
        destination=dlt.destinations.duckdb(str(db_path)),
        dataset_name="bench",
    )
    start = time.perf_counter()
    table = sql_table(credentials=url, table="bench", backend=backend, chunk_size=100_000)
    pipeline.run(table, write_disposition="replace", loader_file_format="parquet")
    return time.perf_counter() - start


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process so far (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def standalone_sandbox(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The sandbox CLI as a subprocess on a loopback port (so its peak RSS is its own): its base
    URL once it answers, and the process; stopped with SIGINT on exit."""
    port = free_port()
    log = (workdir / "sandbox.log").open("wb")
    args = ["--port", str(port), "--dir", str(workdir / "sandbox"), "--no-demo"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_warehouse_mcp.sandbox", *args, "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base_url}{API}/external_data_sources/").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base_url, proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        log.close()


def job_seconds(job: dict[str, Any]) -> float:
    """How long the job ran by the sandbox's own clock (created_at to finished_at)."""
    start = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def read_seconds(client: httpx.Client, schema_id: str, job: dict[str, Any]) -> float:
    """How long the job's upstream read took, by its log: from the line naming the cursor to
    the line counting the rows read."""
    entries = client.get(f"{API}/external_data_schemas/{schema_id}/logs/").json()
    entries = entries["results"] if isinstance(entries, dict) else entries
    moments = {}
    for entry in entries:
        if entry["instance_id"] != job["workflow_run_id"]:
            continue
        for start, key in (("Cursor:", "from"), ("Read ", "to")):
            if entry["message"].startswith(start):
                moments[key] = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    if set(moments) != {"from", "to"}:
        raise RuntimeError(f"the job's log does not show its read: {sorted(moments)}")
    return (moments["to"] - moments["from"]).total_seconds()


def run_sync(client: httpx.Client, source_id: str, url: str) -> tuple[float, dict[str, Any], float]:
    """Trigger a sync and poll until it ends; return wall time, the job and the slowest poll."""
    jobs_url = f"{API}/external_data_sources/{source_id}/jobs/"
    # The jobs list is capped at 50: recognise the new job by id, not by a longer list.
    before = {job["id"] for job in client.get(jobs_url).json()}
    start = time.perf_counter()
    deadline = start + 600
    client.post(url).raise_for_status()
    slowest = 0.0
    while True:
        t0 = time.perf_counter()
        jobs = client.get(jobs_url).json()
        slowest = max(slowest, time.perf_counter() - t0)
        new = [job for job in jobs if job["id"] not in before]
        if new and new[0]["status"] != "Running":
            elapsed = time.perf_counter() - start
            if new[0]["status"] != "Completed":
                raise RuntimeError(f"sync failed: {new[0]['latest_error']}")
            return elapsed, new[0], slowest
        if time.perf_counter() > deadline:
            raise TimeoutError("the sync did not finish within 600 s")
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--shared-buffers",
        help="the upstream's shared_buffers (default: PostgreSQL's stock 128MB)",
    )
    parser.add_argument(
        "--compare-dlt", action="store_true", help="also time dlt (needs dlt[duckdb,sql_database])"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        workdir = Path(tmp)
        settings = {"shared_buffers": args.shared_buffers} if args.shared_buffers else {}
        pg = EmbeddedPostgres(workdir / "upstream", settings=settings)
        creds = pg.start()
        try:
            print(f"seeding {args.rows:,} rows ...", file=sys.stderr)
            seed(creds, args.rows)
            base = [baseline(creds, workdir) for _ in range(args.repeat)]
            dlt_times = {}
            if args.compare_dlt:
                for backend in ("pyarrow", "sqlalchemy"):
                    runs = [dlt_full_refresh(creds, workdir, backend) for _ in range(args.repeat)]
                    dlt_times[backend] = statistics.median(runs)
            with standalone_sandbox(workdir) as (base_url, proc):
                results = drive(base_url, creds, args.repeat)
                results["peak_rss"] = peak_rss_mb(proc.pid)
        finally:
            pg.stop()
    full = statistics.median(results["full"])
    base_median = statistics.median(base)
    incremental = statistics.median(results["incremental"])
    buffers = args.shared_buffers or "stock"
    print(f"\nrows: {args.rows:,}   repeat: {args.repeat} (medians)", end="")
    print(f"   upstream shared_buffers: {buffers}\n")
    print(f"{'measure':<44}{'value':>12}   target")
    print(f"{'baseline COPY→CSV→DuckDB (s)':<44}{base_median:>12.2f}")
    print(f"{'sandbox full refresh, seen by the API (s)':<44}{full:>12.2f}")
    print(
        f"{'  same, job created→finished (s)':<44}{statistics.median(results['full_jobs']):>12.2f}"
    )
    for backend, seconds in dlt_times.items():
        print(f"{f'dlt sql_table backend={backend} (s)':<44}{seconds:>12.2f}")
    print(f"{'full refresh / baseline':<44}{full / base_median:>12.2f}   <= 1.10")
    print(f"{'incremental reload after 1% changed (s)':<44}{incremental:>12.2f}")
    incremental_job = statistics.median(results["incremental_jobs"])
    print(f"{'  same, job created→finished (s)':<44}{incremental_job:>12.2f}")
    print(f"{'incremental / full refresh':<44}{incremental / full:>12.3f}   <= 0.10")
    read = statistics.median(results["incremental_reads"])
    print(f"{'  of which the upstream read (s)':<44}{read:>12.2f}")
    print(f"{'  the rest: job minus read (s)':<44}{incremental_job - read:>12.2f}")
    print(f"{'rows merged by the incremental reload':<44}{results['merged_rows']:>12,}")
    print(f"{'sandbox peak RSS (MB)':<44}{results['peak_rss']:>12.0f}   < 500")
    print(f"{'slowest API answer during a sync (ms)':<44}{results['slowest'] * 1000:>12.0f}")
    return 0


def drive(base_url: str, creds: PostgresCredentials, repeat: int) -> dict[str, Any]:
    """Create the source in the sandbox, run the full and incremental syncs, collect timings."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        payload = {
            **creds.job_inputs(),
            "schemas": [{"name": "bench", "should_sync": False, "sync_type": "full_refresh"}],
        }
        created = client.post(
            f"{API}/external_data_sources/", json={"source_type": "Postgres", "payload": payload}
        )
        created.raise_for_status()
        source_id = created.json()["id"]
        source = client.get(f"{API}/external_data_sources/{source_id}/").json()
        schema_id = source["schemas"][0]["id"]
        reload_url = f"{API}/external_data_schemas/{schema_id}/reload/"
        full, full_jobs, slowest = [], [], 0.0
        for _ in range(repeat):
            elapsed, job, slow = run_sync(client, source_id, reload_url)
            full.append(elapsed)
            full_jobs.append(job_seconds(job))
            slowest = max(slowest, slow)
        client.patch(
            f"{API}/external_data_schemas/{schema_id}/",
            json={"sync_type": "incremental", "incremental_field": "updated_at"},
        ).raise_for_status()
        # The first incremental run re-imports everything and saves the cursor.
        run_sync(client, source_id, f"{API}/external_data_schemas/{schema_id}/resync/")
        incremental, incremental_jobs, incremental_reads, merged = [], [], [], 0
        for round_ in range(repeat):
            with psycopg.connect(creds.conninfo(), autocommit=True) as conn:
                conn.execute(
                    "UPDATE bench SET amount = amount + 1, updated_at = clock_timestamp() "
                    "WHERE id %% 100 = %s",
                    (round_,),
                )
            elapsed, job, _ = run_sync(client, source_id, reload_url)
            incremental.append(elapsed)
            incremental_jobs.append(job_seconds(job))
            incremental_reads.append(read_seconds(client, schema_id, job))
            merged = job["rows_synced"]
        return {
            "full": full,
            "full_jobs": full_jobs,
            "incremental": incremental,
            "incremental_jobs": incremental_jobs,
            "incremental_reads": incremental_reads,
            "merged_rows": merged,
            "slowest": slowest,
        }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
