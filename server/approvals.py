"""Approvals only a person can give: a destructive call held, nothing sent, until the person
approves it, then sent once.

A held call is data, not a closure: the tool, its validated arguments, the caller (a digest of
a forwarded key, or "" for the server's own callers) and the preview the person was shown. It
is kept in a :class:`Expiring` for 10 minutes: this process's memory, or Redis with
``POSTHOG_REDIS_URL`` (server/shared.py), so that whichever replica the approval reaches can
take it. Taking is atomic and single-use (``GETDEL`` in Redis): of two replicas taking one
approval, one gets the call; the other gets nothing. The replica that takes it rebuilds the
call from its own settings and adapter (server/app.py's ``Sender``) and sends it once.

Two ways reach the person when the client has no form to ask with:

- a card in the chat, on hosts that render MCP Apps: its Approve button calls the app-only
  tool ``approve-destructive-call`` (the host keeps app-only tools from the model; the server
  cannot tell who calls, so this path relies on the host) with an approval id the card finds
  in the result's ``_meta``, never in its content or structured content. With forwarded keys
  the approving caller must be the caller whose call is held;
- a one-time page, on the connect page's footing (``loopback.pages``: its own Host, POST from
  the page only, one use, expiring, failed attempts limited), where the person types the name
  of what will go: on stdio a listener on 127.0.0.1; over HTTP the deployment's own app at
  ``POSTHOG_MCP_PUBLIC_URL`` (``/approve/<token>``), the link's token kept in the same store so
  that any replica serves it. The link is the credential (a browser cannot send the
  deployment's bearer token); an agent able to open URLs could use it too, so the page raises
  the bar; it does not guarantee a person.

A decline or an expiry sends nothing. The card and the page have tokens of their own: the
page's link, which the answer prints, cannot approve through the card, and both take the same
held call, so it is sent at most once whichever is used.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..loopback.hosts import HostCheck, Visitors, listener_hosts
from ..loopback.limits import Attempts, Failures
from ..loopback.pages import OneTimePage, render
from ..loopback.serve import free_socket, listening
from ..tools.confirm import StoreUnavailable
from ..tools.errors import NothingSent, PostHogError
from .callers import SERVER, Caller
from .records import Expiring, MemoryRecords, digest

log = logging.getLogger("posthog_warehouse_mcp")

APPROVAL_SECONDS = 600
APPROVE_TOOL = "approve-destructive-call"
# Where a card finds its approval id: the result's `_meta`, which hosts keep from the model.
APPROVAL_META = "posthog-warehouse/approval"
PAGE = OneTimePage("/approve/", typed_only="An approval is only given with the page's form.")


class ApprovalRefused(NothingSent):
    """An approval that cannot be used (unknown, used, declined, expired, another caller's,
    or the store is unreachable); nothing was sent."""


@dataclass(frozen=True)
class Held:
    """A destructive call waiting for a person: the tool, its validated arguments (as JSON),
    who called it, and what it will do (the preview the person sees)."""

    tool: str
    arguments: dict[str, Any]
    caller: str
    preview: dict[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        """What the person may type to approve: a table's or the source's name, as shown."""
        names = [str(t.get("name")) for t in self.preview.get("tables") or [] if t.get("name")]
        source = self.preview.get("source") or {}
        names += [str(source[k]) for k in ("prefix", "source_type") if source.get(k)]
        return tuple(dict.fromkeys(names)) or (self.tool,)

    def dumps(self) -> str:
        """The record a store keeps."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> Held:
        """A record a store kept, back as a held call."""
        return cls.of(json.loads(text))

    @classmethod
    def of(cls, found: dict[str, Any]) -> Held:
        """A held call from its record's fields."""
        return cls(
            tool=str(found["tool"]),
            arguments=dict(found["arguments"]),
            caller=str(found["caller"]),
            preview=dict(found["preview"]),
        )


