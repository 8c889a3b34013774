#!/usr/bin/env bash
# Run every benchmark and print its table: tool-definition size, server overhead against the
# SDK floor, sandbox sync throughput, a rehearsal against a COPY scan, a CDC sync against a full
# refresh, execute-sql's overhead over DuckDB. Each timing is a median of at least 3 runs and a ratio
# against a baseline measured in the same invocation. Extra arguments are ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e '.[sandbox,dev]' >&2
echo "== Context cost of the tool definitions (python -m benchmarks.tool_size)"
.venv/bin/python -m benchmarks.tool_size
echo
echo "== Context cost of the list answers on the demo (python -m benchmarks.answer_size)"
.venv/bin/python -m benchmarks.answer_size

echo "== Server overhead against the SDK floor (python -m benchmarks.overhead --runs 5)"
.venv/bin/python -m benchmarks.overhead --runs 5
echo
echo "== Sandbox sync throughput (python -m benchmarks.sync_throughput --rows 1000000 --repeat 3)"
.venv/bin/python -m benchmarks.sync_throughput --rows 1000000 --repeat 3
echo
echo "== Rehearsal against a bare COPY scan (python -m benchmarks.rehearsal --rows 1000000 4000000 --repeat 3)"
.venv/bin/python -m benchmarks.rehearsal --rows 1000000 4000000 --repeat 3
echo
echo "== CDC sync against a full refresh, and the lag after a burst (python -m benchmarks.cdc --rows 1000000 --updates 100000 --repeat 3)"
.venv/bin/python -m benchmarks.cdc --rows 1000000 --updates 100000 --repeat 3
echo
echo "== execute-sql against the same SQL in DuckDB (python -m benchmarks.query_overhead --rows 1000000 --runs 7)"
.venv/bin/python -m benchmarks.query_overhead --rows 1000000 --runs 7
