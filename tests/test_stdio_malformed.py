"""stdio answers every line a client sends: the attack run's 52 raw JSON-RPC inputs (its table B)
each get exactly one answer, the malformed ones a JSON-RPC error (-32700 for what is not JSON,
-32600 for what is not a request the server can take, with its id when the id can be read) and
one log line, instead of silence that leaves a client waiting on its id forever."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.stdio import Malformed, check_line, stdio_streams
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.support import Recorder, serve, settings, stdio_server, terminate

pytestmark = pytest.mark.anyio

PARSE_ERROR, INVALID_REQUEST = -32700, -32600
UUID = "00000000-0000-0000-0000-00000000000"  # plus one character
PING = 900_000  # the liveness pings' ids start here, one per input


@dataclass(frozen=True)
class Case:
    """One line of the attack run's table B, and what must come back for it."""

    name: str
    line: str
    # (code, id) of the JSON-RPC error it must get; None: any one answer with `answer_id`.
    error: tuple[int, int | None] | None = None
    answer_id: int | None = None


def _call(id_: int, name: Any, arguments: Any, *, ascii: bool = True) -> str:
    params = {"name": name, "arguments": arguments}
    message = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}
    return json.dumps(message, ensure_ascii=ascii)


def _nested(id_: int, opening: str, closing: str, depth: int) -> str:
    inner = opening * depth + ("1" if opening.endswith(":") else "") + closing * depth
    payload = '{"host": ' + inner + "}"
    arguments = '{"source_type": "Postgres", "payload": ' + payload + "}"
    return (
        f'{{"jsonrpc": "2.0", "id": {id_}, "method": "tools/call", "params": '
        f'{{"name": "external-data-sources-db-schema", "arguments": {arguments}}}}}'
    )


def table_b() -> Iterator[Case]:
    """The 52 inputs, rebuilt from the report (the first 160 characters of each are quoted there;
    the rest follows from its description)."""
    retrieve, listing = "external-data-sources-retrieve", "external-data-sources-list"
    yield Case("B1 malformed JSON", '{"jsonrpc": "2.0", "id": 1, "method": ', (PARSE_ERROR, None))
    yield Case("B2 not JSON", "hello world", (PARSE_ERROR, None))
    yield Case("B3 a number", "123", (INVALID_REQUEST, None))
    batch = '[{"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]'
    yield Case("B4 a batch", batch, (INVALID_REQUEST, None))
    yield Case("B5 empty object", "{}", (INVALID_REQUEST, None))
    yield Case("B6 no method", '{"jsonrpc": "2.0", "id": 3}', (INVALID_REQUEST, 3))
    yield Case("B7 unknown method", '{"jsonrpc": "2.0", "id": 4, "method": "foo/bar"}', None, 4)
    object_id = '{"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/list"}'
    yield Case("B8 object id", object_id, (INVALID_REQUEST, None))
    old = '{"jsonrpc": "1.0", "id": 5, "method": "tools/list"}'
    yield Case("B9 jsonrpc 1.0", old, (INVALID_REQUEST, 5))
    params_x = '{"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": "x"}'
    yield Case("B10 params not an object", params_x, (INVALID_REQUEST, 6))
    yield Case("B11 name is an int", _call(7, 5, {}), None, 7)
    yield Case("B12 arguments a list", _call(8, retrieve, [1]), None, 8)
    yield Case("B13 arguments a string", _call(9, retrieve, "x"), None, 9)
    yield Case("B14 arguments null", _call(101, retrieve, None), None, 101)
    yield Case("B15 unknown tool", _call(102, "no-such-tool", {}), None, 102)
    yield Case("B16 1 MB tool name", _call(103, "x" * 1_000_000, {}), None, 103)
    ids = [
        "../",
        "../../external_data_sources",
        "..%2F..%2F",
        f"{UUID}1/../",
        f"{UUID}1?x=1",
        f"{UUID}1#frag",
        "abc",
        12,
        None,
        [f"{UUID}1"],
        f"{UUID}A".upper(),
        f"{{{UUID}1}}",
        f"urn:uuid:{UUID}1",
        "0000000000000000000000000000000a",
    ]
    for number, value in enumerate(ids, start=17):
        yield Case(
            f"B{number} id {value!r:.30}",
            _call(87 + number, retrieve, {"id": value}),
            None,
            87 + number,
        )
    yield Case(
        "B31 schema_id ../",
        _call(118, "external-data-sync-logs", {"schema_id": "../../"}),
        None,
        118,
    )
    logs = {"schema_id": f"{UUID}1", "job_id": "../x?y#z"}
    yield Case("B32 job_id path chars", _call(119, "external-data-sync-logs", logs), None, 119)
    yield Case("B33 unknown argument", _call(120, listing, {"evil": 1}), None, 120)
    yield Case("B34 limit a word", _call(121, listing, {"limit": "all"}), None, 121)
    yield Case("B35 negative limit", _call(122, listing, {"limit": -1}), None, 122)
    yield Case("B36 huge limit", _call(123, listing, {"limit": 10**30}), None, 123)
    yield Case("B37 NaN", _call(77, listing, {"limit": float("nan")}), None, 77)
    yield Case("B38 10 MB search", _call(124, listing, {"search": "x" * 10_000_000}), None, 124)
    query = {"query": "SELECT " + "1" * 10_000_000}
    yield Case("B39 10 MB query", _call(125, "execute-sql", query), None, 125)
    big = {"source_type": "Postgres", "payload": {"host": "h" * 10_000_000}}
    yield Case(
        "B40 10 MB payload value", _call(126, "external-data-sources-db-schema", big), None, 126
    )
    yield Case("B41 depth 10,000", _nested(127, "[", "]", 10_000), (INVALID_REQUEST, 127))
    yield Case("B42 depth 100,000", _nested(128, "[", "]", 100_000), (INVALID_REQUEST, 128))
    yield Case("B43 dicts 3,000 deep", _nested(129, '{"a":', "}", 3_000), (INVALID_REQUEST, 129))
    keys = {"source_type": "Postgres", "payload": {f"k{n}": n for n in range(200_000)}}
    yield Case("B44 200,000 keys", _call(130, "external-data-sources-db-schema", keys), None, 130)
    create = {"source_type": "../../x", "payload": {}}
    yield Case(
        "B45 unknown source type", _call(131, "external-data-sources-create", create), None, 131
    )
    prefix = {"source_type": "Postgres", "prefix": 'a"; DROP TABLE x; --', "payload": {}}
    yield Case("B46 prefix with SQL", _call(132, "external-data-sources-create", prefix), None, 132)
    token = {"id": f"{UUID}1", "confirmation_token": "t" * 10_000_000}
    yield Case("B47 10 MB token", _call(133, "external-data-sources-destroy", token), None, 133)
    yield Case("B48 NUL in a string", _call(134, listing, {"search": "a\u0000b"}), None, 134)
    # json.dumps writes the lone surrogate as the escape \ud800, as the attack run sent it.
    lone = _call(88, listing, {"search": "\ud800"})
    yield Case("B49 lone surrogate", lone, (INVALID_REQUEST, 88))
    # Bytes that are not UTF-8 (0xff 0xfe), written here as the surrogates that encode them.
    not_utf8 = _call(89, listing, {"search": "\udcff\udcfe"}, ascii=False)
    yield Case("B50 bytes not UTF-8", not_utf8, None, 89)
    prompt = '{"jsonrpc": "2.0", "id": 90, "method": "prompts/get", "params": {"name": "../x"}}'
    yield Case("B51 unknown prompt", prompt, None, 90)
    read = '{"jsonrpc": "2.0", "id": 91, "method": "resources/read", "params": {"uri": "file:///etc/passwd"}}'
    yield Case("B52 resources/read", read, None, 91)


