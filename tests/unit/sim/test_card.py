"""Virtual SSC card: every status-word path of CARD-PROTOCOL §1, secure messaging, PIN, T=0,
session reset, ATR/FCI, hosted applets. Driven by raw bytes; MACs computed from the profile's
test master keys with agent.psam.crypto."""

from __future__ import annotations

import pytest

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.card.atr import parse_atr
from agent.card.t0 import transceive
from agent.sim.card import SSSE_AID
from tests.unit.sim._support import (
    PROFILE,
    SELECT_SSSE,
    Terminal,
    card_key,
    make_card,
    pin_bcd,
)

ALGS = ["des", "sm4"]


def _selected(algorithm: str = "des", **kw: object) -> Terminal:
    t = Terminal(make_card(algorithm, **kw))  # type: ignore[arg-type]
    assert t.select_ssse() == 0x9000
    return t


# --- secure messaging -----------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGS)
@pytest.mark.parametrize("challenge_len", [4, 8])
def test_correct_mac_changes_state(algorithm: str, challenge_len: int) -> None:
    t = _selected(algorithm)
    sw = t.sm(0x84, 0x1E, 0x00, PROFILE.lock_p2_temporary, challenge_len=challenge_len)
    assert sw == 0x9000
    assert t.card.state == "temp_locked"


@pytest.mark.parametrize("algorithm", ALGS)
def test_wrong_mac_gives_6988_and_changes_nothing(algorithm: str) -> None:
    t = _selected(algorithm)
    before = t.card.to_state()
    for ins, p2 in ((0x1E, 0x00), (0x1E, 0x01), (0x16, 0x00), (0x18, 0x00)):
        assert t.sm(0x84, ins, 0x00, p2, corrupt=True) == 0x6988
    tag = PROFILE.activation.record_tag
    assert t.sm(0x04, 0xDC, tag, 0x2C, bytes((tag, 1, 0)), corrupt=True) == 0x6988
    assert t.sm(0x80, 0x5E, 0x00, 0x00, pin_bcd("999999"), "rpk", corrupt=True) == 0x6988
    assert t.card.to_state() == before
    assert t.card.state == "active"


@pytest.mark.parametrize("algorithm", ALGS)
def test_mac_with_wrong_key_purpose_is_rejected(algorithm: str) -> None:
    t = _selected(algorithm)
    assert t.sm(0x84, 0x1E, 0x00, 0x00, purpose="rpk") == 0x6988
    assert t.card.state == "active"


def test_no_challenge_gives_6984() -> None:
    t = _selected()
    apdu = t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", None)
    assert t.sw(apdu) == 0x6984
    assert t.card.state == "active"


@pytest.mark.parametrize("algorithm", ALGS)
def test_replayed_challenge_gives_6984(algorithm: str) -> None:
    t = _selected(algorithm)
    ch = t.challenge()
    lock = t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", ch)
    assert t.sw(lock) == 0x9000
    assert t.app_unblock() == 0x9000
    assert t.sw(lock) == 0x6984  # the same bytes again: the challenge was single use
    assert t.card.state == "active"


