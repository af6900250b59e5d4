"""The bank (PBOC/UnionPay) application, host side: selection, GPO, records, GET DATA,
GENERATE AC (ssc-card-protocol.md §4; CARD-PROTOCOL.md §3; EMV Book 1 §12, Book 3 §6–§10).

Every flow is an ``async def`` over ``CardChannel`` and goes through ``agent.card.t0.request``, so
it runs the same over the simulator, pcscd or a real reader. Every byte from the card is
validated: a malformed FCI, AFL, record or cryptogram response raises ``CardProtocolError``
(``TlvError`` for broken TLV), never ``IndexError``/``ValueError``.

Bank activation/blocking is not done here: the bank host returns issuer scripts which
``agent.emv.script`` relays unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum

from agent.card import tlv
from agent.card.apdu import CardChannel, CommandApdu
from agent.card.t0 import request
from agent.card.tlv import Tlv
from agent.emv.dol import build_dol_data, default_terminal_data, parse_dol
from agent.emv.tags import mask_id, mask_name, mask_pan
from agent.errors import (
    CardProtocolError,
    CardStatusError,
    FileNotFoundOnCardError,
    LocalProtocolError,
)

PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"
UNIONPAY_RID = bytes.fromhex("A000000333")
UNIONPAY_DEBIT = bytes.fromhex("A000000333010101")
UNIONPAY_CREDIT = bytes.fromhex("A000000333010102")
UNIONPAY_QUASI_CREDIT = bytes.fromhex("A000000333010103")
UNIONPAY_ECASH = bytes.fromhex("A000000333010106")
UNIONPAY_AIDS = (UNIONPAY_DEBIT, UNIONPAY_CREDIT, UNIONPAY_QUASI_CREDIT, UNIONPAY_ECASH)

#: Upper bounds against a hostile card (a directory or AFL that never ends).
MAX_DIRECTORY_RECORDS = 16
MAX_AFL_RECORDS = 64
MAX_SCAN_RECORDS = 16

SW_OK = 0x9000
SW_APP_BLOCKED = 0x6283
SW_RECORD_NOT_FOUND = 0x6A83


class Cryptogram(IntEnum):
    """GENERATE AC P1 / CID bits 8-7 (EMV Book 3 §6.5.5)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


@dataclass(frozen=True, slots=True)
class ApplicationEntry:
    """One application from the PSE/PPSE directory (or found by direct selection)."""

    aid: bytes
    label: str = ""
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class SelectedApplication:
    """The answer to SELECT of an ADF. ``blocked`` when the card answered 6283."""

    aid: bytes
    fci: Tlv | None
    pdol: bytes | None
    label: str
    blocked: bool


@dataclass(frozen=True, slots=True)
class AflEntry:
    """One 4-byte AFL entry (EMV Book 3 §10.2)."""

    sfi: int
    first: int
    last: int
    offline: int


@dataclass(frozen=True, slots=True)
class ProcessingOptions:
    aip: bytes
    afl: tuple[AflEntry, ...]


@dataclass(frozen=True, slots=True)
class AcResult:
    """Response to GENERATE AC: CID, ATC, the cryptogram (ARQC/TC/AAC) and issuer app data."""

    cid: int
    atc: int
    cryptogram: bytes
    iad: bytes

    @property
    def kind(self) -> Cryptogram:
        return Cryptogram(self.cid & 0xC0) if self.cid & 0xC0 != 0xC0 else Cryptogram.AAC


@dataclass(frozen=True, slots=True)
class BankAppInfo:
    """What the agent reads from the bank application. Personal fields are kept out of repr."""

    aid: bytes
    label: str
    pan: str = field(repr=False)
    psn: int | None
    expiry: date
    effective: date | None
    holder_name: str | None = field(repr=False)
    holder_id: str | None = field(repr=False)
    holder_id_type: int | None
    atc: int | None
    pin_tries: int | None
    blocked: bool
    aip: bytes | None = None
    cdol1: bytes | None = None

    @property
    def masked_pan(self) -> str:
        """First 6 and last 4 digits (DESIGN §4)."""
        return mask_pan(self.pan)

    @property
    def masked_id(self) -> str | None:
        return None if self.holder_id is None else mask_id(self.holder_id)

    @property
    def masked_name(self) -> str | None:
        return None if self.holder_name is None else mask_name(self.holder_name)

    def to_dict(self, *, show_pii: bool = False) -> dict[str, object]:
        """JSON-able view; personal data masked unless ``show_pii``."""
        return {
            "aid": self.aid.hex().upper(),
            "label": self.label,
            "pan": self.pan if show_pii else self.masked_pan,
            "psn": self.psn,
            "expiry": self.expiry.isoformat(),
            "effective": None if self.effective is None else self.effective.isoformat(),
            "holder_name": self.holder_name if show_pii else self.masked_name,
            "holder_id": self.holder_id if show_pii else self.masked_id,
            "holder_id_type": self.holder_id_type,
            "atc": self.atc,
            "pin_tries": self.pin_tries,
            "blocked": self.blocked,
        }


