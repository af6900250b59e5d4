"""Data object lists (PDOL ``9F38``, CDOL1 ``8C``, CDOL2 ``8D``): parse and fill (EMV Book 3
§5.4; ssc-card-protocol.md §4 "GPO … with PDOL data"). Sans-IO.

A DOL is a list of ``tag ‖ length`` pairs from the card; the terminal answers with the values
concatenated. Rules for a value of the wrong size (Book 3 §5.4): numeric (``n``) values are
right-aligned (left-padded with 00, or the leftmost bytes dropped), all other formats are
left-aligned (right-padded with 00, or truncated). A tag the terminal does not know is filled
with zeros.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime

from agent.card.tlv import decode_tag
from agent.emv.tags import tag_info
from agent.errors import CardProtocolError, LocalProtocolError, TlvError

#: Longest DOL data we accept from a card: it must fit a short APDU (``83 L data``).
MAX_DOL_DATA = 252
CNY = b"\x01\x56"  # ISO 4217 / ISO 3166 numeric 156, China


def parse_dol(dol: bytes) -> list[tuple[int, int]]:
    """``[(tag, length), …]``; raises ``CardProtocolError`` for a malformed or oversized DOL."""
    out: list[tuple[int, int]] = []
    pos = 0
    total = 0
    dol = bytes(dol)
    while pos < len(dol):
        try:
            tag, pos = decode_tag(dol, pos)
        except TlvError as e:
            raise CardProtocolError(f"malformed DOL: {e.message}") from e
        if pos >= len(dol):
            raise CardProtocolError(f"DOL entry {tag:X} has no length")
        length = dol[pos]
        pos += 1
        if length & 0x80:
            raise CardProtocolError(f"DOL entry {tag:X} has a length over 127")
        total += length
        out.append((tag, length))
    if total > MAX_DOL_DATA:
        raise CardProtocolError(f"DOL asks for {total} bytes (limit {MAX_DOL_DATA})")
    return out


def fit(tag: int, value: bytes, length: int) -> bytes:
    """Size ``value`` for a DOL slot of ``length`` bytes (Book 3 §5.4)."""
    numeric = tag_info(tag).fmt == "n"
    if len(value) == length:
        return value
    if len(value) > length:
        return value[len(value) - length :] if numeric else value[:length]
    pad = bytes(length - len(value))
    return pad + value if numeric else value + pad


def build_dol_data(dol: bytes | list[tuple[int, int]], terminal: Mapping[int, bytes]) -> bytes:
    """Concatenate the terminal's values for each DOL entry."""
    entries = parse_dol(dol) if isinstance(dol, bytes | bytearray) else dol
    return b"".join(fit(tag, terminal.get(tag, b""), length) for tag, length in entries)


def _bcd(n: int, digits: int) -> bytes:
    return bytes.fromhex(f"{n:0{digits}d}")


def amount_bcd(fen: int) -> bytes:
    """An amount in fen (0.01 CNY) as the 6-byte ``n12`` of 9F02/9F03."""
    if not 0 <= fen < 10**12:
        raise LocalProtocolError(f"amount out of range: {fen}")
    return _bcd(fen, 12)


def default_terminal_data(
    now: datetime | None = None, *, unpredictable: bytes | None = None
) -> dict[int, bytes]:
    """Terminal values for PDOL/CDOL with Chinese defaults (country and currency 0156)."""
    now = now or datetime.now()  # the terminal's local date and time, as EMV wants
    un = unpredictable if unpredictable is not None else secrets.token_bytes(4)
    return {
        0x9F66: bytes.fromhex("46000000"),  # TTQ: contact EMV capable, online capable
        0x9F02: amount_bcd(0),
        0x9F03: amount_bcd(0),
        0x9F1A: CNY,
        0x5F2A: CNY,
        0x95: bytes(5),
        0x9A: bytes.fromhex(now.strftime("%y%m%d")),
        0x9F21: bytes.fromhex(now.strftime("%H%M%S")),
        0x9C: b"\x00",
        0x9F37: un,
        0x9F35: b"\x14",  # financial institution, unattended, online only (kiosk/ATM)
        0x9F33: bytes.fromhex("E0E1C8"),
        0x9F40: bytes.fromhex("6000F0A001"),
        0x9F4E: b"SSC TERMINAL",
    }
