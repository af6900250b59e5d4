"""Command and response APDUs (ISO/IEC 7816-4 §5.1, §5.2), short and extended lengths. Sans-IO.

A ``CommandApdu`` is one of the four cases:

* case 1: header only;
* case 2: header + Le;
* case 3: header + Lc + data;
* case 4: header + Lc + data + Le.

Short form: Lc 1..255, Le 1..256 (encoded 00 for 256). Extended form (7816-4 §5.1): Lc
1..65535, Le 1..65536, announced by a 00 byte. ``ne`` is the number of expected bytes (Ne), or
``None`` for no Le field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.errors import ApduEncodingError, CardProtocolError

SHORT_LC_MAX = 255
SHORT_NE_MAX = 256
EXT_LC_MAX = 65535
EXT_NE_MAX = 65536


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU. ``ne`` is Ne (expected response length), None when absent."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    ne: int | None = None
    extended: bool = field(default=False)

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 0xFF:
                raise ApduEncodingError(f"APDU {name} must be a byte, got {v!r}")
        if not isinstance(self.data, bytes | bytearray):
            raise ApduEncodingError("APDU data must be bytes")
        if self.ne is not None and not 1 <= self.ne <= EXT_NE_MAX:
            raise ApduEncodingError(f"APDU Ne out of range: {self.ne}")
        if len(self.data) > EXT_LC_MAX:
            raise ApduEncodingError(f"APDU data too long: {len(self.data)} bytes")

    @property
    def case(self) -> int:
        """ISO 7816-4 case number 1..4."""
        if not self.data:
            return 1 if self.ne is None else 2
        return 3 if self.ne is None else 4

    @property
    def is_extended(self) -> bool:
        """True when the encoding must (or was asked to) use extended lengths."""
        return (
            self.extended
            or len(self.data) > SHORT_LC_MAX
            or (self.ne is not None and self.ne > SHORT_NE_MAX)
        )

    def with_ne(self, ne: int | None) -> CommandApdu:
        """The same command with another Le (used for the 6Cxx re-issue)."""
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, ne, self.extended)

    def to_bytes(self) -> bytes:
        """Encode (ISO 7816-4 §5.1)."""
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        data = bytes(self.data)
        if not self.is_extended:
            out = header
            if data:
                out += bytes((len(data),)) + data
            if self.ne is not None:
                out += bytes((self.ne % 256,))
            return out
        out = header
        if data:
            out += b"\x00" + len(data).to_bytes(2, "big") + data
        if self.ne is not None:
            le = (self.ne % 65536).to_bytes(2, "big")
            out += le if data else b"\x00" + le
        return out

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandApdu:
        """Decode a command APDU (used by the simulators, which are the device side).

        Raises ``CardProtocolError`` for any length that does not add up.
        """
        raw = bytes(raw)
        if len(raw) < 4:
            raise CardProtocolError(f"command APDU too short: {len(raw)} bytes")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        n = len(body)
        if n == 0:
            return cls(cla, ins, p1, p2)
        if n == 1:  # case 2 short
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        if body[0] != 0:  # short case 3 or 4
            lc = body[0]
            if n == 1 + lc:
                return cls(cla, ins, p1, p2, body[1:])
            if n == 2 + lc:
                return cls(cla, ins, p1, p2, body[1 : 1 + lc], body[-1] or 256)
            raise CardProtocolError(f"command APDU Lc={lc} does not match body of {n} bytes")
        # extended (body[0] == 0, n >= 2)
        if n == 3:  # case 2 extended
            le = int.from_bytes(body[1:3], "big") or 65536
            return cls(cla, ins, p1, p2, b"", le, extended=True)
        if n < 3:
            raise CardProtocolError("truncated extended length")
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise CardProtocolError("extended Lc of zero")
        if n == 3 + lc:
            return cls(cla, ins, p1, p2, body[3:], None, extended=True)
        if n == 5 + lc:
            le = int.from_bytes(body[-2:], "big") or 65536
            return cls(cla, ins, p1, p2, body[3 : 3 + lc], le, extended=True)
        raise CardProtocolError(f"extended command APDU Lc={lc} does not match body of {n} bytes")

    def __repr__(self) -> str:
        return f"CommandApdu({self.to_bytes().hex().upper()})"


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data and the status word. The SW is data, not an exception."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def to_bytes(self) -> bytes:
        return bytes(self.data) + self.sw.to_bytes(2, "big")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        """Decode ``data ‖ SW1 SW2``; fewer than 2 bytes is a protocol error."""
        raw = bytes(raw)
        if len(raw) < 2:
            raise CardProtocolError(f"response APDU too short: {len(raw)} bytes")
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def __repr__(self) -> str:
        return f"ResponseApdu(data={self.data.hex().upper()}, sw={self.sw:04X})"


class CardChannel(Protocol):
    """The narrow port every card flow runs over (DESIGN §2).

    Implementations: the in-memory simulator channel, the PC/SC driver, the fault injector.
    ``transmit`` sends one APDU and returns one raw response; T=0 61xx/6Cxx handling is done
    above it by ``agent.card.t0``.
    """

    async def transmit(self, command: CommandApdu) -> ResponseApdu: ...
