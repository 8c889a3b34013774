"""Signed, self-contained tokens: claims a server issues and later reads back unchanged.

A token is the claims as compressed JSON in URL-safe base64, a dot, and an HMAC-SHA256 of that
text with the server's key: every instance sharing the key verifies it, none can be forged
without it. Confirmation tokens (confirm.py) and plan ids (plans.py) are such tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from typing import Any

from ..loopback.tokens import tokens_match

# A token's claims, once decompressed, are at most this big: a forged one cannot make a server
# inflate a small token into a large allocation.
MAX_CLAIMS_BYTES = 1_000_000


class Forged(ValueError):
    """A token this server did not issue (or one altered since)."""


def seal(key: bytes, claims: dict[str, Any]) -> str:
    """The token carrying `claims`, signed with `key`."""
    packed = zlib.compress(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    body = base64.urlsafe_b64encode(packed).decode().rstrip("=")
    return f"{body}.{_sign(key, body)}"


def unseal(key: bytes, token: str) -> dict[str, Any]:
    """The claims of a token signed with `key`.

    Raises:
        Forged: the signature does not match, or the token is not one at all.
    """
    body, _, signature = token.partition(".")
    if not tokens_match(signature, _sign(key, body)):
        raise Forged("not a token this server issued")
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj()
        text = inflater.decompress(packed, MAX_CLAIMS_BYTES)
        claims = json.loads(text)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise Forged("not a token this server issued") from exc
    if not isinstance(claims, dict):
        raise Forged("not a token this server issued")
    return claims


def _sign(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
