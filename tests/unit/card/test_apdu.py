"""APDU codec (agent.card.apdu): the four cases, short and extended, round trips, hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.errors import ApduEncodingError, CardProtocolError


@pytest.mark.parametrize(
    ("apdu", "encoded", "case"),
    [
        (CommandApdu(0x00, 0xA4, 0x04, 0x00), "00A40400", 1),
        (CommandApdu(0x00, 0x84, 0x00, 0x00, ne=4), "0084000004", 2),
        (CommandApdu(0x00, 0xB2, 0x01, 0x0C, ne=256), "00B2010C00", 2),
        (CommandApdu(0x84, 0x1E, 0x00, 0x00, b"\x01\x02\x03\x04"), "841E00000401020304", 3),
        (CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0", 256), "00A4040001A000", 4),
        (CommandApdu(0x00, 0xB0, 0x00, 0x00, ne=65536), "00B00000000000", 2),
        (CommandApdu(0x00, 0xB0, 0x00, 0x00, ne=257), "00B00000000101", 2),
        (CommandApdu(0x00, 0xB0, 0x00, 0x00, ne=4, extended=True), "00B00000000004", 2),
        (CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\xaa", extended=True), "00D60000000001AA", 3),
        (
            CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\xaa", 65536, extended=True),
            "00D60000000001AA0000",
            4,
        ),
    ],
)
def test_known_encodings(apdu: CommandApdu, encoded: str, case: int) -> None:
    raw = bytes.fromhex(encoded.replace(" ", ""))
    assert apdu.to_bytes() == raw
    assert bytes(apdu) == raw
    assert apdu.case == case
    back = CommandApdu.from_bytes(raw)
    assert back.to_bytes() == raw
    assert back.case == case


def test_long_data_forces_extended() -> None:
    apdu = CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01" * 300, 16)
    raw = apdu.to_bytes()
    assert raw[:7] == bytes.fromhex("00D6000000012C")
    assert raw[-2:] == b"\x00\x10"
    back = CommandApdu.from_bytes(raw)
    assert back.data == apdu.data
    assert back.ne == 16
    assert back.extended


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 256, "ins": 0, "p1": 0, "p2": 0},
        {"cla": 0, "ins": -1, "p1": 0, "p2": 0},
        {"cla": 0, "ins": 0, "p1": 0, "p2": 0, "ne": 0},
        {"cla": 0, "ins": 0, "p1": 0, "p2": 0, "ne": 65537},
        {"cla": 0, "ins": 0, "p1": 0, "p2": 0, "data": b"\x00" * 65536},
        {"cla": 0, "ins": 0, "p1": 0, "p2": 0, "data": "text"},
    ],
)
def test_encoding_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ApduEncodingError):
        CommandApdu(**kwargs)  # type: ignore[arg-type]


def test_with_ne() -> None:
    apdu = CommandApdu(0x00, 0xB2, 0x01, 0x0C)
    assert apdu.with_ne(0x12).to_bytes() == bytes.fromhex("00B2010C12")
    assert apdu.with_ne(None) == apdu


@pytest.mark.parametrize(
    "hexdata",
    ["", "00", "00A404", "00A4040002A0", "00A4040002A0000000", "00A404000000", "00A4040000000200"],
)
def test_malformed_raise_card_protocol_error(hexdata: str) -> None:
    with pytest.raises(CardProtocolError):
        CommandApdu.from_bytes(bytes.fromhex(hexdata))


def test_response_apdu() -> None:
    r = ResponseApdu.from_bytes(bytes.fromhex("6F009000"))
    assert r.data == b"\x6f\x00"
    assert (r.sw, r.sw1, r.sw2, r.ok) == (0x9000, 0x90, 0x00, True)
    assert bytes(r) == bytes.fromhex("6F009000")
    assert not ResponseApdu.from_bytes(b"\x6a\x82").ok
    for bad in (b"", b"\x90"):
        with pytest.raises(CardProtocolError):
            ResponseApdu.from_bytes(bad)


bytes_ = st.integers(0, 255)


@st.composite
def commands(draw: st.DrawFn) -> CommandApdu:
    case = draw(st.integers(1, 4))
    extended = draw(st.booleans())
    data_max = 400 if extended else 255
    ne_max = 65536 if extended else 256
    data = draw(st.binary(min_size=1, max_size=data_max)) if case in (3, 4) else b""
    ne = draw(st.integers(1, ne_max)) if case in (2, 4) else None
    return CommandApdu(
        draw(bytes_), draw(bytes_), draw(bytes_), draw(bytes_), data, ne, extended=extended
    )


@settings(max_examples=200)
@given(commands())
def test_round_trip_all_cases(apdu: CommandApdu) -> None:
    raw = apdu.to_bytes()
    back = CommandApdu.from_bytes(raw)
    assert (back.cla, back.ins, back.p1, back.p2) == (apdu.cla, apdu.ins, apdu.p1, apdu.p2)
    assert back.data == apdu.data
    assert back.ne == apdu.ne
    assert back.case == apdu.case
    if apdu.case != 1:  # case 1 has no length field, so nothing says "extended"
        assert back.is_extended == apdu.is_extended
    assert back.to_bytes() == raw


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_hostile_bytes(raw: bytes) -> None:
    try:
        apdu = CommandApdu.from_bytes(raw)
    except CardProtocolError:
        return
    # whatever decodes re-encodes to the same bytes (one encoding per command)
    assert apdu.to_bytes() == raw


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_response_round_trip(raw: bytes) -> None:
    try:
        r = ResponseApdu.from_bytes(raw)
    except CardProtocolError:
        assert len(raw) < 2
        return
    assert r.to_bytes() == raw