# ---- commands -----------------------------------------------------------------------------------


def select_command(name: bytes) -> CommandApdu:
    """``00 A4 04 00 Lc name 00`` (select by DF name, first occurrence)."""
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes(name), 256)


def read_record_command(sfi: int, record: int) -> CommandApdu:
    if not 1 <= sfi <= 30 or not 1 <= record <= 255:
        raise LocalProtocolError(f"bad READ RECORD SFI {sfi} / record {record}")
    return CommandApdu(0x00, 0xB2, record, (sfi << 3) | 0x04, b"", 256)


def get_data_command(tag: int) -> CommandApdu:
    if not 0 < tag <= 0xFFFF:
        raise LocalProtocolError(f"bad GET DATA tag {tag:X}")
    return CommandApdu(0x80, 0xCA, tag >> 8, tag & 0xFF, b"", 256)


# ---- decoding helpers (hostile input) -----------------------------------------------------------


def _text(value: bytes) -> str:
    # ans fields; Chinese issuers put GBK in 5F20 in practice. Never raises.
    return value.decode("gbk", errors="replace").strip(" \x00")


def _digits(value: bytes, what: str, lo: int, hi: int) -> str:
    text = value.hex().upper().rstrip("F")
    if not text.isdigit() or not lo <= len(text) <= hi:
        raise CardProtocolError(f"{what} is not {lo}..{hi} BCD digits")
    return text


def decode_pan(value: bytes) -> str:
    """PAN from ``5A`` (cn, F-padded), 12..19 digits."""
    return _digits(value, "PAN (5A)", 12, 19)


def pan_from_track2(value: bytes) -> str:
    """PAN from track-2 equivalent data ``57`` (digits before the ``D`` separator)."""
    text = value.hex().upper()
    if "D" not in text:
        raise CardProtocolError("track 2 (57) has no field separator")
    pan = text.split("D", 1)[0]
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise CardProtocolError("track 2 (57) PAN is not 12..19 digits")
    return pan


def decode_date(value: bytes, what: str) -> date:
    """``YYMMDD`` BCD (n6) → date; YY < 50 is 20YY (EMV Book 4 §6.7.3 convention)."""
    if len(value) != 3:
        raise CardProtocolError(f"{what} must be 3 bytes YYMMDD")
    text = value.hex()
    if not text.isdigit():
        raise CardProtocolError(f"{what} is not BCD")
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    try:
        return date(2000 + yy if yy < 50 else 1900 + yy, mm, dd)
    except ValueError:
        raise CardProtocolError(f"{what} is not a calendar date") from None


def decode_bcd_int(value: bytes, what: str) -> int:
    text = value.hex()
    if not value or not text.isdigit():
        raise CardProtocolError(f"{what} is not BCD")
    return int(text)


def parse_afl(afl: bytes) -> tuple[AflEntry, ...]:
    """Validate the AFL (EMV Book 3 §10.2): 4-byte entries, SFI 1..30, first ≤ last."""
    if not afl or len(afl) % 4:
        raise CardProtocolError(f"AFL length {len(afl)} is not a positive multiple of 4")
    out = []
    total = 0
    for i in range(0, len(afl), 4):
        b0, first, last, offline = afl[i : i + 4]
        sfi = b0 >> 3
        if b0 & 0x07 or not 1 <= sfi <= 30:
            raise CardProtocolError(f"AFL entry {i // 4 + 1}: bad SFI byte {b0:02X}")
        if first == 0 or last < first:
            raise CardProtocolError(f"AFL entry {i // 4 + 1}: bad record range {first}..{last}")
        if offline > last - first + 1:
            raise CardProtocolError(f"AFL entry {i // 4 + 1}: offline count {offline} too large")
        total += last - first + 1
        out.append(AflEntry(sfi, first, last, offline))
    if total > MAX_AFL_RECORDS:
        raise CardProtocolError(f"AFL lists {total} records (limit {MAX_AFL_RECORDS})")
    return tuple(out)


