"""Issuer-script relay (agent.emv.script) with the simulated bank host and PBOC applet."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card import tlv
from agent.card.apdu import CommandApdu
from agent.card.t0 import transceive
from agent.emv import app as emv
from agent.emv.dol import build_dol_data, default_terminal_data
from agent.emv.script import (
    IssuerScript,
    ScriptOutcome,
    ScriptResult,
    parse_issuer_scripts,
    relay_issuer_scripts,
    script_results,
)
from agent.errors import IssuerScriptError, LocalProtocolError
from agent.sim.bank import ArqcRequest, BankHostSim
from agent.sim.pboc import AIP, PbocApplet

from ._card import TEST_IMK, TEST_MAC_IMK, AppletCard, bank_card

TERMINAL = default_terminal_data(unpredictable=b"\xa1\xb2\xc3\xd4")
BANK = BankHostSim(TEST_IMK, TEST_MAC_IMK)


async def _online(card: AppletCard) -> tuple[emv.BankAppInfo, ArqcRequest]:
    """Read the app, ask for a cryptogram, and build the host request from what the card said."""
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.cdol1 is not None
    ac = await emv.generate_ac(card, info.cdol1, TERMINAL)
    req = ArqcRequest(
        pan=info.pan,
        psn=info.psn or 0,
        atc=ac.atc,
        cryptogram=ac.cryptogram,
        transaction_data=build_dol_data(info.cdol1, TERMINAL),
        aip=info.aip or bytes(2),
        iad=ac.iad,
    )
    return info, req


async def _select_sw(card: AppletCard) -> int:
    cmd = CommandApdu(0x00, 0xA4, 0x04, 0x00, emv.UNIONPAY_DEBIT, 256)
    resp = await transceive(card, cmd)
    return resp.sw


@pytest.mark.parametrize("t0", [False, True])
async def test_activate_unblocks_blocked_application(t0: bool) -> None:
    card, applet = bank_card(blocked=True, t0=t0)
    info, req = await _online(card)
    assert info.blocked
    answer = BANK.authorize(req, "activate")
    assert answer.approved
    assert answer.response_code == b"00"
    results = await relay_issuer_scripts(card, answer.scripts)
    assert len(results) == 1
    [r] = results
    assert r.outcome is ScriptOutcome.SUCCESS
    assert r.sws == (0x9000,)
    assert r.template == 0x72
    assert r.script_id is not None
    assert script_results(results) == b"\x20" + r.script_id
    assert not applet.blocked
    assert await _select_sw(card) == 0x9000


async def test_block_script_blocks_application() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    answer = BANK.authorize(req, "block")
    [r] = await relay_issuer_scripts(card, answer.scripts)
    assert r.outcome is ScriptOutcome.SUCCESS
    assert applet.blocked
    assert await _select_sw(card) == 0x6283
    gpo = await card.transmit(CommandApdu(0x80, 0xA8, 0x00, 0x00, b"\x83\x00", 256))
    assert gpo.sw == 0x6985


async def test_tampered_script_is_refused_and_changes_nothing() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    cmd = bytearray(BANK.script_command(req, "block"))
    cmd[-1] ^= 0x01
    script = tlv.encode(
        0x72, tlv.encode(0x9F18, b"\x00\x00\x00\x09") + tlv.encode(0x86, bytes(cmd))
    )
    [r] = await relay_issuer_scripts(card, script)
    assert r.outcome is ScriptOutcome.FAILED
    assert r.sws == (0x6988,)
    assert r.failed_index == 1
    assert r.result_bytes == bytes.fromhex("1100000009")
    assert not applet.blocked


async def test_script_from_another_transaction_is_refused() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    scripts = BANK.authorize(req, "block").scripts
    card.reset()  # power cycle: the cryptogram the MAC is bound to is gone
    await emv.read_bank_app(card, terminal=TERMINAL)
    [r] = await relay_issuer_scripts(card, scripts)
    assert r.sws == (0x6985,)
    # a new cryptogram (new ATC) does not make the old MAC valid either
    info = await emv.read_bank_app(card, terminal=default_terminal_data())
    assert info.cdol1 is not None
    card.reset()
    await emv.read_bank_app(card, terminal=TERMINAL)
    await emv.generate_ac(card, info.cdol1, TERMINAL)
    [r2] = await relay_issuer_scripts(card, scripts)
    assert r2.sws == (0x6988,)
    assert not applet.blocked


async def test_first_failure_stops_the_script_not_the_next_script() -> None:
    card, applet = bank_card(pin_tries=1)
    _, req = await _online(card)
    bad = bytearray(BANK.script_command(req, "block"))
    bad[-2] ^= 0xFF
    good_block = BANK.script_command(req, "block")
    first = tlv.encode(
        0x72,
        tlv.encode(0x9F18, b"\x00\x00\x00\x01")
        + tlv.encode(0x86, bytes(bad))
        + tlv.encode(0x86, good_block),
    )
    second = BANK.issuer_script(req, ["pin_unblock"], script_id=b"\x00\x00\x00\x02")
    results = await relay_issuer_scripts(card, first + second)
    assert [r.outcome for r in results] == [ScriptOutcome.FAILED, ScriptOutcome.SUCCESS]
    assert results[0].sws == (0x6988,)  # the second command of script 1 was never sent
    assert not applet.blocked
    assert applet.pin_tries == applet.pin_max_tries
    assert script_results(results) == bytes.fromhex("11000000012000000002")


async def test_card_block_script() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    [r] = await relay_issuer_scripts(card, BANK.authorize(req, "card_block").scripts)
    assert r.outcome is ScriptOutcome.SUCCESS
    assert applet.card_blocked
    assert await _select_sw(card) == 0x6A81


async def test_template_filter_and_other_objects_ignored() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    s71 = BANK.issuer_script(req, ["block"], template=0x71)
    s72 = BANK.issuer_script(req, ["activate"], template=0x72)
    host = tlv.encode(0x91, bytes(10)) + tlv.encode(0x8A, b"00") + s71 + s72
    parsed = parse_issuer_scripts(host)
    assert [s.template for s in parsed] == [0x71, 0x72]
    r71 = await relay_issuer_scripts(card, parsed, template=0x71)
    assert [r.template for r in r71] == [0x71]
    assert applet.blocked
    r72 = await relay_issuer_scripts(card, parsed, template=0x72)
    assert r72[0].outcome is ScriptOutcome.SUCCESS
    assert not applet.blocked


def test_bank_declines_a_wrong_cryptogram() -> None:
    req = ArqcRequest(
        "6217001234567890123", 1, 5, bytes(8), bytes(29), AIP, bytes.fromhex("07010103A00000")
    )
    answer = BANK.authorize(req, "activate")
    assert not answer.approved
    assert answer.response_code == b"05"
    assert answer.scripts == b""
    assert not BANK.verify_arqc(ArqcRequest("6217001234567890123", 1, 5, bytes(7), b"", AIP, b""))
    with pytest.raises(LocalProtocolError):
        BANK.script_command(req, "explode")


async def test_bank_with_other_keys_cannot_script_the_card() -> None:
    card, applet = bank_card()
    _, req = await _online(card)
    rogue = BankHostSim(bytes(16))
    assert not rogue.verify_arqc(req)
    [r] = await relay_issuer_scripts(card, rogue.issuer_script(req, ["block"]))
    assert r.sws == (0x6988,)
    assert not applet.blocked


def test_result_bytes_encoding() -> None:
    assert ScriptResult(0x72, None, ScriptOutcome.NOT_PERFORMED, ()).result_bytes == bytes(5)
    r = ScriptResult(0x72, b"\x01\x02\x03\x04", ScriptOutcome.FAILED, (0x9000,) * 20, 20)
    assert r.result_bytes == bytes.fromhex("1F01020304")


@pytest.mark.parametrize(
    "hexdata",
    [
        "7203",  # truncated
        "72039F1801",  # script id not 4 bytes
        "72075A0101860100",  # unknown tag inside
        "72028600",  # empty command
        "720586030102",  # command shorter than its length... (TLV runs past)
        "720E8605841E0000049F180400000001",  # 9F18 after a command
    ],
)
def test_malformed_scripts(hexdata: str) -> None:
    with pytest.raises(IssuerScriptError):
        parse_issuer_scripts(bytes.fromhex(hexdata))


def test_parse_round_trip() -> None:
    cmd = bytes.fromhex("841800000411223344")
    data = tlv.encode(0x71, tlv.encode(0x9F18, b"\x00\x00\x00\x07") + tlv.encode(0x86, bytes(cmd)))
    assert parse_issuer_scripts(data) == [
        IssuerScript(0x71, b"\x00\x00\x00\x07", (CommandApdu.from_bytes(cmd),))
    ]


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_hostile_host_bytes_only_raise_script_error(data: bytes) -> None:
    try:
        scripts = parse_issuer_scripts(data)
    except IssuerScriptError:
        return
    assert all(s.template in (0x71, 0x72) for s in scripts)


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=4, max_size=12), min_size=1, max_size=4))
def test_hostile_script_bodies_wrapped(commands: list[bytes]) -> None:
    data = tlv.encode(0x72, b"".join(tlv.encode(0x86, c) for c in commands))
    try:
        [s] = parse_issuer_scripts(data)
    except IssuerScriptError:
        return
    assert [c.to_bytes() for c in s.commands] == commands


def test_sim_applet_state_survives_round_trip() -> None:
    _, applet = bank_card(blocked=True, atc=41, pin_tries=2)
    back = PbocApplet.from_state(applet.to_state())
    assert back.to_state() == applet.to_state()
    assert back.expiry == date(2031, 12, 31)