CASES = list(table_b())
MALFORMED = [case for case in CASES if case.error is not None]
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "fuzz", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def test_the_report_has_52_inputs_13_of_them_once_unanswered() -> None:
    assert len(CASES) == 52
    assert len(MALFORMED) == 13


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_a_malformed_line_is_diagnosed_with_its_code_and_id(case: Case) -> None:
    found = check_line(as_read(case.line))
    assert isinstance(found, Malformed)
    assert (found.code, found.id) == case.error
    assert found.answered and found.reason


def test_a_valid_line_passes_untouched() -> None:
    for case in CASES:
        if case.error is None:
            assert check_line(as_read(case.line)) is None, case.name
    assert check_line(json.dumps(INIT)) is None
    assert check_line(json.dumps(INITIALIZED)) is None


@pytest.mark.parametrize(
    ("line", "code", "id_"),
    [
        ('{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":null,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":1.5,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":"a","method":5}', INVALID_REQUEST, "a"),
        ('{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}', INVALID_REQUEST, 7),
        (
            '{"jsonrpc":"2.0","method":"notifications/initialized","params":"x"}',
            INVALID_REQUEST,
            None,
        ),
        ("\ufeff{}", PARSE_ERROR, None),
        ("[]", INVALID_REQUEST, None),
    ],
)
def test_what_the_sdk_would_misread_or_drop_is_answered(line: str, code: int, id_: object) -> None:
    found = check_line(line)
    assert found is not None and (found.code, found.id, found.answered) == (code, id_, True)


def test_a_response_the_server_cannot_read_is_logged_not_answered() -> None:
    found = check_line('{"jsonrpc":"2.0","id":4,"result":"not an object"}')
    assert found is not None and not found.answered


def raw(line: str) -> bytes:
    """The bytes a client writes for `line` (surrogates stand for bytes that are not UTF-8)."""
    return line.encode("utf-8", "surrogateescape") + b"\n"


def as_read(line: str) -> str:
    """`line` as the server's stdio reads it: UTF-8, bytes that are not replaced."""
    return raw(line).decode("utf-8", "replace")


def awaited(case: Case, ping: int) -> set[int]:
    """The ids whose answers must arrive: the ping's, and the case's own if it has one (a tool
    call may finish after the ping; an error with a null id is written before it)."""
    own = case.answer_id if case.error is None else case.error[1]
    return {ping} if own is None else {ping, own}


