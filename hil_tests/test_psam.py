"""PSAM: terminal number; key agreement with the card shown by a MAC-verified operation.

The operation is external authentication (``00 82``, the PSAM's cryptogram under the card's
diversified ``rkssse`` key, checked by the card) followed by the EF06 read it unlocks — read
only, so any card will do. A card whose spec version needs no external authentication is
checked with a temporary lock + unlock instead, on an allow-listed test card only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from agent.hil.guard import TestCardGuard, admit_card
from agent.psam.client import is_bcd, read_public_info, select_mf, terminal_id
from agent.ssc.app import CardState, SscApplication
from hil_tests.conftest import HilEnv, HilFailure

pytestmark = pytest.mark.psam


async def test_terminal_number(hil: HilEnv, psam_module: Any) -> None:
    number = await psam_module.terminal_number()
    if len(number) != 6 or not is_bcd(number):
        raise HilFailure(
            f"EF16 holds {number.hex().upper()}, not a 6-byte BCD terminal number",
            "the PSAM is not personalised for a terminal: ask the card centre for one",
        )
    hil.run.add_inventory("PSAM terminal number", terminal_id(number))
    channel = psam_module._channel  # the same session; EF15 is public information
    await select_mf(channel)
    info = await read_public_info(channel)
    hil.run.add_inventory("PSAM serial", info.serial.hex().upper())
    if hil.terminal_id and hil.terminal_id != terminal_id(number) and hil.sim is None:
        raise HilFailure(
            f"--terminal-id {hil.terminal_id} is not the PSAM's terminal {terminal_id(number)}",
            "the broker certificate's name must be the PSAM's terminal number",
        )


async def test_key_agreement_with_card(hil: HilEnv, card: Any, psam_module: Any) -> None:
    probe = SscApplication(card, hil.profile)
    sel = await probe.select()
    if sel.lock is not None:
        pytest.skip(f"the card is {sel.lock.value}: insert an active card")
    ident = await probe.read_identity()
    t0 = time.perf_counter()
    if hil.profile.needs_external_auth(ident.spec_version):
        app = SscApplication(card, hil.profile, psam_module)
        await app.read_holder()  # external authentication, then EF06 (personal data: not kept)
        hil.run.add_timing(
            "PSAM key agreement (external auth + EF06)",
            f"{(time.perf_counter() - t0) * 1000:.0f} ms",
        )
        return
    guard = TestCardGuard(card, hil.test_cards)
    await admit_card(guard, hil.profile)  # NotATestCardError: no write is attempted
    app = SscApplication(guard, hil.profile, psam_module)
    await app.block()
    try:
        locked = await app.state()
        assert locked.state is CardState.TEMP_LOCKED
    finally:
        await SscApplication(
            guard,
            hil.profile,
            psam_module,
            card_id_code=ident.card_id_code,
            algorithm=sel.algorithm,
        ).unblock()
    hil.run.add_timing(
        "PSAM key agreement (lock + unlock)", f"{(time.perf_counter() - t0) * 1000:.0f} ms"
    )
