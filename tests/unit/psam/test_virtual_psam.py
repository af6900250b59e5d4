"""The virtual PSAM at the byte level (agent/sim/psam.py; docs/CARD-PROTOCOL.md §2)."""

from __future__ import annotations

import copy
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.profile import CardProfile, load_profile
from agent.sim.psam import ATR, DEFAULT_TERMINAL_NUMBER, VirtualPsam
from tests.unit.psam._support import ref_diversify, ref_ecb, ref_retail_mac, ref_sm4_mac

PROFILE = load_profile("default")
AID = PROFILE.psam_aid
FCI = bytes((0x6F, len(AID) + 2, 0x84, len(AID))) + AID
SERIAL = bytes.fromhex("1122334455667788")
AREA = bytes.fromhex("4403000000000000")
H = bytes.fromhex


def sw(answer: bytes) -> int:
    return int.from_bytes(answer[-2:], "big")


def apdu(hexstr: str) -> bytes:
    return H(hexstr.replace(" ", ""))


SELECT_APP = apdu("00A40400") + bytes((len(AID),)) + AID
SELECT_MF = apdu("00A40000 02 3F00")
DELIVER_STK = apdu("801A4601 10") + SERIAL + AREA


def fresh() -> VirtualPsam:
    psam = VirtualPsam(PROFILE)
    assert psam.power_on() == ATR
    return psam


def get_response(psam: VirtualPsam, answer: bytes) -> bytes:
    assert answer[-2] == 0x61, answer.hex()
    out = psam.process(bytes((0x00, 0xC0, 0x00, 0x00, answer[-1])))
    assert sw(out) == 0x9000
    return out[:-2]


def stk_key(alg: str) -> bytes:
    return ref_diversify(alg, PROFILE.master_key(alg, "stk"), [SERIAL, AREA])


# ------------------------------------------------------------------------- files and select
def test_atr_is_t0_with_historical_bytes() -> None:
    psam = VirtualPsam(PROFILE)
    assert psam.atr == ATR
    assert ATR[0] == 0x3B
    assert len(ATR) == 4 + (ATR[1] & 0x0F)


def test_mf_files() -> None:
    psam = fresh()
    ef16 = psam.process(apdu("00B0960006"))
    assert ef16 == DEFAULT_TERMINAL_NUMBER + b"\x90\x00"
    assert DEFAULT_TERMINAL_NUMBER.hex() == "440300907950"
    ef15 = psam.process(apdu("00B095000E"))
    assert sw(ef15) == 0x9000
    assert ef15[:10] == psam.serial
    assert len(ef15) == 16
    ef17 = psam.process(apdu("00B0970019"))
    assert sw(ef17) == 0x9000
    assert len(ef17) == 27
    # offset and Le handling
    assert psam.process(apdu("00B0960204")) == DEFAULT_TERMINAL_NUMBER[2:] + b"\x90\x00"
    assert psam.process(apdu("00B0960008")) == H("6C06")
    assert psam.process(apdu("00B0960000")) == DEFAULT_TERMINAL_NUMBER + b"\x90\x00"
    assert psam.process(apdu("00B0960601")) == H("6B00")
    assert psam.process(apdu("00B0990004")) == H("6A82")  # EF19 lives in the app DF
    assert psam.process(apdu("00B0160006")) == H("6986")  # no current EF
    assert psam.process(apdu("00B0E60006")) == H("6A86")
    assert psam.process(apdu("00B09600")) == H("6700")  # no Le


def test_select_app_answers_fci_by_get_response() -> None:
    psam = fresh()
    answer = psam.process(SELECT_APP)
    assert answer == bytes((0x61, len(FCI)))
    assert get_response(psam, answer) == FCI
    assert psam.process(apdu("00B0990004")) == H("00000000 9000")
    assert psam.process(apdu("00B0960006")) == H("6A82")  # EF16 is in the MF
    assert psam.process(SELECT_MF) == H("9000")
    assert sw(psam.process(apdu("00B0960006"))) == 0x9000


