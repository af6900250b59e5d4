"""ESC/POS encoder: exact command bytes, the Receipt builder, and encode→parse round trips."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings

from agent.drivers import escpos
from agent.drivers.escpos import (
    Align,
    Cut,
    Feed,
    Init,
    Line,
    Qr,
    QrEc,
    Receipt,
    Run,
    StatusQuery,
    TransmitStatus,
    encode_ops,
    encode_text,
    parse,
)
from agent.errors import LocalProtocolError

from .strategies import normalize, ops


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (escpos.initialize(), b"\x1b@"),
        (escpos.kanji_on(), b"\x1c&"),
        (escpos.kanji_off(), b"\x1c."),
        (escpos.align(Align.CENTER), b"\x1ba\x01"),
        (escpos.emphasis(True), b"\x1bE\x01"),
        (escpos.emphasis(False), b"\x1bE\x00"),
        (escpos.char_size(1, 1), b"\x1d!\x00"),
        (escpos.char_size(2, 3), b"\x1d!\x12"),
        (escpos.char_size(8, 8), b"\x1d!\x77"),
        (escpos.qr_model(2), b"\x1d(k\x04\x00\x31\x41\x32\x00"),
        (escpos.qr_module_size(6), b"\x1d(k\x03\x00\x31\x43\x06"),
        (escpos.qr_error_correction(QrEc.H), b"\x1d(k\x03\x00\x31\x45\x33"),
        (escpos.qr_store(b"AB"), b"\x1d(k\x05\x00\x31\x50\x30AB"),
        (escpos.qr_print(), b"\x1d(k\x03\x00\x31\x51\x30"),
        (escpos.feed(3), b"\x1bd\x03"),
        (escpos.cut(), b"\x1dV\x00"),
        (escpos.cut(partial=True), b"\x1dV\x01"),
        (escpos.cut(partial=True, feed_dots=10), b"\x1dVB\x0a"),
        (escpos.status_query(4), b"\x10\x04\x04"),
        (escpos.transmit_status(1), b"\x1dr\x01"),
    ],
)
def test_command_bytes(data: bytes, expected: bytes) -> None:
    assert data == expected


def test_qr_store_length_counts_cn_fn_m() -> None:
    data = bytes(300)
    out = escpos.qr_store(data)
    assert out[3] | out[4] << 8 == len(data) + 3


def test_chinese_text_is_gb18030_after_fs_ampersand() -> None:
    out = encode_ops([Line((Run("社保卡 OK"),))])
    assert out == b"\x1c&" + "社保卡 OK".encode("gb18030") + b"\n"


def test_ascii_text_does_not_enter_chinese_mode() -> None:
    assert encode_ops([Line((Run("OK"),))]) == b"OK\n"


def test_styles_emitted_only_on_change() -> None:
    out = encode_ops([Line((Run("a", bold=True), Run("b", bold=True, width=2))), Line((Run("c"),))])
    assert out == b"\x1bE\x01a\x1d!\x10b\n\x1bE\x00\x1d!\x00c\n"


def test_init_resets_encoder_state() -> None:
    out = encode_ops([Line((Run("中"),), Align.RIGHT), Init(), Line((Run("中"),), Align.RIGHT)])
    body = b"\x1ba\x02\x1c&" + "中".encode("gb18030") + b"\n"
    assert out == body + b"\x1b@" + body


@pytest.mark.parametrize("text", ["a\nb", "\x1b@", "tab\t", "\x00"])
def test_control_characters_refused(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_text(text, kanji=True)
    with pytest.raises(LocalProtocolError):
        Receipt().line(text)


def test_non_ascii_outside_chinese_mode_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_text("中", kanji=False)


def test_surrogates_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_text("\ud800", kanji=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Run("x", width=0),
        lambda: Run("x", height=9),
        lambda: Qr(b""),
        lambda: Qr(b"x", module_size=17),
        lambda: Qr(b"x", model=3),
        lambda: Feed(256),
        lambda: Cut(feed=-1),
        lambda: StatusQuery(5),
        lambda: TransmitStatus(3),
        lambda: escpos.char_size(9, 1),
        lambda: escpos.status_query(0),
        lambda: Receipt().size(0, 1),
    ],
)
def test_out_of_range_fields_refused(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


def test_receipt_builder_round_trip() -> None:
    r = (
        Receipt()
        .align(Align.CENTER)
        .bold()
        .size(2, 2)
        .line("社会保障卡")
        .bold(False)
        .size()
        .line()
        .runs(Run("结果 "), Run("成功", bold=True))
        .qr("SSC-TX:T1:42", module_size=5, ec=QrEc.Q)
        .feed(2)
        .cut(partial=True)
    )
    assert parse(r.to_bytes()) == [normalize(op) for op in r.ops]
    assert r.ops[0] == Init()
    assert r.ops[-1] == Cut(partial=True)
    assert "[QR] SSC-TX:T1:42" in r.to_text()


@settings(max_examples=200, deadline=None)
@given(ops)
def test_round_trip_ops_to_bytes_to_ops(sequence: list[escpos.Op]) -> None:
    assert parse(encode_ops(sequence)) == [normalize(op) for op in sequence]


def test_escpos_module_is_sans_io() -> None:
    """The codec never imports I/O (DESIGN §2): the driver and the simulator are the shells."""
    tree = ast.parse(Path(escpos.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    io = {"asyncio", "serial", "socket", "threading", "os", "selectors", "termios"}
    assert not {name.split(".")[0] for name in names} & io
