"""A terminal on the simulators for the engine and recovery tests: virtual card (``SimChannel``),
virtual PSAM behind the real PSAM client, an in-memory journal, a fake central, the sim bank."""

from __future__ import annotations

from typing import Any, cast

from agent.journal.store import Journal
from agent.profile import load_profile
from agent.psam.client import PsamSecurityModule
from agent.psam.soft import verify_seal
from agent.sim.card import VirtualSscCard
from agent.sim.channel import FaultPlan, SimChannel
from agent.sim.factory import CardFactory
from agent.sim.pboc import PbocApplet
from agent.sim.psam import DEFAULT_TERMINAL_NUMBER, VirtualPsam
from agent.sim.rig import SimBankHost
from agent.tx.engine import TxEngine
from agent.tx.machine import TABLE
from agent.tx.ports import FakeUplink
from agent.tx.records import now_ms
from agent.tx.recovery import Recovery

PROFILE = load_profile("default")
TERMINAL_ID = DEFAULT_TERMINAL_NUMBER.hex()
NEW_PIN = "246810"


class Terminal:
    """One terminal and one card. ``state``: the card's lifecycle at issue."""

    def __init__(
        self,
        alg: str = "des",
        *,
        seed: int = 3,
        state: str = "active",
        online: bool = False,
        journal: Journal | None = None,
        card: VirtualSscCard | None = None,
    ) -> None:
        self.card = card or CardFactory(PROFILE, seed).issue(algorithm=alg, state=state)
        self.psam = VirtualPsam(PROFILE)
        self.sam = PsamSecurityModule(SimChannel(self.psam), PROFILE)
        self.journal = journal or Journal(":memory:", transitions=cast("Any", TABLE))
        # the link went down just now (offline activation is allowed for a while after)
        self.uplink = FakeUplink(self.journal, online=online, last_online_ms=now_ms())
        self.bank = SimBankHost()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.engine = TxEngine(
            self.journal,
            self.sam,
            PROFILE,
            None,
            self.uplink,
            TERMINAL_ID,
            bank=self.bank,
            on_event=lambda n, d: self.events.append((n, dict(d))),
        )
        self.recovery = Recovery(self.engine)

    @property
    def cid(self) -> str:
        return self.card.card_id_code.hex().upper()

    def channel(self, faults: FaultPlan | None = None) -> SimChannel:
        return SimChannel(self.card, faults=faults)

    def grant(self, kind: str, *, auth_id: str = "auth-1", ttl_ms: int = 60_000) -> None:
        """A pushed authorization (as the uplink stores it after verifying the signature)."""
        self.journal.add_authorization(
            auth_id, self.cid, kind, self.engine.clock() + ttl_ms, b"signed"
        )

    def bank_applet(self) -> PbocApplet:
        return next(a for a in self.card.applets if isinstance(a, PbocApplet))

    def verify_chain(self) -> bool:
        tn = bytes.fromhex(TERMINAL_ID)
        report = self.journal.verify_chain(lambda d, m: verify_seal(PROFILE, tn, d, m))
        return report.ok

    def kinds(self) -> list[str]:
        return [r.kind for r in self.journal.records()]


def with_state(card: VirtualSscCard, **changes: Any) -> VirtualSscCard:
    """The same card with persistent state fields changed (``pin_tries_left=0``...)."""
    state = card.to_state()
    state.update(changes)
    return VirtualSscCard.from_state(PROFILE, state)


# --- flows as data: setup, run, and the truth read straight from the virtual card -------------
async def _setup_unlock(t: Terminal) -> None:
    await t.engine.lock(t.channel())
    t.grant("unlock")


async def _setup_pin_blocked(t: Terminal, kind: str) -> None:
    t.card = with_state(t.card, pin_tries_left=0)
    t.grant(kind)


async def _setup_bank(t: Terminal) -> None:
    t.bank_applet().blocked = True
    t.uplink.online = True


async def _nothing(t: Terminal) -> None:
    return None


FLOWS: dict[str, dict[str, Any]] = {
    "lock": {
        "setup": _nothing,
        "run": lambda t, ch: t.engine.lock(ch),
        "truth": lambda t: t.card.state == "temp_locked",
    },
    "unlock": {
        "setup": _setup_unlock,
        "run": lambda t, ch: t.engine.unlock(ch),
        "truth": lambda t: t.card.state == "active",
    },
    "activate": {
        "state": "not_activated",
        "setup": _nothing,
        "run": lambda t, ch: t.engine.activate(ch, PROFILE.initial_pin, NEW_PIN),
        "truth": lambda t: t.card.activated,
    },
    "pin_change": {
        "setup": _nothing,
        "run": lambda t, ch: t.engine.pin_change(ch, PROFILE.initial_pin, NEW_PIN),
        "truth": lambda t: t.card.pin == NEW_PIN,
    },
    "pin_reset": {
        "setup": lambda t: _setup_pin_blocked(t, "pin_reset"),
        "run": lambda t, ch: t.engine.pin_reset(ch, NEW_PIN),
        "truth": lambda t: t.card.pin == NEW_PIN,
    },
    "pin_unblock": {
        "setup": lambda t: _setup_pin_blocked(t, "pin_unblock"),
        "run": lambda t, ch: t.engine.pin_unblock(ch, NEW_PIN),
        "truth": lambda t: t.card.pin == NEW_PIN,
    },
    "bank_activate": {
        "setup": _setup_bank,
        "run": lambda t, ch: t.engine.bank_activate(ch),
        "truth": lambda t: not t.bank_applet().blocked,
    },
}


async def prepared(flow: str, alg: str, seed: int = 3) -> Terminal:
    spec = FLOWS[flow]
    t = Terminal(alg, seed=seed, state=spec.get("state", "active"))
    await spec["setup"](t)
    return t
