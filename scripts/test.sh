#!/usr/bin/env bash
# Install everything into .venv, then run what CI runs: lint, format, types, and the tests:
# the fast default set, then the slow set (soaks, restarts, subprocesses, browsers, large tables),
# each spread over the cores by pytest-xdist (tests/conftest.py: how many workers; the slow
# set's longest tests first). Arguments go to both pytest runs (e.g. -x, -k name; -n 0
# runs in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# Installs again only when pyproject.toml (or Python) changed since this script's last install:
# the install is editable, code changes need none, and pip takes ~10 s to find nothing to do.
stamp=.venv/.installed-dev
want=$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read() + sys.version.encode()).hexdigest())')
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -f "$stamp"
  .venv/bin/python -m pip install -q -e '.[sandbox,dev]'
  echo "$want" >"$stamp"
fi
# pytest keeps the test modules it rewrites (for its assertion messages) as bytecode beside
# them; with PYTHONDONTWRITEBYTECODE set, each worker of each run rewrites all of them (~3 s).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
.venv/bin/python -m pytest -m slow "$@"
