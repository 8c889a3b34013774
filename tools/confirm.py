"""Whether a destructive call may act now, or must first ask the person: one decision.

:func:`decide` runs once per call, before anything is sent. A call acts when it carries a
token for this very call; otherwise the row's preview is read (read-only GETs) and the answer
is a :class:`Question`: the preview and a new token. How the question reaches the person (in
the call, as an input-required result, or as a preview and token for the model to show) is the
server's concern (server/asking.py). Tokens are signed (HMAC-SHA256; every instance sharing
the key verifies them), short-lived, bound to the tool, its exact arguments and, with
forwarded keys, the caller, and spent when used (recorded where a restart does not forget it,
server/store.py, or where every replica sees it, server/shared.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from .models import CarriesConfirmation
from .signing import Forged, seal, unseal

if TYPE_CHECKING:
    from .dispatch import Call
    from .table import Endpoint

TOKEN_SECONDS = 300


class ConfirmationRefused(ValueError):
    """A confirmation token that cannot be used; nothing was sent."""


class StoreUnavailable(ConfirmationRefused):
    """The record of spent tokens cannot be reached; a token is refused rather than risk a
    second use."""


class Spent(Protocol):
    """Where used tokens' nonces are kept until the tokens expire (shared by every instance
    that verifies the same tokens). Asynchronous: the record may be across the network."""

    async def spend(self, nonce: str, until: float) -> bool:
        """Record `nonce` as spent until `until` (epoch seconds); False if it was already.

        Raises:
            StoreUnavailable: the record cannot be reached.
        """
        ...


@dataclass
class MemorySpent:
    """Spent nonces in this process only, each dropped once its token has expired."""

    _spent: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def spend(self, nonce: str, until: float) -> bool:
        """Record `nonce` as spent until `until`; False if it was already."""
        with self._lock:
            now = time.time()
            for old in [n for n, expiry in self._spent.items() if expiry < now]:
                del self._spent[old]
            if nonce in self._spent:
                return False
            self._spent[nonce] = until
            return True


@dataclass
class Confirmations:
    """Issues and checks confirmation tokens for one server (or several sharing `key`)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    seconds: int = TOKEN_SECONDS
    spent: Spent = field(default_factory=MemorySpent)

    def issue(self, tool: str, params: BaseModel, caller: str) -> str:
        """A token for this call, valid for `seconds`."""
        claims = {
            "t": tool,
            "a": _digest(params),
            "c": caller,
            "e": int(time.time()) + self.seconds,
            "n": secrets.token_urlsafe(9),
        }
        return seal(self.key, claims)

    async def check(self, token: str, tool: str, params: BaseModel, caller: str) -> None:
        """Accept the token for this very call, once.

        Raises:
            ConfirmationRefused: forged, expired, spent, or for another tool, arguments or
                caller; StoreUnavailable when the record of spent tokens cannot be reached.
        """
        try:
            claims = unseal(self.key, token)
        except Forged:
            raise ConfirmationRefused(
                "the confirmation_token is not one this server issued"
            ) from None
        if claims.get("e", 0) < time.time():
            raise ConfirmationRefused("the confirmation_token has expired")
        if claims.get("t") != tool or claims.get("a") != _digest(params):
            raise ConfirmationRefused(
                "the confirmation_token was issued for another tool or other arguments"
            )
        if claims.get("c") != caller:
            raise ConfirmationRefused("the confirmation_token was issued to another caller")
        if not await self.spent.spend(claims["n"], claims["e"]):
            raise ConfirmationRefused("the confirmation_token was used already")


def _digest(params: BaseModel) -> str:
    values = params.model_dump(mode="json", exclude={"confirmation_token"})
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def caller_of(api_key: str | None) -> str:
    """Who a token is bound to: the forwarded key's digest, or the server's own callers."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""


@dataclass(frozen=True)
class Question:
    """A destructive call held back: what it will do, for the person to see. Nothing was sent."""

    tool: str
    preview: dict[str, Any]
    # Bound to the tool, its exact arguments and the caller; the call acts when it comes back.
    token: str
    seconds: int

    @property
    def message(self) -> str:
        """What the person is asked: the effect, the tables and rows, the way back."""
        return confirmation_message(self.tool, self.preview)


async def decide(
    row: Endpoint,
    call: Call,
    confirmations: Confirmations | None,
    *,
    answered: str | None = None,
) -> Question | None:
    """The one decision before a call is sent: None to act, or the question to ask first.

    A call acts when its row is not destructive, confirmations are off, or it brings back a
    token for this very call: in its ``confirmation_token`` argument, or ``answered`` (the
    token a client echoes with the person's yes, on a 2026-07-28 retry). Otherwise the row's
    preview is read (read-only calls) and a new token is issued with it.

    Raises:
        ConfirmationRefused: a token that cannot be used; nothing was sent.
        PostHogError: the preview's reads failed; nothing was changed.
    """
    if row.preview is None or confirmations is None:
        return None
    caller = caller_of(call.api_key)
    token = answered or _argument_token(call.params)
    if token:
        await confirmations.check(token, row.name, call.params, caller)
        return None
    shown = await row.preview(call)
    if shown is None:
        return None  # this call removes nothing (a settings change that keeps every row)
    return Question(
        tool=row.name,
        preview=shown,
        token=confirmations.issue(row.name, call.params, caller),
        seconds=confirmations.seconds,
    )


def _argument_token(params: BaseModel) -> str | None:
    return params.confirmation_token if isinstance(params, CarriesConfirmation) else None


def confirmation_message(tool: str, shown: dict[str, Any]) -> str:
    """What the person is asked: the effect, the tables and rows, the way back."""
    lines = [f"{tool} will: {shown.get('effect')}"]
    for table in shown.get("tables") or []:
        lines.append(f"- {table.get('name')}: {table.get('rows')} rows in {table.get('table')}")
        lines.extend(f"  - {change}" for change in table.get("changes") or [])
        lines.extend(f"  - {removal}" for removal in table.get("removes") or [])
        if "rows_removed" in table:
            lines.append(f"  - rows removed: {table['rows_removed']}")
    if shown.get("undo"):
        lines.append(f"Getting back: {shown['undo']}")
    return "\n".join(lines)
