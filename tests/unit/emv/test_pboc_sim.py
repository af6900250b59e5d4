"""Device side: the simulated PBOC applet and PSE/PPSE (agent.sim.pboc)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card import tlv
from agent.errors import ConfigError, SimStateError
from agent.sim.pboc import (
    PDOL,
    PPSE_NAME,
    PSE_NAME,
    PbocApplet,
    PseApplet,
    derive_udk,
    script_mac,
    session_key,
)

from ._card import PAN, TEST_IMK, make_applet


def _tdes(key16: bytes, block: bytes) -> bytes:
    enc = Cipher(TripleDES(key16 + key16[:8]), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _des(key8: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(key8 * 3), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def _retail_mac(key: bytes, data: bytes) -> bytes:
    d = data + b"\x80"
    d += bytes(-len(d) % 8)
    x = bytes(8)
    for i in range(0, len(d), 8):
        x = _des(key[:8], bytes(a ^ b for a, b in zip(x, d[i : i + 8], strict=True)))
    return _des(key[:8], _des(key[8:], x, decrypt=True))


def test_udk_option_a_matches_an_independent_computation() -> None:
    digits = (PAN + "01")[-16:]
    y = bytes.fromhex(digits)
    inv = bytes(b ^ 0xFF for b in y)
    assert derive_udk(TEST_IMK, PAN, 1) == _tdes(TEST_IMK, y) + _tdes(TEST_IMK, inv)
    # short PAN: left-padded with zeros to 16 digits
    short = "621700123456"
    y2 = bytes.fromhex(("0000" + short + "00")[-16:])
    assert derive_udk(TEST_IMK, short, 0)[:8] == _tdes(TEST_IMK, y2)


def test_pboc_session_key_form() -> None:
    udk = derive_udk(TEST_IMK, PAN, 1)
    sk = session_key(udk, 0x0102)
    assert sk[:8] == _tdes(udk, bytes.fromhex("0000000000000102"))
    assert sk[8:] == _tdes(udk, bytes.fromhex("000000000000FEFD"))


def test_script_mac_input_layout() -> None:
    sk = session_key(derive_udk(TEST_IMK, PAN, 1), 7)
    ac = bytes.fromhex("1122334455667788")
    expected = _retail_mac(sk, bytes.fromhex("8418000004") + b"\x00\x07" + ac)[:4]
    assert script_mac(sk, bytes.fromhex("8418000004"), 7, ac) == expected


def _run(applet: PbocApplet, hexcmd: str) -> tuple[bytes, int]:
    out = applet.process(bytes.fromhex(hexcmd))
    return out[:-2], int.from_bytes(out[-2:], "big")


def _select(applet: PbocApplet) -> tuple[bytes, int]:
    out = applet.select(applet.aid)
    return out[:-2], int.from_bytes(out[-2:], "big")


def test_fci_has_pdol_and_label() -> None:
    fci, sw = _select(make_applet())
    assert sw == 0x9000
    assert tlv.find_value(fci, 0x9F38) == PDOL
    assert tlv.find_value(fci, 0x84) == bytes.fromhex("A000000333010101")
    assert tlv.find_value(fci, 0x50) == b"UnionPay Debit"


@pytest.mark.parametrize(
    ("cmd", "sw"),
    [
        ("80A8000002830000", 0x6700),  # PDOL data missing
        ("80A80100188316" + "00" * 22 + "00", 0x6A86),
        ("00B2010C05", 0x6C00),  # wrong Le → 6C<len>, checked below
        ("00B2030C00", 0x6A83),
        ("00B2011400", 0x6A82),  # SFI 2
        ("00B2010800", 0x6A86),  # P2 low bits not 100
        ("80CA9F7900", 0x6A88),
        ("80AE800002000000", 0x6700),
        ("841E00000400000000", 0x6985),  # no cryptogram in this session
        ("0084000004", 0x6D00),
        ("C0A8000000", 0x6E00),  # known INS, wrong CLA
        ("80B20000", 0x6E00),
        ("00", 0x6700),
        ("00A4040002A0", 0x6700),
    ],
)
def test_error_answers(cmd: str, sw: int) -> None:
    applet = make_applet()
    _select(applet)
    _, got = _run(applet, cmd)
    if sw == 0x6C00:
        assert got >> 8 == 0x6C
        record = applet.records()[1]
        assert got & 0xFF == len(record)
    else:
        assert got == sw


def test_generate_ac_needs_gpo_unless_blocked() -> None:
    applet = make_applet()
    _select(applet)
    _, sw = _run(applet, "80AE80001D" + "00" * 29 + "00")
    assert sw == 0x6985
    assert applet.atc == 0
    _, sw = _run(applet, "80A80000188316" + "00" * 22 + "00")
    assert sw == 0x9000
    data, sw = _run(applet, "80AE80001D" + "00" * 29 + "00")
    assert sw == 0x9000
    assert tlv.find_value(data, 0x9F27) == b"\x80"
    assert applet.atc == 1
    _, sw = _run(applet, "80AE80001D" + "00" * 29 + "00")
    assert sw == 0x6985  # no second GENERATE AC in this simulator

    blocked = make_applet(blocked=True)
    assert _select(blocked)[1] == 0x6283
    data, sw = _run(blocked, "80AE80001D" + "00" * 29 + "00")
    assert sw == 0x9000
    assert tlv.find_value(data, 0x9F27) == b"\x00"  # AAC from a blocked application


def test_card_blocked_answers_6a81_everywhere() -> None:
    applet = make_applet(card_blocked=True)
    assert applet.select(applet.aid) == b"\x6a\x81"
    assert applet.process(bytes.fromhex("80CA9F3600")) == b"\x6a\x81"


def test_state_round_trip_is_json() -> None:
    applet = make_applet(atc=17, last_online_atc=9, pin_tries=1, blocked=True)
    state = json.loads(json.dumps(applet.to_state()))
    back = PbocApplet.from_state(state)
    assert back.to_state() == applet.to_state()
    assert back.records() == applet.records()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.pop("pan"),
        lambda s: s.update(pan="12AB"),
        lambda s: s.update(expiry="2031-13-01"),
        lambda s: s.update(issuer_master_key="00"),
        lambda s: s.update(atc="many"),
        lambda s: s.update(aid="zz"),
        lambda s: s.update(pin_tries=9),
    ],
)
def test_malformed_state(mutate: object) -> None:
    state = make_applet().to_state()
    mutate(state)  # type: ignore[operator]
    with pytest.raises(SimStateError):
        PbocApplet.from_state(state)


@pytest.mark.parametrize(
    "kw",
    [{"pan": "123"}, {"psn": 100}, {"issuer_master_key": b"short"}, {"atc": 70000}, {"aid": b"A"}],
)
def test_bad_constructor_args(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_applet(**kw)


def test_pse_and_ppse() -> None:
    applet = make_applet()
    pse = PseApplet.for_applets([applet])
    fci = pse.select(PSE_NAME)
    assert fci[-2:] == b"\x90\x00"
    assert tlv.find_value(fci[:-2], 0x88) == b"\x01"
    rec = pse.process(bytes.fromhex("00B2010C00"))
    assert rec[-2:] == b"\x90\x00"
    assert tlv.find_value(rec[:-2], 0x4F) == applet.aid
    assert pse.process(bytes.fromhex("00B2020C00")) == b"\x6a\x83"
    ppse = pse.select(PPSE_NAME)
    bf0c = tlv.find(ppse[:-2], 0xBF0C)
    assert bf0c is not None
    assert tlv.find_value(bf0c.value, 0x4F) == applet.aid
    assert pse.process(bytes.fromhex("00B2010C00")) == b"\x69\x85"  # the PPSE has no records
    back = PseApplet.from_state(json.loads(json.dumps(pse.to_state())))
    assert back.to_state() == pse.to_state()
    with pytest.raises(SimStateError):
        PseApplet.from_state({"entries": [{"aid": "A0"}]})


@settings(max_examples=200)
@given(st.binary(max_size=300), st.booleans())
def test_hostile_apdus_never_raise(raw: bytes, blocked: bool) -> None:
    applet = make_applet(blocked=blocked)
    applet.select(applet.aid)
    before = applet.to_state()
    out = applet.process(raw)
    assert len(out) >= 2
    after = applet.to_state()
    # Random bytes can never carry a valid script MAC: the only state that may move is the ATC.
    before.pop("atc")
    after.pop("atc")
    assert before == after
    pse = PseApplet.for_applets([applet])
    pse.select(PSE_NAME)
    assert len(pse.process(raw)) >= 2


def test_expiry_in_records() -> None:
    rec2 = make_applet(expiry=date(2030, 6, 30)).records()[2]
    assert tlv.find_value(rec2, 0x5F24) == bytes.fromhex("300630")
