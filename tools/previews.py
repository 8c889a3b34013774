"""What each destructive row will affect, read before the person is asked (``Endpoint.preview``).

A preview only reads (read-only rows, by tool name) and answers the effect, the tables and rows
it reaches and the way back; tools/confirm.py decides when one is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .hooks import Caller, Preview
from .models import IdParams

# Makes a row's preview from its effect and its way back.
PreviewFor = Callable[[str, str], Preview]


def _table(schema: dict[str, Any]) -> dict[str, Any]:
    table = schema.get("table") or {}
    return {
        "name": schema.get("name"),
        "table": table.get("name"),
        "rows": table.get("row_count"),
        "sync_type": schema.get("sync_type"),
    }


def _reading(read: str, describe: Callable[[dict[str, Any]], dict[str, Any]]) -> PreviewFor:
    """A preview maker for rows whose id `read` (a read-only tool) looks up: the preview is
    the effect, what `describe` draws from that answer, and the way back."""

    def make(effect: str, undo: str) -> Preview:
        async def preview(call: Caller[IdParams]) -> dict[str, Any]:
            found = await call.call(read, id=str(call.params.id))
            return {"effect": effect, **describe(found), "undo": undo}

        return preview

    return make


# What a call on one table affects: that table, its rows.
schema_preview = _reading(
    "external-data-schemas-retrieve", lambda schema: {"tables": [_table(schema)]}
)
# What a call on a source affects: every table of it.
source_preview = _reading(
    "external-data-sources-retrieve",
    lambda source: {
        "source": {k: source.get(k) for k in ("source_type", "prefix", "status")},
        "tables": [_table(s) for s in source.get("schemas") or [] if isinstance(s, dict)],
    },
)
# What removing a source's webhook affects: the webhook and the tables it feeds.
webhook_preview = _reading(
    "external-data-sources-webhook-info-retrieve",
    lambda info: {"webhook": {k: info.get(k) for k in ("exists", "webhook_url", "schema_mapping")}},
)
