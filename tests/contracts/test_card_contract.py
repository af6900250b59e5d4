"""The card contract over the in-memory channel and over pcscd+vpcd: same observations.

DESIGN §9: one suite (``card_contract.check_card_contract``), two transports. The in-memory
run needs nothing; the PC/SC run (marked ``pcsc``) puts the same virtual cards and PSAM into
vpcd readers of a private pcscd and talks to them through ``agent.drivers.pcsc``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.sim.card import VirtualSscCard
from agent.sim.channel import SimChannel
from agent.sim.psam import VirtualPsam
from agent.testing.pcscd import PcscdInstance
from tests.contracts.card_contract import (
    CHECKS,
    MakeRig,
    Rig,
    check_card_contract,
)

READER_CARD = "Virtual PCD 00 00"
READER_PSAM = "Virtual PCD 00 01"


@contextlib.asynccontextmanager
async def sim_rig(card: VirtualSscCard, psam: VirtualPsam) -> AsyncIterator[Rig]:
    channel = SimChannel(card)

    async def pull() -> None:
        channel.pull()

    yield Rig(channel, SimChannel(psam), pull)


def pcsc_rig(inst: PcscdInstance, *, settle: bool = True) -> MakeRig:
    """``settle``: after pulling the card, wait until pcscd has noticed (its vpcd poll)."""
    from agent.drivers.pcsc import PcscReader
    from agent.sim.vpcd import VpcdBridge

    @contextlib.asynccontextmanager
    async def rig(card: VirtualSscCard, psam: VirtualPsam) -> AsyncIterator[Rig]:
        card_bridge = VpcdBridge(card, "127.0.0.1", inst.slot_port(0), reconnect=False)
        psam_bridge = VpcdBridge(psam, "127.0.0.1", inst.slot_port(1), reconnect=False)
        async with PcscReader(READER_CARD) as r0, PcscReader(READER_PSAM) as r1:
            try:
                await psam_bridge.insert(timeout=10)
                await card_bridge.insert(timeout=10)
                await r0.wait_for_card(timeout=10)
                await r1.wait_for_card(timeout=10)

                async def pull() -> None:
                    await card_bridge.remove()
                    if settle:
                        await r0.wait_for_removal(timeout=10)

                async with r0.session() as channel, r1.session() as psam_channel:
                    yield Rig(channel, psam_channel, pull)
            finally:
                await card_bridge.remove()
                await psam_bridge.remove()
                # the next card must not meet a reader that has not noticed this one left
                await r0.wait_for_removal(timeout=10)
                await r1.wait_for_removal(timeout=10)

    return rig


async def test_contract_in_memory() -> None:
    results = await check_card_contract(sim_rig)
    assert set(results) == {f"{a}:{n}" for a in ("des", "sm4") for n in CHECKS}
    # the two algorithms really are different cards with different FCIs
    assert results["des:select"]["algorithm"] == "des"
    assert results["sm4:select"]["algorithm"] == "sm4"


@pytest.mark.pcsc
@pytest.mark.timeout(180)  # ten card insertions and removals through pcscd's 400 ms poll
async def test_contract_pcsc_equals_in_memory(contract_pcscd: PcscdInstance) -> None:
    expected = await check_card_contract(sim_rig)
    async with asyncio.timeout(170):
        observed = await check_card_contract(pcsc_rig(contract_pcscd))
    differing: dict[str, Any] = {
        k: (expected[k], observed.get(k)) for k in expected if expected[k] != observed.get(k)
    }
    assert not differing
    assert observed == expected


@pytest.mark.pcsc
async def test_pulled_before_pcscd_noticed_is_card_removed(contract_pcscd: PcscdInstance) -> None:
    """The citizen pulls the card and the next APDU goes out before pcscd's next vpcd poll
    (SCARD_E_NOT_TRANSACTED at the driver): still ``CardRemovedError``."""
    from tests.contracts.card_contract import check_pulled_mid_read, fresh_card, fresh_psam

    async with pcsc_rig(contract_pcscd, settle=False)(fresh_card("des"), fresh_psam()) as rig:
        await check_pulled_mid_read(rig)
