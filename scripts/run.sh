#!/usr/bin/env bash
# Install the server with its sandbox into .venv and run it (stdio) against the local sandbox.
# Extra arguments go to the server, e.g. `--transport http --port 8000`.
# The install runs only when .venv is new or pyproject.toml changed since the last one (the
# install is editable: code changes need none), and its output goes to .venv/install.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed
want=$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read() + sys.version.encode()).hexdigest())')
if [ ! -x .venv/bin/posthog-warehouse-mcp ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing posthog-warehouse-mcp[sandbox] into .venv (once; log: .venv/install.log)" >&2
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
      && .venv/bin/python -m pip install -q -e '.[sandbox]'; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
exec .venv/bin/posthog-warehouse-mcp --sandbox "$@"
