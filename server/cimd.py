"""Client ID metadata documents: an MCP client whose ``client_id`` is a URL is described by the
JSON document at that URL (draft-ietf-oauth-client-id-metadata-document, the MCP
specification's preferred registration since 2025-11-25).

Hand-written: the SDK's ``mcp.server.auth`` looks clients up through the provider and fetches
nothing. The fetch follows PostHog's own (``posthog/api/oauth/cimd.py``):

- ``https://`` only, with a path, and no query, fragment or user info;
- the host's addresses are resolved first, and a private, loopback, link-local, multicast or
  reserved one is refused (the server must not be made to probe its own network); tests allow
  loopback (``allow_loopback``), and give the TLS context that trusts their test CA;
- no redirects; at most 5 KB, read in pieces and refused past the cap; 5 s for the whole
  exchange;
- the document's ``client_id`` must be the URL itself, its ``redirect_uris`` a non-empty list,
  and it may not claim a secret-based token endpoint method (it has no secret).

The addresses are checked once, before connecting; a host whose DNS answer changes between
the check and the connection (DNS rebinding) could still steer one request. Deployments that
must close that too put the server behind an egress proxy that refuses private addresses.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

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


def _public(address: str, *, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address)
    if allow_loopback and ip.is_loopback:
        return True
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class DocumentFetcher:
    """Fetches client ID metadata documents within the limits above."""

    allow_loopback: bool = False
    verify: ssl.SSLContext | bool = True
    max_bytes: int = MAX_BYTES
    timeout: float = TIMEOUT_SECONDS

    async def fetch(self, url: str, *, scope: str | None) -> OAuthClientInformationFull:
        """The client the document at `url` describes (a public client: no secret), allowed
        `scope`.

        Raises:
            DocumentRefused: the URL, its address, the answer or the document is refused.
        """
        if not is_document_url(url):
            raise DocumentRefused("a client_id URL must be https:// with a path and no query")
        try:
            with anyio.fail_after(self.timeout):
                await self._check_addresses(urlsplit(url).hostname or "")
                body = await self._get(url)
        except TimeoutError:
            raise DocumentRefused(f"no answer within {self.timeout:g} s") from None
        return self._client(url, body, scope)

    async def _check_addresses(self, host: str) -> None:
        try:
            found = await anyio.getaddrinfo(host, 443, proto=6)
        except OSError:
            raise DocumentRefused("its host name does not resolve") from None
        addresses = {str(info[4][0]) for info in found}
        if not addresses or not all(
            _public(a, allow_loopback=self.allow_loopback) for a in addresses
        ):
            raise DocumentRefused("its host resolves to a private or loopback address")

    async def _get(self, url: str) -> bytes:
        try:
            async with (
                httpx.AsyncClient(
                    verify=self.verify, timeout=self.timeout, follow_redirects=False
                ) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as answer,
            ):
                if answer.status_code != 200:
                    raise DocumentRefused(f"its URL answered {answer.status_code}")
                declared = answer.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise DocumentRefused(f"it is larger than {self.max_bytes} bytes")
                body = b""
                async for chunk in answer.aiter_bytes():
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
