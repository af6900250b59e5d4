"""The simulated terminal in one object: card in the reader, PSAM, journal (DESIGN §2, §8).

``SimRig(state_dir, profile)`` wires what a kiosk has, on the simulators:

* the card store of ``agent.sim.store`` in ``state_dir`` (the same layout ``ssc-agent card
  --sim`` uses: ``cards/<id>.json`` + ``current``), with the current card in the reader — one is
  issued by ``CardFactory(profile, seed=0)`` the first time, as ``card --sim`` does;
* the virtual PSAM, persisted in ``state_dir/psam.json`` (terminal number, serial, TSN);
* ``SimChannel``\\ s for card and PSAM, the real PSAM client (``PsamSecurityModule``) on top;
* the journal at ``state_dir/journal.db``; the terminal id is the PSAM's EF16, read through the
  PSAM client (:meth:`SimRig.terminal_id`).

Card state is saved **after every APDU that changed it** (``PersistentDevice``), as a real
card's EEPROM keeps a write the moment it is made: a process killed mid-transaction leaves the
card exactly as far as it got, and the next process (a CLI call, the restarted agent) sees it.

``SimBankHost`` adapts ``agent.sim.bank.BankHostSim`` to ``agent.tx.ports.BankHostPort``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.errors import ConfigError, SimStateError, UplinkUnavailableError
from agent.journal.store import Journal
from agent.psam.client import PsamSecurityModule
from agent.sim.bank import ArqcRequest, BankHostSim
from agent.sim.channel import FaultPlan, SimChannel
from agent.sim.factory import TEST_ISSUER_MAC_KEY, TEST_ISSUER_MASTER_KEY, CardFactory
from agent.sim.psam import VirtualPsam
from agent.sim.store import CardStore, atomic_write
from agent.tx.engine import TxEngine
from agent.tx.machine import TABLE
from agent.tx.ports import BankAnswer, BankRequest, FakeUplink
from agent.tx.records import now_ms

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from agent.profile import CardProfile
    from agent.sim.card import VirtualSscCard
    from agent.tx.engine import EventSink
    from agent.tx.policy import PolicyConfig
    from agent.tx.ports import UplinkPort

PSAM_FILE = "psam.json"
JOURNAL_FILE = "journal.db"


class PersistentDevice:
    """A ``SimDevice`` wrapper that calls ``save()`` after each APDU that changed the
    device's persistent state (``to_state()`` differs)."""

    def __init__(self, device: Any, save: Callable[[], None]) -> None:
        self.device = device
        self._save = save
        self._last = device.to_state()

    @property
    def atr(self) -> bytes:
        atr: bytes = self.device.atr
        return atr

    def power_on(self) -> bytes:
        atr: bytes = self.device.power_on()
        return atr

    def power_off(self) -> None:
        self.device.power_off()

    def process(self, apdu: bytes) -> bytes:
        out: bytes = self.device.process(apdu)
        state = self.device.to_state()
        if state != self._last:
            self._save()
            self._last = state
        return out


class SimBankHost:
    """``BankHostPort`` over the simulated bank host (test issuer keys of the card factory)."""

    def __init__(self, host: BankHostSim | None = None, *, online: bool = True) -> None:
        self.host = host or BankHostSim(TEST_ISSUER_MASTER_KEY, TEST_ISSUER_MAC_KEY)
        self.online = online
        self.requests = 0

    async def authorize(self, request: BankRequest) -> BankAnswer:
        if not self.online:
            raise UplinkUnavailableError("the bank host is not reachable")
        self.requests += 1
        req = ArqcRequest(
            request.pan,
            request.psn,
            request.atc,
            request.cryptogram,
            request.transaction_data,
            request.aip,
            request.iad,
        )
        answer = self.host.authorize(req, request.action)
        return BankAnswer(answer.approved, answer.response_code.decode("ascii"), answer.scripts)