class Lines:
    """A client on the other end of in-memory stdio: writes lines, reads the server's answers."""

    def __init__(self) -> None:
        self.to_server: MemoryObjectSendStream[str]
        self._incoming: MemoryObjectReceiveStream[str]
        self.to_server, self._incoming = anyio.create_memory_object_stream[str](1)
        self._out_send, self.from_server = anyio.create_memory_object_stream[str](100)

    async def stdin(self) -> AsyncIterator[str]:
        async with self._incoming:
            async for line in self._incoming:
                # What the stdio reader makes of the bytes: UTF-8, errors replaced.
                yield as_read(line)

    # The server's stdout: the SDK writes a line and flushes.
    async def write(self, text: str) -> None:
        await self._out_send.send(text)

    async def flush(self) -> None:
        pass

    def close(self) -> None:
        """Close the server's stdout (the stdin side closes when the client's does)."""
        self._out_send.close()
        self.from_server.close()

    async def answers_until(self, ids: set[int]) -> list[dict[str, Any]]:
        """Every message the server writes until it has answered each of `ids`."""
        found: list[dict[str, Any]] = []
        while not ids <= {message.get("id") for message in found}:
            found.append(json.loads(await self.from_server.receive()))
        return found


@asynccontextmanager
async def in_memory_server(recorder: Recorder) -> AsyncIterator[Lines]:
    """The server on in-memory stdio streams, through the same checks as the real stdio."""
    lines = Lines()
    async with serve(recorder.app()) as upstream, anyio.create_task_group() as tg:
        server = create_server(settings(host=upstream))

        async def run() -> None:
            async with stdio_streams(lines.stdin(), lines) as (read, write):  # type: ignore[arg-type]
                await server.run(read, write, server.create_initialization_options())

        tg.start_soon(run)
        await lines.to_server.send(json.dumps(INIT))
        await lines.answers_until({0})
        await lines.to_server.send(json.dumps(INITIALIZED))
        yield lines
        await lines.to_server.aclose()
    lines.close()


def check_answers(case: Case, ping: int, messages: list[dict[str, Any]]) -> None:
    """`messages` (up to the answers awaited) are the ping's answer and one answer for `case`."""
    answers = [message for message in messages if message.get("id") != ping]
    assert len(answers) == 1, (case.name, answers)
    (answer,) = answers
    if case.error is None:
        assert answer["id"] == case.answer_id, case.name
        return
    code, id_ = case.error
    assert answer["id"] == id_, case.name
    assert answer["error"]["code"] == code, case.name


async def test_every_input_of_table_b_gets_one_answer_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-list"])
    with anyio.fail_after(120):
        async with in_memory_server(recorder) as lines:
            for number, case in enumerate(CASES):
                await lines.to_server.send(case.line)
                await lines.to_server.send(
                    json.dumps({"jsonrpc": "2.0", "id": PING + number, "method": "ping"})
                )
                ping = PING + number
                check_answers(case, ping, await lines.answers_until(awaited(case, ping)))
    logged = [r for r in caplog.records if r.name == "posthog_warehouse_mcp.stdio"]
    assert len(logged) == len(MALFORMED)
    assert all(r.exc_info is None for r in logged)


@pytest.mark.slow
async def test_every_input_of_table_b_gets_one_answer_from_the_stdio_process() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-list"])
    async with serve(recorder.app()) as upstream:
        params = stdio_server(upstream)
        process = await anyio.open_process(
            [params.command, *params.args], env=params.env, stderr=subprocess.PIPE
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        buffered = b""

        async def answers_until(ids: set[int]) -> list[dict[str, Any]]:
            nonlocal buffered
            found: list[dict[str, Any]] = []
            with anyio.fail_after(60):  # per input: a silent server fails here, not forever
                while not ids <= {message.get("id") for message in found}:
                    while b"\n" not in buffered:
                        buffered += await process.stdout.receive()  # type: ignore[union-attr]
                    line, buffered = buffered.split(b"\n", 1)
                    found.append(json.loads(line))
            return found

        async def send(line: str) -> None:
            await process.stdin.send(raw(line))  # type: ignore[union-attr]

        try:
            await send(json.dumps(INIT))
            await answers_until({0})
            await send(json.dumps(INITIALIZED))
            answered = 0
            for number, case in enumerate(CASES):
                await send(case.line)
                await send(json.dumps({"jsonrpc": "2.0", "id": PING + number, "method": "ping"}))
                ping = PING + number
                check_answers(case, ping, await answers_until(awaited(case, ping)))
                answered += 1
            await process.stdin.aclose()
            stderr = b""
            with anyio.move_on_after(30):
                async for chunk in process.stderr:
                    stderr += chunk
        finally:
            await terminate(process, within=15)
    assert answered == 52
    logged = [
        line for line in stderr.decode().splitlines() if "posthog_warehouse_mcp.stdio" in line
    ]
    assert len(logged) == len(MALFORMED), logged
    assert "Traceback" not in stderr.decode()
    print(f"answered {answered} of {len(CASES)} inputs; {len(logged)} logged", file=sys.stderr)
