"""EF05 / EF06 record codecs of the SSSE application. Sans-IO.

ssc-card-protocol.md §1.2–1.3: each record is ``tag ‖ len ‖ value``; ``an`` items are ASCII,
left-aligned, 00-padded; ``cn`` items are BCD, left-aligned, F-padded; the name is GBK,
00-padded, continued by the optional extension record 4E. A card is an attacker (DESIGN §3):
every decoder validates length, character set and range, and anything malformed raises
``CardProtocolError`` — never ``ValueError``, ``UnicodeDecodeError`` or ``IndexError``.

``encode_*`` are the inverse (used by tests and available to simulators).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum

from agent.card import tlv
from agent.errors import CardProtocolError, LocalProtocolError
from agent.privacy import mask_card_number, mask_name, mask_ssn
from agent.ssc import commands as c

_SPEC_VERSION_RE = re.compile(r"[0-9]\.[0-9]{2}")
_CARD_NUMBER_RE = re.compile(r"[0-9A-Z]{1,9}")
_SSN_RE = re.compile(r"[0-9]{17}[0-9X]")
_CARD_TYPE_RE = re.compile(r"[0-9A-Za-z]")


# --- record framing ------------------------------------------------------------------------------
def decode_record(spec: c.RecordSpec, data: bytes, *, exact: bool = True) -> bytes:
    """Strip ``tag ‖ len`` from a READ RECORD answer and check both (§1.3).

    ``exact``: the value must have the catalog length (all SSSE items are fixed-length).
    """
    data = bytes(data)
    if len(data) < 2:
        raise CardProtocolError(f"record {spec.tag:02X}: {len(data)} bytes, no TLV header")
    if data[0] != spec.tag:
        raise CardProtocolError(f"record {spec.tag:02X}: card returned tag {data[0]:02X}")
    length = data[1]
    if length != len(data) - 2:
        raise CardProtocolError(
            f"record {spec.tag:02X}: length byte {length} but {len(data) - 2} value bytes"
        )
    if exact and length != spec.length:
        raise CardProtocolError(f"record {spec.tag:02X}: {length} bytes, expected {spec.length}")
    return data[2:]


def encode_record(spec: c.RecordSpec, value: bytes) -> bytes:
    """``tag ‖ len ‖ value`` (the inverse of ``decode_record``)."""
    if len(value) > 0xFF:
        raise LocalProtocolError("record value longer than 255 bytes")
    return bytes((spec.tag, len(value))) + bytes(value)


# --- element codecs ------------------------------------------------------------------------------
def _an(value: bytes, what: str) -> str:
    """ASCII, 00-padded on the right; no NUL inside, printable only."""
    text = value.rstrip(b"\x00")
    if b"\x00" in text or any(not 0x20 <= b <= 0x7E for b in text):
        raise CardProtocolError(f"{what}: not printable ASCII")
    return text.decode("ascii")


def _an_encode(text: str, length: int) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > length:
        raise LocalProtocolError(f"{text!r} longer than {length} bytes")
    return raw + bytes(length - len(raw))


def _bcd_digits(value: bytes, what: str, *, f_padded: bool = False) -> str:
    """BCD to digits; with ``f_padded`` trailing F nibbles are padding (``cn``, §1.2)."""
    text = value.hex().upper()
    if f_padded:
        text = text.rstrip("F")
    if not text.isdigit() and text:
        raise CardProtocolError(f"{what}: not BCD")
    return text


def _bcd_encode(digits: str, length: int) -> bytes:
    if not digits.isdigit() and digits:
        raise LocalProtocolError(f"{digits!r} is not digits")
    text = digits + "F" * (2 * length - len(digits))
    if len(text) != 2 * length:
        raise LocalProtocolError(f"{digits!r} longer than {length} bytes of BCD")
    return bytes.fromhex(text)


def decode_date(value: bytes, what: str = "date") -> date:
    """4-byte BCD ``YYYYMMDD`` → ``date`` (§1.3 tags 05, 06, 0D)."""
    if len(value) != 4:
        raise CardProtocolError(f"{what}: {len(value)} bytes, expected 4")
    digits = _bcd_digits(value, what)
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise CardProtocolError(f"{what}: {digits} is not a calendar date") from None


def encode_date(d: date) -> bytes:
    return bytes.fromhex(f"{d.year:04d}{d.month:02d}{d.day:02d}")


def decode_gbk(value: bytes, what: str) -> str:
    """GBK text, 00-padded on the right; no NUL inside, no control characters."""
    raw = value.rstrip(b"\x00")
    if b"\x00" in raw:
        raise CardProtocolError(f"{what}: NUL inside the text")
    try:
        text = raw.decode("gbk")
    except UnicodeDecodeError:
        raise CardProtocolError(f"{what}: not GBK text") from None
    if any(ch < " " or ch == "\x7f" for ch in text):
        raise CardProtocolError(f"{what}: control characters")
    return text


def encode_gbk(text: str, length: int) -> bytes:
    raw = text.encode("gbk")
    if len(raw) > length:
        raise LocalProtocolError(f"text longer than {length} GBK bytes")
    return raw + bytes(length - len(raw))


# --- EF05: card identity -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CardIdCode:
    """卡识别码: 3-byte BCD area code ‖ RID ``D156000005`` ‖ 8-byte chip serial (§1.3)."""

    raw: bytes
    area_code: str
    serial: bytes

    @property
    def hex(self) -> str:
        """32 upper-case hex digits, as printed by iReadCardBas (§1.3)."""
        return self.raw.hex().upper()

    @classmethod
    def decode(cls, value: bytes) -> CardIdCode:
        if len(value) != 16:
            raise CardProtocolError(f"card id code: {len(value)} bytes, expected 16")
        area = _bcd_digits(value[:3], "card id code area")
        if len(area) != 6:
            raise CardProtocolError("card id code: area code is not 6 BCD digits")
        if value[3:8] != c.RID:
            raise CardProtocolError("card id code: RID is not D156000005")
        return cls(bytes(value), area, bytes(value[8:]))

    @classmethod
    def build(cls, area_code: str, serial: bytes) -> CardIdCode:
        if len(area_code) != 6 or not area_code.isdigit() or len(serial) != 8:
            raise LocalProtocolError("card id code: 6-digit area code and 8-byte serial")
        return cls(bytes.fromhex(area_code) + c.RID + bytes(serial), area_code, bytes(serial))


@dataclass(frozen=True, slots=True)
class CardIdentity:
    """EF05 issuer data (§1.3). The card number is masked in ``repr``."""

    card_id: CardIdCode
    card_type: str
    spec_version: str
    issue_date: date
    expiry_date: date
    card_number: str = field(repr=False)

    @property
    def card_id_code(self) -> bytes:
        return self.card_id.raw

    @property
    def area_code(self) -> str:
        return self.card_id.area_code

    @property
    def generation(self) -> int:
        """Card generation from the spec version's first digit (``3.00`` → 3, §1.3)."""
        return int(self.spec_version[0])

    def expired(self, today: date) -> bool:
        return today > self.expiry_date

    def __repr__(self) -> str:
        return (
            f"CardIdentity(card_id={self.card_id.hex}, card_type={self.card_type!r}, "
            f"spec_version={self.spec_version!r}, issue_date={self.issue_date}, "
            f"expiry_date={self.expiry_date}, card_number={mask_card_number(self.card_number)!r})"
        )


