#!/usr/bin/env bash
# Install everything into .venv, then run what CI runs: lint, format, types, and the tests:
# the fast default set, then the slow set (soaks, restarts, subprocesses, large tables).
# Arguments go to both pytest runs (e.g. -x, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e '.[sandbox,dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
.venv/bin/python -m pytest -m slow "$@"
