"""PostHog Cloud's rules for a new source's connection, which the sandbox enforces only when
asked (`--cloud-rules`), so that a setup can be rehearsed exactly as Cloud will answer it.

- The database host must be public: `localhost`, private, loopback, link-local and other
  non-public addresses are refused, as is a host that does not resolve.
- Postgres sources (created after 2026-02-18, so every new one) must connect with TLS.

The resolver is injectable, so tests can call a loopback server "public" and reach the TLS
rule while staying on loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import errors

INTERNAL_HOST = (
    "This host points to an internal or private IP address, which PostHog can't reach. Use a "
    "host that's reachable from the public internet. If your database isn't publicly reachable, "
    "connect through an SSH tunnel."
)
TLS_REQUIRED = (
    "Your database doesn't support the encrypted connection PostHog requires. Enable SSL/TLS on "
    "your database server, or connect through an SSH tunnel instead."
)
# A job input the Postgres connector reads (never stored): connect with sslmode=require.
REQUIRE_TLS = "__require_tls"

Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_public(address: str) -> bool:
    """Whether PostHog Cloud's host rule takes an address as public (an IPv4-mapped IPv6
    address by its IPv4 address)."""
    return _public(address)


@dataclass(frozen=True)
class CloudRules:
    """Cloud's host and TLS rules; `resolver` maps a host to its addresses."""

    resolver: Resolver = field(default=resolve)

    def check_host(self, job_inputs: dict[str, Any]) -> None:
        """Refuse a host Cloud cannot reach, with PostHog's text.

        Raises:
            ErrorAnswer: 400 `{"message"}`.
        """
        host = str(job_inputs.get("host") or "").strip()
        if host.lower() == "localhost":
            raise errors.bad_request_message(INTERNAL_HOST)
        addresses = self.resolver(host)
        if not addresses:
            raise errors.bad_request_message(
                f"Couldn't resolve the host '{host}'. Check that it's spelled correctly and "
                "reachable from the public internet."
            )
        if not all(_public(address) for address in addresses):
            raise errors.bad_request_message(INTERNAL_HOST)

    def connection(self, source_type: str, job_inputs: dict[str, Any]) -> dict[str, Any]:
        """The job inputs to connect with: Postgres must use TLS."""
        if source_type == "Postgres":
            return {**job_inputs, REQUIRE_TLS: True}
        return job_inputs
