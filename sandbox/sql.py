"""`posthog-warehouse-mcp sql "SELECT ..."`: query a running sandbox's warehouse.

The warehouse file is locked by the process that runs the sandbox, so the query goes to that
process: to the address and token its `access.json` holds (the in-process sandbox's loopback
listener, or the standalone sandbox's own address), read as the sandbox writes it
(`access.py`: a file left by a killed sandbox does not count). It loads `access.py` and httpx
only, none of the warehouse or its drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx

from .access import ENVIRONMENT_ID, IN_PROCESS_DIRECTORY, STANDALONE_DIRECTORY, Access


def parser() -> argparse.ArgumentParser:
    """The subcommand's arguments."""
    parser = argparse.ArgumentParser(
        prog="posthog-warehouse-mcp sql",
        description="Run one HogQL SELECT on a running sandbox's warehouse and print the rows.",
    )
    parser.add_argument("query", help="e.g. 'SELECT count() FROM postgres.demo.orders'")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="the sandbox directory (default: POSTHOG_SANDBOX_DIR, the MCP server's sandbox "
        f"{IN_PROCESS_DIRECTORY}, then ./{STANDALONE_DIRECTORY})",
    )
    parser.add_argument("--json", action="store_true", help="print PostHog's JSON answer")
    return parser


def _access(directory: Path | None) -> Access | None:
    """The access file of the first sandbox directory that has a running sandbox."""
    env = os.environ.get("POSTHOG_SANDBOX_DIR")
    candidates = (
        [directory]
        if directory
        else [
            *([Path(env)] if env else []),
            IN_PROCESS_DIRECTORY,
            STANDALONE_DIRECTORY,
        ]
    )
    for folder in candidates:
        access = Access.read(folder)
        if access is not None:
            return access
    return None


def main(argv: list[str]) -> int:
    """Run the query; 0 on success, 1 for a refused query, 2 when no sandbox answers."""
    args = parser().parse_args(argv)
    access = _access(args.dir)
    if access is None:
        print(
            "No running sandbox found. Start one with 'posthog-warehouse-mcp --sandbox' (or "
            "'posthog-warehouse-mcp sandbox'), or give its directory with --dir.",
            file=sys.stderr,
        )
        return 2
    headers = {"Authorization": f"Bearer {access.token}"} if access.token else {}
    try:
        response = httpx.post(
            f"{access.url}/api/environments/{ENVIRONMENT_ID}/query/",
            json={"query": {"kind": "HogQLQuery", "query": args.query}},
            headers=headers,
            timeout=60,
        )
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        print(f"The sandbox at {access.url} did not answer ({reason}).", file=sys.stderr)
        return 2
    body = response.json() if response.content else {}
    if response.status_code != 200:
        print(body.get("detail") or body, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(" | ".join(body.get("columns") or []))
    for row in body.get("results") or []:
        print(" | ".join("(null)" if v is None else str(v) for v in row))
    if body.get("hasMore"):
        print(f"(first {body.get('limit')} rows; add a LIMIT to see up to 50000)", file=sys.stderr)
    return 0
