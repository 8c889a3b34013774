"""Lean, portable JSON schemas from pydantic models: no titles, no null defaults, ``$defs``.

Nullable values use ``anyOf`` branches with one ``type`` each (not a ``type`` list), which
single-type schema dialects accept.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

_DROP = frozenset({"title"})
# Mark an input field whose null is meaningful: Field(None, json_schema_extra=NULL_MEANS_CLEAR).
NULLABLE = "x-null-meaningful"
NULL_MEANS_CLEAR: dict[str, Any] = {NULLABLE: True}


def _simplify(node: Any, *, output: bool) -> Any:
    if isinstance(node, list):
        return [_simplify(item, output=output) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _simplify(v, output=output) for k, v in node.items() if k not in _DROP}
    if "default" in out and out["default"] is None:
        del out["default"]
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]  # the JSON Schema default
    options = out.get("anyOf") or []
    explicit_null = out.pop(NULLABLE, False)
    nullable = len(options) == 2 and {"type": "null"} in options
    if nullable and not (output or explicit_null):
        # An optional input: omitting it already means "no value", so the schema need not
        # offer null. Where null means something (clears a setting), the field says so.
        (other,) = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        out = {**other, **out}
    return out


def json_schema(model: type[BaseModel], *, mode: str = "validation") -> dict[str, Any]:
    """Return ``model``'s JSON schema without pydantic noise; the root is always an object."""
    schema = _simplify(
        model.model_json_schema(mode=mode),  # type: ignore[arg-type]
        output=mode == "serialization",
    )
    assert isinstance(schema, dict)
    schema.pop("description", None)
    for definition in schema.get("$defs", {}).values():
        # The field that uses a definition describes it; the class docstring would repeat it.
        definition.pop("description", None)
    schema.setdefault("type", "object")
    return schema


# Generating 42 schemas costs about 23 ms of every server start, before tools/list can answer.
# They are cached in schemas.json, stamped with a fingerprint of the code that produces them;
# a stale or missing cache is ignored (schemas are then generated), never served.
CACHE = Path(__file__).with_name("schemas.json")
_SOURCES = ("models.py", "schema.py")


def fingerprint() -> str:
    """Hash of the modules that define the schemas, and of pydantic's version."""
    digest = hashlib.sha256(pydantic.VERSION.encode())
    for name in _SOURCES:
        digest.update(Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()


@functools.cache
def _cached() -> dict[str, Any]:
    try:
        data = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint():
        return {}
    schemas = data.get("schemas")
    return schemas if isinstance(schemas, dict) else {}


def model_schema(model: type[BaseModel], *, mode: str = "validation") -> dict[str, Any]:
    """:func:`json_schema`, from the cache when it is current."""
    cached = _cached().get(f"{model.__name__}:{mode}")
    if isinstance(cached, dict):
        return cached
    return json_schema(model, mode=mode)


def write_cache(models: Iterable[tuple[type[BaseModel], str]]) -> None:
    """Regenerate schemas.json for ``(model, mode)`` pairs."""
    schemas = {f"{m.__name__}:{mode}": json_schema(m, mode=mode) for m, mode in models}
    data = {"fingerprint": fingerprint(), "schemas": dict(sorted(schemas.items()))}
    CACHE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    # python -m tools.schema: refresh the cache after changing tools/models.py or this file.
    from posthog_warehouse_mcp.tools.table import ENDPOINTS

    write_cache(
        {(r.params, "validation") for r in ENDPOINTS}
        | {(r.response, "serialization") for r in ENDPOINTS}
    )
    print(f"wrote {CACHE}")