class Sessions(Protocol):
    """Who a browser is signed in as (``--oauth``: the session the sign-in left)."""

    async def caller(self, request: Request) -> Caller | None:
        """The signed-in person's credentials, or None (no session, or it ended).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        ...


# Sends a held call, rebuilt from this instance's own settings and adapter, with the approving
# caller's credentials (the same caller's, checked).
Send = Callable[[Held, Caller], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Link:
    """What a page link opens: the held call, and the store's key of the approval it takes
    (the record keeps that key, never the approval id: reading the store sends nothing)."""

    approval_key: str
    held: Held


@dataclass
class PageLinks:
    """The page's one-time links, kept in the held store (any replica serves them), and the
    failed attempts at them (in this process, or in the deployment's shared store)."""

    store: Expiring
    attempts: Failures = field(default_factory=Attempts)

    async def find(self, token: str) -> Link | None:
        """What a live link opens, or None (unknown, used or expired).

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        found = await self.store.peek(_page_key(token))
        if found is None:
            return None
        record = json.loads(found)
        return Link(str(record["approval_key"]), Held.of(record["held"]))

    async def spend(self, token: str) -> None:
        """Use a link up, so that it never opens again."""
        await self.store.take(_page_key(token))


class Approvals:
    """The calls waiting for a person, in a :class:`Expiring`, and the page that shows them.

    The page is served on stdio by a loopback listener (``loopback=True``: started at the
    first link, within :meth:`running`), over HTTP by the deployment's app at ``public_url``
    (transports.py routes :meth:`page` there), or not at all.
    """

    def __init__(
        self,
        store: Expiring | None = None,
        *,
        seconds: float = APPROVAL_SECONDS,
        loopback: bool = False,
        public_url: str | None = None,
        attempts: Failures | None = None,
    ) -> None:
        self.store: Expiring = store if store is not None else MemoryRecords()
        self.seconds = seconds
        self.loopback = loopback
        self.public_url = None if loopback else public_url
        self.links = PageLinks(self.store, attempts if attempts is not None else Attempts())
        # How the page sends what it approves: set by the server (server/app.py).
        self.send: Send | None = None
        # With --oauth, who the page's browser is signed in as (server/oauth/consent.py): the
        # page then answers the person whose call is held, and only in their signed-in browser.
        self.sessions: Sessions | None = None
        self._group: TaskGroup | None = None
        self._address: str | None = None
        self._starting = anyio.Lock()
        self._stop = anyio.Event()

    @property
    def serves_page(self) -> bool:
        """Whether a page link can be given: a loopback listener, or a public URL."""
        return self.loopback or self.public_url is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Approvals]:
        """Keep the loopback page's listener (once started) for the block."""
        if not self.loopback:
            yield self
            return
        self._stop = anyio.Event()
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield self
            finally:
                self._group = None
                self._address = None
                self._stop.set()  # the page's listener shuts down, then the group ends

    async def hold(self, held: Held) -> str:
        """Hold a call; its approval id (single use, expiring), for a card.

        Raises:
            ApprovalRefused: the store cannot be reached; nothing is held, nothing sent.
        """
        approval = secrets.token_urlsafe(24)
        try:
            await self.store.hold(_approval_key(approval), held.dumps(), self.seconds)
        except StoreUnavailable as exc:
            raise ApprovalRefused(f"the call cannot be held for approval: {exc}") from None
        return approval

    async def link(self, approval: str, held: Held) -> str | None:
        """A one-time page link that approves `approval` (None where no page is served)."""
        address = await self._where()
        if address is None or (held.caller and self.sessions is None):
            # A page cannot send a forwarded key's call: the key is never kept. A signed-in
            # person's can be: the server keeps their token.
            return None
        token = secrets.token_urlsafe(24)
        record = json.dumps(
            {"approval_key": _approval_key(approval), "held": asdict(held)}, sort_keys=True
        )
        try:
            await self.store.hold(_page_key(token), record, self.seconds)
        except StoreUnavailable as exc:
            log.warning("no approval page link: %s", exc)
            return None
        return PAGE.url(address, token)

    async def approve(self, approval: str, *, caller: Caller, send: Send) -> dict[str, Any]:
        """The card's Approve: send the held call, once, for the caller who made it.

        Raises:
            ApprovalRefused: unknown, used, declined, expired or another caller's, or the store
                cannot be reached; nothing was sent.
            PostHogError: the call itself failed upstream.
        """
        held = await self._take(approval, caller=caller.id)
        return await send(held, caller)

    async def decline(self, approval: str, *, caller: str) -> None:
        """The card's Decline: drop the held call.

        Raises:
            ApprovalRefused: it was no longer waiting, or is another caller's.
        """
        await self._take(approval, caller=caller)

    async def _take(self, approval: str, *, caller: str) -> Held:
        key = _approval_key(approval)
        try:
            # Looked at before it is taken: another caller's attempt must not use it up.
            found = await self.store.peek(key)
            if found is not None and Held.loads(found).caller != caller:
                raise ApprovalRefused("this approval belongs to another caller")
            taken = await self.store.take(key) if found is not None else None
        except StoreUnavailable as exc:
            raise ApprovalRefused(str(exc)) from None
        if taken is None:
            raise ApprovalRefused(
                "this approval was used, declined or has expired; call the tool again to ask anew"
            )
        return Held.loads(taken)

    async def _where(self) -> str | None:
        if self.public_url is not None:
            return self.public_url
        if self._group is None:
            return None
        async with self._starting:
            if self._address is None:
                self._address = await self._group.start(self._serve)
        return self._address

    async def _serve(self, *, task_status: Any) -> None:
        sock = free_socket()
        port = int(sock.getsockname()[1])
        app = Starlette(routes=[Route(PAGE.route, self.page, methods=["GET", "POST"])])
        async with listening(HostCheck(app, Visitors(listener_hosts(port))), sock) as address:
            log.info("approval page listening on %s", address)
            task_status.started(address)
            await self._stop.wait()

    async def page(self, request: Request) -> Response:
        """The approval page (a Starlette endpoint for :data:`PAGE`'s route)."""
        try:
            caller = SERVER

            # The person is asked for after the Host, Origin and attempts' checks: a foreign
            # page learns nothing of a link, and failed sign-in checks count as attempts.
            async def gate(request: Request, link: Link) -> Response | None:
                nonlocal caller
                if self.sessions is None:
                    return None
                signed_in = await self._signed_in(request, link)
                if isinstance(signed_in, Response):
                    return signed_in
                caller = signed_in
                return None

            async def act(link: Link, token: str, fields: dict[str, str]) -> Response:
                return await self._act(link, token, fields, caller)

            return await PAGE.serve(
                request,
                address=self.public_url or self._address,
                tokens=self.links,
                show=_show,
                act=act,
                gate=gate,
            )
        except StoreUnavailable as exc:
            log.warning("approval page: %s", exc)
            return render(
                "Not available now",
                "<p>The server cannot reach its shared store; nothing was sent. Try again in a "
                "moment.</p>",
                503,
            )

    async def _signed_in(self, request: Request, found: Link) -> Caller | Response:
        """With sessions: the signed-in person whose call the link holds, or the page that
        says why not (the link is left as it was: its person may still open it)."""
        assert self.sessions is not None
        caller = await self.sessions.caller(request)
        if caller is None:
            body = (
                "<p>Open this link in the browser you signed in to PostHog with for this "
                "server. If you did and see this, your session has ended: reconnect the "
                "server in your MCP client to sign in again.</p>"
            )
            return render("Sign in first", body, 401)
        if caller.id != found.held.caller:
            return render("Not yours", "<p>This call is another person's to approve.</p>", 403)
        return caller

    async def _act(
        self, link: Link, token: str, fields: dict[str, str], caller: Caller
    ) -> Response:
        held = link.held
        if fields.get("decision") == "decline":
            await self.links.spend(token)
            if await self.store.take(link.approval_key) is not None:
                return render("Declined", "<p>Declined: nothing was sent.</p>", 200)
            return render("Already answered", "<p>This call was answered already.</p>", 409)
        if fields.get("name", "").strip() not in held.names:
            return _show(link, token, error="That is not the name shown; nothing was sent.")
        if self.send is None or held.caller != caller.id:
            # Never linked so (a forwarded key is not kept to send with); refused all the same.
            body = "<p>This call cannot be approved here; nothing was sent.</p>"
            return render("Not available", body, 403)
        await self.links.spend(token)
        taken = await self.store.take(link.approval_key)
        if taken is None:
            return render("Already answered", "<p>This call was answered already.</p>", 409)
        try:
            result = await self.send(Held.loads(taken), caller)
        except PostHogError as exc:
            body = f"<p>Approved, but the call failed: {html.escape(exc.describe())}</p>"
            return render("Approved: the call failed", body, 502)
        except ValueError as exc:  # refused before sending (NothingSent, SecretRefused)
            body = f"<p>Approved, but nothing was sent: {html.escape(str(exc))}</p>"
            return render("Approved: nothing was sent", body, 502)
        done = html.escape(str(result.get("status_code") or "done"))
        return render(
            "Approved",
            f"<p>Approved: {html.escape(held.tool)} was sent once ({done}). "
            "You can close this page.</p>",
            200,
        )


# The store keeps digests of approval ids and page tokens: the secret itself would let anyone
# who reads the store open the link.
def _approval_key(approval: str) -> str:
    return f"approval:{digest(approval)}"


def _page_key(token: str) -> str:
    return f"approval-page:{digest(token)}"


def _show(link: Link, token: str, *, error: str | None = None) -> Response:
    held = link.held
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
