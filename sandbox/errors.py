"""PostHog's error bodies, as the sandbox sends them: DRF's `{type, code, detail, attr}` and
hand-built ones. (The errors the MCP server receives from PostHog are `tools/errors.py`.)"""

from __future__ import annotations

from typing import Any


class ErrorAnswer(Exception):
    """An error answer to send: an HTTP status and the exact JSON body PostHog would send.
    Raised by the handlers; the route table turns it into the response."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def _drf(status: int, type_: str, code: str, detail: str, attr: str | None = None) -> ErrorAnswer:
    """An error in the shape PostHog's exception handler gives DRF's exceptions."""
    return ErrorAnswer(status, {"type": type_, "code": code, "detail": detail, "attr": attr})


def validation_error(detail: str, attr: str | None = None, code: str = "invalid") -> ErrorAnswer:
    """A DRF ValidationError."""
    return _drf(400, "validation_error", code, detail, attr)


def required(attr: str) -> ErrorAnswer:
    """DRF's missing required field error."""
    return validation_error("This field is required.", attr, "required")


def invalid_choice(value: Any, attr: str) -> ErrorAnswer:
    """DRF's ChoiceField error."""
    return validation_error(f'"{value}" is not a valid choice.', attr, "invalid_choice")


def parse_error(detail: str) -> ErrorAnswer:
    """DRF's ParseError: a body that is not what its content type says."""
    return validation_error(detail, None, "parse_error")


def bad_request_message(text: str) -> ErrorAnswer:
    """A hand-built `400 {"message": ...}` (most source-side errors)."""
    return ErrorAnswer(400, {"message": text})


def bad_request_detail(text: str) -> ErrorAnswer:
    """A hand-built `400 {"detail": ...}` (schema cancel)."""
    return ErrorAnswer(400, {"detail": text})


def not_found() -> ErrorAnswer:
    """DRF's 404 for an unknown id or project."""
    return _drf(404, "invalid_request", "not_found", "Not found.")


def method_not_allowed(method: str) -> ErrorAnswer:
    """DRF's 405."""
    return _drf(405, "invalid_request", "method_not_allowed", f'Method "{method}" not allowed.')


def server_error() -> ErrorAnswer:
    """PostHog's 500 (the error itself goes to the log, never to the client)."""
    return _drf(500, "server_error", "error", "A server error occurred.")


# Factories, never shared instances: raising one instance again lengthens its traceback, and
# with it the frames (requests included) it keeps alive.
def invalid_key() -> ErrorAnswer:
    """PostHog's 401 for a wrong personal API key."""
    return _drf(
        401,
        "authentication_error",
        "authentication_failed",
        "Personal API key found in request Authorization header is invalid.",
    )


def missing_key() -> ErrorAnswer:
    """PostHog's 401 for a request without credentials."""
    return _drf(
        401,
        "authentication_error",
        "not_authenticated",
        "Authentication credentials were not provided.",
    )


def not_connectable(source_type: str) -> ErrorAnswer:
    """What PostHog says when a source type cannot list its tables (`NotImplementedError`):
    here, the types PostHog has that the sandbox cannot connect."""
    return bad_request_message(
        f"The {source_type} source isn't available to connect yet. Choose a different source, or "
        "contact support if you were expecting it."
    )
