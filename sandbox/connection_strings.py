"""A connection string typed on the connect page, read as PostHog's source form reads it.

PostHog parses a source's "Connection string (optional)" in the browser, not in its API: pasting
`postgresql://user:password@host:5432/database` fills the Host, Port, Database, User and
Password fields (PostHog's `parsers/postgres.ts`, after node-postgres' pg-connection-string),
and the API connects with those fields, never with the string. The sandbox's connect page has
no script, so it does the same when the form is posted, with a reader per source type whose form
has the field.

What PostHog's parser reads, this one reads: the `postgres://` or `postgresql://` scheme; the
user, password, host, port and database of the URL, percent-decoded; `user`, `password`, `host`
and `port` query parameters in place of the URL's own; port 5432 when none is given (on the
form: when the Port field is empty too). Every other query parameter (`sslmode`, `options`...)
is no field of the form and is not used, as in PostHog. Where PostHog's parser silently fills
nothing (a string it cannot read, or one without a user, host or database), this one says what
to fix. Its messages never repeat the string or any part of it: the string carries a password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

FIELD = "connection_string"
POSTGRES_EXAMPLE = "postgresql://user:password@db.example.com:5432/database"
_ENCODE_HINT = (
    "If the password (or user) contains @, :, /, ?, # or %, write those as %40, %3A, %2F, %3F, "
    "%23 and %25."
)
_KEYWORD_FORM = re.compile(r"^\s*\w+\s*=")


class ConnectionStringError(ValueError):
    """A connection string that cannot be read; the message says what to change, without
    repeating the string."""


def parse_postgres(text: str) -> dict[str, str]:
    """The form fields a Postgres connection string gives: host, database and user, and port
    and password when it has them.

    Raises:
        ConnectionStringError: not a `postgres(ql)://` URL, or no user, host or database, or a
            port that is not a number.
    """
    text = text.strip()
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("postgres", "postgresql") or not rest:
        if scheme.lower().startswith("jdbc:"):
            raise ConnectionStringError(
                "This is a JDBC connection string: remove the jdbc: prefix, and give the user and "
                f"password before the host, as in {POSTGRES_EXAMPLE}."
            )
        if _KEYWORD_FORM.match(text):
            raise ConnectionStringError(
                "Connection strings of the form host=... dbname=... are not read here: give a "
                f"URL such as {POSTGRES_EXAMPLE}, or fill in the fields instead."
            )
        raise ConnectionStringError(
            f"The connection string must start with postgresql:// or postgres://, as in "
            f"{POSTGRES_EXAMPLE}."
        )
    try:
        url = urlsplit("postgresql://" + rest)
    except ValueError:
        raise ConnectionStringError(
            f"The connection string could not be read as a URL such as {POSTGRES_EXAMPLE}. "
            f"{_ENCODE_HINT}"
        ) from None
    if url.fragment or text.endswith("#"):
        raise ConnectionStringError(
            "The connection string has a # in it, which ends a URL. If it is part of the "
            "password, write it as %23."
        )
    userinfo, at, hostport = url.netloc.rpartition("@")
    raw_user, _, raw_password = userinfo.partition(":") if at else ("", "", "")
    if "," in hostport:
        raise ConnectionStringError(
            "The connection string names more than one host; the sandbox connects to one. Give "
            "a single host and port."
        )
    try:
        raw_port = url.port
    except ValueError:
        raise ConnectionStringError(
            f"The port in the connection string must be a number from 1 to 65535. {_ENCODE_HINT}"
        ) from None
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    user = params.get("user") or _decoded(raw_user)
    password = params.get("password") or _decoded(raw_password)
    host = params.get("host") or _decoded(url.hostname or "")
    port = params.get("port") or (str(raw_port) if raw_port is not None else "")
    database = _decoded(url.path[1:])
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ConnectionStringError(
            "The port in the connection string must be a number from 1 to 65535."
        )
    for value, what, where in (
        (user, "user", "before the @"),
        (host, "host", "after the @"),
        (database, "database", "after the host and port"),
    ):
        if not value:
            raise ConnectionStringError(
                f"The connection string names no {what}; it goes {where}, as in "
                f"{POSTGRES_EXAMPLE}. {_ENCODE_HINT}"
            )
    found = {"host": host, "port": port, "database": database, "user": user, "password": password}
    return {name: value for name, value in found.items() if value}


def _decoded(part: str) -> str:
    try:
        return unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise ConnectionStringError(
            "A %-escape in the connection string is not UTF-8 text. Write each special "
            "character of the password as its UTF-8 %-escapes (@ is %40)."
        ) from None


@dataclass(frozen=True)
class Reader:
    """How a source type's connection string is read: the fields it can fill, and the values of
    those it may leave out."""

    parse: Callable[[str], dict[str, str]]
    fills: tuple[str, ...]
    defaults: Mapping[str, str]


# Source types whose form has a connection string, and how each is read (PostHog's `PARSERS`).
READERS: Mapping[str, Reader] = {
    "Postgres": Reader(
        parse_postgres, ("host", "port", "database", "user", "password"), {"port": "5432"}
    ),
}


def fill_in(
    source_type: str, fields: Mapping[str, str], labels: Mapping[str, str]
) -> dict[str, str]:
    """The form's fields with those a connection string gives filled in, and the string itself
    left out. A field typed on the form and the same part of the string must agree.

    `labels` names the form's fields for messages (`host` is "Host").

    Raises:
        ConnectionStringError: the string cannot be read, or it and a typed field differ.
    """
    given = {k: v for k, v in fields.items() if k != FIELD}
    text = fields.get(FIELD, "").strip()
    reader = READERS.get(source_type)
    if not text or reader is None:
        return given
    parsed = reader.parse(text)
    differ = [
        labels.get(name, name)
        for name, value in parsed.items()
        if name in given and given[name].strip() != value
    ]
    if differ:
        raise ConnectionStringError(
            f"The connection string and the {_listed(differ)} you typed differ. Clear "
            f"{'that field' if len(differ) == 1 else 'those fields'}, or the connection string."
        )
    return {**reader.defaults, **parsed, **given}


def _listed(names: list[str]) -> str:
    fields = "field" if len(names) == 1 else "fields"
    if len(names) == 1:
        return f"{names[0]} {fields}"
    return f"{', '.join(names[:-1])} and {names[-1]} {fields}"