def _entries(templates: list[Tlv]) -> list[ApplicationEntry]:
    out = []
    for t in templates:
        if t.tag != 0x61:
            continue
        aid = t.find(0x4F)
        if aid is None or not 5 <= len(aid.value) <= 16:
            raise CardProtocolError("directory entry without a valid AID (4F)")
        label = t.find(0x50)
        prio = t.find(0x87)
        priority = None
        if prio is not None:
            if len(prio.value) != 1:
                raise CardProtocolError("application priority (87) must be 1 byte")
            priority = prio.value[0] & 0x0F or None
        out.append(ApplicationEntry(aid.value, _text(label.value) if label else "", priority))
    return out


def _by_priority(entries: list[ApplicationEntry]) -> list[ApplicationEntry]:
    # Priority 1 is highest; entries without priority keep card order after the others.
    return sorted(entries, key=lambda e: 16 if e.priority is None else e.priority)


def _fci(data: bytes, what: str) -> Tlv:
    objs = tlv.decode(data, skip_padding=True)
    if len(objs) != 1 or objs[0].tag != 0x6F:
        raise CardProtocolError(f"{what}: answer is not one FCI template (6F)")
    return objs[0]


# ---- flows --------------------------------------------------------------------------------------


async def read_pse(channel: CardChannel) -> list[ApplicationEntry]:
    """Select ``1PAY.SYS.DDF01`` and read its directory records from the SFI in FCI tag 88."""
    resp = await request(channel, select_command(PSE_NAME), command="SELECT PSE")
    fci = _fci(resp.data, "PSE")
    sfi_obj = fci.find(0x88)
    if sfi_obj is None or len(sfi_obj.value) != 1 or not 1 <= sfi_obj.value[0] <= 30:
        raise CardProtocolError("PSE FCI has no valid directory SFI (88)")
    sfi = sfi_obj.value[0]
    entries: list[ApplicationEntry] = []
    for record in range(1, MAX_DIRECTORY_RECORDS + 1):
        r = await request(
            channel,
            read_record_command(sfi, record),
            expect={SW_OK, SW_RECORD_NOT_FOUND},
            command="READ RECORD (PSE)",
        )
        if r.sw == SW_RECORD_NOT_FOUND:
            break
        objs = tlv.decode(r.data, skip_padding=True)
        if len(objs) != 1 or objs[0].tag != 0x70:
            raise CardProtocolError("PSE directory record is not a record template (70)")
        entries.extend(_entries(list(objs[0].children)))
    else:
        raise CardProtocolError(f"PSE directory longer than {MAX_DIRECTORY_RECORDS} records")
    return _by_priority(entries)


async def read_ppse(channel: CardChannel) -> list[ApplicationEntry]:
    """Select ``2PAY.SYS.DDF01``: the directory is in the FCI (``BF0C`` → ``61`` → ``4F``)."""
    resp = await request(channel, select_command(PPSE_NAME), command="SELECT PPSE")
    fci = _fci(resp.data, "PPSE")
    bf0c = fci.find(0xBF0C)
    if bf0c is None:
        raise CardProtocolError("PPSE FCI has no issuer discretionary data (BF0C)")
    return _by_priority(_entries(list(bf0c.children)))


async def find_applications(
    channel: CardChannel, *, candidates: tuple[bytes, ...] = UNIONPAY_AIDS
) -> list[ApplicationEntry]:
    """PSE, else PPSE, else direct selection of ``candidates`` (EMV Book 1 §12.3)."""
    for reader in (read_pse, read_ppse):
        try:
            found = await reader(channel)
        except CardStatusError:
            continue  # directory absent or refused: try the next method
        if found:
            return found
    entries = []
    for aid in candidates:
        try:
            app = await select_application(channel, aid)
        except FileNotFoundOnCardError:
            continue
        entries.append(ApplicationEntry(app.aid, app.label, None))
    return entries


async def select_application(channel: CardChannel, aid: bytes) -> SelectedApplication:
    """SELECT the ADF; 6283 (blocked) is accepted and reported, 6A81/9303/6A82 raise."""
    resp = await request(
        channel,
        select_command(aid),
        expect={SW_OK, SW_APP_BLOCKED},
        command="SELECT AID",
    )
    blocked = resp.sw == SW_APP_BLOCKED
    if not resp.data and blocked:
        return SelectedApplication(bytes(aid), None, None, "", True)
    fci = _fci(resp.data, "SELECT AID")
    df = fci.find(0x84)
    if df is not None and not df.value.startswith(bytes(aid)):
        raise CardProtocolError("FCI DF name (84) does not match the selected AID")
    pdol = fci.find(0x9F38)
    if pdol is not None:
        parse_dol(pdol.value)  # validate now, so a hostile PDOL fails at SELECT
    label = fci.find(0x50)
    return SelectedApplication(
        df.value if df is not None else bytes(aid),
        fci,
        pdol.value if pdol is not None else None,
        _text(label.value) if label is not None else "",
        blocked,
    )


