"""The in-process sandbox as an httpx transport that is usable before the sandbox is up.

``tools/list`` must answer at once, while the sandbox (DuckDB, an embedded PostgreSQL)
takes seconds to start; so the sandbox starts in the background and tool calls wait for it.
It starts at the first tool call or after a short grace period, whichever comes first, so its
imports do not compete with the client's handshake and ``tools/list`` for the interpreter.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ..tools.errors import BackendUnavailable, TransportError
from ..tools.redact import remember_secrets
from ..tools.secrets import BINDING_SUFFIX

if TYPE_CHECKING:
    from ..sandbox.services import Services

log = logging.getLogger("posthog_warehouse_mcp.sandbox")


class SandboxTransport(httpx.AsyncBaseTransport):
    """Routes requests into the sandbox's ASGI app once it has started."""

    def __init__(
        self,
        directory: Path | None,
        *,
        demo: bool,
        cloud_rules: bool = False,
        read_only: bool = False,
        startup_timeout: float = 180.0,
        grace: float = 0.5,
    ):
        self.directory = directory  # None: the sandbox's IN_PROCESS_DIRECTORY
        self.demo = demo
        self.cloud_rules = cloud_rules
        # The server's --read-only: its loopback listener then takes reads and queries only.
        self.read_only = read_only
        self.startup_timeout = startup_timeout
        self.grace = grace
        self._wanted = anyio.Event()
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._inner: httpx.AsyncBaseTransport | None = None
        self._services: Services | None = None
        self._failure = ""
        # A failure no retry can mend (the directory held by another process, no extra).
        self._lasting = False
        # The secret references this sandbox defines (the demo database's password, bound to
        # the demo's address), filled while it runs: the server resolves them before its own
        # environment.
        self.references: dict[str, str] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SandboxTransport]:
        """Start the sandbox in the background for the duration of the block."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve)
            try:
                yield self
            finally:
                self._stop.set()

    async def _serve(self) -> None:
        with anyio.move_on_after(self.grace):
            await self._wanted.wait()
        try:
            from ..sandbox.access import DEMO_SECRET, IN_PROCESS_DIRECTORY
            from ..sandbox.cloud_rules import CloudRules
            from ..sandbox.listener import loopback
            from ..sandbox.runtime import open_sandbox
            from ..sandbox.warehouse import DirectoryInUse
        except ImportError:
            self._failure = (
                "the sandbox is not installed; install it with "
                "pip install 'posthog-warehouse-mcp[sandbox]'"
            )
            self._lasting = True
            log.error("%s", self._failure)
            self._ready.set()
            return
        directory = self.directory or IN_PROCESS_DIRECTORY
        try:
            directory.mkdir(parents=True, exist_ok=True)
            rules = CloudRules() if self.cloud_rules else None
            async with (
                open_sandbox(directory, demo=self.demo, cloud_rules=rules) as app,
                loopback(app, directory, read_only=self.read_only) as access,
            ):
                app.state.services.public_url = access.url  # the connect page's address
                demo = app.state.services.demo.credentials
                if demo is not None:
                    remember_secrets([demo.password])
                    self.references[DEMO_SECRET] = demo.password
                    # The demo listens on 127.0.0.1 only; `localhost` names it too.
                    self.references[DEMO_SECRET + BINDING_SUFFIX] = (
                        f"{demo.host}:{demo.port},localhost:{demo.port}"
                    )
                self._services = app.state.services
                self._inner = httpx.ASGITransport(app=app)
                log.info("sandbox ready in %s", directory)
                self._ready.set()
                await self._stop.wait()
        except DirectoryInUse as exc:
            holder = f" (pid {exc.pid})" if exc.pid else ""
            self._failure = (
                f"the sandbox directory {directory} is in use by another process{holder}; a "
                "directory serves one server at a time. Stop that process, or start this server "
                "with another directory (--sandbox-dir, or POSTHOG_SANDBOX_DIR)"
            )
            self._lasting = True
            log.error("%s", self._failure)
        except Exception as exc:
            log.exception("sandbox failed to start")
            self._failure = (
                f"the sandbox failed to start ({type(exc).__name__}); see the server log"
            )
        finally:
            self._inner = None
            self._services = None
            self.references.clear()
            self._ready.set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Wait for the sandbox, then hand the request to its ASGI app.

        Raises:
            TransportError: the sandbox is not up; its message says why, for the model.
        """
        self._wanted.set()
        with anyio.move_on_after(self.startup_timeout):
            await self._ready.wait()
        if not self._ready.is_set():
            raise TransportError(
                f"the sandbox is still starting after {self.startup_timeout:g} s; try again"
            )
        if self._inner is None:
            failure = f"{self._failure or 'the sandbox has stopped'}; nothing was sent."
            raise BackendUnavailable(failure) if self._lasting else TransportError(failure)
        return await self._inner.handle_async_request(request)

    async def stored_credential(
        self, credential_id: str, source_type: str
    ) -> dict[str, Any] | None:
        """The fields the local connect page stored under `credential_id` for `source_type`,
        read without spending them; None if there is none (or the sandbox is not up)."""
        self._wanted.set()
        with anyio.move_on_after(self.startup_timeout):
            await self._ready.wait()
        if self._services is None:
            return None
        from ..sandbox.connect import peek_credential

        return peek_credential(self._services, credential_id, source_type)
