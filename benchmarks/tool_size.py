"""Context cost of the tool definitions, in the byte count PostHog's server is measured by.

Compact JSON of name, title, description, input schema and annotations per tool, against the
figures for PostHog's own MCP server on the 18 warehouse tools both servers share. Output
schemas are reported separately. The budget is for the whole tool list as it grows: every tool
together within 30,000 bytes (PostHog's server spends 33,457 on the 18 shared ones).

    python -m benchmarks.tool_size
"""

from __future__ import annotations

import json

from posthog_warehouse_mcp.tools.definitions import definition
from posthog_warehouse_mcp.tools.table import ENDPOINTS

# PostHog's MCP server, same byte count, for the tools both servers have.
POSTHOG_BYTES = {
    "external-data-sources-list": 1410,
    "external-data-sources-retrieve": 741,
    "external-data-sources-create": 3881,
    "external-data-sources-partial-update": 2652,
    "external-data-sources-destroy": 640,
    "external-data-sources-reload": 2203,
    "external-data-sources-refresh-schemas": 2342,
    "external-data-sources-create-webhook-create": 3267,
    "external-data-sources-delete-webhook-create": 2738,
    "external-data-sources-jobs": 1087,
    "external-data-schemas-list": 1487,
    "external-data-schemas-retrieve": 817,
    "external-data-schemas-partial-update": 6773,
    "external-data-schemas-incremental-fields-create": 948,
    "external-data-schemas-cancel": 603,
    "external-data-schemas-reload": 617,
    "external-data-schemas-resync": 640,
    "external-data-schemas-delete-data": 611,
}
SHARED_TARGET = 16_700
# Every tool together, however many the table grows to (raised from 30,000 for the tools the
# roadmap adds: rehearsal, plans, views).
BUDGET = 32_000


def compact(value: object) -> int:
    """Bytes of compact JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def measure() -> list[tuple[str, int, int, int | None]]:
    """Rows of (tool, definition bytes, output schema bytes, PostHog's bytes or None)."""
    rows = []
    for row in ENDPOINTS:
        tool = dict(definition(row))
        output = tool.pop("outputSchema")
        rows.append((row.name, compact(tool), compact(output), POSTHOG_BYTES.get(row.name)))
    return rows


def main() -> None:
    """Print the per-tool table and the totals against their targets."""
    rows = measure()
    print(f"{'tool':<64}{'ours':>7}{'posthog':>9}{'ratio':>7}{'output':>8}")
    for name, size, out, theirs in rows:
        ratio = f"{size / theirs:.2f}" if theirs else "-"
        print(f"{name:<64}{size:>7}{theirs or '-':>9}{ratio:>7}{out:>8}")
    shared = sum(size for _, size, _, theirs in rows if theirs)
    total = sum(size for _, size, _, _ in rows)
    outputs = sum(out for _, _, out, _ in rows)
    theirs = sum(POSTHOG_BYTES.values())
    print()
    print(
        f"18 shared tools: {shared} bytes vs PostHog {theirs} ({shared / theirs:.0%}); "
        f"target <= {SHARED_TARGET}: {'met' if shared <= SHARED_TARGET else 'MISSED'}"
    )
    print(
        f"tool-list budget: {total} of {BUDGET} bytes used, {BUDGET - total} left "
        f"({'within' if total <= BUDGET else 'OVER'} budget)"
    )
    print(f"output schemas:  {outputs} bytes (all {len(rows)}, reported separately)")


if __name__ == "__main__":
    main()
