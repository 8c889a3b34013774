"""The pgoutput decoder on messages built byte by byte: every column kind, each change type,
and the malformed messages it refuses (a clear DecodeError, never an IndexError or a wrong row)."""

from __future__ import annotations

import struct

import pytest

from posthog_warehouse_mcp.sandbox.connectors.pgoutput import DecodeError, Decoder

OID = 16384


def relation(*columns: str, keys: tuple[str, ...] = ("id",)) -> bytes:
    body = struct.pack("!I", OID) + b"public\0orders\0" + b"d" + struct.pack("!h", len(columns))
    for name in columns:
        body += struct.pack("!b", 1 if name in keys else 0) + name.encode() + b"\0"
        body += struct.pack("!Ii", 25, -1)
    return b"R" + body


def tuple_data(*values: str | bool | None) -> bytes:
    """Columns: text, None (NULL), or False (an unchanged TOAST value)."""
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        elif value is False:
            body += b"u"
        else:
            raw = str(value).encode()
            body += b"t" + struct.pack("!I", len(raw)) + raw
    return body


BEGIN = b"B" + struct.pack("!qqI", 0x500, 1_000_000, 7)
COMMIT = b"C" + b"\0" + struct.pack("!qqq", 0x500, 0x528, 1_000_000)


def decode(*messages: bytes) -> Decoder:
    decoder = Decoder()
    for message in messages:
        decoder.feed(message)
    return decoder


def test_a_transaction_of_each_change_and_column_kind() -> None:
    decoder = Decoder()
    for message in (
        relation("id", "note", "body"),
        BEGIN,
        b"I" + struct.pack("!I", OID) + b"N" + tuple_data("1", None, 'é "quoted"'),
        b"U"
        + struct.pack("!I", OID)
        + b"K"
        + tuple_data("1", None, None)
        + b"N"
        + tuple_data("1", "n", False),
        b"D" + struct.pack("!I", OID) + b"K" + tuple_data("2", None, None),
    ):
        assert decoder.feed(message) is None
    done = decoder.feed(COMMIT)
    assert done is not None
    assert (done.commit_lsn, done.end_lsn) == (0x500, 0x528)
    assert [(c.op, c.values, sorted(c.omitted)) for c in done.changes] == [
        ("I", {"id": "1", "note": None, "body": 'é "quoted"'}, []),
        ("U", {"id": "1", "note": "n"}, ["body"]),
        ("D", {"id": "2"}, ["body", "note"]),
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"I" + struct.pack("!I", OID) + b"N" + tuple_data("1", "2")[:-1], "ends early"),
        (b"I" + struct.pack("!I", OID) + b"N" + struct.pack("!h", 2) + b"t\0\0", "ends early"),
        (b"I" + struct.pack("!I", OID) + b"N" + struct.pack("!h", 1) + b"x", "column kind"),
        (b"I" + struct.pack("!I", OID) + b"N" + tuple_data("1", "2", "3", "4"), "4 values"),
        (b"I" + struct.pack("!I", OID) + b"X", "expected"),
        (b"I" + struct.pack("!H", 1), "ends early"),
        (b"Z", "unknown pgoutput message"),
    ],
    ids=[
        "text cut short",
        "length past the end",
        "unknown column kind",
        "more values than columns",
        "no new-tuple marker",
        "relation id cut short",
        "unknown message",
    ],
)
def test_a_malformed_message_is_a_decode_error(message: bytes, error: str) -> None:
    decoder = decode(relation("id", "note", "body"), BEGIN)
    with pytest.raises(DecodeError, match=error):
        decoder.feed(message)


def test_a_relation_cut_short_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="ends early"):
        Decoder().feed(relation("id", "note")[:-6])
