"""Answer-to-reset parsing (ISO/IEC 7816-3 §8). Sans-IO.

Layout: ``TS T0 {TAi TBi TCi TDi} historical-bytes [TCK]``.

* TS ``3B`` direct convention, ``3F`` inverse (PC/SC readers hand over the bytes already decoded);
* T0: high nibble Y1 (which of TA1..TD1 follow), low nibble K (number of historical bytes);
* TDi: high nibble Yi+1, low nibble a protocol type T (``15`` = global interface bytes);
* TCK (XOR of T0..TCK is 0) is present unless only T=0 is indicated (§8.2.5).

SSC cards carry the area code and part of the chip serial in the historical bytes
(ssc-card-protocol.md §1.3). Malformed input raises ``AtrError`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import AtrError

MAX_ATR_LEN = 33

#: Fi and f(max) in MHz from TA1 high nibble (ISO 7816-3 table 7); None = RFU.
FI_TABLE: dict[int, tuple[int, float]] = {
    0x0: (372, 4.0),
    0x1: (372, 5.0),
    0x2: (558, 6.0),
    0x3: (744, 8.0),
    0x4: (1116, 12.0),
    0x5: (1488, 16.0),
    0x6: (1860, 20.0),
    0x9: (512, 5.0),
    0xA: (768, 7.5),
    0xB: (1024, 10.0),
    0xC: (1536, 15.0),
    0xD: (2048, 20.0),
}
#: Di from TA1 low nibble (ISO 7816-3 table 8).
DI_TABLE: dict[int, int] = {
    0x1: 1,
    0x2: 2,
    0x3: 4,
    0x4: 8,
    0x5: 16,
    0x6: 32,
    0x7: 64,
    0x8: 12,
    0x9: 20,
}


@dataclass(frozen=True, slots=True)
class InterfaceGroup:
    """Interface bytes TAi, TBi, TCi, TDi of one group i (1-based); None when absent."""

    index: int
    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    td: int | None = None

    @property
    def protocol(self) -> int | None:
        """The protocol type announced by TDi (low nibble), None without TDi."""
        return None if self.td is None else self.td & 0x0F


@dataclass(frozen=True, slots=True)
class Atr:
    """A parsed ATR."""

    raw: bytes
    inverse: bool
    groups: tuple[InterfaceGroup, ...]
    historical: bytes
    tck: int | None

    @property
    def protocols(self) -> tuple[int, ...]:
        """Protocols offered (T=15 global bytes excluded); ``(0,)`` when no TD1 is present."""
        found: list[int] = []
        for g in self.groups:
            t = g.protocol
            if t is not None and t != 15 and t not in found:
                found.append(t)
        return tuple(found) if found else (0,)

    @property
    def ta1(self) -> int | None:
        return self.groups[0].ta if self.groups else None

    @property
    def fi_di(self) -> tuple[int, int]:
        """(Fi, Di) from TA1; defaults (372, 1) without TA1. RFU values raise AtrError."""
        ta1 = self.ta1
        if ta1 is None:
            return 372, 1
        fi = FI_TABLE.get(ta1 >> 4)
        di = DI_TABLE.get(ta1 & 0x0F)
        if fi is None or di is None:
            raise AtrError(f"TA1 {ta1:02X} uses reserved Fi/Di values")
        return fi[0], di

    @property
    def extra_guard_time(self) -> int:
        """N from TC1 (0 when absent)."""
        if not self.groups:
            return 0
        return self.groups[0].tc or 0

    def __repr__(self) -> str:
        return f"Atr({self.raw.hex().upper()})"


def parse_atr(raw: bytes) -> Atr:
    """Parse and validate an ATR (ISO 7816-3 §8.2); raises ``AtrError`` on any inconsistency."""
    if not isinstance(raw, bytes | bytearray):
        raise AtrError("ATR must be bytes")
    raw = bytes(raw)
    n = len(raw)
    if n < 2:
        raise AtrError(f"ATR too short: {n} bytes")
    if n > MAX_ATR_LEN:
        raise AtrError(f"ATR longer than {MAX_ATR_LEN} bytes: {n}")
    ts = raw[0]
    if ts not in (0x3B, 0x3F):
        raise AtrError(f"bad TS {ts:02X} (expected 3B or 3F)")
    t0 = raw[1]
    k = t0 & 0x0F
    y = t0 >> 4
    pos = 2
    groups: list[InterfaceGroup] = []
    tck_required = False
    index = 1
    while True:
        vals: list[int | None] = []
        for bit in (0x1, 0x2, 0x4, 0x8):
            if y & bit:
                if pos >= n:
                    raise AtrError(f"ATR truncated in interface bytes of group {index}")
                vals.append(raw[pos])
                pos += 1
            else:
                vals.append(None)
        ta, tb, tc, td = vals
        groups.append(InterfaceGroup(index, ta, tb, tc, td))
        if td is None:
            break
        if td & 0x0F != 0:
            tck_required = True
        y = td >> 4
        index += 1
    if pos + k > n:
        raise AtrError(f"ATR announces {k} historical bytes but only {n - pos} remain")
    historical = raw[pos : pos + k]
    pos += k
    tck: int | None = None
    if tck_required:
        if pos >= n:
            raise AtrError("TCK missing (a protocol other than T=0 is indicated)")
        tck = raw[pos]
        pos += 1
        x = 0
        for b in raw[1:pos]:
            x ^= b
        if x != 0:
            raise AtrError("TCK check failed")
    if pos != n:
        raise AtrError(f"{n - pos} unexpected byte(s) after the ATR")
    # Without TD1 no group was announced at all: keep an empty tuple rather than a blank group.
    if len(groups) == 1 and groups[0] == InterfaceGroup(1):
        groups = []
    return Atr(raw, ts == 0x3F, tuple(groups), historical, tck)
