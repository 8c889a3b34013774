"""Redaction of credentials from anything the server echoes or logs, by field and by value,
never by guessing at substrings.

- By field: a result's value under a credential-named key (``password``, ``api_key``...) is
  replaced. A flag there (the wizard's ``"secret": true``) is no credential and is kept.
- By shape, in any text: bearer tokens, PostHog keys, a URL's password, and the value of a
  credential-named key written as ``key=value`` or ``"key": "value"``.
- By value: the secrets the server knows (the API key, resolved secret references) and those a
  request carried are replaced as whole tokens only, never inside a longer name
  (``my_postgres_db`` stays whole), in messages (errors, log lines, a result's error and message
  fields) and anywhere in the answer to the request that carried them. Data (query rows, table
  and column names) is never changed by value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# Key names that carry credentials in PostHog source payloads and job_inputs: together they
# name every field PostHog's source forms mark `secret: true` (tests/test_secret_binding.py).
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
    "deploy_key",
    "application_key",
    "consumer_key",
    "encryption_key",
)

# Keys that match a part above but name no secret: a stored credential's id (PostHog's connect
# page) is what the agent must pass on; the server's own settings say how secrets are handled.
NOT_SECRET_KEYS = frozenset(
    {
        "credential_id",
        "posthog_secret_refs",
        "secret_refs",
        "posthog_strict_secrets",
        "strict_secrets",
    }
)
# `POSTHOG_SECRET_<NAME>_HOSTS`: where a secret may go (tools/secrets.py), not a secret.
NOT_SECRET_SUFFIX = "_hosts"

# Shorter values are no secret worth the name; as whole tokens they would still blank out
# ordinary words. tools/secrets.py refuses references to them.
MIN_SECRET_CHARS = 3

# Result fields whose text is a message (where an echoed secret could stand), not data.
_MESSAGE_KEY = re.compile(
    r"error|message|detail|reason|hint|warning|notice|description|cause|^logs?$|^text$"
)


@functools.lru_cache(maxsize=4096)  # results repeat the same few dozen key names
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a credential."""
    lowered = key.lower().replace("-", "_")
    if lowered in NOT_SECRET_KEYS or lowered.endswith(NOT_SECRET_SUFFIX):
        return False
    return any(part in lowered for part in SECRET_KEY_PARTS)


@functools.lru_cache(maxsize=4096)
def _is_message_key(key: str) -> bool:
    return _MESSAGE_KEY.search(key.lower()) is not None


@functools.lru_cache(maxsize=64)
def token_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    """A pattern finding any of ``values`` as a whole token: not preceded or followed by a
    letter, digit or underscore where the value itself starts or ends with one."""
    parts = []
    for value in sorted(values, key=len, reverse=True):
        before = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
        after = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
        parts.append(before + re.escape(value) + after)
    return re.compile("|".join(parts)) if parts else None


def _wanted(values: Iterable[str | None]) -> frozenset[str]:
    return frozenset(v for v in values if v and len(v) >= MIN_SECRET_CHARS)


class KnownSecrets:
    """The secrets this process knows (the API key, resolved references): never in a message."""

    def __init__(self) -> None:
        self.values: frozenset[str] = frozenset()

    def add(self, values: Iterable[str | None]) -> None:
        """Register more values."""
        self.values = self.values | _wanted(values)


_known = KnownSecrets()


def remember_secrets(values: Iterable[str | None]) -> None:
    """Register secrets (the API key, a resolved reference) that no message may show."""
    _known.add(values)


def _replace_tokens(text: str, values: frozenset[str]) -> str:
    if not values or not any(v in text for v in values):
        return text
    pattern = token_pattern(values)
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact(value: Any, *, message: bool = False) -> Any:
    """Return ``value`` with every credential-named key's value replaced, recursively; text is
    redacted by shape, and known secrets are removed from text under message-like keys
    (``message`` says the value is one already)."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and is_secret_key(k):
                out[k] = v if v is None or isinstance(v, bool) else REDACTED
            else:
                inner = message or (isinstance(k, str) and _is_message_key(k))
                out[k] = redact(v, message=inner)
        return out
    if isinstance(value, list):
        return [redact(v, message=message) for v in value]
    if isinstance(value, str):
        return redact_text(value, known=message)
    return value


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
    """Return ``value`` with every whole-token occurrence of ``secrets`` replaced, recursively
    (the answer to the request that carried them)."""
    wanted = _wanted(secrets)
    if not wanted:
        return value
    return _scrub(value, wanted)


def _scrub(value: Any, wanted: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, wanted) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, wanted) for v in value]
    if isinstance(value, str):
        return _replace_tokens(value, wanted)
    return value


_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}")
# PostHog keys and tokens: personal (phx_), project (phc_), OAuth access and refresh (pha_, phr_).
_PHX = re.compile(r"\bph[xcar]_[A-Za-z0-9_-]{6,}")
_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@\s]+:)(?P<password>[^@\s]+)@")
# What a form's placeholder puts where a URL's password goes: no secret.
_PLACEHOLDER_PASSWORDS = frozenset({"password", "pass", "<password>", "{password}", "[redacted]"})
# A credential-named key followed by its value, as an echoed request shows it: JSON
# ("password": "x"), a Python repr ('password': 'x'), a query string or header (token=x).
_SECRET_NAME = "|".join(part.replace("_", "[_-]?") for part in SECRET_KEY_PARTS)
_SECRET_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>(?P<q>["']?)(?<![a-z0-9_-])(?P<name>[a-z0-9_-]{{0,40}}?(?:{_SECRET_NAME})[a-z0-9_-]{{0,40}})
      (?P=q)\s*[:=]\s*)
    (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"'{{\[,;&}}\]()<>][^\s,;&}}\]()<>]*)
    """
)
# Values a credential-named key can hold that are no credential (a `secret: true` flag).
_NOT_VALUES = frozenset({"true", "false", "null", "none", ""})
_HINTS = ("pass", "secret", "key", "token", "auth", "credential", "connection")


def _may_name_a_secret(text: str) -> bool:
    if ":" not in text and "=" not in text:
        return False
    lowered = text.lower()
    return any(hint in lowered for hint in _HINTS)


def _redact_pair(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    if not is_secret_key(match["name"]) or value.strip("\"'").lower() in _NOT_VALUES:
        return match[0]
    return f"{match['key']}{quote}{REDACTED}{quote}"


def _redact_url_password(match: re.Match[str]) -> str:
    if match["password"].lower() in _PLACEHOLDER_PASSWORDS:
        return match[0]
    return f"{match['head']}{REDACTED}@"


def redact_text(text: str, *, extra: Iterable[str] = (), known: bool = True) -> str:
    """Remove bearer tokens, PostHog keys, URL passwords and the values of credential-named
    keys (``"password": "..."``, ``token=...``) from ``text``; with ``known`` (a message, an
    error, a log line), also the secrets the server knows and ``extra`` as whole tokens."""
    if known:
        text = _replace_tokens(text, _known.values | _wanted(extra))
    # Each pattern runs only on text that has what it needs to match: nearly every string in
    # a result (ids, names, timestamps) has none of it, and plain `in` tests are much cheaper.
    if "bearer" in text.lower():
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if "_" in text and "ph" in text:
        text = _PHX.sub(REDACTED, text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(_redact_url_password, text)
    if not _may_name_a_secret(text):
        return text
    return _SECRET_PAIR.sub(_redact_pair, text)
