"""stdio as the SDK serves it, with every line read here first: a line the SDK cannot read
gets the JSON-RPC error the spec asks for, and one log line, instead of nothing.

The SDK's reader turns a line it cannot validate into an exception that its dispatcher drops at
debug level, and reads a request with an id that is not a string or an integer as a
notification; a client waiting on that id waits forever. Here:

- not JSON (or not UTF-8 text the JSON parser takes): ``-32700`` Parse error, id null;
- JSON that is not one request the server can take (a batch, which MCP no longer has; a number;
  no ``method``; ``jsonrpc`` not "2.0"; ``params`` not an object; an id of another type; a lone
  surrogate; nesting deeper than the SDK's parser goes): ``-32600`` Invalid Request, with the
  request's id when it can be read, else null;
- a malformed response (the client answering the server): logged, never answered;
- a blank line: skipped.

The SDK still reads every other line itself, unchanged; fd 0 is claimed as the SDK claims it
(the protocol reads a private duplicate, fd 0 points at the null device), so a child process
can never read the client's messages.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from io import TextIOWrapper
from typing import Any, BinaryIO, Protocol, cast

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("posthog_warehouse_mcp.stdio")

RequestId = str | int


class _Sender(Protocol):
    async def send(self, item: SessionMessage, /) -> None: ...


@dataclass(frozen=True)
class Malformed:
    """What is wrong with a line, and the JSON-RPC error it gets (`answered` False: none)."""

    code: int
    id: RequestId | None
    reason: str
    answered: bool = True

    def answer(self) -> types.JSONRPCError:
        """The error to send back."""
        title = "Parse error" if self.code == types.PARSE_ERROR else "Invalid request"
        error = types.ErrorData(code=self.code, message=f"{title}: {self.reason}")
        return types.JSONRPCError(jsonrpc="2.0", id=self.id, error=error)


def _is_id(value: object) -> bool:
    """Whether `value` is an id MCP allows: a string or an integer (never null, never a bool)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_line(line: str) -> Malformed | None:
    """What is wrong with one line from the client, or None when the SDK reads it as it is."""
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError:
        return _diagnose(line)
    # The SDK reads {"id": {...}, "method": ...} as a notification (the id dropped); only a
    # notification's line can hide one, and those are few and short.
    if isinstance(message, types.JSONRPCNotification) and '"id"' in line:
        data = json.loads(line)
        if isinstance(data, dict) and "id" in data:
            return Malformed(types.INVALID_REQUEST, None, "id must be a string or an integer")
    return None


def _diagnose(line: str) -> Malformed:
    """Why the SDK could not read a line, in the spec's terms."""
    try:
        data = json.loads(line)
    except RecursionError:
        return Malformed(
            types.INVALID_REQUEST, _top_level_id(line), "it is nested too deeply to read"
        )
    except ValueError:
        return Malformed(types.PARSE_ERROR, None, "the line is not JSON")
    if isinstance(data, list):
        return Malformed(
            types.INVALID_REQUEST,
            None,
            "batches (JSON arrays) are not supported; send one message per line",
        )
    if not isinstance(data, dict):
        return Malformed(types.INVALID_REQUEST, None, "a message must be a JSON object")
    id_ = data.get("id") if _is_id(data.get("id")) else None
    if "method" not in data and ("result" in data or "error" in data):
        return Malformed(
            types.INVALID_REQUEST, id_, "a response without a readable result", answered=False
        )
    return Malformed(types.INVALID_REQUEST, id_, _what_is_wrong(data))


def _what_is_wrong(data: dict[str, Any]) -> str:
    """The first thing that keeps a JSON object from being a request or notification."""
    if data.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if "id" in data and not _is_id(data["id"]):
        return "id must be a string or an integer"
    if "method" not in data:
        return "method is missing"
    if not isinstance(data["method"], str):
        return "method must be a string"
    if "params" in data and not isinstance(data["params"], dict):
        return "params must be an object"
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "a string holds a lone surrogate (such as \\ud800), which is not Unicode text"
    except RecursionError:
        pass
    return "it is nested too deeply, or holds a value the server cannot read"