def decode_card_type(value: bytes) -> str:
    text = _an(value, "card type")
    if not _CARD_TYPE_RE.fullmatch(text):
        raise CardProtocolError("card type: expected one letter or digit")
    return text


def decode_spec_version(value: bytes) -> str:
    text = _an(value, "spec version")
    if not _SPEC_VERSION_RE.fullmatch(text):
        raise CardProtocolError("spec version: expected d.dd")
    return text


def decode_card_number(value: bytes) -> str:
    text = _an(value, "card number")
    if not _CARD_NUMBER_RE.fullmatch(text):
        raise CardProtocolError("card number: expected 1-9 upper-case letters or digits")
    return text


def decode_identity(records: Mapping[int, bytes]) -> CardIdentity:
    """Decode the EF05 records (``tag → raw READ RECORD data``, TL included)."""
    v = _values(records, c.EF05_RECORDS)
    issue = decode_date(v[c.ISSUE_DATE.tag], "issue date")
    expiry = decode_date(v[c.EXPIRY_DATE.tag], "expiry date")
    if expiry < issue:
        raise CardProtocolError("expiry date before issue date")
    return CardIdentity(
        card_id=CardIdCode.decode(v[c.CARD_ID_CODE.tag]),
        card_type=decode_card_type(v[c.CARD_TYPE.tag]),
        spec_version=decode_spec_version(v[c.SPEC_VERSION.tag]),
        issue_date=issue,
        expiry_date=expiry,
        card_number=decode_card_number(v[c.CARD_NUMBER.tag]),
    )


