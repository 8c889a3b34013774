"""Confirmation before a destructive call, with what it will do in front of the person.

The first call sends nothing that changes anything: it reads what is affected (the row's
`preview`, read-only GETs) and asks. Where the client can ask the person itself (form-mode
elicitation) it does, and acts on the answer. Where it cannot (Claude Desktop today, stateless
HTTP), the call answers the preview and a `confirmation_token`; only a second call with the same
arguments and that token acts. Tokens are signed (HMAC-SHA256; every instance sharing the key
verifies them), short-lived, bound to the tool, its exact arguments and, with forwarded keys,
the caller, and spent when used (per instance: a stateless deployment cannot share that).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from .hooks import Caller

TOKEN_SECONDS = 300
# Asks the person (form-mode elicitation): message, preview -> accept / decline / cancel, and
# whether they ticked the confirmation; None when the connection cannot ask after all.
Ask = Callable[[str, dict[str, Any]], Awaitable[tuple[str, bool] | None]]
Preview = Callable[["Caller"], Awaitable[dict[str, Any]]]
# Makes a row's preview from its effect and its way back.
PreviewFor = Callable[[str, str], Preview]


class ConfirmationRefused(ValueError):
    """A confirmation token that cannot be used; nothing was sent."""


@dataclass
class Confirmations:
    """Issues and checks confirmation tokens for one server (or several sharing `key`)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    seconds: int = TOKEN_SECONDS
    # Nonces of used tokens, with their expiry: a token past it is refused anyway, so the
    # nonce is dropped then and the record stays as small as the tokens still live.
    _spent: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, tool: str, params: BaseModel, caller: str) -> str:
        """A token for this call, valid for `seconds`."""
        claims = {
            "t": tool,
            "a": _digest(params),
            "c": caller,
            "e": int(time.time()) + self.seconds,
            "n": secrets.token_urlsafe(9),
        }
        body = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True).encode()).decode()
        return f"{body}.{self._sign(body)}"

    def check(self, token: str, tool: str, params: BaseModel, caller: str) -> None:
        """Accept the token for this very call, once.

        Raises:
            ConfirmationRefused: forged, expired, spent, or for another tool, arguments or caller.
        """
        body, _, signature = token.partition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            raise ConfirmationRefused("the confirmation_token is not one this server issued")
        claims = json.loads(base64.urlsafe_b64decode(body.encode()))
        if claims.get("e", 0) < time.time():
            raise ConfirmationRefused("the confirmation_token has expired")
        if claims.get("t") != tool or claims.get("a") != _digest(params):
            raise ConfirmationRefused(
                "the confirmation_token was issued for another tool or other arguments"
            )
        if claims.get("c") != caller:
            raise ConfirmationRefused("the confirmation_token was issued to another caller")
        with self._lock:
            now = time.time()
            for nonce in [n for n, expiry in self._spent.items() if expiry < now]:
                del self._spent[nonce]
            if claims["n"] in self._spent:
                raise ConfirmationRefused("the confirmation_token was used already")
            self._spent[claims["n"]] = claims["e"]

    def _sign(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()


def _digest(params: BaseModel) -> str:
    values = params.model_dump(mode="json", exclude={"confirmation_token"})
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def caller_of(api_key: str | None) -> str:
    """Who a token is bound to: the forwarded key's digest, or the server's own callers."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""


async def gate(
    tool: str,
    preview: Preview,
    call: Caller,
    confirmations: Confirmations,
    ask: Ask | None,
    caller: str,
) -> dict[str, Any] | None:
    """None when the call may go ahead; else the answer to give instead (nothing was sent).

    Raises:
        ConfirmationRefused: a token that cannot be used.
    """
    token = getattr(call.params, "confirmation_token", None)
    if token:
        confirmations.check(token, tool, call.params, caller)
        return None
    shown = await preview(call)
    asked = await ask(confirmation_message(tool, shown), shown) if ask is not None else None
    if asked is not None:
        answer, agreed = asked
        if answer == "accept" and agreed:
            return None
        return {"confirmed": False, "answer": answer, "preview": shown}
    return {
        "confirmation_required": True,
        "preview": shown,
        "confirmation_token": confirmations.issue(tool, call.params, caller),
        "next": f"Nothing was changed. Show the preview to the user and ask. If they agree, "
        f"call {tool} again with the same arguments plus this confirmation_token (valid "
        f"{confirmations.seconds // 60} minutes, once).",
    }


def confirmation_message(tool: str, shown: dict[str, Any]) -> str:
    """What the person is asked: the effect, the tables and rows, the way back."""
    lines = [f"{tool} will: {shown.get('effect')}"]
    for table in shown.get("tables") or []:
        lines.append(f"- {table.get('name')}: {table.get('rows')} rows in {table.get('table')}")
    if shown.get("undo"):
        lines.append(f"Getting back: {shown['undo']}")
    return "\n".join(lines)


# ------------------------------------------------------------------- previews (row by row)


def _table(schema: dict[str, Any]) -> dict[str, Any]:
    table = schema.get("table") or {}
    return {
        "name": schema.get("name"),
        "table": table.get("name"),
        "rows": table.get("row_count"),
        "sync_type": schema.get("sync_type"),
    }


def _reading(read: str, describe: Callable[[dict[str, Any]], dict[str, Any]]) -> PreviewFor:
    """A preview maker for rows whose id `read` (a read-only tool) looks up: the preview is
    the effect, what `describe` draws from that answer, and the way back."""

    def make(effect: str, undo: str) -> Preview:
        async def preview(call: Caller) -> dict[str, Any]:
            found = await call.call_tool(read, id=str(call.params.id))  # type: ignore[attr-defined]
            return {"effect": effect, **describe(found), "undo": undo}

        return preview

    return make


# What a call on one table affects: that table, its rows.
schema_preview = _reading(
    "external-data-schemas-retrieve", lambda schema: {"tables": [_table(schema)]}
)
# What a call on a source affects: every table of it.
source_preview = _reading(
    "external-data-sources-retrieve",
    lambda source: {
        "source": {k: source.get(k) for k in ("source_type", "prefix", "status")},
        "tables": [_table(s) for s in source.get("schemas") or [] if isinstance(s, dict)],
    },
)
# What removing a source's webhook affects: the webhook and the tables it feeds.
webhook_preview = _reading(
    "external-data-sources-webhook-info-retrieve",
    lambda info: {"webhook": {k: info.get(k) for k in ("exists", "webhook_url", "schema_mapping")}},
)
