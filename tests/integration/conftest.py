"""Fixtures for the real PC/SC path: a private pcscd with vpcd readers (see ``pcscd.py``).

``PCSCLITE_CSOCK_NAME`` is set here, at import, because libpcsclite reads it once, on the
first PC/SC call of the process; the daemon itself starts lazily, once per session, the first
time a test asks for it. ``SSC_TEST_PCSCD=system`` reuses the system pcscd instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.integration import pcscd as pcscd_mod

_MODE = os.environ.get("SSC_TEST_PCSCD", "private")
if _MODE != "system":
    os.environ["PCSCLITE_CSOCK_NAME"] = str(pcscd_mod.private_socket_path())


@pytest.fixture(scope="session")
def pcscd() -> Iterator[pcscd_mod.PcscdInstance]:
    """The session's pcscd serving two vpcd readers ("Virtual PCD 00 00" and "00 01")."""
    missing = pcscd_mod.missing_tools()
    if missing:
        pytest.skip("PC/SC integration tests need " + ", ".join(missing))
    if _MODE == "system":
        yield pcscd_mod.system_instance()
        return
    inst = pcscd_mod.start_private(debug=bool(os.environ.get("SSC_PCSCD_DEBUG")))
    try:
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def restartable_pcscd(pcscd: pcscd_mod.PcscdInstance) -> pcscd_mod.PcscdInstance:
    if not pcscd.private:
        pytest.skip("SSC_TEST_PCSCD=system: the system pcscd is not restarted by tests")
    return pcscd


@pytest.fixture
async def bridges(
    pcscd: pcscd_mod.PcscdInstance,
) -> AsyncIterator[Callable[..., object]]:
    """Factory ``bridges(device, slot=0, reconnect=True) -> VpcdBridge``; all pulled at teardown.

    Teardown waits until pcscd has noticed the readers are empty, so the next test starts
    from an empty reader.
    """
    from agent.sim.vpcd import VpcdBridge

    made: list[VpcdBridge] = []

    def make(device: object, slot: int = 0, *, reconnect: bool = True) -> VpcdBridge:
        bridge = VpcdBridge(
            device,  # type: ignore[arg-type]
            "127.0.0.1",
            pcscd.slot_port(slot),
            reconnect=reconnect,
        )
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        await bridge.remove()
    if made:
        await _wait_readers_empty(pcscd)


async def _wait_readers_empty(inst: pcscd_mod.PcscdInstance) -> None:
    from agent.drivers.pcsc import PcscReader

    for name in inst.reader_names:
        reader = PcscReader(name)
        try:
            await reader.wait_for_removal(timeout=5)
        finally:
            await reader.aclose()
