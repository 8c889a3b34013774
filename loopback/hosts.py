"""Host and Origin checks for a listener on a loopback address.

Any web page can make the browser on this machine send requests to 127.0.0.1: through a name
of its own that resolves there (DNS rebinding), whose requests name that host in their Host
header, and by posting a form to the address (a cross-site post), whose request names the
page's origin in its Origin header. ``Visitors`` is the one check of both; ``HostCheck`` puts it
in front of an ASGI app.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

# The addresses that mean "every interface": a listener bound there is reached on loopback too.
WILDCARDS = ("0.0.0.0", "::", "")

Refuse = Callable[[Send, int, str], Awaitable[None]]
"""How a listener answers a request it refuses: the status (400 Host, 403 Origin) and why."""


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """A bind address as a URL names it: a wildcard address means this machine's loopback, and
    an IPv6 address is bracketed."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def listener_hosts(port: int, address: str = "127.0.0.1") -> frozenset[str]:
    """The Host headers a listener bound to `address`:`port` answers: its address, and this
    machine's loopback by number or name (a wildcard address has no Host of its own)."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    if address not in WILDCARDS or address == "::":
        hosts.add(f"{url_host(address)}:{port}")
    return frozenset(hosts)


def host_of(url: str) -> str:
    """The Host header of a request for `url`: host and port, as the URL names them."""
    return urlsplit(url).netloc


def origin_of(url: str) -> str:
    """The Origin header a browser sends from a page at `url`: scheme, host and port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _matches(value: str, patterns: Iterable[str]) -> bool:
    """`value` is one of `patterns`, exactly, or a `name:*` one with any port."""
    for pattern in patterns:
        if value == pattern:
            return True
        if pattern.endswith(":*"):
            base, _, port = value.rpartition(":")
            if base == pattern[:-2] and port.isdigit():
                return True
    return False


class Visitors:
    """Who a listener answers: requests naming one of its `hosts` (``name:port``, or
    ``name:*`` for any port), and, when they carry an Origin, coming from a page of one of them
    served over plain HTTP (every loopback listener here is). With ``check_origin=False`` the
    Origin is left to the app (endpoints that serve pages of any origin, through CORS)."""

    def __init__(self, hosts: Iterable[str], *, check_origin: bool = True) -> None:
        self.hosts = frozenset(hosts)
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self.check_origin = check_origin

    def refusal(self, headers: Mapping[str, str]) -> tuple[int, str] | None:
        """Why a request with these (lower-case) headers is refused, as (status, detail), or
        None when it is answered."""
        if not _matches(headers.get("host", ""), self.hosts):
            return 400, "Invalid Host header."
        # No Origin: not a browser, or a browser's plain navigation. "null" (a sandboxed or
        # privacy-stripped page) is refused: it cannot be told from a foreign page.
        origin = headers.get("origin")
        if self.check_origin and origin is not None and not _matches(origin, self.origins):
            return 403, "Invalid Origin header."
        return None


async def refuse_plainly(send: Send, status: int, detail: str) -> None:
    """Answer `{"detail": ...}` as JSON: how a listener without an error format refuses."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def headers_of(scope: Scope) -> dict[str, str]:
    """A request's headers, names lower-case (a repeated header: its last value)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class HostCheck:
    """ASGI middleware: pass on only the requests `visitors` answers; refuse the others with
    `refuse` (a listener's own error format)."""

    def __init__(self, app: ASGIApp, visitors: Visitors, *, refuse: Refuse = refuse_plainly):
        self.app = app
        self.visitors = visitors
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            problem = self.visitors.refusal(headers_of(scope))
            if problem is not None:
                if scope["type"] == "http":
                    await self.refuse(send, *problem)
                else:  # closed before it is accepted: the handshake is answered 403
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)
