"""How this instance sends a call: every :class:`~..tools.dispatch.Call` is built here, so
that a tool call and a held call a person approved later (on this replica or another) reach
PostHog alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..tools import dispatch
from ..tools.dispatch import ArgumentError, Call, validate
from ..tools.hooks import OpenUrl, Progress
from ..tools.plans import Plans
from ..tools.table import lookup
from .approvals import ApprovalRefused, Held
from .auth import bearer
from .callers import SERVER, SIGNED_IN, Caller
from .config import Settings
from .filters import enabled
from .state import LazyClient, ServerState

if TYPE_CHECKING:
    from pydantic import BaseModel
    from starlette.requests import Request


def forwarded_key(request: Request | None) -> str | None:
    """The caller's own PostHog key, from its HTTP request (hosted, with --forward-key)."""
    return bearer(request.headers) if request is not None else None


def caller_of_request(settings: Settings, request: Request | None) -> Caller:
    """Whom a request's calls are made for: the signed-in person (--oauth: what the sign-in
    check put on the request), the forwarded key's owner (--forward-key), or the server's own
    callers."""
    if settings.mcp_oauth:
        found = request.scope.get(SIGNED_IN) if request is not None else None
        return found if isinstance(found, Caller) else SERVER
    if settings.forward_key:
        return Caller(api_key=forwarded_key(request))
    return SERVER


@dataclass(frozen=True)
class Sender:
    """What this instance sends a call with: its settings, adapter and plan ids."""

    settings: Settings
    client: LazyClient
    plans: Plans | None

    def call(
        self,
        params: BaseModel,
        *,
        caller: Caller,
        progress: Progress | None = None,
        open_url: OpenUrl | None = None,
    ) -> Call:
        """A validated call, sent with the caller's credentials (the server's own key, a
        forwarded key, or a signed-in person's token, region and environment)."""
        return Call(
            params=params,
            client=self.client.get(),
            base_path=caller.base_path or self.settings.base_path(),
            api_key=caller.api_key,
            identity=caller.identity,
            progress=progress,
            secrets=self.client.secret_policy,
            open_url=open_url,
            wait_cap=self.settings.wait_cap_seconds,
            plans=self.plans,
            rehearse=self.client.rehearse,
        )

    async def held(self, held: Held, caller: Caller) -> dict[str, Any]:
        """Send a held call a person approved, once, as this instance would send it now.

        Raises:
            ApprovalRefused: the tool is not offered here, or its arguments no longer fit;
                nothing was sent.
            PostHogError, SecretRefused: from sending it.
        """
        row = lookup(held.tool)
        if row is None or not enabled(self.settings, row):
            raise ApprovalRefused(f"{held.tool} is not offered by this server")
        try:
            params = validate(row, held.arguments)
        except ArgumentError as exc:
            raise ApprovalRefused(str(exc)) from None
        missing = caller.missing(row.scopes)
        if missing:
            raise ApprovalRefused(f"this sign-in was not granted {' and '.join(missing)}")
        call = self.call(params, caller=caller)
        if call.caller != held.caller:
            raise ApprovalRefused("this approval belongs to another caller")
        return await dispatch.run(row, call)


def sender_of(state: ServerState) -> Sender:
    """How this server lifetime sends calls."""
    return Sender(state.settings, state.client, state.plans)
