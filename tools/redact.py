"""Redaction of credentials from anything the server echoes or logs."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# Key names that carry credentials in PostHog source payloads and job_inputs.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "private_key",
    "passphrase",
    "api_key",
    "apikey",
    "token",
    "authorization",
    "credential",
    "connection_string",
    "key_file",
)

_known_secrets: set[str] = set()


# Keys that match a part above but name a reference, not a secret: a stored credential's id
# (PostHog's connect page) is what the agent must pass on.
NOT_SECRET_KEYS = frozenset({"credential_id"})


@functools.lru_cache(maxsize=4096)  # results repeat the same few dozen key names
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a credential."""
    lowered = key.lower().replace("-", "_")
    if lowered in NOT_SECRET_KEYS:
        return False
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """Return ``value`` with every credential-named key's value replaced, recursively."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def remember_secrets(values: Iterable[str | None]) -> None:
    """Register literal secrets (the API key) that must never appear in any output."""
    _known_secrets.update(v for v in values if v and len(v) >= 6)


def collect_secrets(value: Any) -> list[str]:
    """Return the string values stored under credential-named keys anywhere in ``value``."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and is_secret_key(k) and isinstance(v, str):
                found.append(v)
            else:
                found.extend(collect_secrets(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(collect_secrets(v))
    return found


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """Return ``value`` with every literal occurrence of ``secrets`` replaced, recursively."""
    wanted = [s for s in secrets if s and len(s) >= 4]
    if not wanted:
        return value
    if isinstance(value, dict):
        return {k: scrub(v, wanted) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, wanted) for v in value]
    if isinstance(value, str):
        for secret in wanted:
            value = value.replace(secret, REDACTED)
    return value


_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}")
_PHX = re.compile(r"\bph[xc]_[A-Za-z0-9]{6,}")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# A credential-named key followed by its value, as an echoed request shows it: JSON
# ("password": "x"), a Python repr ('password': 'x'), a query string or header (token=x).
_SECRET_NAME = "|".join(part.replace("_", "[_-]?") for part in SECRET_KEY_PARTS)
_SECRET_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>(?P<q>["']?)(?<![a-z0-9_-])[a-z0-9_-]{{0,40}}?(?:{_SECRET_NAME})[a-z0-9_-]{{0,40}}
      (?P=q)\s*[:=]\s*)
    (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"'{{\[,;&}}\]()<>][^\s,;&}}\]()<>]*)
    """
)
_HINTS = ("pass", "secret", "key", "token", "auth", "credential", "connection")


def _may_name_a_secret(text: str) -> bool:
    if ":" not in text and "=" not in text:
        return False
    lowered = text.lower()
    return any(hint in lowered for hint in _HINTS)


def _redact_pair(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match['key']}{quote}{REDACTED}{quote}"


def redact_text(text: str, *, extra: Iterable[str] = ()) -> str:
    """Remove known secrets, bearer tokens, PostHog keys, URL passwords and the values of
    credential-named keys (``"password": "..."``, ``token=...``) from ``text``."""
    for secret in (*_known_secrets, *extra):
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    # Each pattern runs only on text that has what it needs to match: nearly every string in
    # a result (ids, names, timestamps) has none of it, and plain `in` tests are much cheaper.
    if "bearer" in text.lower():
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if "_" in text and "ph" in text:
        text = _PHX.sub(REDACTED, text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    if not _may_name_a_secret(text):
        return text
    return _SECRET_PAIR.sub(_redact_pair, text)
