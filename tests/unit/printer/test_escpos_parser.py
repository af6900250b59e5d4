"""ESC/POS parser: incremental feeding, modes, unknown commands and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.escpos import (
    END,
    NEED_DATA,
    Align,
    Cut,
    Feed,
    Init,
    Line,
    Op,
    Parser,
    Qr,
    QrEc,
    Run,
    StatusQuery,
    TransmitStatus,
    Unknown,
    encode_ops,
    parse,
)
from agent.errors import LocalProtocolError

from .strategies import ops

OP_TYPES = (Init, Line, Qr, Feed, Cut, StatusQuery, TransmitStatus, Unknown)


def _chunked(data: bytes, cuts: list[int]) -> list[Op]:
    p = Parser()
    out: list[Op] = []
    last = 0
    for c in [*sorted(x % (len(data) + 1) for x in cuts), len(data)]:
        out += p.feed(data[last:c]) if c > last else []
        last = max(last, c)
    return out + p.feed(b"")


def test_next_event_protocol() -> None:
    p = Parser()
    assert p.next_event() is NEED_DATA
    p.receive_data(b"\x10\x04")
    assert p.next_event() is NEED_DATA  # DLE EOT without n
    p.receive_data(b"\x01ab")
    assert p.next_event() == StatusQuery(1)
    assert p.next_event() is NEED_DATA  # text waits for its LF
    p.receive_data(b"c\n")
    assert p.next_event() == Line((Run("abc"),))
    p.receive_data(b"")
    assert p.next_event() is END
    assert p.next_event() is END
    p.receive_data(b"")  # a second end of stream is harmless
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"x")


def test_gb18030_split_across_chunks() -> None:
    data = b"\x1c&" + "社保卡𠀀".encode("gb18030") + b"\n"  # 2-byte and 4-byte characters
    for split in range(len(data) + 1):
        assert _chunked(data, [split]) == [Line((Run("社保卡𠀀"),))], split


def test_modes_tracked() -> None:
    data = (
        b"\x1ba\x31\x1bE\x01\x1d!\x11\x1c&" + "标题".encode("gb18030") + b"\n\x1b!\x38X\x1b!\x00Y\n"
    )
    assert parse(data) == [
        Line((Run("标题", True, 2, 2),), Align.CENTER),
        Line((Run("X", True, 2, 2), Run("Y")), Align.CENTER),
    ]


def test_align_applies_from_the_next_line_when_sent_mid_line() -> None:
    assert parse(b"ab\x1ba\x02cd\nef\n") == [
        Line((Run("abcd"),), Align.LEFT),
        Line((Run("ef"),), Align.RIGHT),
    ]


def test_text_before_feed_cut_and_qr_is_printed_first() -> None:
    qr = b"\x1d(k\x05\x001P0hi\x1d(k\x03\x001Q0"
    assert parse(b"a\x1bd\x02b\x1dV\x01c" + qr) == [
        Line((Run("a"),)),
        Feed(2),
        Line((Run("b"),)),
        Cut(partial=True),
        Line((Run("c"),)),
        Qr(b"hi", 3, QrEc.L, 2, Align.LEFT),  # printer defaults: module 3, level L
    ]


def test_init_clears_the_print_buffer_and_modes() -> None:
    assert parse(b"\x1bE\x01lost\x1b@kept\n") == [Init(), Line((Run("kept"),))]


def test_cut_function_b_and_transmit_status_ascii_forms() -> None:
    assert parse(b"\x1dVA\x10\x1dr1\x1dr\x02") == [
        Cut(False, 16),
        TransmitStatus(1),
        TransmitStatus(2),
    ]


def test_qr_print_without_data_prints_nothing() -> None:
    assert parse(b"\x1d(k\x03\x001Q0") == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x1b\x99", [Unknown(b"\x1b\x99")]),
        (b"\x1b-\x01", [Unknown(b"\x1b-\x01")]),  # underline: parameter not taken for text
        (b"\x1ba\x07", [Unknown(b"\x1ba\x07")]),
        (b"\x1d!\x88", [Unknown(b"\x1d!\x88")]),
        (b"\x1dV\x07", [Unknown(b"\x1dV\x07")]),
        (b"\x1dr\x09", [Unknown(b"\x1dr\x09")]),
        (b"\x10\x04\x09", [Unknown(b"\x10\x04\x09")]),
        (b"\x10A", [Unknown(b"\x10"), Line((Run("A"),))]),
        (b"\x1d(L\x02\x00ab", [Unknown(b"\x1d(L\x02\x00ab")]),
        (b"\x1d(k\x03\x00\x30\x43\x05", [Unknown(b"\x1d(k\x03\x00\x30\x43\x05")]),  # not QR
        (b"\x1d(k\x03\x001C\x20", [Unknown(b"\x1d(k\x03\x001C\x20")]),  # module 32
        (  # raster image: its 1 x 2 data bytes are skipped, not taken for text
            b"\x1dv0\x00\x01\x00\x02\x00\xff\xffZ\n",
            [Unknown(b"\x1dv0\x00\x01\x00\x02\x00"), Line((Run("Z"),))],
        ),
        (b"\x07", [Unknown(b"\x07")]),
        (b"\r\n", [Line()]),
        (b"\x1b", [Unknown(b"\x1b")]),  # truncated at end of stream
        (b"\x1d(k\x05\x00", [Unknown(b"\x1d(k\x05\x00")]),
        (b"\x1c&\xc9", [Line((Run("\ufffd"),))]),  # truncated GB18030 character
        (b"\x1c&\xc9\n", [Line((Run("\ufffd"),))]),
        (b"\xb0\n", [Line((Run("░"),))]),  # outside Chinese mode: code page 437
    ],
)
def test_unknown_and_malformed(data: bytes, expected: list[Op]) -> None:
    assert parse(data) == expected


def test_long_line_wraps() -> None:
    (first, second) = parse(b"x" * 1500 + b"\n")
    assert isinstance(first, Line)
    assert isinstance(second, Line)
    assert len(first.text) == 1024
    assert len(second.text) == 476


_PIECES = st.one_of(
    st.sampled_from(
        [
            b"\x1b", b"\x1d", b"\x1c", b"\x10", b"\x1d(k", b"\x1dV", b"\x1dv0", b"\n",
            b"\x04", b"A", b"\xc9\xe7", b"\x1c&", b"\x1b@", b"\x00", b"\xff",
        ]
    ),
    st.binary(max_size=6),
)  # fmt: skip
hostile = st.lists(_PIECES, max_size=60).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(hostile)
def test_hostile_bytes_never_raise(data: bytes) -> None:
    result = parse(data)
    assert all(isinstance(op, OP_TYPES) for op in result)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_incremental_equals_whole_on_garbage(data: bytes, cuts: list[int]) -> None:
    assert _chunked(data, cuts) == parse(data)


@settings(max_examples=100, deadline=None)
@given(ops, st.lists(st.integers(0, 2000), max_size=6))
def test_incremental_equals_whole_on_valid_streams(sequence: list[Op], cuts: list[int]) -> None:
    data = encode_ops(sequence)
    assert _chunked(data, cuts) == parse(data)


def test_line_of_exactly_the_maximum_does_not_wrap() -> None:
    assert parse(b"y" * 1024 + b"\n") == [Line((Run("y" * 1024),))]