def test_select_variants() -> None:
    psam = fresh()
    assert psam.process(SELECT_APP[:2] + b"\x04\x0c" + SELECT_APP[4:]) == H("9000")
    assert psam.process(apdu("00A40400 05 A000000003")) == H("6A82")
    assert psam.process(apdu("00A40000 02 3F01")) == H("6A82")
    assert psam.process(apdu("00A40000 03 3F0000")) == H("6700")
    assert psam.process(apdu("00A40800 02 3F00")) == H("6A86")


def test_get_response_partial_and_wrong_le() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    assert psam.process(apdu("00C0000020")) == bytes((0x6C, len(FCI)))
    first = psam.process(apdu("00C0000002"))
    assert first == FCI[:2] + bytes((0x61, len(FCI) - 2))
    rest = psam.process(bytes((0, 0xC0, 0, 0, len(FCI) - 2)))
    assert rest == FCI[2:] + b"\x90\x00"
    assert psam.process(apdu("00C0000002")) == H("6985")  # nothing pending any more
    psam.process(SELECT_APP)
    assert psam.process(apdu("00C0010002")) == H("6A86")
    psam.process(SELECT_APP)
    assert psam.process(apdu("00C00000")) == H("6700")


def test_pending_response_is_lost_after_another_command() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(apdu("00B0990004"))
    assert psam.process(bytes((0, 0xC0, 0, 0, len(FCI)))) == H("6985")


# ------------------------------------------------------------------------- keys and MACs
def test_delivery_key_and_des_mac_single() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    assert psam.process(DELIVER_STK) == H("9000")
    iv = H("1122334400000000")
    body = H("841E000004800000")
    answer = psam.process(apdu("80FA0500 10") + iv + body)
    assert answer == H("6104")
    assert get_response(psam, answer) == ref_retail_mac(stk_key("des"), iv, H("841E000004"))[:4]
    assert psam.process(apdu("00B0990004")) == H("00000001 9000")


def test_sm4_mac_by_p2_03_and_chained() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    iv = bytes(range(8)) + bytes(8)
    data = bytes(range(50))
    payload = iv + data + b"\x80" + bytes(-(len(data) + 1) % 16)  # 80 bytes: 48 + 32
    assert psam.process(apdu("80FA0703 30") + payload[:48]) == H("9000")
    assert psam.process(apdu("80FA0103 20") + payload[48:]) == H("6104")
    mac = psam.process(apdu("00C0000004"))[:-2]
    assert mac == ref_sm4_mac(stk_key("sm4"), iv, data)[:4]
    # with a 03 "next" chunk in the middle
    assert psam.process(apdu("80FA0703 10") + payload[:16]) == H("9000")
    assert psam.process(apdu("80FA0303 30") + payload[16:64]) == H("9000")
    answer = psam.process(apdu("80FA0103 10") + payload[64:])
    assert get_response(psam, answer) == mac
    assert psam.tsn == 2


def test_chain_rules() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    assert psam.process(apdu("80FA0300 08") + bytes(8)) == H("6985")  # no chain
    assert psam.process(apdu("80FA0100 08") + bytes(8)) == H("6985")
    assert psam.process(apdu("80FA0700 08") + bytes(8)) == H("9000")
    assert psam.process(apdu("80FA0103 10") + bytes(16)) == H("6A86")  # algorithm changed
    assert psam.process(apdu("80FA0100 08") + bytes(8)) == H("6985")  # chain was discarded
    assert psam.tsn == 0


def test_encrypt_des_and_sm4() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    block = bytes(range(16))
    answer = psam.process(apdu("80FA0000 10") + block)
    assert get_response(psam, answer) == ref_ecb("des", stk_key("des"), block)
    answer = psam.process(apdu("80FA0203 10") + block)
    assert get_response(psam, answer) == ref_ecb("sm4", stk_key("sm4"), block)
    assert psam.tsn == 0  # only MACs count


