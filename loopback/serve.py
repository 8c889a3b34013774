"""Serving an ASGI app on 127.0.0.1, on a free port, for as long as a block runs: the listener
the sandbox's API and connect page use, and the server's approval page."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers to the process, and stops
    when told (`stop`) rather than at its next tick: uvicorn looks at `should_exit` every
    0.1 s, here the loop wakes once a second to refresh the Date header, or when stopped."""

    _stopping: anyio.Event | None = None

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield

    def stop(self) -> None:
        """Begin a graceful shutdown now."""
        self.should_exit = True
        if self._stopping is not None:
            self._stopping.set()

    async def main_loop(self) -> None:
        """Wait until stopped, calling uvicorn's `on_tick` once a second on the way."""
        self._stopping = anyio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864_000  # on_tick refreshes the Date when counter % 10 == 0
            with anyio.move_on_after(1.0):
                await self._stopping.wait()


def free_socket() -> socket.socket:
    """A TCP socket bound to a free port of 127.0.0.1, not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def listening(app: ASGIApp, sock: socket.socket) -> AsyncIterator[str]:
    """Serve `app` on `sock` (bound to 127.0.0.1) for the block; yield its address
    (``http://127.0.0.1:port``).

    Raises:
        RuntimeError: the listener did not start.
    """
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = QuietServer(config)
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            while not server.started:
                if stopped.is_set():
                    raise RuntimeError("the loopback listener did not start")
                await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.stop()
    finally:
        sock.close()  # uvicorn leaves a socket it was given open when it is cancelled
