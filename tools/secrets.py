"""Secret references: a credential given as `{"env": "POSTHOG_SECRET_<NAME>"}` instead of its
value, so it never passes through the conversation.

The server resolves a reference from its own environment just before sending, and only names
with the `POSTHOG_SECRET_` prefix: the PostHog key, the HTTP auth token and every other variable
of the server are refused, so a caller cannot send them to a host of its choosing. A resolved
value is registered with the redactor, so it is never echoed in a result, an error or a log.
In strict mode a literal value in a secret field is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .redact import is_secret_key, remember_secrets

PREFIX = "POSTHOG_SECRET_"
_NAME = re.compile(rf"^{PREFIX}[A-Z0-9_]+$")


class SecretRefused(ValueError):
    """A reference or a literal secret the server will not send; nothing was sent."""


@dataclass(frozen=True)
class SecretPolicy:
    """Whether references resolve (`references`), and whether literal secrets are refused."""

    references: bool = True
    strict: bool = False
    environ: Mapping[str, str] | None = None  # the server's environment (tests pass their own)


def is_reference(value: Any) -> bool:
    """Whether a value is a secret reference: exactly `{"env": "<name>"}`."""
    return isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)


def resolve(body: Any, policy: SecretPolicy, *, tool: str) -> Any:
    """`body` with every reference replaced by its value.

    Raises:
        SecretRefused: references are off, a name is not a POSTHOG_SECRET_ variable or is not
            set, or (strict mode) a secret field holds a literal value.
    """
    return _walk(body, policy, tool, key=None)


def _walk(value: Any, policy: SecretPolicy, tool: str, key: str | None) -> Any:
    if is_reference(value):
        return _value_of(value["env"], policy, tool)
    if isinstance(value, dict):
        return {
            k: _walk(v, policy, tool, k if isinstance(k, str) else None) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_walk(v, policy, tool, key) for v in value]
    literal = isinstance(value, str) and bool(value)
    if policy.strict and key is not None and literal and is_secret_key(key):
        raise SecretRefused(
            f"{tool}: {key} holds a literal secret, and this server refuses those (strict mode); "
            f'nothing was sent. Pass {{"env": "{PREFIX}<NAME>"}} for a value set in the '
            "server's environment, or collect it with data-warehouse-source-connect-link."
        )
    return value


def _value_of(name: str, policy: SecretPolicy, tool: str) -> str:
    if not policy.references:
        raise SecretRefused(
            f"{tool}: secret references are off on this server (a hosted HTTP server turns "
            "them on only when its operator sets POSTHOG_SECRET_REFS=1); nothing was sent."
        )
    if not _NAME.match(name):
        raise SecretRefused(
            f"{tool}: only {PREFIX}* variables can be referenced, and {name!r} is not one; "
            "nothing was sent."
        )
    environ = os.environ if policy.environ is None else policy.environ
    value = environ.get(name)
    if not value:
        raise SecretRefused(
            f"{tool}: {name} is not set in the server's environment; nothing was sent. Ask the "
            "user to set it where the server is configured (or use the connect link)."
        )
    remember_secrets([value])
    return value
