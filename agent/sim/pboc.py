"""Simulated PBOC/UnionPay bank application and PSE/PPSE directory (device side of
``agent.emv``; ssc-card-protocol.md §4; CARD-PROTOCOL.md §3). TEST KEYS ONLY.

``PbocApplet`` (one ADF, default AID ``A000000333010101``):

* SELECT → ``6F{84 AID, A5{50 label, 87 01, 9F38 PDOL, 5F2D "zh"}}`` ‖ 9000; a blocked
  application answers the same FCI ‖ 6283; a blocked card 6A81 (no FCI);
* GPO ``80 A8 00 00 83 L <PDOL data>`` → format 2 ``77{82 AIP, 94 AFL}``; blocked app 6985;
* READ RECORD SFI 1 records 1–2 (``70`` templates: 57, 5F20, 9F61, 9F62 / 5A, 5F24, 5F25, 5F34,
  8C CDOL1, 8D CDOL2, 9F07, 9F08); Le must be 00 or exact, else ``6Cxx``;
* GET DATA ``80 CA`` 9F36 (ATC), 9F17 (PIN try counter), 9F13 (last online ATC);
* GENERATE AC ``80 AE`` with CDOL1 data: ATC += 1, then ``77{9F27 CID, 9F36 ATC, 9F26 AC,
  9F10 IAD}``. AC = ISO 9797-1 MAC alg. 3 (pad method 2, IV 0, 8 bytes) under the PBOC session
  key over ``CDOL1 data ‖ AIP ‖ ATC ‖ CVR`` (AIP ``0000`` when no GPO was done). A blocked
  application still answers (with an AAC) so that the issuer can send it an unblock script:
  the script MAC needs an ATC and a cryptogram of the current session;
* issuer-script commands ``84 1E`` (app block), ``84 18`` (app unblock), ``84 16`` (card block),
  ``84 24`` (PIN unblock: try counter restored), each ``Lc = 04`` with a MAC over
  ``CLA INS P1 P2 Lc ‖ ATC ‖ AC ‖ data`` (§4), no preceding AC in this session → 6985, wrong MAC
  → 6988 and nothing changes.

Keys (§4): UDK = EMV option A from PAN ‖ PSN (one DES diversification level, so
``agent.psam.crypto.diversify``), session key
``SK = 3DES_UDK(000000000000 ‖ ATC) ‖ 3DES_UDK(000000000000 ‖ ~ATC)`` — the PBOC form, not
the EMV common session key. The AC key and the MAC key come from two issuer master keys (one may
serve both in tests).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from agent.card import tlv
from agent.card.apdu import CommandApdu
from agent.errors import CardProtocolError, ConfigError, SimStateError
from agent.psam.crypto import Algorithm, diversify, ecb_encrypt, retail_mac

UNIONPAY_DEBIT = bytes.fromhex("A000000333010101")
PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"

PDOL = bytes.fromhex("9F66049F02069F1A025F2A029A039C019F3704")
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
CDOL2 = bytes.fromhex("8A029F020695059F3704")
PDOL_LEN = 22
CDOL1_LEN = 29
AIP = bytes.fromhex("7C00")
NO_AIP = bytes(2)  # AIP in the AC input when GPO was refused (blocked application)
AFL = bytes.fromhex("08010200")  # SFI 1, records 1..2, none for offline data authentication
SFI = 1

SW_OK = 0x9000
SW_BLOCKED_APP = 0x6283
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_CONDITIONS = 0x6985
SW_BAD_MAC = 0x6988
SW_BAD_DATA = 0x6A80
SW_CARD_BLOCKED = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_NO_RECORD = 0x6A83
SW_BAD_P1P2 = 0x6A86
SW_NO_DATA = 0x6A88
SW_INS = 0x6D00
SW_CLA = 0x6E00

CID_AAC = 0x00
CID_ARQC = 0x80


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


# ---- PBOC key derivation and MACs (§4) ---------------------------------------------------------


def derive_udk(issuer_master_key: bytes, pan: str, psn: int) -> bytes:
    """EMV option A: Y = rightmost 16 digits of PAN ‖ PSN; UDK = 3DES_IMK(Y) ‖ 3DES_IMK(~Y)."""
    digits = (pan + f"{psn:02d}")[-16:].rjust(16, "0")
    return diversify(Algorithm.DES, issuer_master_key, [bytes.fromhex(digits)])


def session_key(udk: bytes, atc: int) -> bytes:
    """PBOC session key: ``3DES_UDK(000000000000 ‖ ATC) ‖ 3DES_UDK(000000000000 ‖ ~ATC)``."""
    a = atc.to_bytes(2, "big")
    inv = bytes(b ^ 0xFF for b in a)
    return ecb_encrypt(Algorithm.DES, udk, bytes(6) + a) + ecb_encrypt(
        Algorithm.DES, udk, bytes(6) + inv
    )


def cvr_from_iad(iad: bytes) -> bytes:
    """The 4 CVR bytes of PBOC issuer application data (``len DKI CVN CVR…``)."""
    if len(iad) < 7:
        raise CardProtocolError("issuer application data shorter than 7 bytes")
    return iad[3:7]


def application_cryptogram(
    sk_ac: bytes, transaction_data: bytes, aip: bytes, atc: int, cvr: bytes
) -> bytes:
    """AC = retail MAC (IV 0, pad method 2) over ``CDOL1 data ‖ AIP ‖ ATC ‖ CVR``, 8 bytes."""
    return retail_mac(sk_ac, transaction_data + aip + atc.to_bytes(2, "big") + cvr)


def script_mac(sk_mac: bytes, header: bytes, atc: int, ac: bytes, data: bytes = b"") -> bytes:
    """Issuer-script MAC (§4): ``header ‖ ATC ‖ AC ‖ data``, alg. 3, IV 0, leftmost 4 bytes.

    ``header`` is ``CLA INS P1 P2 Lc`` with Lc counting the 4 MAC bytes.
    """
    return retail_mac(sk_mac, header + atc.to_bytes(2, "big") + ac + data)[:4]


# ---- the bank application ----------------------------------------------------------------------


def _bcd_date(d: date) -> bytes:
    return bytes.fromhex(d.strftime("%y%m%d"))


def _gbk_prefix(text: str, limit: int) -> bytes:
    """GBK bytes of the longest prefix of ``text`` within ``limit`` (no half characters)."""
    out = b""
    for ch in text:
        b = ch.encode("gbk", errors="replace")
        if len(out) + len(b) > limit:
            break
        out += b
    return out


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise ConfigError(f"{what} must be 16 bytes")
    return bytes(key)


@dataclass
class _Session:
    """Cleared at power-on and at each SELECT."""

    gpo_done: bool = False
    last_ac: bytes | None = None
    last_atc: int | None = None


class PbocApplet:
    """The PBOC/UnionPay debit application (a ``SimApplet``). TEST issuer keys only."""

    def __init__(
        self,
        pan: str,
        psn: int,
        expiry: date,
        holder_name: str,
        holder_id: str,
        *,
        issuer_master_key: bytes,
        mac_master_key: bytes | None = None,
        effective: date | None = None,
        holder_id_type: int = 0x00,
        aid: bytes = UNIONPAY_DEBIT,
        label: str = "UnionPay Debit",
        atc: int = 0,
        last_online_atc: int = 0,
        pin_tries: int = 3,
        pin_max_tries: int = 3,
        blocked: bool = False,
        card_blocked: bool = False,
    ) -> None:
        if not isinstance(pan, str) or not pan.isdigit() or not 12 <= len(pan) <= 19:
            raise ConfigError("PAN must be 12..19 digits")
        if not 0 <= psn <= 99:
            raise ConfigError("PSN must be 0..99")
        if not 0 <= atc <= 0xFFFF or not 0 <= last_online_atc <= 0xFFFF:
            raise ConfigError("ATC must be 0..65535")
        if not 0 <= pin_tries <= pin_max_tries <= 15:
            raise ConfigError("PIN tries must satisfy 0 <= tries <= max <= 15")
        if not 5 <= len(aid) <= 16:
            raise ConfigError("AID must be 5..16 bytes")
        if not 0 <= holder_id_type <= 0xFF:
            raise ConfigError("holder ID type must be a byte")
        self.pan = pan
        self.psn = psn
        self.expiry = expiry
        self.effective = effective
        self.holder_name = holder_name
        self.holder_id = holder_id
        self.holder_id_type = holder_id_type
        self.aid = bytes(aid)
        self.label = label
        self.issuer_master_key = _check_key(issuer_master_key, "issuer master key")
        self.mac_master_key = _check_key(
            mac_master_key if mac_master_key is not None else issuer_master_key, "MAC master key"
        )
        self.atc = atc
        self.last_online_atc = last_online_atc
        self.pin_tries = pin_tries
        self.pin_max_tries = pin_max_tries
        self.blocked = blocked
        self.card_blocked = card_blocked
        self.aids: tuple[bytes, ...] = (self.aid,)
        self._udk_ac = derive_udk(self.issuer_master_key, pan, psn)
        self._udk_mac = derive_udk(self.mac_master_key, pan, psn)
        self._session = _Session()

    # ---- data ----------------------------------------------------------------------------------
    def fci(self) -> bytes:
        prop = tlv.encode_many(
            [
                (0x50, self.label.encode("ascii", errors="replace")[:16]),
                (0x87, b"\x01"),
                (0x9F38, PDOL),
                (0x5F2D, b"zh"),
            ]
        )
        return tlv.encode(0x6F, tlv.encode(0x84, self.aid) + tlv.encode(0xA5, prop))

    def records(self) -> dict[int, bytes]:
        """SFI 1 records, each a ``70`` template."""
        pan_digits = self.pan + ("F" if len(self.pan) % 2 else "")
        track2 = self.pan + "D" + self.expiry.strftime("%y%m") + "2200000000000"
        track2 += "F" if len(track2) % 2 else ""
        name = _gbk_prefix(self.holder_name, 26)
        rec1 = tlv.encode_many(
            [
                (0x57, bytes.fromhex(track2)),
                (0x5F20, name),
                (0x9F61, self.holder_id.encode("ascii", errors="replace")[:40]),
                (0x9F62, bytes((self.holder_id_type,))),
            ]
        )
        items = [
            (0x5A, bytes.fromhex(pan_digits)),
            (0x5F24, _bcd_date(self.expiry)),
            (0x5F34, bytes.fromhex(f"{self.psn:02d}")),
            (0x8C, CDOL1),
            (0x8D, CDOL2),
            (0x9F07, bytes.fromhex("FF00")),
            (0x9F08, bytes.fromhex("0030")),
        ]
        if self.effective is not None:
            items.insert(2, (0x5F25, _bcd_date(self.effective)))
        rec2 = tlv.encode_many(items)
        return {1: tlv.encode(0x70, rec1), 2: tlv.encode(0x70, rec2)}

    def iad(self, cid: int) -> bytes:
        """PBOC IAD: length 07, DKI 01, CVN 01, CVR (03, first GEN AC type, 00, 00)."""
        return bytes((0x07, 0x01, 0x01, 0x03, 0xA0 if cid == CID_ARQC else 0x80, 0x00, 0x00))

    # ---- SimApplet -----------------------------------------------------------------------------
    def select(self, aid: bytes) -> bytes:
        self._session = _Session()
        if self.card_blocked:
            return _sw(SW_CARD_BLOCKED)
        return _sw(SW_BLOCKED_APP if self.blocked else SW_OK, self.fci())

    def reset(self) -> None:
        self._session = _Session()

    def process(self, apdu: bytes) -> bytes:
        if self.card_blocked:
            return _sw(SW_CARD_BLOCKED)
        try:
            cmd = CommandApdu.from_bytes(apdu)
        except CardProtocolError:
            return _sw(SW_WRONG_LENGTH)
        key = (cmd.cla, cmd.ins)
        if key == (0x80, 0xA8):
            return self._gpo(cmd)
        if key == (0x00, 0xB2):
            return self._read_record(cmd)
        if key == (0x80, 0xCA):
            return self._get_data(cmd)
        if key == (0x80, 0xAE):
            return self._generate_ac(cmd)
        if cmd.cla == 0x84 and cmd.ins in (0x1E, 0x18, 0x16, 0x24):
            return self._script_command(cmd)
        if cmd.ins in (0xA8, 0xB2, 0xCA, 0xAE, 0x1E, 0x18, 0x16, 0x24):
            return _sw(SW_CLA)
        return _sw(SW_INS)

    # ---- commands ------------------------------------------------------------------------------
    def _gpo(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0 or cmd.p2 != 0:
            return _sw(SW_BAD_P1P2)
        if self.blocked:
            return _sw(SW_CONDITIONS)
        try:
            obj, rest = tlv.decode_one(cmd.data)
        except CardProtocolError:
            return _sw(SW_WRONG_LENGTH)
        if obj.tag != 0x83 or rest or len(obj.value) != PDOL_LEN:
            return _sw(SW_WRONG_LENGTH)
        self._session.gpo_done = True
        body = tlv.encode(0x82, AIP) + tlv.encode(0x94, AFL)
        return _sw(SW_OK, tlv.encode(0x77, body))

    def _read_record(self, cmd: CommandApdu) -> bytes:
        if cmd.p2 & 0x07 != 0x04:
            return _sw(SW_BAD_P1P2)
        if cmd.p2 >> 3 != SFI:
            return _sw(SW_NOT_FOUND)
        record = self.records().get(cmd.p1)
        if record is None:
            return _sw(SW_NO_RECORD)
        ne = cmd.ne
        if ne is not None and ne != 256 and ne != len(record):
            return _sw(0x6C00 | (len(record) & 0xFF))
        return _sw(SW_OK, record)

    def _get_data(self, cmd: CommandApdu) -> bytes:
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == 0x9F36:
            return _sw(SW_OK, tlv.encode(tag, self.atc.to_bytes(2, "big")))
        if tag == 0x9F13:
            return _sw(SW_OK, tlv.encode(tag, self.last_online_atc.to_bytes(2, "big")))
        if tag == 0x9F17:
            return _sw(SW_OK, tlv.encode(tag, bytes((self.pin_tries,))))
        return _sw(SW_NO_DATA)

    def _generate_ac(self, cmd: CommandApdu) -> bytes:
        if cmd.p2 != 0 or cmd.p1 & 0x3F:
            return _sw(SW_BAD_P1P2)
        if len(cmd.data) != CDOL1_LEN:
            return _sw(SW_WRONG_LENGTH)
        if self._session.last_ac is not None:
            return _sw(SW_CONDITIONS)  # a second GENERATE AC (CDOL2) is not simulated
        if not self.blocked and not self._session.gpo_done:
            return _sw(SW_CONDITIONS)
        if self.atc >= 0xFFFF:
            return _sw(SW_CONDITIONS)  # ATC exhausted: the application is dead (EMV)
        self.atc += 1
        requested = cmd.p1 & 0xC0
        cid = CID_ARQC if requested in (0x40, 0x80) and not self.blocked else CID_AAC
        iad = self.iad(cid)
        sk = session_key(self._udk_ac, self.atc)
        # Without GPO (blocked application) the terminal never saw an AIP: 0000 stands in.
        aip = AIP if self._session.gpo_done else NO_AIP
        ac = application_cryptogram(sk, bytes(cmd.data), aip, self.atc, cvr_from_iad(iad))
        self._session.last_ac = ac
        self._session.last_atc = self.atc
        body = tlv.encode_many(
            [
                (0x9F27, bytes((cid,))),
                (0x9F36, self.atc.to_bytes(2, "big")),
                (0x9F26, ac),
                (0x9F10, iad),
            ]
        )
        return _sw(SW_OK, tlv.encode(0x77, body))

    def _script_command(self, cmd: CommandApdu) -> bytes:
        if self._session.last_ac is None or self._session.last_atc is None:
            return _sw(SW_CONDITIONS)  # scripts are bound to this session's cryptogram
        if len(cmd.data) != 4:
            return _sw(SW_WRONG_LENGTH)
        # 84 1E takes P2 (00 temporary / 01 permanent, §2); the others are 00 00.
        if (cmd.ins == 0x1E and cmd.p1 != 0) or (cmd.ins != 0x1E and (cmd.p1, cmd.p2) != (0, 0)):
            return _sw(SW_BAD_P1P2)
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)))
        sk = session_key(self._udk_mac, self._session.last_atc)
        expected = script_mac(sk, header, self._session.last_atc, self._session.last_ac)
        if not _equal(expected, bytes(cmd.data)):
            return _sw(SW_BAD_MAC)
        if cmd.ins == 0x1E:
            self.blocked = True
        elif cmd.ins == 0x18:
            self.blocked = False
        elif cmd.ins == 0x16:
            self.card_blocked = True
        else:
            self.pin_tries = self.pin_max_tries
        return _sw(SW_OK)

    # ---- persistence ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, object]:
        return {
            "pan": self.pan,
            "psn": self.psn,
            "expiry": self.expiry.isoformat(),
            "effective": None if self.effective is None else self.effective.isoformat(),
            "holder_name": self.holder_name,
            "holder_id": self.holder_id,
            "holder_id_type": self.holder_id_type,
            "aid": self.aid.hex().upper(),
            "label": self.label,
            "issuer_master_key": self.issuer_master_key.hex().upper(),
            "mac_master_key": self.mac_master_key.hex().upper(),
            "atc": self.atc,
            "last_online_atc": self.last_online_atc,
            "pin_tries": self.pin_tries,
            "pin_max_tries": self.pin_max_tries,
            "blocked": self.blocked,
            "card_blocked": self.card_blocked,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PbocApplet:
        """Rebuild from ``to_state`` output; malformed state raises ``SimStateError``."""
        try:
            eff = state.get("effective")
            return cls(
                pan=str(state["pan"]),
                psn=int(state["psn"]),
                expiry=date.fromisoformat(state["expiry"]),
                effective=None if eff is None else date.fromisoformat(eff),
                holder_name=str(state["holder_name"]),
                holder_id=str(state["holder_id"]),
                holder_id_type=int(state.get("holder_id_type", 0)),
                aid=bytes.fromhex(state["aid"]),
                label=str(state.get("label", "")),
                issuer_master_key=bytes.fromhex(state["issuer_master_key"]),
                mac_master_key=bytes.fromhex(state["mac_master_key"]),
                atc=int(state["atc"]),
                last_online_atc=int(state.get("last_online_atc", 0)),
                pin_tries=int(state["pin_tries"]),
                pin_max_tries=int(state["pin_max_tries"]),
                blocked=bool(state["blocked"]),
                card_blocked=bool(state.get("card_blocked", False)),
            )
        except ConfigError as e:
            raise SimStateError(f"PBOC applet state: {e.message}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise SimStateError(f"PBOC applet state is malformed ({type(e).__name__})") from None


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# ---- PSE / PPSE directory ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    aid: bytes
    label: str
    priority: int = 1


class PseApplet:
    """``1PAY.SYS.DDF01`` (PSE: FCI with SFI 1, directory records) and ``2PAY.SYS.DDF01``
    (PPSE: directory in FCI ``BF0C``) answering for the given applications (a ``SimApplet``)."""

    def __init__(self, entries: list[DirectoryEntry] | tuple[DirectoryEntry, ...]) -> None:
        self.entries = tuple(entries)
        for e in self.entries:
            if not 5 <= len(e.aid) <= 16 or not 0 <= e.priority <= 15:
                raise ConfigError("directory entry: AID 5..16 bytes, priority 0..15")
        self.aids: tuple[bytes, ...] = (PSE_NAME, PPSE_NAME)
        self._selected = PSE_NAME

    @classmethod
    def for_applets(cls, applets: list[PbocApplet] | tuple[PbocApplet, ...]) -> PseApplet:
        return cls([DirectoryEntry(a.aid, a.label, i + 1) for i, a in enumerate(applets)])

    def _entry_template(self, e: DirectoryEntry) -> bytes:
        items = [(0x4F, e.aid), (0x50, e.label.encode("ascii", errors="replace")[:16])]
        if e.priority:
            items.append((0x87, bytes((e.priority,))))
        return tlv.encode(0x61, tlv.encode_many(items))

    def select(self, aid: bytes) -> bytes:
        name = PPSE_NAME if PPSE_NAME.startswith(bytes(aid)) else PSE_NAME
        self._selected = name
        if name == PPSE_NAME:
            directory = b"".join(self._entry_template(e) for e in self.entries)
            prop = tlv.encode(0xBF0C, directory)
        else:
            prop = tlv.encode(0x88, bytes((SFI,))) + tlv.encode(0x5F2D, b"zh")
        return _sw(SW_OK, tlv.encode(0x6F, tlv.encode(0x84, name) + tlv.encode(0xA5, prop)))

    def reset(self) -> None:
        self._selected = PSE_NAME

    def process(self, apdu: bytes) -> bytes:
        try:
            cmd = CommandApdu.from_bytes(apdu)
        except CardProtocolError:
            return _sw(SW_WRONG_LENGTH)
        if cmd.cla != 0x00:
            return _sw(SW_CLA)
        if cmd.ins != 0xB2:
            return _sw(SW_INS)
        if self._selected != PSE_NAME:
            return _sw(SW_CONDITIONS)  # the PPSE has no records
        if cmd.p2 != (SFI << 3) | 0x04:
            return _sw(SW_NOT_FOUND if cmd.p2 & 0x07 == 0x04 else SW_BAD_P1P2)
        if cmd.p1 != 1 or not self.entries:
            return _sw(SW_NO_RECORD)
        record = tlv.encode(0x70, b"".join(self._entry_template(e) for e in self.entries))
        ne = cmd.ne
        if ne is not None and ne != 256 and ne != len(record):
            return _sw(0x6C00 | (len(record) & 0xFF))
        return _sw(SW_OK, record)

    def to_state(self) -> dict[str, object]:
        return {
            "entries": [
                {"aid": e.aid.hex().upper(), "label": e.label, "priority": e.priority}
                for e in self.entries
            ]
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PseApplet:
        try:
            return cls(
                [
                    DirectoryEntry(
                        bytes.fromhex(e["aid"]), str(e["label"]), int(e.get("priority", 1))
                    )
                    for e in state["entries"]
                ]
            )
        except ConfigError as e:
            raise SimStateError(f"PSE applet state: {e.message}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise SimStateError(f"PSE applet state is malformed ({type(e).__name__})") from None
