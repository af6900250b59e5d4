"""Masking of personal data: ID number (SSN), name, PAN (developer guide; DESIGN §4).

Every log line, event and CLI output passes personal data through these functions unless the
operator explicitly asked to show it (``--show-pii``). ``scrub`` is the last line of defence used
by the logging filter: it masks anything that looks like an ID number or a PAN in free text.
"""

from __future__ import annotations

import re

_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})(\d{8})(\d{3})([\dXx])(?![0-9A-Za-z])")
_PAN_RE = re.compile(r"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")


def mask_ssn(ssn: str) -> str:
    """``110101199003071234`` → ``110101********1234`` (region kept, birth date hidden)."""
    if len(ssn) <= 10:
        return "*" * len(ssn)
    return ssn[:6] + "*" * (len(ssn) - 10) + ssn[-4:]


def mask_name(name: str) -> str:
    """``张三丰`` → ``张**``; empty stays empty."""
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


def mask_pan(pan: str) -> str:
    """``6217001234567890123`` → ``621700*********0123`` (first 6, last 4, PCI style)."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def mask_card_number(number: str) -> str:
    """Social-security card number (9 chars): keep the last 4."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]


def scrub(text: str) -> str:
    """Mask ID numbers and PAN-like digit runs in free text."""
    text = _ID_RE.sub(lambda m: m.group(1) + "*" * 8 + m.group(3) + m.group(4), text)
    return _PAN_RE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
