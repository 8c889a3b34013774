"""The query worker: a process of its own that runs the sandbox's queries (compiled by `hogql.py`)
on copies of the warehouse's published tables, so the sandbox can always stop a query (at its
deadline, or past the memory limit) by ending the process. In-process it could not: DuckDB's
`memory_limit` bounds only its buffer manager, not the strings and lists a scalar function
builds, and a scalar function being evaluated does not see an interrupt.

`query_pool.py` starts it and talks to it over its standard input and output, in frames: a
4-byte big-endian length, then one kind byte and a JSON payload.

    sandbox -> worker   C {copies, spill, memory_mb, parent}     first; answered R {}
    sandbox -> worker   Q {hogql, sql, files, published, limit, own_limit}
    worker -> sandbox   A the HogQLQueryResponse, as the HTTP body
                        E {"detail"}   a query error (400 hogql_query_error)
                        S {"detail"}   a copy it was sent is gone (republished): ask again
                        X {"detail"}   anything else (a bug): the sandbox logs it

It imports DuckDB, psutil and the standard library only (so it starts in a fraction of a
second), opens no file but the copies it is sent (read-only) and its spill folder, and is not
given the sandbox's environment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import struct
import sys
import threading
from decimal import Decimal
from typing import Any, BinaryIO
from uuid import UUID

from .hogql import QueryError

HEADER = struct.Struct(">I")
# The largest frame either side accepts: an answer past MAX_ANSWER_BYTES is refused first.
MAX_FRAME = 64 * 1024 * 1024
MAX_ANSWER_BYTES = 32 * 1024 * 1024

# DuckDB's type names as ClickHouse's, as PostHog's `types` pairs show them.
_CLICKHOUSE_TYPES = {
    "BOOLEAN": "Bool",
    "TINYINT": "Int8",
    "SMALLINT": "Int16",
    "INTEGER": "Int32",
    "BIGINT": "Int64",
    "HUGEINT": "Int128",
    "UTINYINT": "UInt8",
    "USMALLINT": "UInt16",
    "UINTEGER": "UInt32",
    "UBIGINT": "UInt64",
    "FLOAT": "Float32",
    "DOUBLE": "Float64",
    "VARCHAR": "String",
    "DATE": "Date",
    "TIMESTAMP": "DateTime64(6, 'UTC')",
    "TIMESTAMP WITH TIME ZONE": "DateTime64(6, 'UTC')",
    "UUID": "UUID",
    "BLOB": "String",
}
# hogql.py's names for the query's CTEs; DuckDB's messages show them as the query wrote them.
_CTE_NAME = re.compile(r"__cte\d+_")


class Republished(Exception):
    """A copy the request named is gone: its table was published again or dropped since."""


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame's kind and payload; None at the end of the stream.

    Raises:
        ValueError: a frame larger than MAX_FRAME.
    """
    head = _read_exactly(stream, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if not 1 <= size <= MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = _read_exactly(stream, size)
    if body is None:
        return None
    return body[:1], body[1:]


def frame(kind: bytes, payload: bytes) -> bytes:
    """The bytes of one frame."""
    return HEADER.pack(len(kind) + len(payload)) + kind + payload


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class Session:
    """One in-memory DuckDB, locked down, with the published copies it was asked for attached
    read-only and a view for each under the table's own name."""

    def __init__(self, copies: str, spill: str, memory_mb: int) -> None:
        import duckdb

        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
        self.con.execute(f"SET temp_directory = {_sql_str(spill)}")
        # A query that spills is stopped at its deadline; until then it may not fill the disk.
        self.con.execute("SET max_temp_directory_size = '4GB'")
        # A name DuckDB cannot resolve is never looked up among this process's Python objects.
        self.con.execute("SET python_enable_replacements = false")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        listed = ", ".join(_sql_str(folder.rstrip("/\\") + "/") for folder in (copies, spill))
        self.con.execute(f"SET allowed_directories = [{listed}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self._attached: dict[str, tuple[str, str]] = {}  # table -> (copy, database alias)
        self._count = 0

    def answer(self, request: dict[str, Any]) -> bytes:
        """The HogQLQueryResponse for one query `hogql.py` compiled, as JSON.

        Raises:
            QueryError: DuckDB's own error, or an answer too large.
            Republished: a copy the request named is gone.
        """
        import duckdb

        hogql, sql, limit = request["hogql"], request["sql"], int(request["limit"])
        self._attach(request["files"], frozenset(request["published"]))
        self.con.execute("BEGIN TRANSACTION READ ONLY")
        try:
            result = self.con.execute(sql)
            rows = result.fetchall()
            description = result.description or []
        except duckdb.Error as exc:
            raise QueryError(_duckdb_message(exc)) from None
        finally:
            # A failed statement may have ended the transaction already.
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
        columns = [str(d[0]) for d in description]
        types = [_clickhouse_type(str(d[1])) for d in description]
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {
            "query": hogql,
            "hogql": hogql,
            "clickhouse": sql,
            "columns": columns,
            "types": [[name, kind] for name, kind in zip(columns, types, strict=True)],
            "results": [[json_value(v) for v in row] for row in rows],
            "timings": [],
            "modifiers": {},
        }
        if not request["own_limit"]:
            body |= {"hasMore": more, "limit": limit, "offset": 0}
        # As Starlette's JSONResponse writes it.
        data = json.dumps(
            body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
        ).encode()
        if len(data) > MAX_ANSWER_BYTES:
            raise QueryError(
                f"The answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB. Select fewer "
                "columns or rows, or aggregate."
            )
        return data

    def _attach(self, files: dict[str, str], published: frozenset[str]) -> None:
        """Attach the copies `files` of the tables the query reads; let go of those replaced and
        of the tables no longer published.

        Raises:
            Republished: a copy named in `files` is gone.
        """
        import duckdb

        for table, (path, alias) in list(self._attached.items()):
            if table not in published or files.get(table, path) != path:
                self.con.execute(f"DROP VIEW IF EXISTS main.{_ident(table)}")
                self.con.execute(f"DETACH {alias}")
                del self._attached[table]
        for table, copy in sorted(files.items()):
            if table in self._attached:
                continue
            self._count += 1
            database = f"published_{self._count}"
            try:
                self.con.execute(f"ATTACH {_sql_str(copy)} AS {database} (READ_ONLY)")
            except duckdb.IOException:
                raise Republished(table) from None
            self.con.execute(
                f"CREATE OR REPLACE VIEW main.{_ident(table)} AS "
                f"SELECT * FROM {database}.main.{_ident(table)}"
            )
            self._attached[table] = (copy, database)


def json_value(value: Any) -> Any:
    """A value as PostHog's JSON renderer writes it: datetimes in ISO with `Z` for UTC (a time
    without a zone is UTC, the sandbox's project time zone), decimals as numbers, UUIDs as
    text, NaN and infinities as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)  # as DRF's encoder writes a Decimal
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def _clickhouse_type(duck: str) -> str:
    if duck.startswith("DECIMAL"):
        return "Decimal" + duck[len("DECIMAL") :].replace(",", ", ")
    return _CLICKHOUSE_TYPES.get(duck, duck)


def _duckdb_message(exc: Exception) -> str:
    """DuckDB's error as a person reads it: its first line, the query's own CTE names, and a
    missing column in HogQL's words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _CTE_NAME.sub("", text)
    if 'Referenced column "' in text:
        column = text.split('Referenced column "', 1)[1].split('"', 1)[0]
        return f"Unable to resolve field: {column}"
    return text


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exit_with(parent: int) -> None:
    """End this process soon after the sandbox's: a query it runs has no one left to stop it."""
    import time

    import psutil  # type: ignore[import-untyped]  # no stubs; a sandbox dependency

    try:
        watched = psutil.Process(parent)
    except psutil.Error:
        os._exit(1)
    while True:
        time.sleep(0.5)
        if not watched.is_running():
            os._exit(1)


def _reply(out: BinaryIO, kind: bytes, payload: bytes) -> None:
    out.write(HEADER.pack(len(kind) + len(payload)) + kind)
    out.write(payload)
    out.flush()


def main() -> int:
    """Serve the sandbox's queries until it closes the pipe."""
    # The frames own the original stdin and stdout; anything else that reads or prints gets
    # nothing and stderr.
    inp = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, sys.stdin.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    session: Session | None = None
    while (received := read_frame(inp)) is not None:
        kind, payload = received
        try:
            request = json.loads(payload)
            if kind == b"C":
                threading.Thread(
                    target=_exit_with, args=(int(request["parent"]),), daemon=True
                ).start()
                session = Session(request["copies"], request["spill"], request["memory_mb"])
                _reply(out, b"R", b"{}")
            elif kind == b"Q" and session is not None:
                _reply(out, b"A", session.answer(request))
            else:
                _reply(out, b"X", json.dumps({"detail": f"unexpected frame {kind!r}"}).encode())
        except QueryError as exc:
            _reply(out, b"E", json.dumps({"detail": str(exc)}).encode())
        except Republished as exc:
            _reply(out, b"S", json.dumps({"detail": str(exc)}).encode())
        except Exception as exc:
            text = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {text[0] if text else ''}"
            _reply(out, b"X", json.dumps({"detail": detail}).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
