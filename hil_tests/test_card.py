"""Card: SSSE select and identity read; per-APDU latency statistics (recorded, not asserted)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agent.card.t0 import transceive
from agent.hil.report import format_stats, latency_stats
from agent.ssc import commands as c
from agent.ssc.app import SscApplication
from hil_tests.conftest import HilEnv, HilFailure

pytestmark = pytest.mark.card


class _Timed:
    """Channel proxy that times every APDU exchange with the reader."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.samples: list[float] = []

    async def transmit(self, command: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.inner.transmit(command)
        finally:
            self.samples.append(time.perf_counter() - t0)


async def test_select_and_identity(hil: HilEnv, card: Any) -> None:
    app = SscApplication(card, hil.profile)
    sel = await app.select()
    if sel.lock is not None:
        raise HilFailure(
            f"the card's social-security application is {sel.lock.value}",
            "use an active test card (unlock it with `ssc-agent tx unlock`)",
        )
    ident = await app.read_identity()
    code = ident.card_id.hex
    test = "allow-listed test card" if code in hil.test_cards else "not a test card"
    hil.run.add_inventory("card identification code", f"{code} ({test})")
    hil.run.add_inventory(
        "card",
        f"spec {ident.spec_version}, type {ident.card_type}, area {ident.area_code}, "
        f"algorithm {sel.algorithm.value if sel.algorithm else '?'}, protocol "
        f"{getattr(card, 'protocol', '?')}",
    )
    assert len(ident.card_id_code) == 16


async def test_apdu_latency(hil: HilEnv, card: Any) -> None:
    app = SscApplication(card, hil.profile)
    await app.select()
    await app.read_identity()  # leaves EF05 selected
    spec = c.EF05_RECORDS[0]
    timed = _Timed(card)
    for _ in range(max(5, hil.opt("latency_apdus"))):
        resp = await transceive(timed, spec.read())  # T=0: 61xx/6Cxx exchanges count too
        assert resp.ok, f"READ RECORD answered {resp.sw:04X}"
    samples = timed.samples
    stats = latency_stats(samples)
    hil.run.add_timing("card APDU latency (READ RECORD EF05)", format_stats(stats))