def _top_level_id(line: str) -> RequestId | None:
    """The id of a message too deeply nested to parse, read from its top level alone."""
    decoder = json.JSONDecoder()
    text = line.strip()
    try:
        if not text.startswith("{"):
            return None
        at = _space(text, 1)
        while text[at] == '"':
            key, at = decoder.raw_decode(text, at)
            at = _space(text, at)
            if text[at] != ":":
                return None
            at = _space(text, at + 1)
            if key == "id":
                value, _ = decoder.raw_decode(text, at)
                return value if _is_id(value) else None
            at = _space(text, _skip(text, at, decoder))
            if text[at] != ",":
                return None
            at = _space(text, at + 1)
    except (ValueError, IndexError, RecursionError):
        return None
    return None


def _space(text: str, at: int) -> int:
    while text[at] in " \t\r\n":
        at += 1
    return at


def _skip(text: str, at: int, decoder: json.JSONDecoder) -> int:
    """The end of the value at `at`: a scalar parsed, an array or object counted through."""
    if text[at] not in "[{":
        return int(decoder.raw_decode(text, at)[1])
    depth, inside = 0, False
    while True:
        char = text[at]
        if inside:
            if char == "\\":
                at += 1
            elif char == '"':
                inside = False
        elif char == '"':
            inside = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1


class _Answering:
    """The client's lines for the SDK's reader, less the malformed ones, which are answered on
    the SDK's write stream (so in order with the server's other messages) and logged."""

    def __init__(self, lines: AsyncIterable[str]) -> None:
        self._lines = lines
        self._write: _Sender | None = None
        self._attached = anyio.Event()

    def attach(self, write: _Sender) -> None:
        """Where answers go: the stream the SDK writes to stdout."""
        self._write = write
        self._attached.set()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self._lines:
            if not line.strip():
                continue
            problem = check_line(line)
            if problem is None:
                yield line
                continue
            if not problem.answered:
                log.warning(
                    "dropped a response it cannot read (id %s): %s", problem.id, problem.reason
                )
                continue
            log.warning(
                "answered a malformed message with %d (id %s): %s",
                problem.code,
                problem.id,
                problem.reason,
            )
            await self._attached.wait()
            assert self._write is not None
            try:
                await self._write.send(SessionMessage(problem.answer()))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the session has ended


class _Unowned(TextIOWrapper):
    """A text layer whose closing leaves the bytes below it open (they may be sys.stdin's)."""

    def close(self) -> None:
        """Detach instead of closing."""
        with suppress(ValueError):
            self.detach()


@contextmanager
def _claimed_stdin() -> Iterator[BinaryIO]:
    """fd 0 for the protocol alone: a private duplicate of it, while fd 0 itself points at the
    null device (children and stray reads see end of file). As the SDK's own stdio does."""
    try:
        if sys.platform == "win32":  # pragma: no cover
            raise OSError("no fcntl")
        private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        yield sys.stdin.buffer
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        # Never closed: a worker thread may still be blocked reading it after the session.
        yield os.fdopen(private, "rb", closefd=False)
    finally:
        os.dup2(private, 0)


@asynccontextmanager
async def stdio_streams(
    stdin: AsyncIterable[str] | None = None, stdout: Any = None
) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's stdio transport (read and write streams for ``Server.run``), each line of
    `stdin` (default: this process's) checked first. `stdout`: the SDK's default, or an object
    with async ``write`` and ``flush`` (tests)."""
    from mcp.server.stdio import stdio_server

    with ExitStack() as stack:
        if stdin is None:
            claimed = stack.enter_context(_claimed_stdin())
            stdin = anyio.wrap_file(_Unowned(claimed, encoding="utf-8", errors="replace"))
        answering = _Answering(stdin)
        # The SDK only iterates its stdin (`async for line in stdin`).
        async with stdio_server(stdin=cast(Any, answering), stdout=stdout) as (read, write):
            answering.attach(write)
            yield read, write
