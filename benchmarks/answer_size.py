"""Context cost of the list answers on the sandbox's demo: bytes of text an agent reads from
`external-data-sources-list` and `external-data-schemas-list`, before and after the demo's three
tables have synced (a synced table carries its warehouse table, row count and status).

Against PostHog's own tool definitions, which leave each table's columns out of both lists
(their `response.exclude`); the columns stay in `external-data-schemas-retrieve`.

    python -m benchmarks.answer_size
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.config import Settings


async def _bytes(client: Client, tool: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = await client.call_tool(tool, args)
    if result.is_error or not isinstance(result.structured_content, dict):
        raise SystemExit(f"{tool} failed: {result.content}")
    text = sum(len(c.text.encode()) for c in result.content if c.type == "text")
    return text, result.structured_content


async def measure(directory: Path) -> dict[str, int]:
    """The answers' sizes on a fresh sandbox in `directory`, unsynced then synced."""
    config = Settings(sandbox=True, sandbox_dir=directory, confirm="off")
    sizes: dict[str, int] = {}
    async with Client(create_server(config)) as client:
        sizes["sources-list, demo unsynced"], listed = await _bytes(
            client, "external-data-sources-list", {}
        )
        sizes["schemas-list, demo unsynced"], _ = await _bytes(
            client, "external-data-schemas-list", {}
        )
        source = listed["results"][0]
        for schema in source["schemas"]:
            await _bytes(
                client,
                "external-data-schemas-partial-update",
                {"id": schema["id"], "should_sync": True, "sync_type": "full_refresh"},
            )
        waited = await _bytes(
            client, "external-data-sources-jobs-wait", {"id": source["id"], "wait_seconds": 120}
        )
        statuses = sorted(j["status"] for j in waited[1]["results"])
        if statuses != ["Completed"] * len(source["schemas"]):
            raise SystemExit(f"the demo's syncs did not all complete: {statuses}")
        sizes["sources-list, demo synced"], _ = await _bytes(
            client, "external-data-sources-list", {}
        )
        sizes["schemas-list, demo synced"], _ = await _bytes(
            client, "external-data-schemas-list", {}
        )
    return sizes


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        sizes = anyio.run(measure, Path(scratch) / "sandbox")
    for name, size in sizes.items():
        print(f"{name:32} {size:6,} bytes")
    print(json.dumps(sizes))


if __name__ == "__main__":
    main()
