"""A tiny in-test card: routes APDUs to SimApplets, optionally with T=0 61xx behaviour.

The real in-memory channel is ``agent.sim.channel`` (another module); this adapter only exists so
the emv tests exercise the host flows against the simulated applets byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.sim.base import SimApplet
from agent.sim.pboc import PbocApplet, PseApplet

TEST_IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TEST_MAC_IMK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PAN = "6217001234567890123"
HOLDER_ID = "110101199003071234"
HOLDER_NAME = "张三丰"


def make_applet(**kw: object) -> PbocApplet:
    args: dict[str, object] = {
        "pan": PAN,
        "psn": 1,
        "expiry": date(2031, 12, 31),
        "effective": date(2021, 12, 1),
        "holder_name": HOLDER_NAME,
        "holder_id": HOLDER_ID,
        "issuer_master_key": TEST_IMK,
        "mac_master_key": TEST_MAC_IMK,
    }
    args.update(kw)
    return PbocApplet(**args)  # type: ignore[arg-type]


class AppletCard:
    """CardChannel over applets: SELECT by DF name (prefix allowed), the rest to the selection."""

    def __init__(self, applets: list[SimApplet], *, t0: bool = False) -> None:
        self.applets = applets
        self.t0 = t0
        self.selected: SimApplet | None = None
        self.pending: bytes | None = None
        self.log: list[tuple[bytes, bytes]] = []

    def reset(self) -> None:
        self.selected = None
        self.pending = None
        for a in self.applets:
            a.reset()

    def _raw(self, raw: bytes) -> bytes:
        cmd = CommandApdu.from_bytes(raw)
        pending, self.pending = self.pending, None
        if (cmd.cla, cmd.ins) == (0x00, 0xC0):
            if pending is None:
                return b"\x69\x85"
            n = cmd.ne or 256
            if n != len(pending):
                self.pending = pending
                return bytes((0x6C, len(pending) & 0xFF))
            return pending + b"\x90\x00"
        if (cmd.cla, cmd.ins, cmd.p1) == (0x00, 0xA4, 0x04):
            name = cmd.data
            for a in self.applets:
                if any(aid.startswith(name) for aid in a.aids):
                    resp = a.select(name)
                    if resp[-2] in (0x90, 0x62, 0x63):
                        self.selected = a
                    return self._emit(resp)
            return b"\x6a\x82"
        if self.selected is None:
            return b"\x69\x85"
        return self._emit(self.selected.process(raw))

    def _emit(self, resp: bytes) -> bytes:
        if self.t0 and len(resp) > 2 and resp[-2:] == b"\x90\x00":
            self.pending = resp[:-2]
            return bytes((0x61, len(self.pending) & 0xFF))
        return resp

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        raw = command.to_bytes()
        out = self._raw(raw)
        self.log.append((raw, out))
        return ResponseApdu.from_bytes(out)


class TamperingCard:
    """Wraps a card and replaces the answer of the n-th APDU (0-based) by ``fake``."""

    def __init__(self, inner: AppletCard, index: int, fake: Callable[[ResponseApdu], bytes]):
        self.inner = inner
        self.index = index
        self.fake = fake
        self.count = 0

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        resp = await self.inner.transmit(command)
        n = self.count
        self.count += 1
        if n == self.index:
            return ResponseApdu.from_bytes(self.fake(resp))
        return resp


def bank_card(*, t0: bool = False, pse: bool = True, **kw: object) -> tuple[AppletCard, PbocApplet]:
    applet = make_applet(**kw)
    applets: list[SimApplet] = [applet]
    if pse:
        applets.insert(0, PseApplet.for_applets([applet]))
    return AppletCard(applets, t0=t0), applet
