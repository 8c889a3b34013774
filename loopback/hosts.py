"""Host and Origin checks for a listener on a loopback address.

Any web page can make the browser on this machine send requests to 127.0.0.1: through a name
of its own that resolves there (DNS rebinding), whose requests name that host in their Host
header, and by posting a form to the address (a cross-site post), whose request names the
page's origin in its Origin header.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def listener_hosts(port: int) -> frozenset[str]:
    """The Host headers a listener on 127.0.0.1:`port` answers: its address, by number or name."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})


def host_of(url: str) -> str:
    """The Host header of a request for `url`: host and port, as the URL names them."""
    return urlsplit(url).netloc


def origin_of(url: str) -> str:
    """The Origin header a browser sends from a page at `url`: scheme, host and port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
