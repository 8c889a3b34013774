"""PostHog's error bodies: DRF's `{type, code, detail, attr}` and hand-built ones."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: an HTTP status and the exact JSON body PostHog would send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def validation_error(detail: str, attr: str | None = None, code: str = "invalid") -> ApiError:
    """A DRF ValidationError as PostHog's exception handler renders it."""
    return ApiError(400, {"type": "validation_error", "code": code, "detail": detail, "attr": attr})


def required(attr: str) -> ApiError:
    """DRF's missing required field error."""
    return validation_error("This field is required.", attr, "required")


def invalid_choice(value: Any, attr: str) -> ApiError:
    """DRF's ChoiceField error."""
    return validation_error(f'"{value}" is not a valid choice.', attr, "invalid_choice")


def message(text: str) -> ApiError:
    """A hand-built `400 {"message": ...}` (most source-side errors)."""
    return ApiError(400, {"message": text})


def detail(text: str) -> ApiError:
    """A hand-built `400 {"detail": ...}` (schema cancel)."""
    return ApiError(400, {"detail": text})


def not_found() -> ApiError:
    """DRF's 404 for an unknown id or project."""
    return ApiError(
        404, {"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None}
    )


def method_not_allowed(method: str) -> ApiError:
    """DRF's 405."""
    return ApiError(
        405,
        {
            "type": "invalid_request",
            "code": "method_not_allowed",
            "detail": f'Method "{method}" not allowed.',
            "attr": None,
        },
    )


INVALID_KEY = ApiError(
    401,
    {
        "type": "authentication_error",
        "code": "authentication_failed",
        "detail": "Personal API key found in request Authorization header is invalid.",
        "attr": None,
    },
)

MISSING_KEY = ApiError(
    401,
    {
        "type": "authentication_error",
        "code": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
        "attr": None,
    },
)
