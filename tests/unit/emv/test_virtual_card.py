"""The emv host flows against the shipped virtual card (agent.sim.card via agent.sim.channel),
with the bank applets the card factory installs: the contract of CARD-PROTOCOL.md §3 end to end.
"""

from __future__ import annotations

from agent.card.apdu import CommandApdu
from agent.card.t0 import transceive
from agent.emv import app as emv
from agent.emv.dol import build_dol_data, default_terminal_data
from agent.emv.script import ScriptOutcome, relay_issuer_scripts
from agent.profile import load_profile
from agent.sim.bank import ArqcRequest, BankHostSim
from agent.sim.channel import SimChannel
from agent.sim.factory import TEST_ISSUER_MAC_KEY, TEST_ISSUER_MASTER_KEY, CardFactory
from agent.sim.pboc import PbocApplet

TERMINAL = default_terminal_data(unpredictable=b"\x10\x20\x30\x40")


def _card(seed: int = 7) -> tuple[SimChannel, PbocApplet]:
    card = CardFactory(load_profile("default"), seed, with_bank=True).issue(t0=True)
    [applet] = [a for a in card.applets if isinstance(a, PbocApplet)]
    return SimChannel(card), applet


async def _arqc(ch: SimChannel) -> ArqcRequest:
    info = await emv.read_bank_app(ch, terminal=TERMINAL)
    assert info.cdol1 is not None
    ac = await emv.generate_ac(ch, info.cdol1, TERMINAL)
    return ArqcRequest(
        info.pan,
        info.psn or 0,
        ac.atc,
        ac.cryptogram,
        build_dol_data(info.cdol1, TERMINAL),
        info.aip or bytes(2),
        ac.iad,
    )


async def test_read_bank_app_on_virtual_card() -> None:
    ch, applet = _card()
    info = await emv.read_bank_app(ch, terminal=TERMINAL)
    assert info.pan == applet.pan
    assert info.expiry == applet.expiry
    assert info.holder_id == applet.holder_id
    assert info.holder_name is not None
    assert applet.holder_name.startswith(info.holder_name)
    assert not info.blocked


async def test_block_then_activate_through_the_virtual_card() -> None:
    ch, applet = _card(11)
    bank = BankHostSim(TEST_ISSUER_MASTER_KEY, TEST_ISSUER_MAC_KEY)
    req = await _arqc(ch)
    answer = bank.authorize(req, "block")
    assert answer.approved
    [r] = await relay_issuer_scripts(ch, answer.scripts)
    assert r.outcome is ScriptOutcome.SUCCESS
    assert applet.blocked
    await ch.disconnect()
    info = await emv.read_bank_app(ch, terminal=TERMINAL)
    assert info.blocked
    req2 = await _arqc(ch)
    [r2] = await relay_issuer_scripts(ch, bank.authorize(req2, "activate").scripts)
    assert r2.outcome is ScriptOutcome.SUCCESS
    assert not applet.blocked


async def test_card_block_script_blocks_the_whole_chip() -> None:
    ch, _ = _card(13)
    bank = BankHostSim(TEST_ISSUER_MASTER_KEY, TEST_ISSUER_MAC_KEY)
    req = await _arqc(ch)
    [r] = await relay_issuer_scripts(ch, bank.authorize(req, "card_block").scripts)
    assert r.outcome is ScriptOutcome.SUCCESS
    resp = await transceive(ch, CommandApdu(0x00, 0xA4, 0x04, 0x00, emv.UNIONPAY_DEBIT, 256))
    assert resp.sw == 0x6A81