def encode_identity(identity: CardIdentity) -> dict[int, bytes]:
    """The EF05 records (TLV) for ``identity``."""
    return {
        c.CARD_ID_CODE.tag: encode_record(c.CARD_ID_CODE, identity.card_id.raw),
        c.CARD_TYPE.tag: encode_record(c.CARD_TYPE, _an_encode(identity.card_type, 1)),
        c.SPEC_VERSION.tag: encode_record(c.SPEC_VERSION, _an_encode(identity.spec_version, 4)),
        c.ISSUE_DATE.tag: encode_record(c.ISSUE_DATE, encode_date(identity.issue_date)),
        c.EXPIRY_DATE.tag: encode_record(c.EXPIRY_DATE, encode_date(identity.expiry_date)),
        c.CARD_NUMBER.tag: encode_record(c.CARD_NUMBER, _an_encode(identity.card_number, 9)),
    }


# --- EF06: holder --------------------------------------------------------------------------------
class Gender(Enum):
    """性别 (GB/T 2261.1 codes; the card stores ``'1'`` or ``'2'``, §1.3 tag 0A)."""

    UNKNOWN = "0"
    MALE = "1"
    FEMALE = "2"
    UNSPECIFIED = "9"

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Holder:
    """EF06 holder data (§1.3). SSN and name are masked in ``repr`` (DESIGN §4)."""

    ssn: str = field(repr=False)
    name: str = field(repr=False)
    gender: Gender
    nation: str  # 2-digit GB 3304 code
    birthplace: str  # area code digits, "" when not recorded
    birth_date: date

    @property
    def masked_ssn(self) -> str:
        return mask_ssn(self.ssn)

    @property
    def masked_name(self) -> str:
        return mask_name(self.name)

    def __repr__(self) -> str:
        return (
            f"Holder(ssn={self.masked_ssn!r}, name={self.masked_name!r}, "
            f"gender={self.gender.label}, nation={self.nation!r}, "
            f"birthplace={self.birthplace!r}, birth_date={self.birth_date})"
        )

    __str__ = __repr__


def decode_ssn(value: bytes) -> str:
    text = _an(value, "social security number")
    if not _SSN_RE.fullmatch(text):
        raise CardProtocolError("social security number: expected 17 digits and a check char")
    return text


def decode_name(value: bytes, extension: bytes | None = None) -> str:
    """Name (tag 09, 30 bytes GBK) continued by the extension (tag 4E) when present (§1.3)."""
    name = decode_gbk(value, "name")
    if extension is not None:
        name += decode_gbk(extension, "name extension")
    if not name.strip():
        raise CardProtocolError("name: empty")
    return name


def decode_gender(value: bytes) -> Gender:
    text = _an(value, "gender")
    try:
        return Gender(text)
    except ValueError:
        raise CardProtocolError("gender: unknown code") from None


def decode_nation(value: bytes) -> str:
    """Ethnicity code (GB 3304), 1 byte ``cn``; ``FF`` (not recorded) gives ``""``."""
    if len(value) != 1:
        raise CardProtocolError("nation: expected 1 byte")
    digits = _bcd_digits(value, "nation", f_padded=True)
    if digits and len(digits) != 2:
        raise CardProtocolError("nation: expected 2 BCD digits")
    return digits


def decode_birthplace(value: bytes) -> str:
    """Birthplace area code, 3 bytes ``cn`` F-padded: 6, 4 or 2 digits (county, city,
    province level) or ``""`` when not recorded."""
    if len(value) != 3:
        raise CardProtocolError("birthplace: expected 3 bytes")
    digits = _bcd_digits(value, "birthplace", f_padded=True)
    if len(digits) not in (0, 2, 4, 6):
        raise CardProtocolError("birthplace: expected a 2-, 4- or 6-digit area code")
    return digits


