"""The device side of a simulated card or PSAM, as seen by any transport. Sans-IO.

A ``SimDevice`` answers raw APDU bytes with raw response bytes, exactly as a contact card does
(no T=0 GET RESPONSE help from the transport: a device may answer ``61xx``). The same object is
driven by the in-memory channel (``agent.sim.channel``), the vpcd bridge (``agent.sim.vpcd``,
through pcscd) and the raw-replay benchmark.
"""

from __future__ import annotations

from typing import Protocol


class SimDevice(Protocol):
    """A simulated ISO 7816 device (card or PSAM)."""

    @property
    def atr(self) -> bytes:
        """The answer-to-reset sent at power-on."""
        ...

    def power_on(self) -> bytes:
        """Cold reset: clears session state (selection, challenge, verified PINs); returns ATR."""
        ...

    def power_off(self) -> None:
        """Power loss: session state is gone, persistent state (files, counters, lifecycle) kept."""
        ...

    def process(self, apdu: bytes) -> bytes:
        """Answer one raw command APDU with ``data ‖ SW1 SW2``; never raises for bad input."""
        ...


class SimApplet(Protocol):
    """An application hosted by the virtual card besides SSSE (the PBOC/UnionPay app, PSE, PPSE).

    The virtual card routes ``SELECT`` by DF name to the applet whose ``aids`` match, then sends
    every command to the selected applet until another SELECT. State must be serialisable so that
    a card persists across restarts.
    """

    aids: tuple[bytes, ...]

    def select(self, aid: bytes) -> bytes:
        """Answer SELECT: ``FCI ‖ SW`` (raw response bytes)."""
        ...

    def process(self, apdu: bytes) -> bytes:
        """Answer one command while selected (raw bytes in, ``data ‖ SW`` out)."""
        ...

    def reset(self) -> None:
        """Power cycle: clear session state."""
        ...

    def to_state(self) -> dict[str, object]:
        """Persistent state as JSON-able data."""
        ...
