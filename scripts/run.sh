#!/usr/bin/env bash
# Install the server with its sandbox into .venv and run it (stdio) against the local sandbox.
# Extra arguments go to the server, e.g. `--transport http --port 8000`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -e '.[sandbox]' >&2
exec .venv/bin/posthog-warehouse-mcp --sandbox "$@"
