"""Keep results inside a client's budget, and say so whenever something is cut."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_OUTPUT_BYTES = 80_000  # about 25k tokens, Claude's default MCP output limit

# Kept whatever else is cut: they identify the result and its model requires them.
_PROTECTED = frozenset(
    {"id", "name", "status", "results", "ok", "status_code", "count", "next", "previous"}
)
# (longest text kept, longest list kept, most keys kept per object), gentlest first.
_SHRINK_LEVELS = ((4000, 200, 400), (1000, 50, 100), (200, 10, 30), (60, 2, 12), (40, 1, 6))
_MAX_DEPTH = 32


def dumps(value: Any) -> str:
    """Compact JSON, the text content of every result."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _size(value: Any) -> int:
    return len(dumps(value).encode())


def cap(result: dict[str, Any], budget: int) -> dict[str, Any]:
    """Return ``result`` shortened to fit ``budget`` bytes of JSON, with an explicit notice.

    First trims the ``schemas`` embedded in each source, then drops the tail of ``results``;
    if that is not enough (one huge object), shortens long texts, lists and objects until it
    fits. A result that fits is returned unchanged; a shortened one has ``truncated: true``
    and a ``truncation`` notice saying what was cut and how to ask for less.
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
        # Keep at least one item: an item too big on its own is shortened below instead.
        while len(items) > 1 and _size({**out, "results": items}) > budget - 600:
            items = items[: max(1, len(items) * 3 // 4)]
        out["results"] = items
        if len(items) < total:
            notes.append(f"results cut from {total} to the first {len(items)}")
    capped = _with_notice(out, notes)
    if _size(capped) <= budget:
        return capped
    # Still too big: one huge object, string or list. Shorten every long text, list and
    # object, more each round, until the result fits.
    for text_limit, list_limit, key_limit in _SHRINK_LEVELS:
        cuts = _Cuts()
        slim = _shrink(out, text_limit, list_limit, key_limit, cuts, key=None)
        capped = _with_notice(slim, [*notes, *cuts.notes(text_limit, list_limit)])
        if _size(capped) <= budget:
            return capped
    # Pathological nesting: keep only the identifying top-level values.
    bare = {
        k: ([] if isinstance(v, list) else v)
        for k, v in out.items()
        if k in _PROTECTED and (isinstance(v, list) or _size(v) <= 200)
    }
    return _with_notice(bare, [*notes, "everything but the identifying fields dropped"])


class _Cuts:
    """What a shrinking round cut, for the notice."""

    def __init__(self) -> None:
        self.texts = 0
        self.lists: dict[str, int] = {}
        self.keys = 0
        self.deep = 0

    def notes(self, text_limit: int, list_limit: int) -> list[str]:
        out: list[str] = []
        if self.texts:
            out.append(f"{self.texts} long text value(s) shortened to {text_limit} characters")
        for key, longest in self.lists.items():
            out.append(f"{key} cut from up to {longest} to the first {list_limit} item(s)")
        if self.keys:
            out.append(f"{self.keys} field(s) of oversized objects dropped")
        if self.deep:
            out.append(f"{self.deep} value(s) nested deeper than {_MAX_DEPTH} levels dropped")
        return out


def _shrink(
    value: Any,
    text_limit: int,
    list_limit: int,
    key_limit: int,
    cuts: _Cuts,
    *,
    key: str | None,
    depth: int = 0,
) -> Any:
    if isinstance(value, list | dict) and depth >= _MAX_DEPTH:
        cuts.deep += 1
        return "[nested value cut]"
    if isinstance(value, str) and len(value) > text_limit:
        cuts.texts += 1
        return value[:text_limit] + f"... [{len(value) - text_limit} characters cut]"
    if isinstance(value, list):
        if len(value) > list_limit:
            name = key or "a list"
            cuts.lists[name] = max(cuts.lists.get(name, 0), len(value))
            value = value[:list_limit]
        return [
            _shrink(v, text_limit, list_limit, key_limit, cuts, key=key, depth=depth + 1)
            for v in value
        ]
    if isinstance(value, dict):
        keys = [k for k in value if k in _PROTECTED]
        keys += [k for k in value if k not in _PROTECTED][: max(0, key_limit - len(keys))]
        cuts.keys += len(value) - len(keys)
        return {
            k: _shrink(
                value[k], text_limit, list_limit, key_limit, cuts, key=str(k), depth=depth + 1
            )
            for k in keys
        }
    return value


def _with_notice(out: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    return {
        **out,
        "truncated": True,
        "truncation": {
            "cut": notes or ["result exceeds the output budget"],
            "how_to_get_the_rest": (
                "Ask for less at a time: lower limit, page with offset, narrow with search, "
                "or get one item by id with a retrieve tool."
            ),
        },
    }
