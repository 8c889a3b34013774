"""Client ID metadata documents: an MCP client whose ``client_id`` is a URL is described by the
JSON document at that URL (draft-ietf-oauth-client-id-metadata-document, the MCP
specification's preferred registration since 2025-11-25).

Hand-written: the SDK's ``mcp.server.auth`` looks clients up through the provider and fetches
nothing. The fetch follows PostHog's own (``posthog/api/oauth/cimd.py``):

- ``https://`` only, on port 443, with a path, and no query, fragment or user info;
- the host's addresses are resolved once, and any that is not globally routable
  (``is_global``: private, loopback, link-local, shared 100.64.0.0/10, reserved...) or that
  tunnels to another address (IPv4-mapped, 6to4, Teredo) refuses the document (the server
  must not be made to probe its own network);
- the connection goes to the address that was checked (the Host header and the TLS server
  name are the URL's host, and the certificate is verified against that name), so a DNS
  answer that changes after the check (DNS rebinding) steers nothing;
- no redirects; no compression (``Accept-Encoding: identity``; a compressed answer is
  refused); at most 5 KB of the bytes received, read in pieces and refused past the cap;
  5 s for the whole exchange;
- the document's ``client_id`` must be the URL itself, its ``redirect_uris`` a non-empty list
  of acceptable redirect URIs (:func:`redirect_uri_problem`), and it may not claim a
  secret-based token endpoint method (it has no secret).

Tests allow loopback addresses and other ports (``allow_loopback``), give the TLS context
that trusts their test CA, and may give the resolver.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from ...loopback.hosts import is_loopback

log = logging.getLogger("posthog_warehouse_mcp.oauth")

MAX_BYTES = 5 * 1024
TIMEOUT_SECONDS = 5.0
SECRET_METHODS = frozenset({"client_secret_post", "client_secret_basic", "client_secret_jwt"})


class DocumentRefused(Exception):
    """A client ID metadata document that cannot be used; the message says why (no secrets)."""


def is_document_url(client_id: str) -> bool:
    """Whether a ``client_id`` is a metadata document's URL (its shape only; nothing fetched)."""
    parts = urlsplit(client_id)
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and parts.path not in ("", "/")
        and not (parts.query or parts.fragment or parts.username or parts.password)
    )


def redirect_uri_problem(uri: str) -> str | None:
    """Why a client's redirect URI is refused, or None: ``https://``, ``http://`` only to a
    loopback address (a native app's listener, RFC 8252 §7.3), or a private-use scheme with a
    dot (``com.example.app:/cb``, RFC 8252 §7.1); no fragment."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.fragment:
        return "a redirect_uri may not have a fragment"
    if scheme == "https" and parts.hostname:
        return None
    if scheme == "http" and is_loopback(parts.hostname or ""):
        return None
    if "." in scheme and scheme not in ("http", "https") and not parts.netloc.startswith("/"):
        return None
    return (
        "a redirect_uri must be https://, http:// to a loopback address, or a private-use "
        "scheme such as com.example.app:/callback"
    )


def _public(address: str, *, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if allow_loopback and ip.is_loopback:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and (
        ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None
    ):
        return False
    return ip.is_global and not ip.is_multicast


Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses DNS gives for `host` (the system's resolver)."""
    found = await anyio.getaddrinfo(host, port, proto=6)
    return [str(info[4][0]) for info in found]


@dataclass(frozen=True)
class DocumentFetcher:
    """Fetches client ID metadata documents within the limits above."""

    allow_loopback: bool = False
    verify: ssl.SSLContext | bool = True
    max_bytes: int = MAX_BYTES
    timeout: float = TIMEOUT_SECONDS
    resolve: Resolve = resolve

    async def fetch(self, url: str, *, scope: str | None) -> OAuthClientInformationFull:
        """The client the document at `url` describes (a public client: no secret), allowed
        `scope`.

        Raises:
            DocumentRefused: the URL, its address, the answer or the document is refused.
        """
        if not is_document_url(url):
            raise DocumentRefused("a client_id URL must be https:// with a path and no query")
        parts = urlsplit(url)
        port = parts.port or 443
        if port != 443 and not self.allow_loopback:
            raise DocumentRefused("a client_id URL must use port 443")
        try:
            with anyio.fail_after(self.timeout):
                address = await self._checked_address(parts.hostname or "", port)
                body = await self._get(url, address)
        except TimeoutError:
            raise DocumentRefused(f"no answer within {self.timeout:g} s") from None
        return self._client(url, body, scope)

    async def _checked_address(self, host: str, port: int) -> str:
        """The address to connect to: every one DNS gives must be public."""
        try:
            addresses = await self.resolve(host, port)
        except OSError:
            raise DocumentRefused("its host name does not resolve") from None
        try:
            public = bool(addresses) and all(
                _public(a, allow_loopback=self.allow_loopback) for a in addresses
            )
        except ValueError:
            public = False
        if not public:
            raise DocumentRefused("its host resolves to a private or loopback address")
        # IPv4 first: a host with both is reached the way most networks route.
        return sorted(addresses, key=lambda a: ":" in a)[0]

    async def _get(self, url: str, address: str) -> bytes:
        parts = urlsplit(url)
        name = parts.hostname or ""
        at = f"[{address}]" if ":" in address else address
        target = parts._replace(netloc=f"{at}:{parts.port or 443}").geturl()
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "Host": parts.netloc,
        }
        try:
            async with (
                httpx.AsyncClient(
                    verify=self.verify, timeout=self.timeout, follow_redirects=False
                ) as http,
                # The checked address, with the name for Host, SNI and the certificate check.
                http.stream(
                    "GET", target, headers=headers, extensions={"sni_hostname": name}
                ) as answer,
            ):
                if answer.status_code != 200:
                    raise DocumentRefused(f"its URL answered {answer.status_code}")
                if answer.headers.get("content-encoding", "identity").lower() != "identity":
                    raise DocumentRefused("it came compressed, which was not asked for")
                declared = answer.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise DocumentRefused(f"it is larger than {self.max_bytes} bytes")
                body = b""
                async for chunk in answer.aiter_raw():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise DocumentRefused(f"it is larger than {self.max_bytes} bytes")
                return body
        except httpx.HTTPError as exc:
            raise DocumentRefused(f"it could not be fetched ({type(exc).__name__})") from None

    def _client(self, url: str, body: bytes, scope: str | None) -> OAuthClientInformationFull:
        try:
            document: Any = json.loads(body)
        except ValueError:
            raise DocumentRefused("it is not JSON") from None
        if not isinstance(document, dict):
            raise DocumentRefused("it is not a JSON object")
        if document.get("client_id") != url:
            raise DocumentRefused("its client_id is not its own URL")
        uris = document.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise DocumentRefused("it has no redirect_uris")
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise DocumentRefused(problem)
        method = document.get("token_endpoint_auth_method") or "none"
        if method in SECRET_METHODS:
            raise DocumentRefused(f"a document cannot use token_endpoint_auth_method {method}")
        try:
            return OAuthClientInformationFull(
                client_id=url,
                client_name=str(document.get("client_name") or url)[:100],
                redirect_uris=uris,
                token_endpoint_auth_method="none",
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                scope=scope,
            )
        except ValidationError:
            raise DocumentRefused("its redirect_uris are not URLs") from None
