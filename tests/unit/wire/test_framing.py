"""Length-prefixed API frames (DESIGN §6): fragmentation, limits, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import FrameTooLargeError, LocalProtocolError, WireError
from agent.wire.codec import ApiRequest
from agent.wire.framing import NEED_DATA, FrameDecoder, encode_frame


def _drain(dec: FrameDecoder) -> list[bytes]:
    out = []
    while (frame := dec.next_frame()) is not NEED_DATA:
        assert isinstance(frame, bytes)
        out.append(frame)
    return out


def test_encode_frame() -> None:
    assert encode_frame(b"\xa0") == b"\x00\x00\x00\x01\xa0"
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 11, max_frame=10)


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=8), st.data())
@settings(max_examples=200)
def test_any_fragmentation_yields_the_same_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder(max_frame=64)
    got: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        dec.receive_data(stream[last:cut])
        got += _drain(dec)
        last = cut
    assert got == frames
    assert dec.buffered == 0


def test_byte_at_a_time() -> None:
    payload = ApiRequest(1, "card.read", {"reader": "r"}).to_cbor()
    stream = encode_frame(payload) * 3
    dec = FrameDecoder(max_frame=1024)
    got = []
    for i in range(len(stream)):
        dec.receive_data(stream[i : i + 1])
        got += _drain(dec)
        if i < 3:
            assert dec.next_frame() is NEED_DATA
    assert got == [payload] * 3
    assert ApiRequest.from_cbor(got[0]).op == "card.read"


def test_oversize_is_refused_before_the_body_is_buffered() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.receive_data(b"\x00\x00")
    assert dec.next_frame() is NEED_DATA
    with pytest.raises(FrameTooLargeError):
        dec.receive_data(b"\x00\x65")  # 101
    assert dec.buffered == 0
    with pytest.raises(FrameTooLargeError):  # the stream is out of sync for good
        dec.receive_data(b"\xa0")
    with pytest.raises(FrameTooLargeError):
        dec.next_frame()


def test_huge_declared_length() -> None:
    dec = FrameDecoder(max_frame=65536)
    with pytest.raises(FrameTooLargeError):
        dec.receive_data(b"\xff\xff\xff\xff" + b"x" * 10)
    assert dec.buffered == 0


def test_exact_maximum_is_accepted() -> None:
    dec = FrameDecoder(max_frame=5)
    dec.receive_data(encode_frame(b"12345"))
    assert dec.next_frame() == b"12345"


def test_zero_length_is_an_error() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(WireError, match="empty"):
        dec.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(WireError):
        dec.next_frame()


def test_oversize_after_a_good_frame() -> None:
    dec = FrameDecoder(max_frame=10)
    dec.receive_data(encode_frame(b"ok") + b"\x00\x00\x01\x00")
    assert dec.next_frame() == b"ok"
    with pytest.raises(FrameTooLargeError):
        dec.next_frame()


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_garbage_only_raises_wire_errors(raw: bytes) -> None:
    dec = FrameDecoder(max_frame=64)
    try:
        dec.receive_data(raw)
        for frame in _drain(dec):
            assert 1 <= len(frame) <= 64
            with contextlib.suppress(WireError):
                ApiRequest.from_cbor(frame)
    except WireError:
        pass


def test_bad_max_frame() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(0)