class SimRig:
    """A simulated terminal persisted in ``state_dir`` (module docstring)."""

    def __init__(
        self,
        state_dir: str | Path,
        profile: CardProfile,
        *,
        seed: int = 0,
        faults: FaultPlan | None = None,
        journal_path: str | Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SimStateError(f"cannot create state directory {self.state_dir}: {e}") from None
        self.profile = profile
        self.store = CardStore(self.state_dir)
        card = self.store.load_current()
        if card is None:
            card = CardFactory(profile, seed=seed).issue()
            self.store.insert(card)
        self.card: VirtualSscCard = card
        self.card_channel = SimChannel(PersistentDevice(card, self.save_card), faults=faults)
        self.psam = self._load_psam()
        self.psam_channel = SimChannel(PersistentDevice(self.psam, self.save_psam))
        self.sam = PsamSecurityModule(self.psam_channel, profile)
        self.journal = Journal(
            journal_path if journal_path is not None else self.state_dir / JOURNAL_FILE,
            transitions=cast("Mapping[tuple[str, str], str]", TABLE),
        )

    # ---- persistence ----------------------------------------------------------------------
    def _load_psam(self) -> VirtualPsam:
        path = self.state_dir / PSAM_FILE
        if not path.exists():
            psam = VirtualPsam(self.profile)
            self._write_psam(psam)
            return psam
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise SimStateError(f"{path}: not a JSON object")
            return VirtualPsam.from_state(self.profile, state)
        except (OSError, ValueError) as e:
            raise SimStateError(f"{path}: unreadable PSAM state ({e})") from None
        except ConfigError as e:
            raise SimStateError(f"{path}: {e.message}") from None

    def _write_psam(self, psam: VirtualPsam) -> None:
        data = json.dumps(psam.to_state(), sort_keys=True).encode()
        try:
            atomic_write(self.state_dir / PSAM_FILE, data)
        except OSError as e:
            raise SimStateError(f"cannot save the PSAM: {e}") from None

    def save_card(self) -> None:
        self.store.save(self.card)

    def save_psam(self) -> None:
        self._write_psam(self.psam)

    # ---- the reader -----------------------------------------------------------------------
    def insert(self, card: VirtualSscCard, *, faults: FaultPlan | None = None) -> None:
        """Put another card in the reader (saved to the store, made current)."""
        self.store.insert(card)
        self.card = card
        self.card_channel = SimChannel(PersistentDevice(card, self.save_card), faults=faults)

    def reinsert(self, faults: FaultPlan | None = None) -> None:
        """Take the current card out and put it back (a new session, optional new faults)."""
        self.card_channel = SimChannel(
            PersistentDevice(self.card, self.save_card), faults=faults or FaultPlan()
        )

    # ---- the terminal ---------------------------------------------------------------------
    async def terminal_id(self) -> str:
        """The PSAM's terminal number (EF16), read through the PSAM client: 12 digits."""
        return (await self.sam.terminal_number()).hex()

    async def engine(
        self,
        *,
        uplink: UplinkPort | None = None,
        online: bool = False,
        policy: PolicyConfig | None = None,
        bank: SimBankHost | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], int] | None = None,
    ) -> TxEngine:
        """A ``TxEngine`` on this rig (a ``FakeUplink`` granting authorizations by default)."""
        # The simulated link "went down" when the rig was opened: offline activation is then
        # within the policy's age limit, as on a terminal that just lost its network.
        up = uplink or FakeUplink(self.journal, online=online, last_online_ms=now_ms())
        kwargs: dict[str, Any] = {"bank": bank, "on_event": on_event}
        if clock is not None:
            kwargs["clock"] = clock
        return TxEngine(
            self.journal, self.sam, self.profile, policy, up, await self.terminal_id(), **kwargs
        )

    async def aclose(self) -> None:
        await self.card_channel.disconnect()
        await self.psam_channel.disconnect()
        self.save_card()
        self.save_psam()
        self.journal.close()

    async def __aenter__(self) -> SimRig:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
