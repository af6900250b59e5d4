"""BER-TLV codec (agent.card.tlv): known vectors, round trips, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card import tlv
from agent.card.tlv import Tlv
from agent.errors import LocalProtocolError, TlvError

FCI = bytes.fromhex(
    "6F20"  # FCI template
    "840E315041592E5359532E4444463031"  # DF name 1PAY.SYS.DDF01
    "A50E"
    "880101"  # SFI 1
    "5F2D027A68"  # language zh
    "9F1103"
    "010203"  # arbitrary 3-byte item
)


def test_decode_fci_and_find() -> None:
    [fci] = tlv.decode(FCI)
    assert fci.tag == 0x6F
    assert fci.constructed
    assert [c.tag for c in fci.children] == [0x84, 0xA5]
    assert tlv.find(FCI, 0x88) == Tlv(0x88, b"\x01")
    assert tlv.find_value(FCI, 0x5F2D) == b"zh"
    assert tlv.find_value(FCI, 0x9F11) == b"\x01\x02\x03"
    assert tlv.find(FCI, 0x9F38) is None
    assert fci.find(0x84) == Tlv(0x84, b"1PAY.SYS.DDF01")
    assert [t.tag for t in tlv.walk(FCI)] == [0x6F, 0x84, 0xA5, 0x88, 0x5F2D, 0x9F11]


def test_primitive_has_no_children() -> None:
    assert Tlv(0x5A, b"\x62\x12").children == ()
    assert not Tlv(0x5A, b"").constructed
    assert Tlv(0xBF0C, b"").constructed


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, "00"),
        (0x7F, "7F"),
        (0x80, "8180"),
        (0xFF, "81FF"),
        (0x100, "820100"),
        (0xFFFF, "82FFFF"),
        (0x10000, "83010000"),
    ],
)
def test_length_encoding(length: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert tlv.encode_length(length) == raw
    assert tlv.decode_length(raw) == (length, len(raw))


@pytest.mark.parametrize(
    ("tag", "encoded"),
    [(0x5A, "5A"), (0x9F36, "9F36"), (0x5F2D, "5F2D"), (0xBF0C, "BF0C"), (0x9F8101, "9F8101")],
)
def test_tag_encoding(tag: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert tlv.tag_bytes(tag) == raw
    assert tlv.decode_tag(raw) == (tag, len(raw))


@pytest.mark.parametrize("tag", [0, -1, 0x9F, 0x5A5A, 0x9F8181, 0x1F818181, 0x9F81818101, True])
def test_invalid_tags_cannot_be_encoded(tag: int) -> None:
    with pytest.raises(LocalProtocolError):
        tlv.encode(tag, b"")


@pytest.mark.parametrize(
    ("hexdata", "why"),
    [
        ("9F", "truncated multi-byte tag"),
        ("9F8181818101", "tag longer"),
        ("5A", "truncated length"),
        ("5A80", "indefinite"),
        ("5A8501000000000000", "too long"),
        ("5A8203", "truncated long-form"),
        ("5A03AABB", "runs past"),
        ("5A817F" + "00" * 0x7F, "non-minimal"),
        ("5A820080" + "00" * 0x80, "non-minimal"),
        ("000100", "invalid tag"),
    ],
)
def test_malformed_raises_tlv_error(hexdata: str, why: str) -> None:
    with pytest.raises(TlvError, match=why):
        tlv.decode(bytes.fromhex(hexdata))


def test_empty() -> None:
    assert tlv.decode(b"") == []
    with pytest.raises(TlvError, match="truncated tag"):
        tlv.decode_one(b"")


def test_lenient_accepts_non_minimal_length() -> None:
    data = bytes.fromhex("5A8102AABB")
    assert tlv.decode(data, strict=False) == [Tlv(0x5A, b"\xaa\xbb")]


def test_padding_skipped_only_when_asked() -> None:
    data = bytes.fromhex("00005A01AA00FF9F36020001")
    assert tlv.decode(data, skip_padding=True) == [Tlv(0x5A, b"\xaa"), Tlv(0x9F36, b"\x00\x01")]
    with pytest.raises(TlvError):
        tlv.decode(data)


def test_decode_one_returns_rest() -> None:
    item, rest = tlv.decode_one(bytes.fromhex("5A01AA9F3602000F9000"))
    assert item == Tlv(0x5A, b"\xaa")
    assert rest == bytes.fromhex("9F3602000F9000")
    item2, rest2 = tlv.decode_one(rest)
    assert item2 == Tlv(0x9F36, b"\x00\x0f")
    assert rest2 == b"\x90\x00"


def test_nesting_bound() -> None:
    inner = tlv.encode(0x5A, b"\x01")
    deep = inner
    for _ in range(tlv.MAX_DEPTH + 3):
        deep = tlv.encode(0xA5, deep)
    with pytest.raises(TlvError, match="nesting"):
        tlv.find(deep, 0x9F36)
    shallow = inner
    for _ in range(tlv.MAX_DEPTH - 1):
        shallow = tlv.encode(0xA5, shallow)
    assert tlv.find_value(shallow, 0x5A) == b"\x01"


# ---- property tests -----------------------------------------------------------------------------


@st.composite
def tags(draw: st.DrawFn) -> int:
    # primitive tags only (bit 6 clear), so random values are never parsed as children
    first = draw(st.integers(0, 0xFF).filter(lambda b: b != 0 and not b & 0x20))
    if first & 0x1F != 0x1F:
        return first
    n_more = draw(st.integers(1, 3))
    more = [draw(st.integers(0x80, 0xFF)) for _ in range(n_more - 1)]
    more.append(draw(st.integers(0x00, 0x7F)))
    return int.from_bytes(bytes([first, *more]), "big")


primitive_objects = st.tuples(tags(), st.binary(max_size=300))


@settings(max_examples=200)
@given(st.lists(primitive_objects, max_size=6))
def test_round_trip(items: list[tuple[int, bytes]]) -> None:
    encoded = tlv.encode_many(items)
    decoded = tlv.decode(encoded)
    assert [(t.tag, t.value) for t in decoded] == items
    assert b"".join(t.to_bytes() for t in decoded) == encoded


@settings(max_examples=200)
@given(st.lists(primitive_objects, max_size=4), st.sampled_from([0x70, 0x77, 0xA5, 0xBF0C]))
def test_constructed_round_trip(items: list[tuple[int, bytes]], outer: int) -> None:
    encoded = tlv.encode(outer, tlv.encode_many(items))
    [obj] = tlv.decode(encoded)
    children = list(tlv.decode(obj.value))
    assert [(c.tag, c.value) for c in children] == items
    for tag, _ in items:
        assert tlv.find_value(encoded, tag) == next(v for t, v in items if t == tag)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_hostile_bytes_only_raise_tlv_error(data: bytes) -> None:
    for strict in (True, False):
        for pad in (True, False):
            try:
                objs = tlv.decode(data, skip_padding=pad, strict=strict)
            except TlvError:
                continue
            # Anything accepted can be searched and walked without another exception type.
            try:
                list(tlv.walk(objs))
                tlv.find(objs, 0x9F36)
            except TlvError:
                pass


@settings(max_examples=200)
@given(st.binary(max_size=64), st.integers(0, 70))
def test_decode_one_hostile(data: bytes, offset: int) -> None:
    try:
        item, rest = tlv.decode_one(data, offset)
    except TlvError:
        return
    # strict mode accepts only minimal encodings, so re-encoding gives the same bytes back
    assert item.to_bytes() + rest == data[offset:]
