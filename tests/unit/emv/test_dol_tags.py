"""DOL handling (agent.emv.dol) and the tag dictionary / masking (agent.emv.tags)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.emv.dol import amount_bcd, build_dol_data, default_terminal_data, fit, parse_dol
from agent.emv.tags import display_value, is_sensitive, mask_id, mask_name, mask_pan, tag_info
from agent.errors import CardProtocolError, LocalProtocolError
from agent.sim.pboc import CDOL1, PDOL


def test_parse_pdol() -> None:
    assert parse_dol(PDOL) == [
        (0x9F66, 4),
        (0x9F02, 6),
        (0x9F1A, 2),
        (0x5F2A, 2),
        (0x9A, 3),
        (0x9C, 1),
        (0x9F37, 4),
    ]
    assert sum(n for _, n in parse_dol(CDOL1)) == 29
    assert parse_dol(b"") == []


@pytest.mark.parametrize("hexdol", ["9F", "9F02", "9F0281", "9F027F9F037F9F047F"])
def test_malformed_dol(hexdol: str) -> None:
    with pytest.raises(CardProtocolError):
        parse_dol(bytes.fromhex(hexdol))


def test_fit_rules() -> None:
    # numeric: right-aligned
    assert fit(0x9F02, b"\x01\x00", 6) == bytes.fromhex("000000000100")
    assert fit(0x9F02, bytes.fromhex("000000000100"), 2) == b"\x01\x00"
    # binary: left-aligned
    assert fit(0x9F37, b"\xaa", 4) == b"\xaa\x00\x00\x00"
    assert fit(0x9F37, b"\xaa\xbb\xcc\xdd", 2) == b"\xaa\xbb"
    # unknown tag: zeros
    assert build_dol_data(bytes.fromhex("DF0103"), {}) == bytes(3)


def test_default_terminal_data() -> None:
    now = datetime(2025, 3, 9, 14, 5, 6)
    t = default_terminal_data(now, unpredictable=b"\x01\x02\x03\x04")
    assert t[0x9F1A] == t[0x5F2A] == b"\x01\x56"
    assert t[0x9A] == bytes.fromhex("250309")
    assert t[0x9F21] == bytes.fromhex("140506")
    assert t[0x9F37] == b"\x01\x02\x03\x04"
    data = build_dol_data(PDOL, t)
    assert len(data) == 22
    assert data[10:14] == b"\x01\x56\x01\x56"
    assert len(default_terminal_data()[0x9F37]) == 4
    assert amount_bcd(12345) == bytes.fromhex("000000012345")
    with pytest.raises(LocalProtocolError):
        amount_bcd(-1)


def test_masking() -> None:
    assert mask_pan("6217001234567890123") == "621700*********0123"
    assert mask_pan("1234") == "****"
    assert mask_id("110101199003071234") == "110101********1234"
    assert mask_name("张三丰") == "张**"
    assert mask_name("") == ""
    assert is_sensitive(0x5A)
    assert is_sensitive(0x57)
    assert is_sensitive(0x5F20)
    assert is_sensitive(0x9F61)
    assert not is_sensitive(0x9F36)
    assert tag_info(0xDF01).name == "tag DF01"
    pan = bytes.fromhex("6217001234567890123F")
    assert display_value(0x5A, pan) == "621700*********0123"
    assert display_value(0x5A, pan, show_pii=True) == pan.hex().upper()
    t2 = bytes.fromhex("6217001234567890123D31122201")
    assert display_value(0x57, t2) == "621700*********0123D…"
    assert display_value(0x5F20, b"ZHANG") == "<5 bytes masked>"
    assert display_value(0x9F36, b"\x00\x01") == "0001"


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_hostile_dol_only_protocol_error(dol: bytes) -> None:
    try:
        entries = parse_dol(dol)
    except CardProtocolError:
        return
    data = build_dol_data(entries, default_terminal_data())
    assert len(data) == sum(n for _, n in entries) <= 252