def test_seal_key_answers_eight_bytes() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    tn = DEFAULT_TERMINAL_NUMBER + bytes(2)
    assert psam.process(apdu("801A2610 08") + tn) == H("9000")
    answer = psam.process(apdu("80FA0503 20") + bytes(16) + b"\x80" + bytes(15))
    assert answer == H("6108")
    key = ref_diversify("sm4", PROFILE.master_key("sm4", "seal"), [tn])
    assert get_response(psam, answer) == ref_sm4_mac(key, bytes(16), b"")[:8]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("801A4601 08 0000000000000000", "6700"),  # Lc does not match 2 levels
        ("801A4601", "6700"),
        ("801A4601 10 00000000000000000000000000000000 00", "6700"),  # Le on a case-3 command
        ("801AE601", "6A86"),  # 7 levels: P1 checked before the length
        ("801A4677 10 00000000000000000000000000000000", "6A88"),  # unknown index
        ("801A4701 10 00000000000000000000000000000000", "6A88"),  # usage/index mismatch
    ],
)
def test_delivery_key_errors(command: str, expected: str) -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    assert psam.process(apdu(command)) == H(expected)


def test_missing_sm4_master_answers_key_not_found() -> None:
    data = {
        "name": "des-only",
        "psam_aid": AID.hex(),
        "keys": {"stk": {"usage": 0x46, "index": 1, "factors": ["serial", "area"]}},
        "test_master_keys": {"des": {"stk": "11" * 16}},
    }
    from agent.profile import parse_profile

    psam = VirtualPsam(parse_profile(data))
    psam.process(SELECT_APP)
    assert psam.process(DELIVER_STK) == H("9000")
    assert psam.process(apdu("80FA0503 20") + bytes(32)) == H("6A88")
    assert psam.process(apdu("80FA0500 10") + bytes(16)) == H("6104")
    # a key in the profile without any master key is not in this PSAM
    no_master = dict(data, test_master_keys={})
    psam = VirtualPsam(parse_profile(no_master))
    psam.process(SELECT_APP)
    assert psam.process(DELIVER_STK) == H("6A88")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("80FA0500 08 0000000000000000", "6700"),  # IV only, no data block
        ("80FA0500 0C 000000000000000000000000", "6700"),  # not whole blocks
        ("80FA0503 18 000000000000000000000000000000000000000000000000", "6700"),
        ("80FA0500 38" + "00" * 56, "6700"),  # longer than a 0x30 chunk
        ("80FA0400 10" + "00" * 16, "6A86"),
        ("80FA0502 10" + "00" * 16, "6A86"),
        ("80FA0000", "6700"),
    ],
)
def test_cipher_errors(command: str, expected: str) -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    assert psam.process(apdu(command)) == H(expected)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("A0A4000002 3F00", "6E00"),
        ("80A4000002 3F00", "6E00"),  # known INS, wrong CLA
        ("001A460110" + "00" * 16, "6E00"),
        ("80CA9F3600", "6D00"),
        ("0084000004", "6D00"),
        ("00", "6700"),
        ("", "6700"),
        ("00B0960002FFFF", "6700"),  # Lc=2 data + Le on READ BINARY
        ("00A4040010" + "00" * 3, "6700"),  # Lc beyond the body
        ("00A40400000003" + "3F0000", "6700"),  # extended APDU
    ],
)
def test_garbage_and_unknown(command: str, expected: str) -> None:
    assert fresh().process(apdu(command)) == H(expected)


def test_power_cycle_clears_session_keeps_tsn() -> None:
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    psam.process(apdu("80FA0500 10") + bytes(16))
    psam.power_off()
    assert psam.power_on() == ATR
    assert psam.process(apdu("00C0000004")) == H("6985")
    psam.process(SELECT_APP)
    assert psam.process(apdu("80FA0500 10") + bytes(16)) == H("6985")
    assert psam.process(apdu("00B0990004")) == H("00000001 9000")


def test_tsn_wraps() -> None:
    psam = VirtualPsam(PROFILE, tsn=2**32 - 1)
    psam.power_on()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    psam.process(apdu("80FA0500 10") + bytes(16))
    assert psam.tsn == 0


