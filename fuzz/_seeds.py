"""Seed inputs recorded from the simulators: every command and answer of a full card read.

Real answers make far better mutation seeds than random bytes: FCI templates, EF05/EF06 records,
EMV records, status words, T=0 61xx/6Cxx exchanges all appear as the virtual card sends them.
"""

from __future__ import annotations

import asyncio
import functools

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.profile import CardProfile, load_profile
from agent.psam.client import PsamSecurityModule
from agent.sim.card import VirtualSscCard
from agent.sim.channel import SimChannel
from agent.sim.factory import CardFactory
from agent.sim.psam import VirtualPsam
from agent.tx.read import read_card


class Recorder:
    """A channel that records (command, response) pairs."""

    def __init__(self, inner: CardChannel) -> None:
        self.inner = inner
        self.log: list[tuple[CommandApdu, ResponseApdu]] = []

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        resp = await self.inner.transmit(command)
        self.log.append((command, resp))
        return resp


@functools.cache
def profile() -> CardProfile:
    return load_profile("default")


def issue(alg: str = "des", seed: int = 7, **kwargs: object) -> VirtualSscCard:
    return CardFactory(profile(), seed=seed).issue(algorithm=alg, **kwargs)  # type: ignore[arg-type]


def sam() -> PsamSecurityModule:
    return PsamSecurityModule(SimChannel(VirtualPsam(profile())), profile())


@functools.cache
def read_exchanges() -> tuple[tuple[bytes, bytes], ...]:
    """``(command bytes, response bytes)`` of full reads of a DES and an SM4 card."""
    out: list[tuple[bytes, bytes]] = []
    for alg, kw in (("des", {}), ("sm4", {"long_name": True})):
        rec = Recorder(SimChannel(issue(alg, **kw)))
        asyncio.run(read_card(rec, profile(), sam()))
        out.extend((c.to_bytes(), r.to_bytes()) for c, r in rec.log)
    return tuple(out)


def responses() -> list[bytes]:
    """Distinct raw responses (data ‖ SW) of the recorded reads."""
    return sorted({r for _, r in read_exchanges()})
