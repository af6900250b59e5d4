"""Status words: meaning, error class and the ``check`` helper (ISO/IEC 7816-4 §5.6). Sans-IO.

The table merges the status words seen in social-security-card code (ssc-card-protocol.md §2,
"Status words seen in SSC code") with the ISO 7816-4 interindustry values. A status word is data
on ``ResponseApdu``; this module turns it into a typed error only when a call site asks for it
(``check``/``error_for``), never on its own.

Error classes (agent.errors):

* ``63Cx`` → ``PinError`` with ``tries_left = x``; ``6983`` → ``PinBlockedError``;
* ``6283``, ``9303``, ``6A81`` → ``ApplicationLockedError``;
* ``6982``, ``6984``, ``6988``, ``9302`` → ``SecurityStatusError``;
* ``6A82``, ``6A83`` → ``FileNotFoundOnCardError``;
* anything else → ``CardStatusError``.
"""

from __future__ import annotations

from collections.abc import Collection

from agent.card.apdu import ResponseApdu
from agent.errors import (
    ApplicationLockedError,
    CardStatusError,
    FileNotFoundOnCardError,
    LocalProtocolError,
    PinBlockedError,
    PinError,
    SecurityStatusError,
)

SW_OK = 0x9000

#: Exact status words (§2 list + ISO 7816-4 §5.6 table 6).
MEANINGS: dict[int, str] = {
    0x9000: "success",
    0x6200: "warning: state of non-volatile memory unchanged",
    0x6281: "part of returned data may be corrupted",
    0x6282: "end of file or record reached before reading Ne bytes",
    0x6283: "selected file invalidated (application temporarily locked)",
    0x6284: "FCI not formatted according to ISO 7816-4",
    0x6300: "verification failed",
    0x6581: "memory failure (EEPROM write failed)",
    0x6700: "wrong length",
    0x6800: "functions in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6900: "command not allowed",
    0x6901: "command not accepted (inactive state)",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked (PIN or key blocked)",
    0x6984: "reference data not usable (no or invalid challenge)",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "incorrect secure messaging data objects (wrong MAC)",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported (card or application blocked)",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A86: "incorrect parameters P1-P2",
    0x6A88: "referenced data (key) not found",
    0x6B00: "wrong parameters (offset outside the EF)",
    0x6D00: "instruction code not supported",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
    0x9302: "MAC invalid",
    0x9303: "application permanently locked",
    0x9401: "insufficient balance",
    0x9403: "key not found",
    0x9406: "MAC or TAC not available",
}

_LOCKED = frozenset({0x6283, 0x9303, 0x6A81})
_SECURITY = frozenset({0x6982, 0x6984, 0x6988, 0x9302})
_NOT_FOUND = frozenset({0x6A82, 0x6A83})


def _check_sw(sw: int) -> int:
    if isinstance(sw, bool) or not isinstance(sw, int) or not 0 <= sw <= 0xFFFF:
        raise LocalProtocolError(f"status word must be 0..FFFF, got {sw!r}")
    return sw


def tries_left(sw: int) -> int | None:
    """Tries left announced by the status word: ``x`` for ``63Cx``, 0 for ``6983``, else None."""
    sw = _check_sw(sw)
    if sw & 0xFFF0 == 0x63C0:
        return sw & 0x0F
    if sw == 0x6983:
        return 0
    return None


def describe(sw: int) -> str:
    """Human meaning of a status word (no personal data), e.g. ``"6A82 file or application…"``."""
    sw = _check_sw(sw)
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw in MEANINGS:
        text = MEANINGS[sw]
    elif sw1 == 0x61:
        text = f"{sw2 or 256} more bytes available (GET RESPONSE)"
    elif sw1 == 0x6C:
        text = f"wrong Le, exact length is {sw2 or 256}"
    elif sw & 0xFFF0 == 0x63C0:
        text = f"verification failed, {sw & 0x0F} tries left"
    elif sw1 == 0x62:
        text = "warning: state of non-volatile memory unchanged"
    elif sw1 == 0x63:
        text = "warning: state of non-volatile memory changed"
    elif sw1 == 0x64:
        text = "execution error: state of non-volatile memory unchanged"
    elif sw1 == 0x65:
        text = "execution error: state of non-volatile memory changed"
    elif sw1 == 0x67:
        text = "wrong length"
    elif sw1 == 0x68:
        text = "functions in CLA not supported"
    elif sw1 == 0x69:
        text = "command not allowed"
    elif sw1 == 0x6A:
        text = "wrong parameters P1-P2"
    else:
        text = "unknown status"
    return f"{sw:04X} {text}"


def error_for(sw: int, command: str = "") -> CardStatusError:
    """The typed error for a non-success status word (not raised: the caller raises it)."""
    sw = _check_sw(sw)
    text = describe(sw)
    if sw & 0xFFF0 == 0x63C0:
        return PinError(sw, sw & 0x0F, text, command=command)
    if sw == 0x6983:
        return PinBlockedError(sw, text, command=command)
    if sw in _LOCKED:
        return ApplicationLockedError(sw, text, command=command)
    if sw in _SECURITY:
        return SecurityStatusError(sw, text, command=command)
    if sw in _NOT_FOUND:
        return FileNotFoundOnCardError(sw, text, command=command)
    return CardStatusError(sw, text, command=command)


def check(
    resp: ResponseApdu, expect: Collection[int] = frozenset({SW_OK}), command: str = ""
) -> ResponseApdu:
    """Return ``resp`` if its status word is in ``expect``, else raise the typed error."""
    if resp.sw in expect:
        return resp
    raise error_for(resp.sw, command)