# ------------------------------------------------------------------------- state
def test_state_round_trip() -> None:
    tn = H("110100000001")
    psam = VirtualPsam(PROFILE, terminal_number=tn, tsn=41)
    psam.power_on()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    psam.process(apdu("80FA0500 10") + bytes(16))
    state = psam.to_state()
    assert state["tsn"] == 42
    again = VirtualPsam.from_state(PROFILE, state)
    assert again.to_state() == state
    again.power_on()
    assert again.process(apdu("00B0960006")) == tn + b"\x90\x00"


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"terminal_number": "440300907950", "serial": "00" * 10},
        {"terminal_number": "44030090795", "serial": "00" * 10, "tsn": 0},
        {"terminal_number": "4403009079FA", "serial": "00" * 10, "tsn": 0},
        {"terminal_number": "440300907950", "serial": "00" * 9, "tsn": 0},
        {"terminal_number": "440300907950", "serial": "00" * 10, "tsn": -1},
        {"terminal_number": "440300907950", "serial": "00" * 10, "tsn": 2**32},
        {"terminal_number": "440300907950", "serial": "00" * 10, "tsn": True},
        {"terminal_number": 5, "serial": "00" * 10, "tsn": 0},
    ],
)
def test_from_state_rejects_bad_state(state: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        VirtualPsam.from_state(PROFILE, state)


# ------------------------------------------------------------------------- state × input table
class S(Enum):
    MF = "mf"  # after power-on: MF current, no key
    APP = "app"  # application selected, no key delivered
    KEY = "key"  # key delivered
    CHAIN = "chain"  # key delivered, chained MAC in progress


def _to_state(s: S) -> VirtualPsam:
    psam = fresh()
    if s is S.MF:
        return psam
    get_response(psam, psam.process(SELECT_APP))
    if s is S.APP:
        return psam
    assert psam.process(DELIVER_STK) == H("9000")
    if s is S.KEY:
        return psam
    assert psam.process(apdu("80FA0700 08") + bytes(8)) == H("9000")
    return psam


def classify(psam: VirtualPsam) -> S:
    """Observe the state with probes, each on its own copy (probing changes state)."""
    if copy.deepcopy(psam).process(apdu("80FA0100 08") + bytes(8)) == H("6104"):
        return S.CHAIN
    if sw(copy.deepcopy(psam).process(apdu("80FA0000 08") + bytes(8))) == 0x6108:
        return S.KEY
    if sw(copy.deepcopy(psam).process(apdu("00B0990004"))) == 0x9000:
        return S.APP
    return S.MF


INPUTS: dict[str, bytes] = {
    "select_app": SELECT_APP,
    "select_mf": SELECT_MF,
    "read_ef16": apdu("00B0960006"),
    "deliver_stk": DELIVER_STK,
    "deliver_unknown": apdu("801A467F 10") + bytes(16),
    "mac_single_des": apdu("80FA0500 10") + bytes(16),
    "mac_single_sm4": apdu("80FA0503 20") + bytes(32),
    "mac_first": apdu("80FA0700 08") + bytes(8),
    "mac_next": apdu("80FA0300 08") + bytes(8),
    "mac_last": apdu("80FA0100 08") + bytes(8),
    "encrypt": apdu("80FA0000 08") + bytes(8),
    "get_response": apdu("00C0000004"),
    "unknown_ins": apdu("80CA000000"),
    "wrong_cla": apdu("A0A4000002 3F00"),
    "short": apdu("80FA"),
}

# (state, input) -> (status word, next state)
TABLE: dict[tuple[S, str], tuple[int, S]] = {}
for _s in S:
    _has_key = _s in (S.KEY, S.CHAIN)
    _in_app = _s is not S.MF
    _after_key = S.KEY if _has_key else _s  # a chain is discarded, the key stays
    TABLE[(_s, "select_app")] = (0x6100 | len(FCI), S.APP)
    TABLE[(_s, "select_mf")] = (0x9000, S.MF)
    TABLE[(_s, "read_ef16")] = (0x6A82 if _in_app else 0x9000, _after_key)
    TABLE[(_s, "deliver_stk")] = (0x9000, S.KEY) if _in_app else (0x6985, S.MF)
    TABLE[(_s, "deliver_unknown")] = (0x6A88, S.APP) if _in_app else (0x6985, S.MF)
    TABLE[(_s, "mac_single_des")] = (0x6104, S.KEY) if _has_key else (0x6985, _s)
    TABLE[(_s, "mac_single_sm4")] = (0x6104, S.KEY) if _has_key else (0x6985, _s)
    TABLE[(_s, "mac_first")] = (0x9000, S.CHAIN) if _has_key else (0x6985, _s)
    TABLE[(_s, "mac_next")] = (0x9000, S.CHAIN) if _s is S.CHAIN else (0x6985, _after_key)
    TABLE[(_s, "mac_last")] = (0x6104, S.KEY) if _s is S.CHAIN else (0x6985, _after_key)
    TABLE[(_s, "encrypt")] = (0x6108, S.KEY) if _has_key else (0x6985, _s)
    TABLE[(_s, "get_response")] = (0x6985, _after_key)
    TABLE[(_s, "unknown_ins")] = (0x6D00, _after_key)
    TABLE[(_s, "wrong_cla")] = (0x6E00, _after_key)
    TABLE[(_s, "short")] = (0x6700, _after_key)


def test_table_is_complete() -> None:
    assert set(TABLE) == {(s, i) for s in S for i in INPUTS}


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
def test_setup_reaches_state(state: S) -> None:
    assert classify(_to_state(state)) is state


@pytest.mark.parametrize(("state", "name"), sorted(TABLE, key=lambda k: (k[0].value, k[1])))
def test_state_by_input(state: S, name: str) -> None:
    psam = _to_state(state)
    expected_sw, expected_next = TABLE[(state, name)]
    answer = psam.process(INPUTS[name])
    assert sw(answer) == expected_sw, answer.hex()
    assert classify(psam) is expected_next


# ------------------------------------------------------------------------- hostile input
commands = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda cla, ins, p1, p2, body: bytes((cla, ins, p1, p2)) + body,
        st.sampled_from([0x00, 0x80, 0x84, 0xA0, 0xFF]),
        st.sampled_from([0xA4, 0xB0, 0xC0, 0x1A, 0xFA, 0x84, 0x00]),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=70),
    ),
)