def test_any_command_consumes_the_challenge() -> None:
    t = _selected()
    ch = t.challenge()
    assert t.sw("00200000") == 0x63C6
    assert t.sw(t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", ch)) == 0x6984


def test_wrong_mac_consumes_the_challenge() -> None:
    t = _selected()
    ch = t.challenge()
    assert t.sw(t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", ch, corrupt=True)) == 0x6988
    assert t.sw(t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", ch)) == 0x6984


def test_challenges_are_fresh() -> None:
    t = _selected()
    seen = {t.challenge(8) for _ in range(50)}
    assert len(seen) == 50


def test_mac_reference_vector_from_contract_layout() -> None:
    """The MAC input is CLA INS P1 P2 Lc ‖ data, IV = challenge ‖ 0…, leftmost 4 bytes."""
    card = make_card("des")
    card.process(SELECT_SSSE)
    card.process(bytes.fromhex("0084000004"))
    # no access to the challenge from outside: a deterministic card checks the layout instead
    fixed = make_card("des")
    fixed._random = lambda n: bytes(range(1, n + 1))  # type: ignore[method-assign]
    fixed.process(SELECT_SSSE)
    assert fixed.process(bytes.fromhex("0084000004")) == bytes.fromhex("010203049000")
    from agent.psam import crypto

    key = card_key(fixed, "stk")
    mac = crypto.retail_mac(key, bytes.fromhex("841E000004"), bytes.fromhex("0102030400000000"))
    assert fixed.process(bytes.fromhex("841E000004") + mac[:4]) == b"\x90\x00"
    assert fixed.state == "temp_locked"


# --- activation -----------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGS)
def test_activation_by_update_record(algorithm: str) -> None:
    t = Terminal(make_card(algorithm, state="not_activated"))
    t.select_ssse()
    assert t.card.state == "not_activated"
    assert t.send("00B20F2C03") == (b"\x0f\x01\x00", 0x9000)
    assert t.activate() == 0x9000
    assert t.card.state == "active"
    assert t.send("00B20F2C03") == (b"\x0f\x01\x01", 0x9000)


def test_update_record_errors() -> None:
    t = _selected()
    tag = PROFILE.activation.record_tag
    assert t.sm(0x04, 0xDC, tag, 0x2C, bytes((tag, 2, 1, 1))) == 0x6700  # length differs
    assert t.sm(0x04, 0xDC, tag, 0x2C, bytes((tag + 1, 1, 1))) == 0x6A80  # tag ≠ P1
    assert t.sm(0x04, 0xDC, 0x55, 0x2C, bytes((0x55, 1, 1))) == 0x6A83  # no such record
    assert t.sm(0x04, 0xDC, tag, 0x7C, bytes((tag, 1, 1))) == 0x6A82  # no SFI 15
    assert t.sm(0x04, 0xDC, tag, 0x2E, bytes((tag, 1, 1))) == 0x6A86  # bad P2 mode
    assert t.sm(0x04, 0xDC, tag, 0x04, bytes((tag, 1, 1))) == 0x6986  # no current EF
    assert t.sw("04DC0F2C03000000") == 0x6700  # shorter than TLV + MAC
    assert t.sm(0x04, 0xDC, 0x08, 0x3C, bytes((0x08, 1, 1))) == 0x6981  # EF07 transparent


# --- external authentication ----------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGS)
def test_ext_auth_unlocks_ef06_on_3x_cards(algorithm: str) -> None:
    t = _selected(algorithm, long_name=True)
    assert t.sw("00A4020002EF06") == 0x9000
    assert t.sw("00B2080414") == 0x6982
    assert t.ext_auth() == 0x9000
    data, sw = t.send("00B2080414")
    assert sw == 0x9000
    assert data[:2] == b"\x08\x12"
    assert data[2:].decode("ascii") == t.card.ssn
    name, sw1 = t.send("00B2090420")
    ext, sw2 = t.send("00B24E0416")
    assert (sw1, sw2) == (0x9000, 0x9000)
    assert len(t.card.name) > 15
    assert (name[2:] + ext[2:]).rstrip(b"\x00").decode("gbk") == t.card.name


def test_ef06_free_on_2x_cards_but_photo_still_needs_auth() -> None:
    t = _selected(spec_version="2.00")
    assert t.send("00B2030406") == (b"", 0x6986)  # no current EF after SELECT SSSE
    assert t.sw("00B2083400") == 0x9000
    assert t.sw("00B0880000") == 0x6982
    assert t.sw("00B0870000") == 0x6982
    assert t.ext_auth() == 0x9000
    data, sw = t.send("00B0880010")
    assert sw == 0x9000
    assert len(data) == 16


@pytest.mark.parametrize("algorithm", ALGS)
def test_ext_auth_failures_count_down_and_block(algorithm: str) -> None:
    t = _selected(algorithm)
    assert [t.ext_auth(corrupt=True) for _ in range(5)] == [0x63C4, 0x63C3, 0x63C2, 0x63C1, 0x6983]
    assert t.ext_auth() == 0x6983
    assert t.card.ext_auth_tries_left == 0


def test_ext_auth_success_restores_tries() -> None:
    t = _selected()
    assert t.ext_auth(corrupt=True) == 0x63C4
    assert t.ext_auth() == 0x9000
    assert t.card.ext_auth_tries_left == 5


def test_ext_auth_error_paths() -> None:
    t = _selected()
    key_id = PROFILE.key("rkssse").ext_auth_key_id
    assert t.sw(bytes((0x00, 0x82, 0x00, key_id, 8)) + bytes(8)) == 0x6984  # no challenge
    t.challenge(8)
    assert t.sw(bytes((0x00, 0x82, 0x00, key_id ^ 1, 8)) + bytes(8)) == 0x6A88  # wrong key id
    t.challenge(8)
    assert t.sw(bytes((0x00, 0x82, 0x00, key_id, 4)) + bytes(4)) == 0x6700  # not one block
    assert t.sw(bytes((0x00, 0x82, 0x01, key_id, 8)) + bytes(8)) == 0x6A86


def test_sm4_ext_auth_uses_16_byte_blocks() -> None:
    t = _selected("sm4")
    key_id = PROFILE.key("rkssse").ext_auth_key_id
    t.challenge(8)
    assert t.sw(bytes((0x00, 0x82, 0x00, key_id, 8)) + bytes(8)) == 0x6700
    assert t.ext_auth() == 0x9000


# --- PIN -------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGS)
def test_pin_countdown_then_blocked(algorithm: str) -> None:
    t = _selected(algorithm)
    assert t.sw("00200000") == 0x63C6
    sws = [t.verify("000000") for _ in range(6)]
    assert sws == [0x63C5, 0x63C4, 0x63C3, 0x63C2, 0x63C1, 0x6983]
    assert t.card.pin_tries_left == 0
    assert t.verify(PROFILE.initial_pin) == 0x6983  # the right PIN no longer helps
    assert t.sw("00200000") == 0x6983
    assert t.change_pin(PROFILE.initial_pin, "111111") == 0x6983


def test_pin_tries_query_does_not_consume() -> None:
    t = _selected()
    assert t.verify("999999") == 0x63C5
    assert [t.sw("00200000") for _ in range(3)] == [0x63C5] * 3
    assert t.verify(PROFILE.initial_pin) == 0x9000
    assert t.sw("00200000") == 0x63C6  # counter restored


@pytest.mark.parametrize("algorithm", ALGS)
def test_reset_pin_unblocks(algorithm: str) -> None:
    t = _selected(algorithm)
    for _ in range(6):
        t.verify("000000")
    assert t.reset_pin("24680") == 0x9000
    assert t.card.pin_tries_left == PROFILE.pin_max_tries
    assert t.verify("24680") == 0x9000


def test_reset_pin_without_challenge_uses_zero_iv() -> None:
    t = _selected()
    assert t.sw(t.sm_apdu(0x80, 0x5E, 0x00, 0x00, pin_bcd("8642"), "rpk", None)) == 0x9000
    assert t.card.pin == "8642"


@pytest.mark.parametrize("algorithm", ALGS)
def test_unblock_pin_sets_pin_and_counter(algorithm: str) -> None:
    t = _selected(algorithm)
    for _ in range(6):
        t.verify("000000")
    assert t.unblock_pin("13579246") == 0x9000
    assert t.card.pin == "13579246"
    assert t.verify("13579246") == 0x9000


def test_unblock_pin_errors() -> None:
    t = _selected()
    ch = t.challenge()
    good = t.unblock_pin_apdu("123456", ch)
    assert t.sw(good[:-1] + bytes((good[-1] ^ 1,))) == 0x6988
    assert t.sw(good) == 0x6984  # challenge consumed by the failed attempt
    assert t.sw("842400000A" + "00" * 10) == 0x6700  # 6 bytes is not a whole block
    assert t.sw("8424000104" + "00" * 4) == 0x6A86
    # a well-MAC'd block whose plaintext is not len ‖ PIN ‖ 80…: 6A80
    from agent.psam import crypto

    ch = t.challenge()
    junk = crypto.ecb_encrypt(t.alg, card_key(t.card, "puk"), bytes(8))
    assert t.sw(t.sm_apdu(0x84, 0x24, 0x00, 0x00, junk, "puk", ch)) == 0x6A80
    assert t.card.pin == PROFILE.initial_pin


def test_change_pin() -> None:
    t = _selected()
    assert t.change_pin("000000", "111111") == 0x63C5
    assert t.change_pin(PROFILE.initial_pin, "12") == 0x6A80  # too short a new PIN
    assert t.change_pin(PROFILE.initial_pin, "7654321") == 0x9000
    assert t.card.pin == "7654321"
    assert t.card.pin_tries_left == 6
    assert t.sw("805E010003123456") == 0x6A80  # no FF separator
    assert t.sw("805E010000") == 0x6700  # no data at all
    assert t.sw("805E0200021234") == 0x6A86


def test_verify_errors() -> None:
    t = _selected()
    assert t.sw("00200001021234") == 0x6A86
    assert t.sw("0020000007" + "12" * 7) == 0x6700
    assert t.sw("00200000021F34") == 0x63C5  # malformed BCD is a wrong PIN


def test_pin_operations_need_ssse_selected() -> None:
    t = Terminal(make_card())
    assert t.verify(PROFILE.initial_pin) == 0x6985
    assert t.sw("00200000") == 0x6985


# --- READ RECORD / READ BINARY / SELECT --------------------------------------------------------
def test_wrong_le_gives_6cxx_then_exact_le_works() -> None:
    t = _selected()
    t.sw("00A4020002EF05")
    assert t.send("00B2010410") == (b"", 0x6C12)
    data, sw = t.send("00B2010412")
    assert sw == 0x9000
    assert data == b"\x01\x10" + t.card.card_id_code
    assert t.send("00B2010400")[0] == data
    assert t.send("00B20104") == (b"", 0x6C12)  # no Le at all


def test_read_record_errors() -> None:
    t = _selected()
    assert t.sw("00B2010400") == 0x6986  # no current EF
    assert t.sw("00B2017C00") == 0x6A82  # SFI 15 does not exist
    t.sw("00A4020002EF05")
    assert t.sw("00B2550400") == 0x6A83
    assert t.sw("00B2000400") == 0x6A86
    assert t.sw("00B2010500") == 0x6A86
    assert t.sw("00B201040112") == 0x6700  # data in a case-2 command
    assert t.sw("00B2013C00") == 0x6981  # EF07 is transparent
    assert t.sw("00B00000FF") == 0x6981  # EF05 is not


def test_read_by_record_identifier_p2_00() -> None:
    t = _selected()
    t.sw("00A4020002EF05")
    assert t.send("00B2070000")[0][2:].decode() == t.card.card_number


def test_read_binary_paths() -> None:
    t = _selected()
    t.ext_auth()
    whole, sw = t.send("00B0880000")
    assert sw == 0x9000
    assert len(whole) == 256
    assert t.send("00B0000010") == (whole[:16], 0x9000)  # EF08 is now the current EF
    assert t.sw("00B00FFF10") == 0x6B00
    assert t.sw("00B0A80000") == 0x6A86
    assert t.sw("00B08800") == 0x6700
    total = len(t.card.to_state()["files"]["EF08"]) // 2  # type: ignore[index]
    assert t.send(f"00B00{(total - 3) >> 8:01X}{(total - 3) & 0xFF:02X}05") == (b"", 0x6C03)


def test_select_paths() -> None:
    t = Terminal(make_card())
    assert t.sw("00A4020002EF05") == 0x6A82  # MF holds no EF05
    assert t.sw("00A40000023F00") == 0x9000
    assert t.sw("00A4") == 0x6700
    assert t.sw("00A40400") == 0x6700  # a DF name is required
    assert t.sw("00A40400117378312E73682EC9E7BBE1B1A3D5CF0011") == 0x6700  # 17-byte name
    assert t.sw("00A4040105" + SSSE_AID[:5].hex()) == 0x6A86
    assert t.sw("00A4050002EF05") == 0x6A86
    assert t.sw("00A40402" + "0F" + SSSE_AID.hex()) == 0x6A82  # no next occurrence
    data, sw = t.send("00A4040C0F" + SSSE_AID.hex())
    assert (data, sw) == (b"", 0x9000)
    assert t.sw("00A4020002EF99") == 0x6A82
    assert t.sw("00A40200013F") == 0x6700
    assert t.sw("00A4020002EF06") == 0x9000
    assert t.sw("00A4010002DF03") == 0x9000
    assert t.card.selected == "DF03"
    assert t.sw("00A4000002DF04") == 0x9000  # sibling DF by FID
    assert t.sw("00A4030000") == 0x9000  # parent: the SSSE
    assert t.card.selected == "SSSE"
    assert t.sw("00A4030000") == 0x9000  # parent of the SSSE: MF
    assert t.card.selected == "MF"
    assert t.sw("00A4030000") == 0x6A82  # MF has no parent


@pytest.mark.parametrize(("algorithm", "indicator"), [("des", 0x01), ("sm4", 0x03)])
def test_fci_announces_algorithm(algorithm: str, indicator: int) -> None:
    t = Terminal(make_card(algorithm))
    fci, sw = t.send(SELECT_SSSE)
    assert sw == 0x9000
    prop = bytes((0x9F, 0x0C, 0x03, 0x86, 0x01, indicator))
    a5 = bytes((0xA5, len(prop))) + prop
    inner = bytes((0x84, 0x0F)) + SSSE_AID + a5
    assert fci == bytes((0x6F, len(inner))) + inner


def test_sub_application_records() -> None:
    t = Terminal(make_card())
    data, sw = t.send("00A4040006D15600000500")
    assert sw == 0x9000
    assert data[2:4] == b"\x84\x06"
    assert t.sw("00B2102C05") == 0x9000
    t.sw("00A4040006D15600000503")
    assert t.sw("00B2423400") == 0x6982  # DF04 EF06 needs the PIN verified


def test_class_and_instruction_errors() -> None:
    t = _selected()
    assert t.sw("00CA000000") == 0x6D00
    assert t.sw("80B2010400") == 0x6E00  # READ RECORD is CLA 00
    assert t.sw("001E000004") == 0x6E00  # APPLICATION BLOCK is CLA 84
    assert t.sw("FFB2010400") == 0x6E00
    assert t.sw("000F000000") == 0x6D00


def test_bad_p1p2_on_secure_messaging() -> None:
    t = _selected()
    assert t.sm(0x84, 0x1E, 0x01, 0x00) == 0x6A86
    assert t.sm(0x84, 0x1E, 0x00, 0x07) == 0x6A86
    assert t.sm(0x84, 0x18, 0x00, 0x01) == 0x6A86
    assert t.sm(0x84, 0x16, 0x01, 0x00) == 0x6A86
    assert t.sw("0084010004") == 0x6A86


def test_bad_lengths() -> None:
    t = _selected()
    assert t.sw("841E00000500000000" + "00") == 0x6700  # MAC field of 5 bytes
    assert t.sw("0084000005") == 0x6700  # challenge of 5 bytes
    assert t.sw("00840000") == 0x6700  # no Le
    assert t.sw("00B20104000012") == 0x6700  # extended Le
    assert t.sw("0084000004FF") == 0x6700  # Lc does not match
    assert t.sw("00") == 0x6700


# --- T=0 ---------------------------------------------------------------------------------------
def test_t0_get_response_flow() -> None:
    card = make_card(t0=True)
    assert card.process(SELECT_SSSE) == b"\x61\x1b"
    fci = card.process(bytes.fromhex("00C000001B"))
    assert fci[-2:] == b"\x90\x00"
    assert fci[:2] == b"\x6f\x19"
    assert card.process(bytes.fromhex("00C000001B")) == b"\x69\x85"  # nothing left


def test_t0_partial_and_wrong_length_get_response() -> None:
    card = make_card(t0=True)
    card.process(SELECT_SSSE)
    assert card.process(bytes.fromhex("00C0000020")) == b"\x6c\x1b"  # more than there is
    part = card.process(bytes.fromhex("00C0000010"))
    assert part[-2:] == b"\x61\x0b"
    rest = card.process(bytes.fromhex("00C000000B"))
    assert rest[-2:] == b"\x90\x00"
    assert part[:-2] + rest[:-2] == make_card(t0=False).process(SELECT_SSSE)[:-2]


def test_t0_pending_response_discarded_by_other_command() -> None:
    card = make_card(t0=True)
    card.process(SELECT_SSSE)
    card.process(bytes.fromhex("00200000"))
    assert card.process(bytes.fromhex("00C000001B")) == b"\x69\x85"


def test_t0_challenge_survives_its_get_response() -> None:
    t = Terminal(make_card(t0=True))
    t.select_ssse()
    assert t.raw("0084000004") == b"\x61\x04"
    assert t.app_block() == 0x9000  # challenge fetched by GET RESPONSE, then used
    assert t.card.state == "temp_locked"


def test_t0_read_record_via_host_t0_machine() -> None:
    """The agent's own T=0 helper (agent.card.t0) reads records from the card in T=0 mode."""

    class Channel:
        def __init__(self) -> None:
            self.card = make_card(t0=True)

        async def transmit(self, command: CommandApdu) -> ResponseApdu:
            return ResponseApdu.from_bytes(self.card.process(command.to_bytes()))

    import asyncio

    async def run() -> list[ResponseApdu]:
        ch = Channel()
        out = [await transceive(ch, CommandApdu(0, 0xA4, 4, 0, SSSE_AID, 256))]
        out.append(await transceive(ch, CommandApdu(0, 0xA4, 2, 0, b"\xef\x05")))
        out.append(await transceive(ch, CommandApdu(0, 0xB2, 7, 4, b"", 4)))  # wrong Le → 6C
        out.append(await transceive(ch, CommandApdu(0, 0x84, 0, 0, b"", 8)))
        return out

    select, ef, rec, chal = asyncio.run(run())
    assert select.sw == 0x9000
    assert select.data[:2] == b"\x6f\x19"
    assert ef.sw == 0x9000
    assert rec.sw == 0x9000
    assert rec.data[:2] == b"\x07\x09"
    assert chal.sw == 0x9000
    assert len(chal.data) == 8


# --- session reset -----------------------------------------------------------------------------
def test_pin_not_verified_after_reset() -> None:
    """jcardsim#67: a PIN must not stay verified across a reset."""
    t = _selected()
    assert t.verify(PROFILE.initial_pin) == 0x9000
    t.sw("00A4040006D15600000503")
    assert t.sw("00B2423400") == 0x9000
    assert t.card.pin_verified
    t.card.power_off()
    t.card.power_on()
    assert not t.card.pin_verified
    t.sw("00A4040006D15600000503")
    assert t.sw("00B2423400") == 0x6982


def test_reset_clears_ext_auth_challenge_and_selection() -> None:
    t = _selected()
    assert t.ext_auth() == 0x9000
    t.sw("00A4020002EF06")
    ch = t.challenge()
    t.card.power_on()
    assert t.card.selected == "MF"
    assert not t.card.ext_authenticated
    t.select_ssse()
    assert t.sw("00B2083400") == 0x6982
    assert t.sw(t.sm_apdu(0x84, 0x1E, 0x00, 0x00, b"", "stk", ch)) == 0x6984


def test_leaving_the_ssse_drops_security_status() -> None:
    t = _selected()
    assert t.ext_auth() == 0x9000
    t.sw("00A40000023F00")
    t.select_ssse()
    assert t.sw("00B2083400") == 0x6982


def test_persistent_state_survives_power_cycle() -> None:
    t = _selected()
    t.verify("000000")
    t.app_block()
    t.card.power_off()
    t.card.power_on()
    assert t.card.pin_tries_left == 5
    assert t.card.state == "temp_locked"


# --- ATR ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGS)
def test_atr_is_valid_t0_and_embeds_area_and_serial(algorithm: str) -> None:
    card = make_card(algorithm)
    atr = card.power_on()
    assert atr == card.atr
    assert atr[0] == 0x3B
    t0 = atr[1]
    k = t0 & 0x0F
    n_interface = bin(t0 >> 4).count("1")
    assert not t0 & 0x80  # no TD1: T=0 only, hence no TCK
    assert len(atr) == 2 + n_interface + k
    hist = atr[2 + n_interface :]
    assert hist[:4] == bytes.fromhex("0081544C")
    assert card.card_id_code[:2] in hist
    assert hist.endswith(card.chip_serial[:4])
    parsed = parse_atr(atr)
    assert parsed.protocols == (0,)
    assert parsed.historical == hist
    assert parsed.tck is None


def test_atrs_differ_between_cards() -> None:
    from agent.sim.factory import CardFactory

    cards = CardFactory(PROFILE, 3, with_bank=False).issue_many(20)
    assert len({c.atr for c in cards}) == 20
