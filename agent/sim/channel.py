"""In-memory ``CardChannel`` over a ``SimDevice``, with a latency model and fault injection.

This is the seam used by the demo, the tests and the benchmarks (DESIGN §2, §9): the same card
flows that run over pcscd run here against the virtual card or PSAM, byte for byte. The channel
is a *contact reader* in miniature: it powers the device on when connected, sends raw command
bytes to ``device.process`` and parses the raw answer; it does **not** handle ``61xx``/``6Cxx``
(that is ``agent.card.t0``'s job, exactly as with a real reader).

Fault injection (``FaultPlan``) is indexed by the 0-based number of the APDU on this channel:

* **card pulled** at APDU *k*: that transmit and every later one raise ``CardRemovedError``.
  ``processed=False`` pulls the card *before* it saw APDU *k*; ``processed=True`` pulls it
  *after* the card executed APDU *k* but before the answer reached the terminal. The second
  case is the one that leaves a transaction in doubt (DESIGN §4: ``in_doubt``), so both matter.
* **forced status word** for APDU *k*: the terminal receives only that SW; the card sees the
  command or not, as configured (a refusal vs. "it wrote, then reported an error").
* **garbage** for APDU *k*: the terminal receives the given raw bytes instead of the answer
  (a noisy line); by default the card did execute the command.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.errors import CardRemovedError, LocalProtocolError
from agent.logs import apdu_trace_on, trace_apdu

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.sim.base import SimDevice


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-APDU delay: ``base_s + per_byte_s × (command bytes + response bytes)``.

    Contact readers at 9600–115200 baud spend most of an exchange on the wire, so a per-byte
    term models them better than a constant. Zero (the default) means no sleep at all.
    """

    base_s: float = 0.0
    per_byte_s: float = 0.0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.per_byte_s < 0:
            raise LocalProtocolError("latency must not be negative")

    def delay(self, n_bytes: int) -> float:
        return self.base_s + self.per_byte_s * n_bytes


@dataclass(frozen=True, slots=True)
class InjectedResponse:
    """What the terminal receives for one APDU instead of the device's answer."""

    raw: bytes
    processed: bool  # whether the device executed the command anyway


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults for one channel, keyed by the 0-based APDU index. Immutable; build by chaining::

    FaultPlan().pull(3, processed=True)
    FaultPlan().force_sw(0, 0x6581).garbage(2, b"\\x90")
    """

    pull_at: int | None = None
    pull_processed: bool = False
    responses: Mapping[int, InjectedResponse] = field(default_factory=lambda: MappingProxyType({}))

    def pull(self, index: int, *, processed: bool = False) -> FaultPlan:
        """Pull the card at APDU ``index`` (before or after the card processed it)."""
        _check_index(index)
        return replace(self, pull_at=index, pull_processed=processed)

    def force_sw(self, index: int, sw: int, *, processed: bool = False) -> FaultPlan:
        """Answer APDU ``index`` with status word ``sw`` only."""
        _check_index(index)
        if not 0 <= sw <= 0xFFFF:
            raise LocalProtocolError(f"status word out of range: {sw!r}")
        return self._with(index, InjectedResponse(sw.to_bytes(2, "big"), processed))

    def garbage(self, index: int, raw: bytes, *, processed: bool = True) -> FaultPlan:
        """Answer APDU ``index`` with ``raw`` bytes (may be shorter than a status word)."""
        _check_index(index)
        return self._with(index, InjectedResponse(bytes(raw), processed))

    def _with(self, index: int, response: InjectedResponse) -> FaultPlan:
        table = dict(self.responses)
        table[index] = response
        return replace(self, responses=MappingProxyType(table))


def _check_index(index: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise LocalProtocolError(f"APDU index must be a non-negative integer, got {index!r}")


class SimChannel:
    """A ``CardChannel`` (``agent.card.apdu``) over a simulated device.

    ``connect()`` powers the device on (cold reset) and returns the ATR; ``transmit`` connects
    implicitly the first time, like a reader that resets the card when a session opens.
    ``apdu_count`` counts every ``transmit`` call, including the ones that failed; fault indexes
    refer to it.
    """

    def __init__(
        self,
        device: SimDevice,
        *,
        latency: Latency | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.device = device
        self.latency = latency or Latency()
        self.faults = faults or FaultPlan()
        self.apdu_count = 0
        self.processed_count = 0  # APDUs the device actually executed
        self._atr: bytes | None = None
        self._removed = False

    # -- session -----------------------------------------------------------------------------
    @property
    def atr(self) -> bytes | None:
        """The ATR of the current session, None before ``connect``."""
        return self._atr

    @property
    def present(self) -> bool:
        """False once the card has been pulled (and until ``reinsert``)."""
        return not self._removed

    @property
    def connected(self) -> bool:
        return self._atr is not None and not self._removed

    async def connect(self) -> bytes:
        """Cold-reset the device and return its ATR (``CardRemovedError`` if pulled)."""
        if self._removed:
            raise CardRemovedError("card removed from the reader")
        self._atr = self.device.power_on()
        return self._atr

    async def disconnect(self) -> None:
        """Power the device off (session state gone, persistent state kept)."""
        if self._atr is not None and not self._removed:
            self.device.power_off()
        self._atr = None

    def pull(self) -> None:
        """Pull the card now: power is lost, every later transmit raises ``CardRemovedError``."""
        if not self._removed:
            self._removed = True
            if self._atr is not None:
                self.device.power_off()
            self._atr = None

    def reinsert(self, faults: FaultPlan | None = None) -> None:
        """Put the card back (optionally with a new fault plan); the next use powers it on."""
        self._removed = False
        self._atr = None
        if faults is not None:
            self.faults = faults

    # -- CardChannel -------------------------------------------------------------------------
    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        """Send one APDU; raise ``CardRemovedError`` if the card is (or gets) pulled."""
        index = self.apdu_count
        self.apdu_count += 1
        if self._removed:
            raise CardRemovedError("card removed from the reader")
        if self._atr is None:
            await self.connect()
        raw_command = command.to_bytes()
        plan = self.faults
        if plan.pull_at == index:
            if plan.pull_processed:
                self._process(raw_command)
            self.pull()
            raise CardRemovedError(f"card removed during APDU #{index}")
        injected = plan.responses.get(index)
        if injected is None:
            raw = self._process(raw_command)
        else:
            if injected.processed:
                self._process(raw_command)
            raw = injected.raw
        if apdu_trace_on():
            trace_apdu(">", raw_command)
            trace_apdu("<", raw)
        delay = self.latency.delay(len(raw_command) + len(raw))
        if delay > 0:
            await asyncio.sleep(delay)
        return ResponseApdu.from_bytes(raw)

    def _process(self, raw_command: bytes) -> bytes:
        self.processed_count += 1
        return self.device.process(raw_command)
