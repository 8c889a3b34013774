"""Keep results inside a client's budget, and say so whenever something is cut."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_OUTPUT_BYTES = 80_000  # about 25k tokens, Claude's default MCP output limit


def dumps(value: Any) -> str:
    """Compact JSON, the text content of every result."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _size(value: Any) -> int:
    return len(dumps(value).encode())


def cap(result: dict[str, Any], budget: int) -> dict[str, Any]:
    """Return ``result`` shortened to fit ``budget`` bytes of JSON, with an explicit notice.

    First trims the ``schemas`` embedded in each source, then drops the tail of ``results``.
    A result that fits is returned unchanged.
    """
    if _size(result) <= budget:
        return result
    out = dict(result)
    notes: list[str] = []
    results = out.get("results")
    items = list(results) if isinstance(results, list) else None
    if items is not None and any(isinstance(i, dict) and i.get("schemas") for i in items):
        trimmed = 0
        slim = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("schemas"), list):
                trimmed += len(item["schemas"])
                item = {
                    **item,
                    "schemas": [
                        {k: s.get(k) for k in ("id", "name", "should_sync", "status")}
                        for s in item["schemas"]
                        if isinstance(s, dict)
                    ],
                }
            slim.append(item)
        items = slim
        out["results"] = items
        notes.append(f"schemas of each source reduced to id, name, should_sync, status ({trimmed})")
    elif isinstance(out.get("schemas"), list):
        schemas = out["schemas"]
        out["schemas"] = [
            {k: s.get(k) for k in ("id", "name", "should_sync", "status")}
            for s in schemas
            if isinstance(s, dict)
        ]
        notes.append(f"schemas reduced to id, name, should_sync, status ({len(schemas)})")
    if items is not None:
        total = len(items)
        while items and _size({**out, "results": items}) > budget - 600:
            items = items[: max(0, len(items) * 3 // 4)]
        out["results"] = items
        if len(items) < total:
            notes.append(f"results cut from {total} to the first {len(items)}")
    out["truncated"] = True
    out["truncation"] = {
        "cut": notes or ["result exceeds the output budget"],
        "how_to_get_the_rest": (
            "Ask for less at a time: lower limit, page with offset, narrow with search, "
            "or get one item by id with a retrieve tool."
        ),
    }
    return out
