"""Secret references: a credential given as `{"env": "POSTHOG_SECRET_<NAME>"}` instead of its
value, so it never passes through the conversation.

The server resolves a reference from its own environment just before sending, under three rules,
each refused before anything is sent, with a message naming it:

- The name is a `POSTHOG_SECRET_<NAME>` variable, matched whole. The PostHog key, the HTTP auth
  token and every other variable of the server are refused, so a caller cannot send them to a
  host of its choosing.
- A reference stands only in a secret field: one PostHog's wizard marks `secret: true`
  (`password`, `api_key`, `ssh_tunnel.auth.private_key`...; `redact.is_secret_key`). Never in
  `user`, `database`, `schema`, a host or a table name, which go out before any authentication.
- The secret goes only toward the hosts the person bound it to when they set it:
  `POSTHOG_SECRET_<NAME>_HOSTS`, a comma list of host names, IP addresses and `*.domain`
  wildcards, each with a port or without (`db.example.com:5432` only there; every host the
  request names must be one of them: `host`, an SSH tunnel's host, the host of any URL or
  connection string, the referenced value's own included), or, for a
  service whose fields name no host, its source type as `source:Stripe` (never mistaken for a
  host name). A reference without a binding is refused everywhere, loopback included: any
  local process can listen there, one a model with a shell started among them.

A resolved value is registered with the redactor, so no message, error or log line shows it.
In strict mode a literal value in a secret field is refused.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .redact import MIN_SECRET_CHARS, is_secret_key, remember_secrets

PREFIX = "POSTHOG_SECRET_"
BINDING_SUFFIX = "_HOSTS"
_NAME = re.compile(rf"{PREFIX}[A-Z0-9_]+")  # matched whole (re.fullmatch): no `$` slip
CONNECT_LINK = "data-warehouse-source-connect-link"
# Body fields that are no part of the connection (free text, the tables to sync).
_NOT_CONNECTION = frozenset({"description", "schemas", "tables", "source_type", "prefix"})
# Keys whose value names where a connection goes (besides any `*_host` and any URL).
_HOST_KEYS = frozenset({"host", "hostname", "server", "endpoint", "address", "bootstrap_servers"})
# A binding entry naming a source type, for a service whose fields name no host.
SOURCE_ENTRY = "source:"
# A URL's authority (`scheme://[user[:password]@]host[:port][,host2...]`), and libpq's
# keyword form (`host=a,b`).
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^/?#\s\"'<>]*)")
_HOST_KEYWORD = re.compile(r"(?i)(?:^|\s)(?:host|hostaddr)\s*=\s*'?([^\s']+)")
_PORT_KEYWORD = re.compile(r"(?i)(?:^|\s)port\s*=\s*'?([0-9,]+)")

# Where a request goes: a host, and its port when the request names one.
Address = tuple[str, int | None]


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


def looks_like_reference(value: Any) -> bool:
    """Whether a value is an object with an `env` key (in any case), reference or not."""
    return isinstance(value, dict) and any(isinstance(k, str) and k.lower() == "env" for k in value)


@dataclass(frozen=True)
class Destination:
    """Where a request's credentials go: the source type and the hosts its fields name."""

    source_type: str | None
    named: frozenset[Address]  # in the fields the caller wrote
    inside: frozenset[Address] = field(default_factory=frozenset)  # inside resolved secrets

    @property
    def hosts(self) -> frozenset[Address]:
        """Every host (with its port, when given) the request names."""
        return self.named | self.inside


def resolve(
    body: Any, policy: SecretPolicy, *, tool: str, current: Mapping[str, Any] | None = None
) -> Any:
    """`body` with every reference replaced by its value.

    ``current`` is the source a request changes (retrieved by the caller when the body does not
    say its type), whose `source_type` and `job_inputs` complete the destination.

    Raises:
        SecretRefused: references are off; a reference is malformed, stands in a field that is
            not secret, names no POSTHOG_SECRET_ variable, one that is not set, or one not bound
            to every host the request names; or (strict mode) a secret field holds a literal.
    """
    check_references(body, policy, tool=tool)
    refs = list(_references(body, ()))
    environ = os.environ if policy.environ is None else policy.environ
    values = {path: _value_of(value["env"], environ, tool) for path, value in refs}
    resolved = _replace(body, values, ())
    if policy.strict:
        _refuse_literals(body, tool, ())
    if refs:
        destination = destination_of(body, values, current)
        for _, value in refs:
            _check_binding(value["env"], environ, destination, tool)
        remember_secrets(values.values())
    return resolved


