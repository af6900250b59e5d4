"""The SSSE command catalog: every APDU the agent sends to the social-security application. Sans-IO.

Each builder returns a ``CommandApdu`` exactly as tabulated in docs/CARD-PROTOCOL.md §1 (the
contract with the virtual card) and ssc-card-protocol.md §1.3 and §2 (the public record). The
record catalog (``EF05_RECORDS``, ``EF06_RECORDS``) is data: tag, length, encoding and name.

Secure-messaging commands (CLA 84/04 and the MAC'd PIN reset) are built in two steps, because the
MAC needs the card challenge and the security module: ``SmCommand.mac_input`` is what is MAC'd
(``CLA INS P1 P2 Lc`` with Lc counting the 4 MAC bytes, ‖ command data, §2 "MAC for 84/04"),
and ``SmCommand.with_mac(mac)`` is the APDU that goes to the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agent.card.apdu import CommandApdu
from agent.errors import LocalProtocolError

#: SSSE DDF name: ASCII "sx1.sh." + GBK "社会保障" (§1.1).
SSSE_AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
#: Registered application provider id of the card identification code (§1.3).
RID = bytes.fromhex("D156000005")

EF05 = 0xEF05
EF06 = 0xEF06
SFI_EF05 = 0x05
SFI_EF06 = 0x06

MAC_LEN = 4
PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 12


class Enc(Enum):
    """Data element encodings of the SSSE files (§1.2 "Padding")."""

    B = "b"  # binary
    AN = "an"  # ASCII, left-aligned, 00-padded
    CN = "cn"  # BCD, left-aligned, F-padded
    GBK = "gbk"  # GBK text, 00-padded


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """One TLV record of an SSSE EF: READ RECORD record number = tag (§1.3)."""

    tag: int
    name: str
    length: int
    enc: Enc
    sfi: int

    def read(self) -> CommandApdu:
        """``00 B2 <tag> 04 <len+2>`` (after SELECT EF; Le = value length + 2, §1.3)."""
        return read_record(self.tag, self.length + 2)


# EF05 发卡机构数据 (§1.3, [C] HQ, CMDS, SCJS)
CARD_ID_CODE = RecordSpec(0x01, "card_id_code", 16, Enc.B, SFI_EF05)
CARD_TYPE = RecordSpec(0x02, "card_type", 1, Enc.AN, SFI_EF05)
SPEC_VERSION = RecordSpec(0x03, "spec_version", 4, Enc.AN, SFI_EF05)
INIT_INSTITUTION = RecordSpec(0x04, "init_institution", 12, Enc.B, SFI_EF05)
ISSUE_DATE = RecordSpec(0x05, "issue_date", 4, Enc.CN, SFI_EF05)
EXPIRY_DATE = RecordSpec(0x06, "expiry_date", 4, Enc.CN, SFI_EF05)
CARD_NUMBER = RecordSpec(0x07, "card_number", 9, Enc.AN, SFI_EF05)
#: Activation status record (CARD-PROTOCOL §1 "Lifecycle"; tag from the profile, default 0F).
STATUS = RecordSpec(0x0F, "status", 1, Enc.B, SFI_EF05)

# EF06 持卡人基本信息 (§1.3)
SSN = RecordSpec(0x08, "ssn", 18, Enc.AN, SFI_EF06)
NAME = RecordSpec(0x09, "name", 30, Enc.GBK, SFI_EF06)
NAME_EXT = RecordSpec(0x4E, "name_ext", 20, Enc.GBK, SFI_EF06)
GENDER = RecordSpec(0x0A, "gender", 1, Enc.AN, SFI_EF06)
NATION = RecordSpec(0x0B, "nation", 1, Enc.CN, SFI_EF06)
BIRTHPLACE = RecordSpec(0x0C, "birthplace", 3, Enc.CN, SFI_EF06)
BIRTH_DATE = RecordSpec(0x0D, "birth_date", 4, Enc.CN, SFI_EF06)

#: The records ``read_identity`` reads, in order.
EF05_RECORDS = (CARD_ID_CODE, CARD_TYPE, SPEC_VERSION, ISSUE_DATE, EXPIRY_DATE, CARD_NUMBER)
#: The records ``read_holder`` reads, in order (``NAME_EXT`` may be absent: 6A83).
EF06_RECORDS = (SSN, NAME, NAME_EXT, GENDER, NATION, BIRTHPLACE, BIRTH_DATE)


# --- plain commands ------------------------------------------------------------------------------
def select_ssse() -> CommandApdu:
    """``00 A4 04 00 0F <SSSE AID> 00`` → FCI ``6F{84, A5{9F0C}}`` (CARD-PROTOCOL §1; §1.1)."""
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, SSSE_AID, 256)


def select_ef(fid: int) -> CommandApdu:
    """``00 A4 02 00 02 <FID>`` (select EF under the current DF; §2 SELECT)."""
    if not 0 <= fid <= 0xFFFF:
        raise LocalProtocolError(f"file id out of range: {fid!r}")
    return CommandApdu(0x00, 0xA4, 0x02, 0x00, fid.to_bytes(2, "big"))


def read_record(tag: int, ne: int = 256) -> CommandApdu:
    """``00 B2 <tag> 04 <Le>``: record number = tag, in the current EF (§1.3)."""
    return CommandApdu(0x00, 0xB2, tag, 0x04, b"", ne)


def get_challenge(length: int) -> CommandApdu:
    """``00 84 00 00 <Le>``: 4 or 8 random bytes, single use (§2 GET CHALLENGE)."""
    if length not in (4, 8, 16):
        raise LocalProtocolError(f"challenge length must be 4, 8 or 16, got {length}")
    return CommandApdu(0x00, 0x84, 0x00, 0x00, b"", length)


def external_authenticate(key_id: int, cryptogram: bytes) -> CommandApdu:
    """``00 82 00 <key id> <Lc> E_K(challenge ‖ 00…)`` (§2 EXTERNAL AUTH; CARD-PROTOCOL §1)."""
    if len(cryptogram) not in (8, 16):
        raise LocalProtocolError("external-auth cryptogram is one 8- or 16-byte block")
    return CommandApdu(0x00, 0x82, 0x00, key_id, bytes(cryptogram))


def pin_tries() -> CommandApdu:
    """``00 20 00 00`` without data: answers 63Cx / 6983, consumes no try (CARD-PROTOCOL §1)."""
    return CommandApdu(0x00, 0x20, 0x00, 0x00)


def verify_pin(pin: str) -> CommandApdu:
    """``00 20 00 00 <Lc> PIN-BCD`` (F-padded; §2 VERIFY PIN)."""
    return CommandApdu(0x00, 0x20, 0x00, 0x00, pin_bcd(pin))


def change_pin(old: str, new: str) -> CommandApdu:
    """``80 5E 01 00 <Lc> old ‖ FF ‖ new`` (§2 CHANGE PIN)."""
    return CommandApdu(0x80, 0x5E, 0x01, 0x00, pin_bcd(old) + b"\xff" + pin_bcd(new))


# --- secure messaging ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SmCommand:
    """A command whose last 4 data bytes are a MAC (CARD-PROTOCOL §1 "Secure messaging MAC")."""

    cla: int
    ins: int
    p1: int
    p2: int
    body: bytes  # command data without the MAC
    purpose: str  # profile key purpose of the MAC key (stk, rpk, puk)
    name: str  # for error messages

    @property
    def mac_input(self) -> bytes:
        """``CLA INS P1 P2 Lc`` (Lc includes the MAC) ‖ body; the MAC pads it (method 2)."""
        lc = len(self.body) + MAC_LEN
        if lc > 0xFF:
            raise LocalProtocolError(f"{self.name}: command data too long for a short APDU")
        return bytes((self.cla, self.ins, self.p1, self.p2, lc)) + self.body

    def with_mac(self, mac: bytes) -> CommandApdu:
        """The APDU for the card: body ‖ the leftmost 4 MAC bytes."""
        if len(mac) < MAC_LEN:
            raise LocalProtocolError("MAC shorter than 4 bytes")
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.body + bytes(mac[:MAC_LEN]))


def app_block(p2: int) -> SmCommand:
    """``84 1E 00 <P2> 04 MAC4``: P2 from the profile (00 temporary, 01 permanent) (§2)."""
    return SmCommand(0x84, 0x1E, 0x00, p2, b"", "stk", "application block")


def app_unblock() -> SmCommand:
    """``84 18 00 00 04 MAC4`` (§2 APPLICATION UNBLOCK)."""
    return SmCommand(0x84, 0x18, 0x00, 0x00, b"", "stk", "application unblock")


def card_block() -> SmCommand:
    """``84 16 00 00 04 MAC4``: every application answers 6A81 afterwards (§2 CARD BLOCK)."""
    return SmCommand(0x84, 0x16, 0x00, 0x00, b"", "stk", "card block")


def update_record(tag: int, sfi: int, value: bytes) -> SmCommand:
    """``04 DC <tag> <(SFI<<3)|4> <Lc> TLV ‖ MAC4`` (§2 UPDATE RECORD (SM); CARD-PROTOCOL §1)."""
    if not 0 <= tag <= 0xFF or not 1 <= sfi <= 30 or len(value) > 0x7F:
        raise LocalProtocolError("update record: tag, SFI or value length out of range")
    tlv = bytes((tag, len(value))) + bytes(value)
    return SmCommand(0x04, 0xDC, tag, (sfi << 3) | 4, tlv, "stk", "update record")


def reset_pin(new: str) -> SmCommand:
    """``80 5E 00 00 <Lc> newPIN ‖ MAC4``, MAC with ``rpk`` (§2 RELOAD PIN; CARD-PROTOCOL §1)."""
    return SmCommand(0x80, 0x5E, 0x00, 0x00, pin_bcd(new), "rpk", "PIN reset")


def unblock_pin(enciphered_pin_block: bytes) -> SmCommand:
    """``84 24 00 00 <Lc> E_Kpuk(pad_m2(len ‖ PIN)) ‖ MAC4``, MAC with ``puk`` (§2 PIN UNBLOCK)."""
    if not enciphered_pin_block or len(enciphered_pin_block) % 8:
        raise LocalProtocolError("enciphered PIN block must be whole cipher blocks")
    return SmCommand(0x84, 0x24, 0x00, 0x00, bytes(enciphered_pin_block), "puk", "PIN unblock")


def pin_block_plain(pin: str) -> bytes:
    """``len ‖ PIN-BCD`` (length in bytes of the BCD PIN), before padding and encryption."""
    bcd = pin_bcd(pin)
    return bytes((len(bcd),)) + bcd


# --- PIN encoding --------------------------------------------------------------------------------
def check_pin(pin: str) -> str:
    """A PIN is 4–12 ASCII digits (§2 PIN facts: the card stores up to 6 bytes of BCD)."""
    if (
        not isinstance(pin, str)
        or not PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS
        or not all("0" <= c <= "9" for c in pin)
    ):
        raise LocalProtocolError("a PIN is 4 to 12 digits")
    return pin


def pin_bcd(pin: str) -> bytes:
    """BCD, right-padded with F to whole bytes: ``12345`` → ``12 34 5F`` (§2 VERIFY PIN)."""
    digits = check_pin(pin)
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)
