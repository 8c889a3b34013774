"""What Django REST framework does for PostHog's views: body parsing, query parameters, search,
pagination and plain responses."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import errors

PAGE_SIZE = 100

T = TypeVar("T")


def answer(data: Any, status: int = 200) -> JSONResponse:
    """A JSON response."""
    return JSONResponse(data, status_code=status)


def empty(status: int = 200) -> Response:
    """A response without a body."""
    return Response(status_code=status)


async def body(request: Request) -> dict[str, Any]:
    """The request body as a dict: JSON, or form-encoded like curl's `-d key=value`.

    Raises:
        ErrorAnswer: DRF's parse error, or a body that is not an object.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type", "")
    data: Any
    if "multipart/form-data" in content_type:
        try:
            form = await request.form()
        except HTTPException as exc:  # Starlette's answer to a malformed multipart body
            raise errors.parse_error(f"Multipart form parse error - {exc.detail}") from exc
        data = {k: _form_value(v) for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            # curl -H 'Content-Type: application/json' -d key=value (PostHog's own doc examples)
            # sends a form body under a JSON header; read it as a form rather than refuse it.
            pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            if not pairs or raw.lstrip()[:1] in b"[{":
                raise errors.parse_error(f"JSON parse error - {exc}") from exc
            data = {k: _form_value(v) for k, v in pairs}
    if not isinstance(data, dict):
        raise errors.validation_error(
            f"Invalid data. Expected a dictionary, but got {type(data).__name__}.",
            "non_field_errors",
        )
    return data


def _form_value(value: str) -> Any:
    """Form values are strings; JSON objects and arrays inside them are decoded."""
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


def boolean(value: Any, attr: str) -> bool:
    """DRF's BooleanField: true/false in the spellings a form or JSON may use.

    Raises:
        ErrorAnswer: not a boolean.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise errors.validation_error("Must be a valid boolean.", attr)


def expect_dict(value: Any, attr: str) -> dict[str, Any]:
    """DRF's DictField: the value, if it is a dictionary.

    Raises:
        ErrorAnswer: not a dictionary.
    """
    if not isinstance(value, dict):
        raise errors.validation_error(
            f'Expected a dictionary of items but got type "{type(value).__name__}".',
            attr,
            "not_a_dict",
        )
    return value


def integer_field(value: str, attr: str, *, min_value: int, max_value: int) -> int:
    """DRF's IntegerField with min_value and max_value, on a query parameter.

    Raises:
        ErrorAnswer: not an integer, or out of bounds.
    """
    if len(value) > 1000:
        raise errors.validation_error("String value too large.", attr, "max_string_length")
    try:
        number = int(re.sub(r"\.0*\s*$", "", value))  # DRF accepts "5.0" as 5
    except ValueError as exc:
        raise errors.validation_error("A valid integer is required.", attr) from exc
    if number > max_value:
        raise errors.validation_error(
            f"Ensure this value is less than or equal to {max_value}.", attr, "max_value"
        )
    if number < min_value:
        raise errors.validation_error(
            f"Ensure this value is greater than or equal to {min_value}.", attr, "min_value"
        )
    return number


def datetime_field(value: str, attr: str) -> datetime:
    """DRF's DateTimeField (ISO 8601; UTC if naive), on a query parameter.

    Raises:
        ErrorAnswer: not an ISO 8601 time.
    """
    try:
        return parse_time(value)
    except ValueError as exc:
        raise errors.validation_error(
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
            attr,
        ) from exc


def char_field(value: str, attr: str) -> str:
    """DRF's CharField: trimmed, not blank, without NUL characters.

    Raises:
        ErrorAnswer: blank, or holds a NUL character.
    """
    text = value.strip()
    if not text:
        raise errors.validation_error("This field may not be blank.", attr, "blank")
    if "\x00" in text:
        raise errors.validation_error(
            "Null characters are not allowed.", attr, "null_characters_not_allowed"
        )
    return text


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(value, 0)


def search(
    items: list[T], term: str | None, fields: Callable[[T], Sequence[str | None]]
) -> list[T]:
    """DRF SearchFilter: every whitespace/comma-separated term must match some field (icontains)."""
    terms = [t for t in re.split(r"[\s,]+", term or "") if t]
    if not terms:
        return items
    return [
        item
        for item in items
        if all(any(t.lower() in (f or "").lower() for f in fields(item)) for t in terms)
    ]


def page(request: Request, items: list[T], render: Callable[[T], dict[str, Any]]) -> Response:
    """DRF LimitOffsetPagination with PostHog's page size."""
    limit = _int_param(request, "limit", PAGE_SIZE) or PAGE_SIZE
    offset = _int_param(request, "offset", 0)
    count = len(items)

    def url(new_offset: int | None) -> str:
        params = dict(request.query_params)
        params["limit"] = str(limit)
        if new_offset:
            params["offset"] = str(new_offset)
        else:
            params.pop("offset", None)
        return str(request.url.replace_query_params(**params))

    next_url = url(offset + limit) if offset + limit < count else None
    previous = None
    if offset > 0:
        previous = url(offset - limit if offset - limit > 0 else None)
    return answer(
        {
            "count": count,
            "next": next_url,
            "previous": previous,
            "results": [render(item) for item in items[offset : offset + limit]],
        }
    )


def parse_time(value: str) -> datetime:
    """An ISO 8601 time from a query string (`+` may arrive as a space); UTC if naive.

    Raises:
        ValueError: not an ISO 8601 time.
    """
    text = value.strip().replace("Z", "+00:00").replace(" ", "+", 1 if "T" in value else 0)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