async def get_processing_options(
    channel: CardChannel, app: SelectedApplication, terminal: Mapping[int, bytes]
) -> ProcessingOptions:
    """GPO ``80 A8 00 00 Lc 83 L <PDOL data> 00``; format 1 (80) or format 2 (77{82, 94})."""
    data = build_dol_data(app.pdol, terminal) if app.pdol else b""
    cmd = CommandApdu(0x80, 0xA8, 0x00, 0x00, tlv.encode(0x83, data), 256)
    resp = await request(channel, cmd, command="GET PROCESSING OPTIONS")
    objs = tlv.decode(resp.data, skip_padding=True)
    if len(objs) != 1:
        raise CardProtocolError("GPO answer is not one template")
    top = objs[0]
    if top.tag == 0x80:
        if len(top.value) < 6:
            raise CardProtocolError("GPO format 1 shorter than AIP + one AFL entry")
        return ProcessingOptions(top.value[:2], parse_afl(top.value[2:]))
    if top.tag == 0x77:
        aip = top.find(0x82)
        afl = top.find(0x94)
        if aip is None or len(aip.value) != 2 or afl is None:
            raise CardProtocolError("GPO format 2 without AIP (82) or AFL (94)")
        return ProcessingOptions(aip.value, parse_afl(afl.value))
    raise CardProtocolError(f"GPO answer template {top.tag:X} is neither 80 nor 77")


def _record_objects(data: bytes) -> list[Tlv]:
    objs = tlv.decode(data, skip_padding=True)
    if len(objs) != 1 or objs[0].tag != 0x70:
        raise CardProtocolError("record is not a record template (70)")
    return [t for t in tlv.walk(list(objs[0].children)) if not t.constructed]


async def read_records(channel: CardChannel, afl: tuple[AflEntry, ...]) -> dict[int, bytes]:
    """READ RECORD each record the AFL lists in SFI 1..10 (EMV-format records) → tag → value.

    The first occurrence of a tag wins (EMV forbids duplicates; a card that repeats one does not
    get to override an earlier value).
    """
    out: dict[int, bytes] = {}
    for entry in afl:
        if entry.sfi > 10:
            continue  # SFI 11..30 are proprietary formats (Book 3 §5.3.2.2)
        for record in range(entry.first, entry.last + 1):
            r = await request(
                channel, read_record_command(entry.sfi, record), command="READ RECORD"
            )
            for obj in _record_objects(r.data):
                out.setdefault(obj.tag, obj.value)
    return out


async def scan_records(channel: CardChannel, sfi: int = 1) -> dict[int, bytes]:
    """Read records 1.. of ``sfi`` until 6A83 (used when GPO is refused on a blocked app)."""
    out: dict[int, bytes] = {}
    for record in range(1, MAX_SCAN_RECORDS + 1):
        r = await request(
            channel,
            read_record_command(sfi, record),
            expect={SW_OK, SW_RECORD_NOT_FOUND},
            command="READ RECORD",
        )
        if r.sw == SW_RECORD_NOT_FOUND:
            return out
        for obj in _record_objects(r.data):
            out.setdefault(obj.tag, obj.value)
    raise CardProtocolError(f"SFI {sfi} has more than {MAX_SCAN_RECORDS} records")


async def get_data(channel: CardChannel, tag: int) -> bytes | None:
    """GET DATA ``80 CA``: the value, or None if the card does not provide it."""
    resp = await request(
        channel,
        get_data_command(tag),
        expect={SW_OK, 0x6A88, 0x6A81, 0x6A86, 0x6D00, 0x6985},
        command=f"GET DATA {tag:X}",
    )
    if resp.sw != SW_OK:
        return None
    obj, rest = tlv.decode_one(resp.data)
    if obj.tag != tag or rest:
        raise CardProtocolError(f"GET DATA {tag:X} answered another object")
    return obj.value


async def get_atc(channel: CardChannel) -> int | None:
    value = await get_data(channel, 0x9F36)
    if value is None:
        return None
    if len(value) != 2:
        raise CardProtocolError("ATC (9F36) must be 2 bytes")
    return int.from_bytes(value, "big")


async def get_pin_tries(channel: CardChannel) -> int | None:
    value = await get_data(channel, 0x9F17)
    if value is None:
        return None
    if len(value) != 1:
        raise CardProtocolError("PIN try counter (9F17) must be 1 byte")
    return value[0]


