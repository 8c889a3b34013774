"""Small JSON and network helpers for scripts/ecosystem.sh (no jq needed).

python scripts/ecosystem_helper.py COMMAND ARGS...
"""

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import zipfile

FORWARD = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "UV_NATIVE_TLS",
    "UV_SYSTEM_CERTS",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_CACHE_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def result(path):
    """The 'result' of an Inspector --format json answer."""
    return load(path)["result"]


def main(cmd, *args):
    if cmd == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    elif cmd == "wait-http":  # url pid timeout: any HTTP answer means the server is up
        url, pid, timeout = args[0], int(args[1]), float(args[2])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                sys.exit(f"the server (pid {pid}) exited before answering")
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        sys.exit(f"no answer from {url} within {timeout:.0f}s")
    elif cmd == "tool-names":
        print("\n".join(sorted(t["name"] for t in result(args[0])["tools"])))
    elif cmd == "expected-tools":  # read_only(true|false) -> read-scoped names from the table
        from posthog_warehouse_mcp.tools.table import ENDPOINTS

        only = args[0] == "true"
        print("\n".join(sorted(r.name for r in ENDPOINTS if r.read_scoped or not only)))
    elif cmd == "call-ok":  # path: a tools/call answer; prints a one-line digest
        res = result(args[0])
        if res.get("isError"):
            sys.exit("isError: " + res["content"][0]["text"][:300])
        sc = res.get("structuredContent")
        if not isinstance(sc, dict):
            sys.exit("no structuredContent object in the result")
        keys = ", ".join(sorted(sc)[:8])
        count = f" results={len(sc['results'])}" if isinstance(sc.get("results"), list) else ""
        print(f"isError=false structuredContent keys: {keys}{count}")
    elif cmd == "get":  # path dotted.key -> value as JSON (results.0.id style)
        node = result(args[0])
        for part in args[1].split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        print(node if isinstance(node, str) else json.dumps(node))
    elif cmd == "check-bundle":  # mcpb path: nothing from the dev machine inside
        names = zipfile.ZipFile(args[0]).namelist()
        top = {".venv", "node_modules", ".git", ".hypothesis", "build", "dist"}
        bad = [
            n
            for n in names
            if n.split("/")[0] in top
            or "__pycache__/" in n
            or n.split("/")[0].endswith(("_cache", ".egg-info"))
        ]
        if bad:
            sys.exit(f"{len(bad)} unwanted entries, e.g. {bad[:5]}")
        if "manifest.json" not in names or "pyproject.toml" not in names:
            sys.exit("manifest.json or pyproject.toml missing from the bundle")
        # The package's server/, tools/, sandbox/ and loopback/ are links in the repository: the
        # bundle must hold their files, once, as plain files under posthog_warehouse_mcp/.
        for module in (
            "server/app.py",
            "server/views/health.html",
            "server/views/bridge.js",
            "tools/tools.json",
            "sandbox/api.py",
            "loopback/pages.py",
        ):
            if f"posthog_warehouse_mcp/{module}" not in names:
                sys.exit(f"posthog_warehouse_mcp/{module} missing from the bundle")
        if any(n.split("/")[0] in ("server", "tools", "sandbox", "loopback") for n in names):
            sys.exit("a top-level server/, tools/, sandbox/ or loopback/ folder is in the bundle")
        print(f"{len(names)} entries, no .venv, node_modules, .git, caches or build output")
    elif cmd == "host-config":  # bundle_dir out.json sandbox_dir: mcp_config as a host runs it
        bundle, out, sandbox_dir = args
        manifest = load(os.path.join(bundle, "manifest.json"))
        values = {k: v.get("default", "") for k, v in manifest.get("user_config", {}).items()}
        values["sandbox"] = True  # no PostHog account in CI

        def text(value):
            return ("true" if value else "false") if isinstance(value, bool) else str(value)

        def sub(s):
            s = s.replace("${__dirname}", bundle).replace("${HOME}", os.path.expanduser("~"))
            s = s.replace("${pathSeparator}", os.sep).replace("${/}", os.sep)
            for key, value in values.items():
                s = s.replace("${user_config." + key + "}", text(value))
            if "${" in s:
                sys.exit(f"unsubstituted variable in {s!r}")
            return s

        cfg = manifest["server"]["mcp_config"]
        cfg = {**cfg, **cfg.get("platform_overrides", {}).get(sys.platform, {})}
        env = {k: sub(v) for k, v in cfg.get("env", {}).items()}
        # Not in the manifest: keep the sandbox's data out of ~ (the host would use ~).
        env["POSTHOG_SANDBOX_DIR"] = sandbox_dir
        # The Inspector, like a desktop host, starts the server with a minimal environment;
        # pass on this machine's TLS and proxy settings so uv can reach the package index.
        for key in FORWARD:
            if os.environ.get(key) and key not in env:
                env[key] = os.environ[key]
        server = {
            "command": cfg["command"],
            "args": [sub(a) for a in cfg.get("args", [])],
            "env": env,
        }
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"mcpServers": {"bundle": server}}, f, indent=2)
        print(" ".join([server["command"], *server["args"]]))
        shown = {k: v for k, v in env.items() if k not in FORWARD}
        print("env: " + " ".join(f"{k}={v!r}" for k, v in shown.items()))
        forwarded = sorted(set(env) & set(FORWARD))
        if forwarded:
            print("plus from this machine: " + ", ".join(forwarded))
    else:
        sys.exit(f"unknown helper command {cmd}")


main(*sys.argv[1:])
