"""The `pgoutput` logical decoding protocol, version 1: the messages a replication slot's changes
come as, decoded into transactions of row changes.

Follows PostHog's decoder (`products/warehouse_sources/backend/temporal/data_imports/sources/
postgres/cdc/decoder.py`): a change is buffered until its transaction's COMMIT, an unchanged
TOASTed column (`u`) is reported as omitted rather than as a null, and a DELETE carries only the
replica identity (the primary key, by default).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

# pgoutput's timestamps count microseconds from 2000-01-01 UTC.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# The protocol's numbers, big-endian.
_INT8, _INT16, _UINT32, _INT64 = (struct.Struct(f) for f in ("!b", "!h", "!I", "!q"))
# A TupleData column: text, NULL, or an unchanged TOAST value the stream leaves out.
_TEXT, _NULL, _UNCHANGED = b"t"[0], b"n"[0], b"u"[0]
_NONE: frozenset[str] = frozenset()


def lsn_to_int(lsn: str) -> int:
    """An LSN's text form (`16/B374D848`) as the 64-bit position it names."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_to_text(value: int) -> str:
    """A 64-bit position in an LSN's text form."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Relation:
    """A table as a `R` message describes it: the columns each row change of it carries."""

    oid: int
    namespace: str
    name: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]


@dataclass
class Change:
    """One row change: `I`, `U` or `D`, the row's values as text (None: SQL NULL), and the
    columns the stream left out (unchanged TOAST values, or a DELETE's non-key columns)."""

    op: Literal["I", "U", "D"]
    relation: Relation
    values: dict[str, str | None]
    omitted: frozenset[str] = frozenset()


@dataclass
class Transaction:
    """A committed transaction: its commit position (`commit_lsn`), the position after its
    commit record (`end_lsn`), its commit time, and its changes in order."""

    commit_lsn: int
    end_lsn: int
    committed_at: datetime
    changes: list[Change] = field(default_factory=list)
    truncated: list[Relation] = field(default_factory=list)


class DecodeError(ValueError):
    """A message this decoder does not understand."""


class Decoder:
    """Decodes a slot's messages in order; `feed` returns a transaction at each COMMIT."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._open: Transaction | None = None

    def feed(self, data: bytes) -> Transaction | None:
        """Decode one message; the finished transaction when it is a COMMIT, else None."""
        reader = _Reader(data)
        kind = reader.byte()
        if kind == b"B":
            reader.int64()  # the commit's LSN, repeated in COMMIT
            committed = _time(reader.int64())
            self._open = Transaction(0, 0, committed)
        elif kind == b"C":
            reader.byte()  # flags
            done = self._transaction()
            done.commit_lsn = reader.int64()
            done.end_lsn = reader.int64()
            self._open = None
            return done
        elif kind == b"R":
            self._relation(reader)
        elif kind == b"I":
            relation = self.relations[reader.int32()]
            self._expect(reader, b"N")
            values, omitted = _tuple(reader, relation)
            self._transaction().changes.append(Change("I", relation, values, omitted))
        elif kind == b"U":
            relation = self.relations[reader.int32()]
            marker = reader.byte()
            if marker in (b"K", b"O"):
                _tuple(reader, relation)  # the old key or row: the new row says it all
                marker = reader.byte()
            if marker != b"N":
                raise DecodeError(f"unexpected update marker {marker!r}")
            values, omitted = _tuple(reader, relation)
            self._transaction().changes.append(Change("U", relation, values, omitted))
        elif kind == b"D":
            relation = self.relations[reader.int32()]
            marker = reader.byte()
            if marker not in (b"K", b"O"):
                raise DecodeError(f"unexpected delete marker {marker!r}")
            values, _ = _tuple(reader, relation)
            present = {
                k: v for k, v in values.items() if k in relation.key_columns or v is not None
            }
            missing = frozenset(relation.columns) - set(present)
            self._transaction().changes.append(Change("D", relation, present, missing))
        elif kind == b"T":
            count = reader.int32()
            reader.byte()  # options
            truncated = [self.relations[reader.int32()] for _ in range(count)]
            self._transaction().truncated.extend(truncated)
        elif kind in (b"Y", b"O", b"M"):
            pass  # types, origins and logical messages say nothing about rows
        else:
            raise DecodeError(f"unknown pgoutput message {kind!r}")
        return None

    def _transaction(self) -> Transaction:
        if self._open is None:
            raise DecodeError("a change outside a transaction")
        return self._open

    def _relation(self, reader: _Reader) -> None:
        oid = reader.int32()
        namespace = reader.string()
        name = reader.string()
        reader.byte()  # replica identity setting
        columns, keys = [], []
        for _ in range(reader.int16()):
            flags = reader.int8()
            column = reader.string()
            reader.int32()  # type oid
            reader.int32()  # type modifier
            columns.append(column)
            if flags & 1:
                keys.append(column)
        self.relations[oid] = Relation(oid, namespace, name, tuple(columns), tuple(keys))

    @staticmethod
    def _expect(reader: _Reader, marker: bytes) -> None:
        found = reader.byte()
        if found != marker:
            raise DecodeError(f"expected {marker!r}, found {found!r}")


def _tuple(reader: _Reader, relation: Relation) -> tuple[dict[str, str | None], frozenset[str]]:
    """A TupleData: each column's text (None: SQL NULL), and the columns the stream left out
    (unchanged TOAST values). The loop every change goes through, so it reads the message in
    place rather than through `_Reader`'s calls."""
    data, at = reader.data, reader.at
    columns = relation.columns
    values: dict[str, str | None] = {}
    omitted: list[str] = []
    try:
        (count,) = _INT16.unpack_from(data, at)
        at += 2
        if count > len(columns):
            raise DecodeError(
                f"{count} values in a row of {relation.name}'s {len(columns)} columns"
            )
        for name in columns[:count]:
            kind = data[at]
            at += 1
            if kind == _TEXT:
                (size,) = _UINT32.unpack_from(data, at)
                at += 4
                if at + size > len(data):
                    raise DecodeError("message ends early")
                values[name] = data[at : at + size].decode()
                at += size
            elif kind == _NULL:
                values[name] = None
            elif kind == _UNCHANGED:
                omitted.append(name)
            else:
                raise DecodeError(f"unexpected column kind {bytes([kind])!r}")
    except (struct.error, IndexError) as exc:
        raise DecodeError("message ends early") from exc
    reader.at = at
    return values, frozenset(omitted) if omitted else _NONE


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.at : self.at + size]
        if len(chunk) != size:
            raise DecodeError("message ends early")
        self.at += size
        return chunk

    def byte(self) -> bytes:
        return self.take(1)

    def _number(self, form: struct.Struct) -> int:
        try:
            (value,) = form.unpack_from(self.data, self.at)
        except struct.error as exc:
            raise DecodeError("message ends early") from exc
        self.at += form.size
        return int(value)

    def int8(self) -> int:
        return self._number(_INT8)

    def int16(self) -> int:
        return self._number(_INT16)

    def int32(self) -> int:
        # Unsigned: OIDs use the whole range; no field read here is negative.
        return self._number(_UINT32)

    def int64(self) -> int:
        return self._number(_INT64)

    def string(self) -> str:
        try:
            end = self.data.index(b"\0", self.at)
        except ValueError as exc:
            raise DecodeError("message ends early") from exc
        text = self.data[self.at : end].decode()
        self.at = end + 1
        return text
