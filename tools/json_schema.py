"""Lean, portable JSON schemas from pydantic models: no titles, no null defaults, ``$defs``.

Nullable values use ``anyOf`` branches with one ``type`` each (not a ``type`` list), which
single-type schema dialects accept.
"""

from __future__ import annotations

from typing import Any, Literal

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


def json_schema(
    model: type[BaseModel], *, mode: Literal["validation", "serialization"] = "validation"
) -> dict[str, Any]:
    """Return ``model``'s JSON schema without pydantic noise; the root is always an object."""
    schema = _simplify(
        model.model_json_schema(mode=mode),
        output=mode == "serialization",
    )
    assert isinstance(schema, dict)
    schema.pop("description", None)
    for definition in schema.get("$defs", {}).values():
        # The field that uses a definition describes it; the class docstring would repeat it.
        definition.pop("description", None)
    schema.setdefault("type", "object")
    return schema