@settings(max_examples=200, deadline=None)
@given(start=st.sampled_from(list(S)), cmds=st.lists(commands, min_size=1, max_size=8))
def test_garbage_never_raises(start: S, cmds: list[bytes]) -> None:
    psam = _to_state(start)
    for c in cmds:
        answer = psam.process(c)
        assert isinstance(answer, bytes)
        assert len(answer) >= 2


def test_constructor_validation(profile: CardProfile) -> None:
    with pytest.raises(ConfigError):
        VirtualPsam(profile, terminal_number=H("4403009079"))
    with pytest.raises(ConfigError):
        VirtualPsam(profile, terminal_number=H("44030090795A"))
    with pytest.raises(ConfigError):
        VirtualPsam(profile, serial=bytes(8))


def test_algorithm_rule_is_p2() -> None:
    # The documented rule: 80 FA P2 00/01 → DES, 03 → SM4. A 32-byte payload is valid for both
    # (DES: IV + 3 blocks; SM4: IV + 1 block), so only P2 can tell them apart.
    psam = fresh()
    psam.process(SELECT_APP)
    psam.process(DELIVER_STK)
    payload = bytes(range(31)) + b"\x80"  # ends in valid method-2 padding for both
    des = get_response(psam, psam.process(apdu("80FA0500 20") + payload))
    des01 = get_response(psam, psam.process(apdu("80FA0501 20") + payload))
    sm4 = get_response(psam, psam.process(apdu("80FA0503 20") + payload))
    assert des == des01
    assert des == ref_retail_mac(stk_key("des"), payload[:8], payload[8:31])[:4]
    assert sm4 == ref_sm4_mac(stk_key("sm4"), payload[:16], payload[16:31])[:4]