def check_references(body: Any, policy: SecretPolicy, *, tool: str) -> bool:
    """Whether ``body`` holds references, each well formed, in a secret field, and allowed.

    Raises:
        SecretRefused: as :func:`resolve`, for what can be told without the environment.
    """
    refs = list(_references(body, ()))
    for path, value in refs:
        _check_position(path, value, tool)
    if refs and not policy.references:
        raise SecretRefused(
            f"{tool}: secret references are off on this server (a hosted HTTP server turns "
            "them on only when its operator sets POSTHOG_SECRET_REFS=on); nothing was sent."
        )
    return bool(refs)


Path = tuple[str | int, ...]


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path) or "the body"


def _references(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    if looks_like_reference(value):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _references(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _references(v, (*path, i))


def _secret_field(path: Path) -> str | None:
    """The key a value at ``path`` stands under, when that key names a secret (a list item
    has no field of its own)."""
    last = path[-1] if path else None
    return last if isinstance(last, str) and is_secret_key(last) else None


def _check_position(path: Path, value: Any, tool: str) -> None:
    where = _dotted(path)
    if not is_reference(value):
        raise SecretRefused(
            f'{tool}: {where} is not a secret reference, which is exactly {{"env": '
            f'"{PREFIX}<NAME>"}} (one key, a variable name as text); nothing was sent.'
        )
    if _secret_field(path) is None:
        raise SecretRefused(
            f"{tool}: {where} is not a secret field, and a reference resolves only into one "
            "(a field PostHog's wizard marks secret, such as password, api_key, private_key or "
            "connection_string); nothing was sent. Give its value as plain text."
        )


def _value_of(name: str, environ: Mapping[str, str], tool: str) -> str:
    if not _NAME.fullmatch(name):
        raise SecretRefused(
            f"{tool}: only {PREFIX}* variables can be referenced, and {name!r} is not one; "
            "nothing was sent."
        )
    if name.endswith(BINDING_SUFFIX):
        raise SecretRefused(
            f"{tool}: {name} binds a secret to hosts; it is not a secret itself and cannot be "
            f"referenced. Reference {name.removesuffix(BINDING_SUFFIX)} instead; nothing was sent."
        )
    value = environ.get(name)
    if not value:
        raise SecretRefused(
            f"{tool}: {name} is not set in the server's environment; nothing was sent. Ask the "
            f"user to set it where the server is configured, with {name}{BINDING_SUFFIX} "
            f"naming the hosts it may go to (or use {CONNECT_LINK})."
        )
    if len(value) < MIN_SECRET_CHARS:
        raise SecretRefused(
            f"{tool}: {name} is shorter than {MIN_SECRET_CHARS} characters, too short to keep "
            f"out of the server's answers; nothing was sent. Use {CONNECT_LINK} instead."
        )
    return value


def _replace(value: Any, values: Mapping[Path, str], path: Path) -> Any:
    if path in values:
        return values[path]
    if isinstance(value, dict):
        return {k: _replace(v, values, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, values, (*path, i)) for i, v in enumerate(value)]
    return value


def _refuse_literals(value: Any, tool: str, path: Path) -> None:
    if isinstance(value, dict) and not is_reference(value):
        for k, v in value.items():
            _refuse_literals(v, tool, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_literals(v, tool, (*path, i))
    elif isinstance(value, str) and value and (key := _secret_field(path)) is not None:
        raise SecretRefused(
            f"{tool}: {key} holds a literal secret, and this server refuses those (strict mode); "
            f'nothing was sent. Pass {{"env": "{PREFIX}<NAME>"}} for a value set in the '
            f"server's environment, or collect it with {CONNECT_LINK}."
        )


# ---------------------------------------------------------------- where the request goes


def destination_of(
    body: Any, values: Mapping[Path, str], current: Mapping[str, Any] | None = None
) -> Destination:
    """The source type and hosts of a request body: those the caller wrote (with the fields
    of ``current``, the source being changed, that the body leaves as they are), and those
    inside the referenced values."""
    fields = dict(body) if isinstance(body, dict) else {}
    source_type = fields.get("source_type")
    if current is not None:
        source_type = source_type or current.get("source_type")
        inputs = current.get("job_inputs")
        given = fields.get("job_inputs")
        if isinstance(inputs, dict):
            fields["job_inputs"] = {**inputs, **(given if isinstance(given, dict) else {})}
    named = frozenset(_hosts(fields, ()))
    inside = frozenset(h for v in values.values() for h in _hosts_in_text(v))
    return Destination(source_type if isinstance(source_type, str) else None, named, inside)


def _hosts(value: Any, path: Path) -> Iterator[Address]:
    if isinstance(value, dict):
        port = _port(value.get("port")) if "port" in value else None
        for k, v in value.items():
            key = str(k).lower()
            if len(path) < 2 and key in _NOT_CONNECTION:
                continue
            if (key in _HOST_KEYS or key.endswith("_host")) and isinstance(v, str):
                yield from _hosts_of_field(v, port)
            else:
                yield from _hosts(v, (*path, key))
    elif isinstance(value, list):
        for v in value:
            yield from _hosts(v, path)
    elif isinstance(value, str):
        yield from _hosts_in_text(value)


def _hosts_of_field(value: str, port: int | None) -> Iterator[Address]:
    """The hosts of a host field (a comma list, a URL), with `port`, the port field beside it,
    for those that name none of their own."""
    if "://" in value:
        yield from _hosts_in_text(value)
        return
    for part in value.split(","):
        host, own = _split_port(part.strip())
        if host := _normal(host):
            yield host, own if own is not None else port


def _hosts_in_text(text: str) -> Iterator[Address]:
    for authority in _URL.findall(text):
        for part in authority.rsplit("@", 1)[-1].split(","):
            host, port = _split_port(part)
            if host := _normal(host):
                yield host, port
    ports = [_port(p) for m in _PORT_KEYWORD.findall(text) for p in m.split(",")]
    for hosts in _HOST_KEYWORD.findall(text):
        names = [h for h in (_normal(part) for part in hosts.split(",")) if h]
        # libpq: one port for every host, or one port for each.
        paired = ports if len(ports) == len(names) else [ports[0] if len(ports) == 1 else None]
        for i, host in enumerate(names):
            yield host, paired[i] if len(paired) > 1 else paired[0]


def _port(value: Any) -> int | None:
    try:
        port = int(str(value).strip())
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def _split_port(host: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, a bare IPv6 address or a bare host, as (host, port)."""
    host = host.strip()
    if host.startswith("["):
        inside, _, rest = host[1:].partition("]")
        return inside, _port(rest[1:]) if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, _port(port)
    return host, None


def _normal(host: str) -> str:
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _shown(address: Address) -> str:
    host, port = address
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def binding_of(name: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The hosts (or source types) ``name`` may go to, as the person wrote them."""
    raw = environ.get(name + BINDING_SUFFIX) or ""
    return tuple(e.strip() for e in re.split(r"[,\s]+", raw) if e.strip())


def _matches(address: Address, entry: str) -> bool:
    """Whether `entry` of a binding allows `address`: the same host (or a subdomain of a
    `*.` wildcard), and, when the entry names a port, that very port."""
    if entry.lower().startswith(SOURCE_ENTRY):
        return False  # a source type, never a host
    host, port = address
    pattern, wanted = _split_port(entry)
    pattern = _normal(pattern)
    if wanted is not None and port != wanted:
        return False
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _check_binding(
    name: str, environ: Mapping[str, str], destination: Destination, tool: str
) -> None:
    binding = binding_of(name, environ)
    variable = name + BINDING_SUFFIX
    if not binding:
        raise SecretRefused(
            f"{tool}: {name} is not bound to any host, and a secret goes only where the person "
            f"who set it allows; nothing was sent. Ask the user to set {variable} beside it in "
            "the server's environment: the database hosts it may be sent to, comma-separated "
            "(db.example.com,10.0.0.5; *.example.com for subdomains), or for a service with no "
            f"host field its source type ({SOURCE_ENTRY}Stripe). Or collect the credentials with "
            f"{CONNECT_LINK} instead."
        )
    bound = ", ".join(binding)
    if not destination.hosts:
        wanted = f"{SOURCE_ENTRY}{destination.source_type or ''}".lower()
        if destination.source_type and any(e.lower() == wanted for e in binding):
            return
        given = destination.source_type or "not given"
        raise SecretRefused(
            f"{tool}: {name} is bound to {bound}, and this request names no host, nor is its "
            f"source type ({given}) in {variable}; nothing was sent. If the secret belongs to "
            f"that service, ask the user to add {SOURCE_ENTRY}<type> to it."
        )
    unbound = sorted(
        _shown(a) for a in destination.named if not any(_matches(a, e) for e in binding)
    )
    hidden = any(not any(_matches(h, e) for e in binding) for h in destination.inside)
    if not unbound and not hidden:
        return
    where = ", ".join(unbound) + (" and " if unbound and hidden else "")
    where += "a host inside the referenced value" if hidden else ""
    raise SecretRefused(
        f"{tool}: {name} is bound to {bound}, and this request would send it toward {where}; "
        f"nothing was sent. If that host is right, ask the user to add it to {variable}."
    )
