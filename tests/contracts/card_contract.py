"""The card contract (docs/CARD-PROTOCOL.md §1, §2) as one suite, run over any transport.

``check_card_contract(make_rig)`` runs every check against fresh, identical cards and returns
what it observed; each check also asserts the contract itself. The suite is run over the
in-memory ``SimChannel`` and over pcscd+vpcd (``PcscReader`` channels): the observations must
be equal, byte for byte where the card's answers are concerned (DESIGN §9: "contract suites run
against both the simulators and pcscd").

A *rig* is one card session plus a PSAM session (``Rig``): ``make_rig(card, psam)`` is an async
context manager that puts both devices in their readers and opens the channels. ``pull()`` takes
the card out of the reader as a citizen would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.errors import CardRemovedError, PinBlockedError, PinError
from agent.profile import CardProfile, load_profile
from agent.psam.client import PsamSecurityModule
from agent.sim.card import VirtualSscCard
from agent.sim.factory import CardFactory
from agent.sim.psam import VirtualPsam
from agent.ssc.app import CardState, SscApplication
from agent.tx.read import read_card

PROFILE = load_profile("default")
WRONG_PIN = "999999"


@dataclass
class Rig:
    channel: CardChannel
    psam_channel: CardChannel
    pull: Callable[[], Awaitable[None]]


class MakeRig(Protocol):
    def __call__(
        self, card: VirtualSscCard, psam: VirtualPsam
    ) -> contextlib.AbstractAsyncContextManager[Rig]: ...


def fresh_card(algorithm: str, seed: int = 11) -> VirtualSscCard:
    """The same card every time for the same arguments (both transports get identical cards)."""
    return CardFactory(PROFILE, seed).issue(algorithm=algorithm, state="active")


def fresh_psam() -> VirtualPsam:
    return VirtualPsam(PROFILE)


class PullAfter:
    """A channel that pulls the card just before APDU number ``after`` (0-based)."""

    def __init__(self, inner: CardChannel, after: int, pull: Callable[[], Awaitable[None]]):
        self.inner = inner
        self.after = after
        self._pull = pull
        self.sent = 0

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        if self.sent == self.after:
            await self._pull()
        self.sent += 1
        return await self.inner.transmit(command)


# --- the checks ------------------------------------------------------------------------------
async def check_select(rig: Rig, profile: CardProfile = PROFILE) -> dict[str, Any]:
    sel = await SscApplication(rig.channel, profile).select()
    assert sel.sw == 0x9000
    assert sel.lock is None
    assert sel.algorithm is not None
    assert sel.fci[:1] == b"\x6f"
    return {"sw": f"{sel.sw:04X}", "algorithm": sel.algorithm.value, "fci": sel.fci.hex()}


async def check_read(rig: Rig, profile: CardProfile = PROFILE) -> dict[str, Any]:
    sam = PsamSecurityModule(rig.psam_channel, profile)
    report = (await read_card(rig.channel, profile, sam)).to_json(show_pii=True)
    assert report["state"] == "active"
    assert report["holder"] is not None
    assert report["card_id_code"] is not None
    return report


async def check_lock_unlock(rig: Rig, profile: CardProfile = PROFILE) -> dict[str, Any]:
    sam = PsamSecurityModule(rig.psam_channel, profile)
    app = SscApplication(rig.channel, profile, sam)
    await app.select()
    await app.read_identity()
    await app.block()
    locked = await app.select()
    assert locked.sw == 0x6283, f"{locked.sw:04X}"
    assert locked.lock is CardState.TEMP_LOCKED
    assert locked.fci, "a temporarily locked SSSE still returns its FCI"
    await app.unblock()
    again = await app.select()
    assert again.sw == 0x9000
    status = await app.state()
    assert status.state is CardState.ACTIVE
    return {
        "locked_sw": f"{locked.sw:04X}",
        "locked_fci": locked.fci.hex(),
        "unlocked_sw": f"{again.sw:04X}",
        "state": status.state.value,
    }


async def _verify(app: SscApplication, pin: str) -> str:
    try:
        await app.verify_pin(pin)
    except PinBlockedError:
        return "blocked"
    except PinError as e:
        return f"wrong:{e.tries_left}"
    return "ok"


async def check_pin_countdown(rig: Rig, profile: CardProfile = PROFILE) -> dict[str, Any]:
    app = SscApplication(rig.channel, profile)
    await app.select()
    start = await app.pin_tries_left()
    steps = [await _verify(app, WRONG_PIN), await _verify(app, WRONG_PIN)]
    steps.append(await _verify(app, profile.initial_pin))
    for _ in range(profile.pin_max_tries):
        steps.append(await _verify(app, WRONG_PIN))
    await app.select()  # leave the verified state: the counter is read fresh
    left = await app.pin_tries_left()
    steps.append(await _verify(app, profile.initial_pin))
    n = profile.pin_max_tries
    assert start == n
    assert steps[:3] == [f"wrong:{n - 1}", f"wrong:{n - 2}", "ok"]
    assert steps[3:-1] == [f"wrong:{k}" for k in range(n - 1, 0, -1)] + ["blocked"]
    assert left == 0
    assert steps[-1] == "blocked"
    return {"start": start, "steps": steps, "left": left}


async def check_pulled_mid_read(
    rig: Rig, profile: CardProfile = PROFILE, after: int = 4
) -> dict[str, Any]:
    sam = PsamSecurityModule(rig.psam_channel, profile)
    channel = PullAfter(rig.channel, after, rig.pull)
    with pytest.raises(CardRemovedError) as info:
        await read_card(channel, profile, sam)
    assert channel.sent == after + 1
    return {"error": type(info.value).__name__, "code": info.value.code, "sent": channel.sent}


CHECKS = {
    "select": check_select,
    "read": check_read,
    "lock_unlock": check_lock_unlock,
    "pin_countdown": check_pin_countdown,
    "pulled_mid_read": check_pulled_mid_read,
}


async def check_card_contract(
    make_rig: MakeRig, algorithms: tuple[str, ...] = ("des", "sm4")
) -> dict[str, dict[str, Any]]:
    """Run every check on a fresh card per check and algorithm; the observations by name."""
    results: dict[str, dict[str, Any]] = {}
    for alg in algorithms:
        for name, check in CHECKS.items():
            async with make_rig(fresh_card(alg), fresh_psam()) as rig:
                results[f"{alg}:{name}"] = await check(rig)
    return results