async def generate_ac(
    channel: CardChannel,
    cdol1: bytes,
    terminal: Mapping[int, bytes],
    *,
    kind: Cryptogram = Cryptogram.ARQC,
) -> AcResult:
    """First GENERATE AC ``80 AE P1 00 Lc <CDOL1 data> 00`` (EMV Book 3 §6.5.5)."""
    data = build_dol_data(cdol1, terminal)
    if not data:
        raise CardProtocolError("CDOL1 (8C) is empty")
    cmd = CommandApdu(0x80, 0xAE, int(kind), 0x00, data, 256)
    resp = await request(channel, cmd, command="GENERATE AC")
    objs = tlv.decode(resp.data, skip_padding=True)
    if len(objs) != 1:
        raise CardProtocolError("GENERATE AC answer is not one template")
    top = objs[0]
    if top.tag == 0x80:
        v = top.value
        if not 11 <= len(v) <= 43:
            raise CardProtocolError("GENERATE AC format 1 has a bad length")
        return AcResult(v[0], int.from_bytes(v[1:3], "big"), v[3:11], v[11:])
    if top.tag == 0x77:
        cid, atc, ac = top.find(0x9F27), top.find(0x9F36), top.find(0x9F26)
        iad = top.find(0x9F10)
        if cid is None or len(cid.value) != 1:
            raise CardProtocolError("GENERATE AC without a 1-byte CID (9F27)")
        if atc is None or len(atc.value) != 2:
            raise CardProtocolError("GENERATE AC without a 2-byte ATC (9F36)")
        if ac is None or len(ac.value) != 8:
            raise CardProtocolError("GENERATE AC without an 8-byte cryptogram (9F26)")
        return AcResult(
            cid.value[0],
            int.from_bytes(atc.value, "big"),
            ac.value,
            iad.value if iad is not None else b"",
        )
    raise CardProtocolError(f"GENERATE AC template {top.tag:X} is neither 80 nor 77")


def _choose(entries: list[ApplicationEntry]) -> bytes:
    for e in entries:
        if e.aid.startswith(UNIONPAY_RID):
            return e.aid
    if entries:
        return entries[0].aid
    raise FileNotFoundOnCardError(0x6A82, "no UnionPay application on the card")


async def read_bank_app(
    channel: CardChannel,
    *,
    terminal: Mapping[int, bytes] | None = None,
    aid: bytes | None = None,
) -> BankAppInfo:
    """Find, select and read the bank application: PAN, PSN, dates, holder, ATC, PIN tries.

    A blocked application (SELECT 6283) refuses GPO (6985) on PBOC cards, so its records are
    read by scanning SFI 1 instead of following an AFL; ``blocked`` tells the caller.
    """
    term = default_terminal_data() if terminal is None else dict(terminal)
    if aid is None:
        aid = _choose(await find_applications(channel))
    app = await select_application(channel, aid)
    aip: bytes | None = None
    if app.blocked:
        objects = await scan_records(channel)
    else:
        opts = await get_processing_options(channel, app, term)
        aip = opts.aip
        objects = await read_records(channel, opts.afl)
    if 0x5A in objects:
        pan = decode_pan(objects[0x5A])
    elif 0x57 in objects:
        pan = pan_from_track2(objects[0x57])
    else:
        raise CardProtocolError("bank application has no PAN (5A) or track 2 (57)")
    if 0x5F24 not in objects:
        raise CardProtocolError("bank application has no expiry date (5F24)")
    psn = objects.get(0x5F34)
    eff = objects.get(0x5F25)
    name = objects.get(0x5F20) or objects.get(0x9F0B)
    id_no = objects.get(0x9F61)
    id_type = objects.get(0x9F62)
    if id_type is not None and len(id_type) != 1:
        raise CardProtocolError("cardholder ID type (9F62) must be 1 byte")
    return BankAppInfo(
        aid=app.aid,
        label=app.label,
        pan=pan,
        psn=None if psn is None else decode_bcd_int(psn, "PSN (5F34)"),
        expiry=decode_date(objects[0x5F24], "expiry date (5F24)"),
        effective=None if eff is None else decode_date(eff, "effective date (5F25)"),
        holder_name=None if name is None else _text(name),
        holder_id=None if id_no is None else _text(id_no),
        holder_id_type=None if id_type is None else id_type[0],
        atc=await get_atc(channel),
        pin_tries=await get_pin_tries(channel),
        blocked=app.blocked,
        aip=aip,
        cdol1=objects.get(0x8C),
    )