def decode_holder(records: Mapping[int, bytes]) -> Holder:
    """Decode the EF06 records (``tag → raw READ RECORD data``); 4E is optional."""
    required = tuple(s for s in c.EF06_RECORDS if s is not c.NAME_EXT)
    v = _values(records, required)
    ext_raw = records.get(c.NAME_EXT.tag)
    ext = decode_record(c.NAME_EXT, ext_raw) if ext_raw is not None else None
    return Holder(
        ssn=decode_ssn(v[c.SSN.tag]),
        name=decode_name(v[c.NAME.tag], ext),
        gender=decode_gender(v[c.GENDER.tag]),
        nation=decode_nation(v[c.NATION.tag]),
        birthplace=decode_birthplace(v[c.BIRTHPLACE.tag]),
        birth_date=decode_date(v[c.BIRTH_DATE.tag], "birth date"),
    )


def encode_holder(holder: Holder) -> dict[int, bytes]:
    """The EF06 records (TLV) for ``holder``; 4E only when the name needs more than 30 bytes."""
    raw_name = holder.name.encode("gbk")
    first, rest = raw_name[:30], raw_name[30:]
    if rest and len(first) == 30:
        # never split a two-byte GBK character across the records
        try:
            first.decode("gbk")
        except UnicodeDecodeError:
            first, rest = raw_name[:29], raw_name[29:]
    out = {
        c.SSN.tag: encode_record(c.SSN, _an_encode(holder.ssn, 18)),
        c.NAME.tag: encode_record(c.NAME, first + bytes(30 - len(first))),
        c.GENDER.tag: encode_record(c.GENDER, _an_encode(holder.gender.value, 1)),
        c.NATION.tag: encode_record(c.NATION, _bcd_encode(holder.nation, 1)),
        c.BIRTHPLACE.tag: encode_record(c.BIRTHPLACE, _bcd_encode(holder.birthplace, 3)),
        c.BIRTH_DATE.tag: encode_record(c.BIRTH_DATE, encode_date(holder.birth_date)),
    }
    if rest:
        if len(rest) > 20:
            raise LocalProtocolError("name longer than 50 GBK bytes")
        out[c.NAME_EXT.tag] = encode_record(c.NAME_EXT, rest + bytes(20 - len(rest)))
    return out


# --- activation status record --------------------------------------------------------------------
def decode_status(data: bytes, tag: int, expected_length: int) -> bytes:
    """The EF05 status record (CARD-PROTOCOL §1 "Lifecycle"; tag and values from the profile)."""
    spec = c.RecordSpec(tag, "status", expected_length, c.Enc.B, c.SFI_EF05)
    return decode_record(spec, data)


def _values(records: Mapping[int, bytes], specs: tuple[c.RecordSpec, ...]) -> dict[int, bytes]:
    out = {}
    for spec in specs:
        raw = records.get(spec.tag)
        if raw is None:
            raise CardProtocolError(f"record {spec.tag:02X} ({spec.name}) missing")
        out[spec.tag] = decode_record(spec, raw)
    return out


# --- FCI of the SSSE application -----------------------------------------------------------------
def decode_fci_algorithm(fci: bytes) -> int:
    """The algorithm indicator byte of the SSSE FCI ``6F{84 AID, A5{9F0C 03 86 01 alg}}``.

    CARD-PROTOCOL §1 select; §1.1: ``01`` DES/3DES (also when ``9F0C`` is absent), ``03`` SM4.
    A DF name other than the SSSE AID, or a malformed ``9F0C``, raises ``CardProtocolError``.
    """
    items = tlv.decode(bytes(fci), skip_padding=True)
    if not items:
        return 0x01
    if items[0].tag != 0x6F or len(items) != 1:
        raise CardProtocolError("SSSE FCI: expected one 6F template")
    name = items[0].find(0x84)
    if name is not None and name.value != c.SSSE_AID:
        raise CardProtocolError("SSSE FCI: DF name is not the SSSE AID")
    indicator = items[0].find(0x9F0C)
    if indicator is None:
        return 0x01
    value = indicator.value
    if len(value) == 3 and value[:2] == b"\x86\x01":
        return value[2]
    if len(value) == 1:  # some COS write the bare indicator byte
        return value[0]
    raise CardProtocolError("SSSE FCI: malformed 9F0C algorithm indicator")
