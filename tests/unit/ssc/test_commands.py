"""SSSE command catalog (agent/ssc/commands.py) against the byte strings of the references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card.apdu import CommandApdu
from agent.errors import LocalProtocolError
from agent.ssc import commands as c


def hx(cmd: CommandApdu) -> str:
    return cmd.to_bytes().hex().upper()


def test_select_and_read_vectors() -> None:
    # ssc-card-protocol.md §1.1 and the READ RECORD table of §1.3
    assert hx(c.select_ssse()) == "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00"
    assert hx(c.select_ef(c.EF05)) == "00A4020002EF05"
    expected = {
        c.CARD_ID_CODE: "00B2010412",
        c.CARD_TYPE: "00B2020403",
        c.SPEC_VERSION: "00B2030406",
        c.ISSUE_DATE: "00B2050406",
        c.EXPIRY_DATE: "00B2060406",
        c.CARD_NUMBER: "00B207040B",
        c.SSN: "00B2080414",
        c.NAME: "00B2090420",
        c.NAME_EXT: "00B24E0416",
        c.GENDER: "00B20A0403",
        c.NATION: "00B20B0403",
        c.BIRTHPLACE: "00B20C0405",
        c.BIRTH_DATE: "00B20D0406",
    }
    for spec, apdu in expected.items():
        assert hx(spec.read()) == apdu, spec.name


def test_plain_commands() -> None:
    assert hx(c.get_challenge(4)) == "0084000004"
    assert hx(c.get_challenge(8)) == "0084000008"
    assert hx(c.pin_tries()) == "00200000"
    assert hx(c.verify_pin("123456")) == "0020000003123456"
    assert hx(c.verify_pin("12345")) == "002000000312345F"
    assert hx(c.change_pin("123456", "654321")) == "805E010007123456FF654321"
    assert hx(c.external_authenticate(0x0A, bytes(8))) == "008200" + "0A08" + "00" * 8
    with pytest.raises(LocalProtocolError):
        c.external_authenticate(0x0A, bytes(7))
    with pytest.raises(LocalProtocolError):
        c.get_challenge(5)


def test_secure_messaging_layout() -> None:
    # §3.1 step 4: the MAC input of a block is 841E000004 (header with Lc counting the MAC)
    block = c.app_block(0x00)
    assert block.mac_input.hex().upper() == "841E000004"
    assert hx(block.with_mac(bytes.fromhex("40D016F4AABBCCDD"))) == "841E00000440D016F4"
    assert block.purpose == "stk"
    assert c.app_block(0x01).mac_input.hex().upper() == "841E000104"
    assert c.app_unblock().mac_input.hex().upper() == "8418000004"
    assert c.card_block().mac_input.hex().upper() == "8416000004"
    upd = c.update_record(0x0F, c.SFI_EF05, b"\x01")
    assert upd.mac_input.hex().upper() == "04DC0F2C07" + "0F0101"
    assert hx(upd.with_mac(b"\x01\x02\x03\x04")) == "04DC0F2C070F010101020304"
    reset = c.reset_pin("123456")
    assert (reset.purpose, reset.mac_input.hex().upper()) == ("rpk", "805E000007123456")
    unblock = c.unblock_pin(bytes(8))
    assert (unblock.purpose, unblock.mac_input.hex().upper()) == ("puk", "842400000C" + "00" * 8)
    assert c.pin_block_plain("123456") == bytes.fromhex("03123456")
    with pytest.raises(LocalProtocolError):
        block.with_mac(b"\x01\x02\x03")
    with pytest.raises(LocalProtocolError):
        c.unblock_pin(bytes(7))


@pytest.mark.parametrize("pin", ["", "123", "1234567890123", "12a4", "１２３４", " 1234", None])
def test_bad_pins(pin: object) -> None:
    with pytest.raises(LocalProtocolError):
        c.pin_bcd(pin)  # type: ignore[arg-type]


@settings(max_examples=100)
@given(st.from_regex(r"[0-9]{4,12}", fullmatch=True))
def test_pin_bcd_round_trip(pin: str) -> None:
    raw = c.pin_bcd(pin)
    assert len(raw) == (len(pin) + 1) // 2
    assert raw.hex().upper().rstrip("F") == pin
