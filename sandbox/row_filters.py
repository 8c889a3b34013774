"""Row filters: PostHog's `{column, operator, value}` predicates ANDed onto a sync's query.

The checks and their messages follow PostHog's `validate_and_coerce_row_filters`: the column
must be one of the table's, the operator one of `> >= < <= = != IN "NOT IN"` (`==` and `<>`
too), and the value must fit the column's type; `IN` takes a list or a comma-separated string
(single quotes keep commas). Values are returned coerced, for the connector to bind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_ROW_FILTERS = 20
MAX_IN_VALUES = 1000
_SCALAR = (">", ">=", "<", "<=", "=", "!=")
_MULTI = ("IN", "NOT IN")
_ALIASES = {"==": "=", "<>": "!="}
_ALLOWED = ", ".join([*sorted(_SCALAR), *sorted(_MULTI)])

_INTEGER = {"int", "int2", "int4", "int8", "integer", "smallint", "mediumint", "bigint", "tinyint"}
_INTEGER |= {"serial", "smallserial", "bigserial"}
_NUMERIC = {"numeric", "decimal", "real", "double", "double precision", "float", "float4"}
_NUMERIC |= {"float8", "money", "dec", "fixed"}
_BOOLEAN = {"bool", "boolean", "bit"}
_DATE = {"date"}
_STRING = {"char", "character", "character varying", "varchar", "nchar", "nvarchar", "text"}
_STRING |= {"tinytext", "mediumtext", "longtext", "uuid", "name", "citext", "enum", "set"}


class RowFilterError(ValueError):
    """A row filter PostHog would refuse; the message is PostHog's."""


@dataclass(frozen=True)
class RowFilter:
    """A checked filter: a real column, a canonical operator, a value (a list for IN)."""

    column: str
    operator: str
    value: Any

    @property
    def multi(self) -> bool:
        """Whether the value is a list (`IN`, `NOT IN`)."""
        return self.operator in _MULTI


def category(data_type: str | None) -> str | None:
    """The kind of value a column takes, from its type name; None when it cannot be filtered."""
    if not data_type:
        return None
    base = re.sub(r"\(.*?\)", "", data_type.lower()).replace(" unsigned", "").strip()
    if base in _INTEGER:
        return "integer"
    if base in _NUMERIC:
        return "numeric"
    if base in _BOOLEAN:
        return "boolean"
    if base in _DATE:
        return "date"
    if base in _STRING:
        return "string"
    if base.startswith(("timestamp", "datetime")):
        return "timestamp"
    return None


def check_row_filters(raw: Any, columns: list[dict[str, Any]]) -> list[RowFilter]:
    """Check `raw` against the table's columns (`available_columns`); return the filters.

    Raises:
        RowFilterError: the first problem, with PostHog's message.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RowFilterError("row_filters must be a list")
    if len(raw) > MAX_ROW_FILTERS:
        raise RowFilterError(f"Too many row filters (max {MAX_ROW_FILTERS})")
    types = {c["name"]: c.get("data_type") for c in columns}
    return [_one(index, item, types) for index, item in enumerate(raw)]


def _one(index: int, item: Any, types: dict[str, Any]) -> RowFilter:
    if not isinstance(item, dict):
        raise RowFilterError(f"Row filter at index {index} must be an object")
    column = item.get("column")
    if not isinstance(column, str) or not column:
        raise RowFilterError(f"Row filter at index {index} is missing a column")
    if types and column not in types:
        raise RowFilterError(f"Unknown column {column!r} for this schema")
    operator = _operator(item.get("operator"))
    kind = category(types.get(column))
    if kind is None:
        raise RowFilterError(
            f"Cannot filter on column {column!r}: its type {types.get(column)!r} is not "
            "supported for filtering"
        )
    if "value" not in item:
        raise RowFilterError(f"Row filter on column {column!r} is missing a value")
    value = item["value"]
    if operator in _MULTI:
        return RowFilter(column, operator, [_coerce(v, kind) for v in _in_values(value)])
    return RowFilter(column, operator, _coerce(value, kind))


def _operator(value: Any) -> str:
    if not isinstance(value, str):
        raise RowFilterError(f"Operator must be a string, got {type(value).__name__}")
    scalar = _ALIASES.get(value.strip(), value.strip())
    if scalar in _SCALAR:
        return scalar
    multi = " ".join(value.upper().split())
    if multi in _MULTI:
        return multi
    raise RowFilterError(f"Unsupported operator {value!r}. Allowed operators: {_ALLOWED}")


def _in_values(value: Any) -> list[Any]:
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = _split(value)
    else:
        raise RowFilterError(
            f"IN operator expects a comma-separated string or a list, got {type(value).__name__}"
        )
    if not items:
        raise RowFilterError("IN operator requires at least one value")
    if len(items) > MAX_IN_VALUES:
        raise RowFilterError(f"Too many values for IN (max {MAX_IN_VALUES})")
    return items


def _split(text: str) -> list[str]:
    """A comma-separated list; a single-quoted element keeps commas, `''` is a quote."""
    items: list[str] = []
    current, quoted, was_quoted, i = "", False, False, 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "'" and text[i + 1 : i + 2] == "'":
                current += "'"
                i += 1
            elif char == "'":
                quoted = False
            else:
                current += char
        elif char == "'":
            quoted, was_quoted = True, True
        elif char == ",":
            items.append(_element(current, was_quoted))
            current, was_quoted = "", False
        else:
            current += char
        i += 1
    if quoted:
        raise RowFilterError("Unterminated quote in IN list")
    if text.strip():
        items.append(_element(current, was_quoted))
    return items


def _element(text: str, quoted: bool) -> str:
    value = text if quoted else text.strip()
    if not value and not quoted:
        raise RowFilterError("IN list has an empty value")
    return value


def _coerce(value: Any, kind: str) -> Any:
    if kind == "integer":
        return _integer(value)
    if kind == "numeric":
        return _numeric(value)
    if kind == "boolean":
        return _boolean(value)
    if kind == "date":
        return _date(value)
    if kind == "timestamp":
        return _timestamp(value)
    if not isinstance(value, str):
        raise RowFilterError(f"Expected a string value, got {type(value).__name__}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise RowFilterError("Expected an integer value, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise RowFilterError(f"Expected an integer value, got non-integral {value!r}")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise RowFilterError(f"Expected an integer value, got {value!r}") from None
    raise RowFilterError(f"Expected an integer value, got {type(value).__name__}")


def _numeric(value: Any) -> int | float | Decimal:
    if isinstance(value, bool):
        raise RowFilterError("Expected a numeric value, got a boolean")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise RowFilterError(f"Expected a numeric value, got {value!r}") from None
    raise RowFilterError(f"Expected a numeric value, got {type(value).__name__}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowFilterError(f"Expected a boolean value (true/false), got {value!r}")


def _date(value: Any) -> date:
    if not isinstance(value, str):
        kind = type(value).__name__
        raise RowFilterError(f"Expected an ISO date string (YYYY-MM-DD), got {kind}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise RowFilterError(f"Expected an ISO date string (YYYY-MM-DD), got {value!r}") from None


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RowFilterError(f"Expected an ISO datetime string, got {type(value).__name__}")
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RowFilterError(f"Expected an ISO datetime string, got {value!r}") from None
