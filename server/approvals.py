"""Approvals only a person can give: a destructive call held here, nothing sent, until the
person approves it, then sent once.

Two ways reach the person when the client has no form to ask with:

- a card in the chat, on hosts that render MCP Apps: its Approve button calls the app-only
  tool ``approve-destructive-call`` (the host keeps app-only tools from the model; the server
  cannot tell who calls, so this path relies on the host) with an approval id the card finds
  in the result's ``_meta``, never in its content or structured content;
- a one-time page this server serves on 127.0.0.1 (stdio only), on the connect page's footing
  (``loopback.pages``: its own Host, POST from the page only, one use, expiring, failed
  attempts limited), where the person types the name of what will go. An agent with a shell
  can open a loopback URL too, so the page raises the bar; it does not guarantee a person.

Either way the call is bound to its tool and exact arguments (it is the very call, held), is
sent at most once, and a decline or an expiry sends nothing. The card and the page have
tokens of their own: the page's link, which the answer prints, cannot approve through the card.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..loopback.hosts import HostCheck, Visitors, listener_hosts
from ..loopback.pages import OneTimePage, render
from ..loopback.serve import free_socket, listening
from ..loopback.tokens import OneTimeTokens
from ..tools.errors import NothingSent, PostHogError

log = logging.getLogger("posthog_warehouse_mcp")

APPROVAL_SECONDS = 600
APPROVE_TOOL = "approve-destructive-call"
# Where a card finds its approval id: the result's `_meta`, which hosts keep from the model.
APPROVAL_META = "posthog-warehouse/approval"
PAGE = OneTimePage("/approve/", typed_only="An approval is only given with the page's form.")


class ApprovalRefused(NothingSent):
    """An approval that cannot be used (unknown, used, declined or expired)."""


@dataclass
class Held:
    """A destructive call waiting for a person: what it will do, what the person types to
    approve it on the page, and how to send it."""

    tool: str
    preview: dict[str, Any]
    send: Callable[[], Awaitable[dict[str, Any]]]
    _taken: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def names(self) -> tuple[str, ...]:
        """What the person may type to approve: a table's or the source's name, as shown."""
        names = [str(t.get("name")) for t in self.preview.get("tables") or [] if t.get("name")]
        source = self.preview.get("source") or {}
        names += [str(source[k]) for k in ("prefix", "source_type") if source.get(k)]
        return tuple(dict.fromkeys(names)) or (self.tool,)

    def take(self) -> bool:
        """Claim the call for sending or declining; only the first claim is told True."""
        with self._lock:
            taken, self._taken = self._taken, True
        return not taken


class Approvals:
    """The calls waiting for a person, and the loopback page that shows them (started at the
    first page link, within :meth:`running`)."""

    def __init__(self, seconds: float = APPROVAL_SECONDS) -> None:
        self._cards: OneTimeTokens[Held] = OneTimeTokens(seconds)
        self._pages: OneTimeTokens[Held] = OneTimeTokens(seconds)
        self._group: TaskGroup | None = None
        self._address: str | None = None
        self._starting = anyio.Lock()
        self._stop = anyio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Approvals]:
        """Keep the page's listener (once started) for the block."""
        self._stop = anyio.Event()
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield self
            finally:
                self._group = None
                self._address = None
                self._stop.set()  # the page's listener shuts down, then the group ends

    def hold(self, held: Held) -> str:
        """Hold a call for a card; the card's approval id (single use, expiring)."""
        return self._cards.issue(held)

    async def link(self, held: Held) -> str | None:
        """A one-time page link to approve `held` (None where the server serves no page)."""
        address = await self._listening()
        return PAGE.url(address, self._pages.issue(held)) if address else None

    async def approve(self, approval: str) -> dict[str, Any]:
        """The card's Approve: send the held call, once.

        Raises:
            ApprovalRefused: unknown, used, declined or expired; nothing was sent.
            PostHogError: the call itself failed upstream.
        """
        held = self._cards.get(approval)
        self._cards.spend(approval)
        if held is None or not held.take():
            raise ApprovalRefused(
                "this approval was used, declined or has expired; call the tool again to ask anew"
            )
        return await held.send()

    def decline(self, approval: str) -> bool:
        """The card's Decline: drop the held call; whether it was still waiting."""
        held = self._cards.get(approval)
        self._cards.spend(approval)
        return held is not None and held.take()

    async def _listening(self) -> str | None:
        if self._group is None:
            return None
        async with self._starting:
            if self._address is None:
                self._address = await self._group.start(self._serve)
        return self._address

    async def _serve(self, *, task_status: Any) -> None:
        sock = free_socket()
        port = int(sock.getsockname()[1])
        app = Starlette(routes=[Route(PAGE.route, self._page, methods=["GET", "POST"])])
        async with listening(HostCheck(app, Visitors(listener_hosts(port))), sock) as address:
            log.info("approval page listening on %s", address)
            task_status.started(address)
            await self._stop.wait()

    async def _page(self, request: Request) -> Response:
        return await PAGE.serve(
            request, address=self._address, tokens=self._pages, show=_show, act=self._act
        )

    async def _act(self, held: Held, token: str, fields: dict[str, str]) -> Response:
        if fields.get("decision") == "decline":
            self._pages.spend(token)
            if held.take():
                return render("Declined", "<p>Declined: nothing was sent.</p>", 200)
            return render("Already answered", "<p>This call was answered already.</p>", 409)
        if fields.get("name", "").strip() not in held.names:
            return _show(held, token, error="That is not the name shown; nothing was sent.")
        self._pages.spend(token)
        if not held.take():
            return render("Already answered", "<p>This call was answered already.</p>", 409)
        try:
            result = await held.send()
        except PostHogError as exc:
            body = f"<p>Approved, but the call failed: {html.escape(exc.describe())}</p>"
            return render("Approved: the call failed", body, 502)
        done = html.escape(str(result.get("status_code") or "done"))
        return render(
            "Approved",
            f"<p>Approved: {html.escape(held.tool)} was sent once ({done}). "
            "You can close this page.</p>",
            200,
        )


def _show(held: Held, token: str, *, error: str | None = None) -> Response:
    preview = held.preview
    lines = [f"<p><strong>{html.escape(held.tool)}</strong> will: "]
    lines.append(f"{html.escape(str(preview.get('effect') or ''))}</p><ul>")
    for table in preview.get("tables") or []:
        rows = table.get("rows")
        count = rows if rows is not None else "unknown"
        what = f"{table.get('name')} ({count} rows in {table.get('table')})"
        lines.append(f"<li>{html.escape(what)}")
        for change in [*(table.get("changes") or []), *(table.get("removes") or [])]:
            lines.append(f"<br>{html.escape(str(change))}")
        lines.append("</li>")
    lines.append("</ul>")
    if preview.get("undo"):
        lines.append(f"<p>Getting back: {html.escape(str(preview['undo']))}</p>")
    if error:
        lines.append(f'<p class="error">{html.escape(error)}</p>')
    shown = held.names[0]
    action = html.escape(PAGE.prefix + token)
    lines.append(
        f'<form method="post" action="{action}"><label>Type {html.escape(shown)} to approve'
        '<input name="name" type="text" autocomplete="off" required></label>'
        '<button type="submit" name="decision" value="approve">Approve</button></form>'
        f'<form method="post" action="{action}">'
        '<button type="submit" name="decision" value="decline">Decline</button></form>'
    )
    return render("Approve a change", "".join(lines), 400 if error else 200)
