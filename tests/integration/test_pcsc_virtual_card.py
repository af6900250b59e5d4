"""The real simulators behind pcscd: the virtual SSC card and PSAM, seen by our driver and by
the Debian tools (``opensc-tool``, ``pcsc_scan``) exactly as a physical card would be.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from agent.card.apdu import CommandApdu
from agent.drivers.pcsc import PcscReader
from tests.integration.pcscd import PcscdInstance

pytestmark = pytest.mark.pcsc

SSSE_AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
SELECT_SSSE = "00A404000F" + SSSE_AID.hex().upper()


def _virtual_card() -> Any:
    card_mod = pytest.importorskip("agent.sim.card", reason="agent.sim.card not landed yet")
    factory_mod = pytest.importorskip("agent.sim.factory", reason="agent.sim.factory not landed")
    from agent.profile import load_profile

    assert card_mod is not None
    return factory_mod.CardFactory(load_profile("default"), seed=7).issue()


def _virtual_psam() -> Any:
    psam_mod = pytest.importorskip("agent.sim.psam", reason="agent.sim.psam not landed yet")
    from agent.profile import load_profile

    return psam_mod.VirtualPsam(load_profile("default"))


async def _run(env: dict[str, str], *argv: str, limit: float = 20) -> tuple[int, str]:
    # run as a subprocess on the loop: the bridge must keep answering while the tool works
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


def _hex_spaced(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


async def test_virtual_card_and_psam_through_pcscd(pcscd: PcscdInstance, bridges: Any) -> None:
    card, psam = _virtual_card(), _virtual_psam()
    await bridges(card, 0).insert()
    await bridges(psam, 1).insert()
    async with PcscReader("Virtual PCD 00 00") as r0, PcscReader("Virtual PCD 00 01") as r1:
        assert await r0.wait_for_card(timeout=10) == card.atr
        assert await r1.wait_for_card(timeout=10) == psam.atr
        async with r0.session() as channel:
            resp = await channel.transmit(CommandApdu(0x00, 0xA4, 0x04, 0x00, SSSE_AID, ne=256))
            # T=0 cards may answer 61xx (GET RESPONSE is the card layer's job, not the driver's)
            assert resp.sw == 0x9000 or resp.sw1 == 0x61, f"{resp.sw:04X}"
        async with r1.session() as channel:
            resp = await channel.transmit(CommandApdu(0x00, 0x84, 0x00, 0x00, ne=8))
            assert resp.sw == 0x9000 or resp.sw1 in (0x61, 0x6A, 0x6D, 0x69, 0x6E), f"{resp.sw:04X}"


async def test_opensc_tool_sees_atr_and_selects_ssse(pcscd: PcscdInstance, bridges: Any) -> None:
    tool = shutil.which("opensc-tool")
    if tool is None:
        pytest.skip("opensc-tool (Debian package opensc) is not installed")
    card = _virtual_card()
    await bridges(card, 0).insert()
    async with PcscReader("Virtual PCD 00 00") as reader:
        await reader.wait_for_card(timeout=10)
    rc, out = await _run(pcscd.env, tool, "--reader", "0", "--atr")
    assert rc == 0, out
    assert _hex_spaced(card.atr).lower() in out.lower()
    rc, out = await _run(pcscd.env, tool, "--reader", "0", "--send-apdu", SELECT_SSSE)
    assert rc == 0, out
    # opensc prints "Received (SW1=0x90, SW2=0x00)" (or 0x61 xx on a T=0 card)
    assert "SW1=0x90, SW2=0x00" in out or "SW1=0x61" in out, out


async def test_pcsc_scan_lists_the_virtual_card(pcscd: PcscdInstance, bridges: Any) -> None:
    tool = shutil.which("pcsc_scan")
    if tool is None:
        pytest.skip("pcsc_scan (Debian package pcsc-tools) is not installed")
    card = _virtual_card()
    await bridges(card, 0).insert()
    async with PcscReader("Virtual PCD 00 00") as reader:
        await reader.wait_for_card(timeout=10)
    rc, out = await _run(pcscd.env, tool, "-c", "-n")
    assert rc == 0, out
    assert "Virtual PCD 00 00" in out
    assert card.atr.hex(" ").upper() in out.upper()
