"""A page a person opens from a one-time link on a loopback address: the sandbox's connect
page, where credentials are typed so that they never pass through the chat.

What makes such a page safe to serve on 127.0.0.1 is here, once:

- it answers only on its own address (the Host check: no DNS rebinding);
- its link is for one use and expires (``OneTimeTokens``, or any other :class:`Links`: the
  approval page's are kept where every replica of a deployment finds them);
- a client that keeps failing (guessing tokens) or a link whose form keeps being refused is
  answered 429 for a while (``limits.Failures``), and a guess then learns nothing;
- a GET only shows the form: one with a query string is refused, so that no typed value
  travels in a URL (into a history, a log or a Referer);
- the action is a POST, from the page itself (the Origin check: no cross-site posts);
- a typed value is never put back on a page: ``Input`` has no value to render;
- it is never cached or framed, loads nothing, and posts only to itself (``HEADERS``).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .hosts import host_of, origin_of
from .limits import Failures

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Links(Protocol[T_co]):
    """A page's one-time links: what each live one opens, and the failed attempts at them
    (``tokens.OneTimeTokens`` in this process; the approval page's, in a shared store)."""

    @property
    def attempts(self) -> Failures:
        """The failed attempts the page limits."""
        ...

    async def find(self, token: str) -> T_co | None:
        """What a live link opens, or None (unknown, used or expired)."""
        ...


HEADERS = {
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: with no-referrer a browser posts the form with
    # "Origin: null", which the Origin check could not tell from a foreign page.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def render(
    title: str, body: str, status: int, *, headers: dict[str, str] | None = None
) -> Response:
    """A page with the headers above (and `headers`). `title` is escaped here; `body` is markup,
    in which the caller has escaped every value."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:32em;"
        "margin:3em auto}label{display:block;margin:.6em 0}input{display:block;width:100%}"
        ".error{color:#b00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers={**HEADERS, **(headers or {})})


@dataclass(frozen=True)
class Input:
    """One field of a page's form. It has no value: what a person typed is never shown again."""

    name: str
    label: str
    kind: Literal["text", "password", "number"] = "text"
    placeholder: str = ""
    required: bool = False

    def html(self) -> str:
        """The labelled input, not autocompleted."""
        required = " required" if self.required else ""
        return (
            f'<label>{html.escape(self.label)}<input name="{html.escape(self.name)}" '
            f'type="{self.kind}" placeholder="{html.escape(self.placeholder)}"'
            f' autocomplete="off"{required}></label>'
        )


@dataclass(frozen=True)
class OneTimePage:
    """A page at `{prefix}{token}`, reached by a link with a one-time token.

    `typed_only` says why a GET with a query string is refused (for the connect page,
    "Connection details are only accepted from the form.").
    """

    prefix: str
    typed_only: str

    @property
    def route(self) -> str:
        """The page's Starlette route path; the token is the path parameter ``token``."""
        return self.prefix + "{token}"

    def url(self, address: str, token: str) -> str:
        """The link a person opens, on the listener at `address` (``http://127.0.0.1:port``)."""
        return f"{address}{self.prefix}{token}"

    def form(self, token: str, inputs: Iterable[Input], *, button: str) -> str:
        """The page's form: its inputs, posted back to the page."""
        fields = "".join(field.html() for field in inputs)
        return (
            f'<form method="post" action="{self.prefix}{html.escape(token)}">{fields}'
            f'<button type="submit">{html.escape(button)}</button></form>'
        )

    def without_token(self, path: str) -> str:
        """A request path fit for a log line: the page's token, which would open it, hidden."""
        return self.prefix + "[token]" if path.startswith(self.prefix) else path

    async def serve(
        self,
        request: Request,
        *,
        address: str | None,
        tokens: Links[T],
        show: Callable[[T, str], Response],
        act: Callable[[T, str, dict[str, str]], Awaitable[Response]],
        gate: Callable[[Request, T], Awaitable[Response | None]] | None = None,
    ) -> Response:
        """Answer a request for the page, served at `address` (None: it has none a browser can
        open); its token must be live in `tokens`. `gate`, when given, may refuse a request
        that passed every other check (its Host, its Origin, the attempts' limits), with the
        answer it returns.

        A GET is answered by `show(value, token)`: the form. A POST from the page calls
        `act(value, token, fields)` with the form's non-empty text fields; `act` spends the
        token when the page has done its job (on a failure it may show the form again).

        Every answer of 400 or more counts as a failed attempt of the client (its peer address:
        on loopback, every local caller together) and, when the token is live, of the link;
        past `tokens.attempts`' limits the answer is 429 with Retry-After, whatever the token.
        """
        client = request.client.host if request.client else "unknown"
        token = str(request.path_params.get("token", ""))
        wait = await tokens.attempts.retry_after(client, token)
        if wait is not None:
            return render(
                "Too many attempts",
                f"<p>Too many failed attempts. Try again in {wait} seconds.</p>",
                429,
                headers={"Retry-After": str(wait)},
            )
        value = await tokens.find(token)
        answer = await self._answer(
            request, token, value, address=address, show=show, act=act, gate=gate
        )
        if answer.status_code >= 400:
            await tokens.attempts.fail(client, token if value is not None else None)
        return answer

    async def _answer(
        self,
        request: Request,
        token: str,
        value: T | None,
        *,
        address: str | None,
        show: Callable[[T, str], Response],
        act: Callable[[T, str, dict[str, str]], Awaitable[Response]],
        gate: Callable[[Request, T], Awaitable[Response | None]] | None,
    ) -> Response:
        if address is None or request.headers.get("host") != host_of(address):
            return render(
                "Not available", "<p>This page is only served on its own address.</p>", 400
            )
        if value is None:
            return render(
                "Link not valid",
                "<p>This link was used already or has expired. Ask your assistant for a new "
                "one.</p>",
                404,
            )
        if request.method == "GET":
            if request.query_params:
                return render("Not accepted", f"<p>{html.escape(self.typed_only)}</p>", 400)
        elif request.method != "POST":
            return render("Not accepted", "<p>This page takes only its form.</p>", 405)
        elif request.headers.get("origin") != origin_of(address):
            return render("Not accepted", "<p>The form must be sent from this page.</p>", 403)
        refused = await gate(request, value) if gate is not None else None
        if refused is not None:
            return refused
        if request.method == "GET":
            return show(value, token)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        return await act(value, token, fields)
