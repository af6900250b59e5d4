"""EMV/PBOC data-object dictionary with a sensitivity flag, and masking (ssc-card-protocol.md §4).

Sensitive objects (PAN ``5A``, track-2 equivalent ``57``, holder name ``5F20``/``9F0B``, holder
ID ``9F61``, track-1 discretionary ``9F1F``) never leave the agent unmasked by default (DESIGN §4
"Personal data … is masked in logs and events"), with the agent's one masking convention
(``agent.privacy``: PAN first 6 + last 4; ID number first 6 + last 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import privacy


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What one tag means: name, EMV format (``n``, ``cn``, ``b``, ``an``, ``ans``, ``tpl``)."""

    name: str
    fmt: str = "b"
    sensitive: bool = False


TAGS: dict[int, TagInfo] = {
    0x42: TagInfo("Issuer identification number", "n"),
    0x4F: TagInfo("Application identifier (AID)", "b"),
    0x50: TagInfo("Application label", "ans"),
    0x57: TagInfo("Track 2 equivalent data", "b", sensitive=True),
    0x5A: TagInfo("Application PAN", "cn", sensitive=True),
    0x5F20: TagInfo("Cardholder name", "ans", sensitive=True),
    0x5F24: TagInfo("Application expiration date", "n"),
    0x5F25: TagInfo("Application effective date", "n"),
    0x5F28: TagInfo("Issuer country code", "n"),
    0x5F2A: TagInfo("Transaction currency code", "n"),
    0x5F2D: TagInfo("Language preference", "an"),
    0x5F30: TagInfo("Service code", "n"),
    0x5F34: TagInfo("PAN sequence number", "n"),
    0x61: TagInfo("Application template", "tpl"),
    0x6F: TagInfo("FCI template", "tpl"),
    0x70: TagInfo("Record template", "tpl"),
    0x71: TagInfo("Issuer script template 1", "tpl"),
    0x72: TagInfo("Issuer script template 2", "tpl"),
    0x77: TagInfo("Response message template format 2", "tpl"),
    0x80: TagInfo("Response message template format 1", "b"),
    0x82: TagInfo("Application interchange profile", "b"),
    0x84: TagInfo("DF name", "b"),
    0x86: TagInfo("Issuer script command", "b"),
    0x87: TagInfo("Application priority indicator", "b"),
    0x88: TagInfo("Short file identifier", "b"),
    0x8C: TagInfo("CDOL1", "b"),
    0x8D: TagInfo("CDOL2", "b"),
    0x8E: TagInfo("CVM list", "b"),
    0x8F: TagInfo("CA public key index", "b"),
    0x91: TagInfo("Issuer authentication data", "b"),
    0x94: TagInfo("Application file locator", "b"),
    0x95: TagInfo("Terminal verification results", "b"),
    0x9A: TagInfo("Transaction date", "n"),
    0x9C: TagInfo("Transaction type", "n"),
    0xA5: TagInfo("FCI proprietary template", "tpl"),
    0xBF0C: TagInfo("FCI issuer discretionary data", "tpl"),
    0x9F02: TagInfo("Amount, authorised", "n"),
    0x9F03: TagInfo("Amount, other", "n"),
    0x9F07: TagInfo("Application usage control", "b"),
    0x9F08: TagInfo("Application version number", "b"),
    0x9F0B: TagInfo("Cardholder name extended", "ans", sensitive=True),
    0x9F10: TagInfo("Issuer application data", "b"),
    0x9F11: TagInfo("Issuer code table index", "n"),
    0x9F12: TagInfo("Application preferred name", "ans"),
    0x9F13: TagInfo("Last online ATC register", "b"),
    0x9F17: TagInfo("PIN try counter", "b"),
    0x9F18: TagInfo("Issuer script identifier", "b"),
    0x9F1A: TagInfo("Terminal country code", "n"),
    0x9F1F: TagInfo("Track 1 discretionary data", "ans", sensitive=True),
    0x9F21: TagInfo("Transaction time", "n"),
    0x9F26: TagInfo("Application cryptogram", "b"),
    0x9F27: TagInfo("Cryptogram information data", "b"),
    0x9F33: TagInfo("Terminal capabilities", "b"),
    0x9F35: TagInfo("Terminal type", "n"),
    0x9F36: TagInfo("Application transaction counter", "b"),
    0x9F37: TagInfo("Unpredictable number", "b"),
    0x9F38: TagInfo("PDOL", "b"),
    0x9F40: TagInfo("Additional terminal capabilities", "b"),
    0x9F41: TagInfo("Transaction sequence counter", "n"),
    0x9F4D: TagInfo("Log entry", "b"),
    0x9F4E: TagInfo("Merchant name and location", "ans"),
    0x9F5B: TagInfo("Issuer script results", "b"),
    0x9F61: TagInfo("Cardholder ID number", "an", sensitive=True),
    0x9F62: TagInfo("Cardholder ID type", "b"),
    0x9F66: TagInfo("Terminal transaction qualifiers", "b"),
    0x9F79: TagInfo("Electronic cash balance", "n"),
}


def tag_info(tag: int) -> TagInfo:
    """Dictionary entry for ``tag`` (unknown tags: binary, not sensitive)."""
    return TAGS.get(tag) or TagInfo(f"tag {tag:X}")


def is_sensitive(tag: int) -> bool:
    return tag_info(tag).sensitive


# One masking convention for the whole agent (agent.privacy), re-exported for emv callers.
mask_pan = privacy.mask_pan
mask_id = privacy.mask_ssn
mask_name = privacy.mask_name


def display_value(tag: int, value: bytes, *, show_pii: bool = False) -> str:
    """Hex (or masked) text of a data object's value, fit for logs and CLI output."""
    text = value.hex().upper()
    if show_pii or not is_sensitive(tag):
        return text
    if tag in (0x5A, 0x57):
        digits = text.split("D")[0].rstrip("F")
        return mask_pan(digits) + ("D…" if "D" in text else "")
    return f"<{len(value)} bytes masked>"
