"""`posthog-warehouse-mcp sql` is a small client of a running sandbox: it loads neither the
warehouse, its drivers nor the query translator, only the sandbox's access file and httpx."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from posthog_warehouse_mcp.sandbox.access import Access

HEAVY = ("duckdb", "sqlglot", "psycopg", "pymysql")

# The whole command, as the console script runs it, in a fresh interpreter.
SCRIPT = """
import json, sys
from posthog_warehouse_mcp.server.entry import main
code = main(["sql", "SELECT 1", "--dir", sys.argv[1]])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_the_sql_command_loads_no_database_driver(tmp_path: Path) -> None:
    with socket.socket() as closed:
        # Bound, not listening: the address refuses connections, and no one else can take it.
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        # A running sandbox's access file (this test's process stands in for the sandbox's).
        Access(f"http://127.0.0.1:{port}", "token", os.getpid()).write(tmp_path)
        ran = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.splitlines()[-1])
    # It read the access file and sent the query: the address did not answer.
    assert answer["code"] == 2 and "did not answer" in ran.stderr
    modules = answer["modules"]
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    # The sandbox's package face loads nothing of the sandbox itself (no runtime, no routes).
    assert "posthog_warehouse_mcp.sandbox.runtime" not in modules
