"""Virtual social security card: the device side of docs/CARD-PROTOCOL.md §1. Sans-IO.

One chip answering raw APDU bytes exactly as the contract tabulates (ssc-card-protocol.md §1–2):

File system (§1.1, §1.2)::

    MF 3F00
    └── SSSE  DF name 7378312E73682EC9E7BBE1B1A3D5CF  (FCI 6F{84 name, A5{9F0C 03 86 01 alg}})
        ├── EF05 SFI 05  issuer data, records = tags 01…07 (+ 0F activation status), free read
        ├── EF06 SFI 06  holder data, tags 08 09 4E 0A 0B 0C 0D; external auth (RKSSSE) first
        │                when ``profile.needs_external_auth(spec_version)`` (3.x cards)
        ├── EF07 SFI 07  fingerprint (transparent), external auth first
        ├── EF08 SFI 08  photo (transparent), external auth first
        └── DF01…DF04    sub-applications D15600000500…03, each EF05 (+ EF06), a few records;
                         DF04/EF06 (medical) needs the PIN verified

Every record is ``tag len value`` with record number = tag (§1.3). Other applications (the
PBOC/UnionPay app, PSE, PPSE) are ``SimApplet`` objects selected by DF name; every command but
SELECT goes to the selected applet.

**Lifecycle** (CARD-PROTOCOL §1): ``not_activated`` / ``active`` are the value of the EF05
activation record (``profile.activation``; a card without it is active); on top sit the
application locks (84 1E: ``temp_locked``, ``perm_locked``) and the card block (84 16:
``card_blocked``, after which *every* command, including a SELECT of any applet, answers 6A81).
A temporary lock of a not-yet-activated card is allowed (protective); 84 18 returns it to
``not_activated``. Served while locked:

* ``temp_locked``: SELECT (SSSE answers FCI ‖ 6283), GET CHALLENGE, GET RESPONSE, READ RECORD
  of EF05 (issuer data: the unblock MAC needs the card identification code), 84 1E, 84 18,
  84 16; everything else 6985;
* ``perm_locked``: SELECT of the SSSE (9303, no FCI), GET CHALLENGE, GET RESPONSE, 84 16; 84 18
  answers 9303, everything else 6985 (SELECT of a file inside the SSSE included). GET CHALLENGE
  must stay served: 84 16 cannot be MAC'd without a challenge.

**Secure messaging** (CARD-PROTOCOL §1): MAC over ``CLA INS P1 P2 Lc ‖ data-without-MAC``,
padding method 2, IV = the challenge of the immediately preceding GET CHALLENGE left-aligned in
a zero block, retail MAC (DES) or SM4 CBC-MAC, leftmost 4 bytes; card key =
``diversify(alg, master[purpose], card_factors(keyref.factors, card_id_code))``. No challenge:
6984; wrong MAC: 6988 and nothing changes. A challenge is single use: any command other than a
GET RESPONSE fetching pending data consumes it. PIN reset (80 5E 00 00) is MAC'd with ``rpk``
the same way; without a preceding challenge its IV is zero (the PBOC RELOAD PIN rule, §2).

**T=0**: with ``t0=True`` (default) a successful response with data answers ``61 xx`` and the data
is fetched with ``00 C0 00 00 xx``; a warning with data (SELECT of a temporarily locked SSSE:
FCI ‖ 6283) is answered directly. With ``t0=False`` data comes back at once.

``process`` never raises: bytes that do not decode answer 6700, an internal fault 6F00.
Session state (selection, challenge, external-auth status, verified PIN, pending response) is
cleared by ``power_on``/``power_off`` (a PIN never stays verified across a reset, jcardsim#67),
and when the selection leaves the SSSE (MF or another application).
"""

from __future__ import annotations

import hmac
import importlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from agent.card.apdu import CommandApdu
from agent.errors import AgentError, CardProtocolError, ConfigError, SimStateError
from agent.profile import CardProfile, card_factors
from agent.psam import crypto
from agent.psam.crypto import Algorithm
from agent.sim.base import SimApplet

#: SSSE DDF name: ASCII "sx1.sh." + GBK "社会保障" (§1.1).
SSSE_AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
#: RID of the card identification code and the sub-applications (§1.1, §1.3).
RID = bytes.fromhex("D156000005")
#: Sub-application DFs under the SSSE: FID → DF name (§1.1).
SUB_APPLICATIONS: dict[int, bytes] = {
    0xDF01: RID + b"\x00",  # public (公共应用)
    0xDF02: RID + b"\x01",  # employment (就业)
    0xDF03: RID + b"\x02",  # social insurance 1
    0xDF04: RID + b"\x03",  # social insurance 2 / medical
}
MF_FID = 0x3F00
EF05, EF06, EF07, EF08 = 0xEF05, 0xEF06, 0xEF07, 0xEF08
#: Historical-byte prefix of the ATR (§1.3 sample ``0081544C978684``), then area[0:2] ‖ serial[0:4].
ATR_PREFIX = bytes.fromhex("3B6D0000")  # TS direct; T0: TB1, TC1 present, 13 historical bytes
ATR_HIST_PREFIX = bytes.fromhex("0081544C978684")
EXT_AUTH_MAX_TRIES = 5
MAC_LEN = 4
PIN_MIN_DIGITS, PIN_MAX_DIGITS = 4, 12
STATE_FORMAT = 1
#: Modules whose applet classes ``from_state`` may import (never arbitrary code from a file).
APPLET_MODULE_PREFIXES: tuple[str, ...] = ("agent.sim.",)

SW_OK = 0x9000
SW_WARN_INVALIDATED = 0x6283
SW_WRONG_LENGTH = 0x6700
SW_INCOMPATIBLE = 0x6981
SW_SECURITY = 0x6982
SW_BLOCKED = 0x6983
SW_NO_CHALLENGE = 0x6984
SW_CONDITIONS = 0x6985
SW_NO_CURRENT_EF = 0x6986
SW_BAD_MAC = 0x6988
SW_BAD_DATA = 0x6A80
SW_CARD_BLOCKED = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_NO_RECORD = 0x6A83
SW_BAD_P1P2 = 0x6A86
SW_NO_KEY = 0x6A88
SW_OFFSET = 0x6B00
SW_INS = 0x6D00
SW_CLA = 0x6E00
SW_UNKNOWN = 0x6F00
SW_PERM_LOCKED = 0x9303

#: INS → the only CLA it is served with (CARD-PROTOCOL §1 table).
INS_CLA: dict[int, int] = {
    0xA4: 0x00,  # SELECT
    0xB2: 0x00,  # READ RECORD
    0xB0: 0x00,  # READ BINARY
    0x84: 0x00,  # GET CHALLENGE
    0x82: 0x00,  # EXTERNAL AUTHENTICATE
    0x20: 0x00,  # VERIFY
    0xC0: 0x00,  # GET RESPONSE
    0x5E: 0x80,  # CHANGE / RESET PIN
    0x24: 0x84,  # PIN UNBLOCK
    0x1E: 0x84,  # APPLICATION BLOCK
    0x18: 0x84,  # APPLICATION UNBLOCK
    0x16: 0x84,  # CARD BLOCK
    0xDC: 0x04,  # UPDATE RECORD
}
_KNOWN_CLA = frozenset(INS_CLA.values())

_Response = tuple[bytes, int]


class Lifecycle(StrEnum):
    """Lifecycle of the SSSE (CARD-PROTOCOL §1 "Lifecycle")."""

    NOT_ACTIVATED = "not_activated"
    ACTIVE = "active"
    TEMP_LOCKED = "temp_locked"
    PERM_LOCKED = "perm_locked"
    CARD_BLOCKED = "card_blocked"


class Access(Enum):
    """Read access condition of an EF (§1.2 "Access")."""

    FREE = "free"
    HOLDER = "holder"  # external auth when the spec version needs it (EF06, §1.2 3.0 cards)
    KEY = "key"  # external auth always (EF07, EF08)
    PIN = "pin"  # PIN verified (DF04 EF06)


@dataclass(slots=True)
class RecordFile:
    """A record EF whose record number is the record's tag (§1.3)."""

    fid: int
    sfi: int
    access: Access
    records: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class BinaryFile:
    """A transparent EF read with READ BINARY (§2)."""

    fid: int
    sfi: int
    access: Access
    data: bytes = b""


ElementaryFile = RecordFile | BinaryFile


@dataclass(slots=True)
class DedicatedFile:
    """A DF: its EFs by FID and child DFs by FID."""

    fid: int | None
    name: bytes
    files: dict[int, ElementaryFile] = field(default_factory=dict)
    children: dict[int, DedicatedFile] = field(default_factory=dict)

    def by_sfi(self, sfi: int) -> ElementaryFile | None:
        return next((f for f in self.files.values() if f.sfi == sfi), None)


# ---------------------------------------------------------------------------------------------
# Personalisation data and encoders (§1.3 "Padding": an 00-padded, cn F-padded)
# ---------------------------------------------------------------------------------------------
def encode_an(text: str, length: int) -> bytes:
    """``an``: ASCII, left-aligned, right-padded with 00."""
    raw = text.encode("ascii")
    if len(raw) > length:
        raise ConfigError(f"value {text!r} longer than {length} bytes")
    return raw + bytes(length - len(raw))


def encode_cn(digits: str, length: int) -> bytes:
    """``cn``: BCD digits, left-aligned, right-padded with F."""
    if not digits.isdigit() or len(digits) > 2 * length:
        raise ConfigError(f"value {digits!r} is not at most {2 * length} digits")
    return bytes.fromhex(digits + "F" * (2 * length - len(digits)))


def encode_name(name: str) -> tuple[bytes, bytes]:
    """Name → (tag 09, 30 bytes; tag 4E extension, 20 bytes), GBK, 00-padded (§1.3)."""
    try:
        raw = name.encode("gbk")
    except UnicodeEncodeError:
        raise ConfigError("holder name is not GBK-encodable") from None
    if not raw or len(raw) > 50:
        raise ConfigError("holder name must be 1 to 50 GBK bytes")
    head, tail = raw[:30], raw[30:]
    return head + bytes(30 - len(head)), tail + bytes(20 - len(tail))


def pin_to_bcd(pin: str) -> bytes:
    """PIN digits → BCD, F-padded to whole bytes (§2 VERIFY PIN)."""
    return bytes.fromhex(pin + ("F" if len(pin) % 2 else ""))


def pin_from_bcd(raw: bytes) -> str | None:
    """F-padded BCD → digits, or None when it is not a well-formed PIN block."""
    digits = raw.hex().upper().rstrip("F")
    if not digits.isdigit() or len(raw) != (len(digits) + 1) // 2:
        return None
    return digits


def _valid_pin(pin: str | None) -> bool:
    return pin is not None and PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS and pin.isdigit()


@dataclass(frozen=True, slots=True)
class Issuance:
    """EF05 issuer data of one card (§1.3)."""

    area_code: str  # 6 digits, 发卡地区行政区划代码
    chip_serial: bytes  # 8 bytes
    card_number: str  # 9 characters
    issue_date: str  # YYYYMMDD
    expiry_date: str  # YYYYMMDD
    spec_version: str = "3.00"
    card_type: str = "1"
    init_institution: bytes = b""  # 12 bytes raw; empty → area code ‖ "000000" (ASCII)

    @property
    def card_id_code(self) -> bytes:
        """卡识别码: area (3 bytes BCD) ‖ D156000005 ‖ chip serial (8) (§1.3)."""
        return bytes.fromhex(self.area_code) + RID + self.chip_serial

    def records(self) -> dict[int, bytes]:
        if len(self.area_code) != 6 or not self.area_code.isdigit():
            raise ConfigError("area code must be 6 digits")
        if len(self.chip_serial) != 8:
            raise ConfigError("chip serial must be 8 bytes")
        inst = self.init_institution or (self.area_code + "000000").encode("ascii")
        if len(inst) != 12:
            raise ConfigError("initialisation institution must be 12 bytes")
        return {
            0x01: self.card_id_code,
            0x02: encode_an(self.card_type, 1),
            0x03: encode_an(self.spec_version, 4),
            0x04: bytes(inst),
            0x05: encode_cn(self.issue_date, 4),
            0x06: encode_cn(self.expiry_date, 4),
            0x07: encode_an(self.card_number, 9),
        }


@dataclass(frozen=True, slots=True)
class Holder:
    """EF06 holder data (§1.3). ``ssn`` is the 18-character citizen ID number."""

    ssn: str
    name: str
    gender: str  # "1" male, "2" female
    nation: int  # ethnicity code 1..99 (GB 3304)
    birthplace: str  # 6-digit area code
    birth_date: str  # YYYYMMDD

    def records(self) -> dict[int, bytes]:
        if self.gender not in ("1", "2"):
            raise ConfigError("gender must be '1' or '2'")
        if not 1 <= self.nation <= 99:
            raise ConfigError("nation code must be 1..99")
        name, name_ext = encode_name(self.name)
        return {
            0x08: encode_an(self.ssn, 18),
            0x09: name,
            0x4E: name_ext,
            0x0A: encode_an(self.gender, 1),
            0x0B: encode_cn(f"{self.nation:02d}", 1),
            0x0C: encode_cn(self.birthplace, 3),
            0x0D: encode_cn(self.birth_date, 4),
        }


def _build_layout() -> DedicatedFile:
    """The empty SSSE tree with its access rules; contents are filled by issue/from_state."""
    ssse = DedicatedFile(None, SSSE_AID)
    ssse.files = {
        EF05: RecordFile(EF05, 0x05, Access.FREE),
        EF06: RecordFile(EF06, 0x06, Access.HOLDER),
        EF07: BinaryFile(EF07, 0x07, Access.KEY),
        EF08: BinaryFile(EF08, 0x08, Access.KEY),
    }
    for fid, name in SUB_APPLICATIONS.items():
        df = DedicatedFile(fid, name, {EF05: RecordFile(EF05, 0x05, Access.FREE)})
        if fid == 0xDF04:
            df.files[EF06] = RecordFile(EF06, 0x06, Access.PIN)
        else:
            df.files[EF06] = RecordFile(EF06, 0x06, Access.FREE)
        ssse.children[fid] = df
    return ssse


def _sub_records(issuance: Issuance, holder: Holder) -> dict[str, dict[int, bytes]]:
    """A few plausible records per sub-application, so that SELECT and READ RECORD work."""
    return {
        "DF01/EF05": {0x10: encode_cn(holder.birthplace, 3), 0x11: encode_an("1", 1)},
        "DF01/EF06": {0x12: encode_cn(issuance.area_code, 3)},
        "DF02/EF05": {0x20: encode_an("1", 1), 0x21: encode_cn(issuance.issue_date, 4)},
        "DF02/EF06": {0x22: encode_an("", 20)},
        "DF03/EF05": {0x30: b"\x01", 0x31: encode_cn(issuance.issue_date, 4)},
        "DF03/EF06": {0x32: encode_cn(issuance.area_code, 3)},
        "DF04/EF05": {0x40: b"\x01", 0x41: encode_an(holder.ssn, 18)},
        "DF04/EF06": {0x42: (0).to_bytes(4, "big"), 0x43: encode_cn(issuance.issue_date, 4)},
    }


def _binary_stub(kind: bytes, seed: bytes, size: int) -> bytes:
    """Deterministic filler for the fingerprint / photo EFs (not a real image)."""
    out = bytearray(kind)
    i = 0
    while len(out) < size:
        out += seed[i % len(seed) :] + bytes((i & 0xFF,))
        i += 1
    return bytes(out[:size])


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------
class VirtualSscCard:
    """A third-generation social security card with an SSSE and hosted applets (SimDevice).

    Build with ``VirtualSscCard.issue`` (or ``agent.sim.factory.CardFactory``); persist with
    ``to_state``/``from_state``. Direct inspection for tests and the HIL suite: ``state``,
    ``pin_tries_left``, ``card_id_code``, ``algorithm``, ``record()``, ...
    """

    def __init__(
        self,
        profile: CardProfile,
        *,
        algorithm: Algorithm,
        contents: Mapping[str, Mapping[int, bytes] | bytes],
        pin: str,
        pin_tries_left: int | None = None,
        ext_auth_tries_left: int = EXT_AUTH_MAX_TRIES,
        temp_locked: bool = False,
        perm_locked: bool = False,
        card_blocked: bool = False,
        applets: Iterable[SimApplet] = (),
        t0: bool = True,
        challenge_source: Callable[[int], bytes] | None = None,
    ) -> None:
        """``contents`` maps a file path (``"EF05"``, ``"EF07"``, ``"DF04/EF06"``) to its
        records (tag → value) or, for a transparent EF, its bytes. Raises ``ConfigError``."""
        if not _valid_pin(pin):
            raise ConfigError("card PIN must be 4 to 12 digits")
        self.profile = profile
        self.algorithm = algorithm
        self.t0 = t0
        self._ssse = _build_layout()
        for path, content in contents.items():
            self._fill(path, content)
        ef05 = self._file("EF05")
        assert isinstance(ef05, RecordFile)  # fixed by _build_layout
        if len(ef05.records.get(0x01, b"")) != 16:
            raise ConfigError("EF05 record 01 (card identification code) must be 16 bytes")
        self._pin = pin
        max_tries = profile.pin_max_tries
        self._pin_tries = max_tries if pin_tries_left is None else pin_tries_left
        if not 0 <= self._pin_tries <= max_tries:
            raise ConfigError(f"PIN tries left must be 0..{max_tries}")
        if not 0 <= ext_auth_tries_left <= EXT_AUTH_MAX_TRIES:
            raise ConfigError(f"external-auth tries left must be 0..{EXT_AUTH_MAX_TRIES}")
        self._ext_tries = ext_auth_tries_left
        self._temp_locked = temp_locked
        self._perm_locked = perm_locked
        self._card_blocked = card_blocked
        self.applets: tuple[SimApplet, ...] = tuple(applets)
        self._random = challenge_source or secrets.token_bytes
        self._keys: dict[str, bytes] = {}
        # session state
        self._df: DedicatedFile | None = None  # None: MF is the current DF
        self._ef: ElementaryFile | None = None
        self._applet: SimApplet | None = None
        self._challenge: bytes | None = None
        self._pending: bytes | None = None
        self._ext_auth = False
        self._pin_verified = False

    # ----------------------------------------------------------------------------- issue
    @classmethod
    def issue(
        cls,
        profile: CardProfile,
        issuance: Issuance,
        holder: Holder,
        *,
        algorithm: Algorithm = Algorithm.DES,
        state: str = Lifecycle.ACTIVE,
        pin: str | None = None,
        applets: Iterable[SimApplet] = (),
        t0: bool = True,
        challenge_source: Callable[[int], bytes] | None = None,
    ) -> VirtualSscCard:
        """Personalise a new card; ``state`` is ``active`` or ``not_activated``."""
        ef05 = issuance.records()
        act = profile.activation
        if act.step == "update_record":
            if state not in (Lifecycle.ACTIVE, Lifecycle.NOT_ACTIVATED):
                raise ConfigError("a new card is issued active or not_activated")
            value = act.active_value if state == Lifecycle.ACTIVE else act.inactive_value
            ef05[act.record_tag] = value
        elif state != Lifecycle.ACTIVE:
            raise ConfigError(f"profile {profile.name!r} has no card-side activation step")
        serial = issuance.chip_serial
        contents: dict[str, Mapping[int, bytes] | bytes] = {
            "EF05": ef05,
            "EF06": holder.records(),
            "EF07": _binary_stub(b"FPR\x00", serial, 256),
            "EF08": _binary_stub(b"\xff\xd8\xff\xe0", serial, 600),
        }
        contents.update(_sub_records(issuance, holder))
        return cls(
            profile,
            algorithm=algorithm,
            contents=contents,
            pin=pin if pin is not None else profile.initial_pin,
            applets=applets,
            t0=t0,
            challenge_source=challenge_source,
        )

    # ----------------------------------------------------------------------------- inspection
    @property
    def lifecycle(self) -> Lifecycle:
        if self._card_blocked:
            return Lifecycle.CARD_BLOCKED
        if self._perm_locked:
            return Lifecycle.PERM_LOCKED
        if self._temp_locked:
            return Lifecycle.TEMP_LOCKED
        return Lifecycle.ACTIVE if self.activated else Lifecycle.NOT_ACTIVATED

    @property
    def state(self) -> str:
        """Lifecycle name: not_activated, active, temp_locked, perm_locked, card_blocked."""
        return self.lifecycle.value

    @property
    def activated(self) -> bool:
        """The EF05 activation record does not hold the inactive value (or is absent)."""
        act = self.profile.activation
        value = self.record("EF05", act.record_tag)
        return value is None or act.step != "update_record" or value != act.inactive_value

    @property
    def pin_tries_left(self) -> int:
        return self._pin_tries

    @property
    def pin_blocked(self) -> bool:
        return self._pin_tries == 0

    @property
    def pin(self) -> str:
        """The PIN digits (simulator inspection only)."""
        return self._pin

    @property
    def pin_verified(self) -> bool:
        return self._pin_verified

    @property
    def ext_authenticated(self) -> bool:
        return self._ext_auth

    @property
    def ext_auth_tries_left(self) -> int:
        return self._ext_tries

    @property
    def card_id_code(self) -> bytes:
        return self.record("EF05", 0x01) or bytes(16)

    @property
    def area_code(self) -> str:
        return self.card_id_code[:3].hex()

    @property
    def chip_serial(self) -> bytes:
        return self.card_id_code[8:16]

    @property
    def spec_version(self) -> str:
        return (self.record("EF05", 0x03) or b"").rstrip(b"\x00").decode("ascii", "replace")

    @property
    def card_number(self) -> str:
        return (self.record("EF05", 0x07) or b"").rstrip(b"\x00").decode("ascii", "replace")

    @property
    def ssn(self) -> str:
        return (self.record("EF06", 0x08) or b"").rstrip(b"\x00").decode("ascii", "replace")

    @property
    def name(self) -> str:
        raw = (self.record("EF06", 0x09) or b"") + (self.record("EF06", 0x4E) or b"")
        return raw.rstrip(b"\x00").decode("gbk", "replace")

    @property
    def selected(self) -> str:
        """Current selection for diagnostics: ``MF``, ``SSSE``, ``DF01``…, or ``applet:<AID>``."""
        if self._applet is not None:
            return f"applet:{self._applet.aids[0].hex().upper() if self._applet.aids else ''}"
        if self._df is None:
            return "MF"
        return "SSSE" if self._df.fid is None else f"{self._df.fid:04X}"

    def record(self, path: str, tag: int) -> bytes | None:
        """Value of record ``tag`` of the record EF at ``path`` (``"EF05"``, ``"DF01/EF05"``)."""
        f = self._file(path)
        return f.records.get(tag) if isinstance(f, RecordFile) else None

    def card_key(self, purpose: str) -> bytes:
        """This card's diversified key for ``purpose`` (CARD-PROTOCOL §1 "Card keys")."""
        key = self._keys.get(purpose)
        if key is None:
            ref = self.profile.key(purpose)
            master = self.profile.master_key(self.algorithm.value, purpose)
            factors = card_factors(ref.factors, self.card_id_code)
            key = crypto.diversify(self.algorithm, master, factors)
            self._keys[purpose] = key
        return key

    # ----------------------------------------------------------------------------- SimDevice
    @property
    def atr(self) -> bytes:
        """ISO 7816-3 ATR, T=0 (no TD1, hence no TCK); history embeds area and serial (§1.3)."""
        cic = self.card_id_code
        return ATR_PREFIX + ATR_HIST_PREFIX + cic[:2] + cic[8:12]

    @property
    def atr_historical_bytes(self) -> bytes:
        return self.atr[len(ATR_PREFIX) :]

    def power_on(self) -> bytes:
        self._reset_session()
        return self.atr

    def power_off(self) -> None:
        self._reset_session()

    def process(self, apdu: bytes) -> bytes:
        """Answer one raw command APDU with ``data ‖ SW``; never raises."""
        try:
            return self._process(bytes(apdu))
        except Exception:  # noqa: BLE001
            # Documented process boundary of a simulated chip and the applets it hosts: any
            # fault must surface as a status word (6F00), as on a real card, never as a raise.
            self._pending = None
            return SW_UNKNOWN.to_bytes(2, "big")

    # ----------------------------------------------------------------------------- persistence
    def to_state(self) -> dict[str, object]:
        """Persistent state (files, counters, locks, applets) as JSON-able data."""
        files: dict[str, object] = {}
        for path, f in self._paths():
            if isinstance(f, RecordFile):
                files[path] = {f"{t:02X}": v.hex().upper() for t, v in sorted(f.records.items())}
            else:
                files[path] = f.data.hex().upper()
        applets = []
        for a in self.applets:
            cls = type(a)
            applets.append({"type": f"{cls.__module__}:{cls.__qualname__}", "state": a.to_state()})
        return {
            "format": STATE_FORMAT,
            "profile": self.profile.name,
            "algorithm": self.algorithm.value,
            "t0": self.t0,
            "pin": self._pin,
            "pin_tries_left": self._pin_tries,
            "ext_auth_tries_left": self._ext_tries,
            "temp_locked": self._temp_locked,
            "perm_locked": self._perm_locked,
            "card_blocked": self._card_blocked,
            "files": files,
            "applets": applets,
        }

    @classmethod
    def from_state(cls, profile: CardProfile, state: Mapping[str, Any]) -> VirtualSscCard:
        """Rebuild a card from ``to_state`` output; malformed state raises ``SimStateError``.

        Applets are rebuilt with ``<class>.from_state(state)`` of a class in ``agent.sim``.
        """
        try:
            return cls(profile, **_state_kwargs(state))
        except SimStateError:
            raise
        except ConfigError as e:
            raise SimStateError(f"card state: {e.message}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise SimStateError(f"card state is malformed ({type(e).__name__}: {e})") from None

    # ----------------------------------------------------------------------------- files
    def _paths(self) -> list[tuple[str, ElementaryFile]]:
        out: list[tuple[str, ElementaryFile]] = [
            (f"EF{fid & 0xFF:02X}", f) for fid, f in sorted(self._ssse.files.items())
        ]
        for dfid, df in sorted(self._ssse.children.items()):
            out += [(f"{dfid:04X}/EF{fid & 0xFF:02X}", f) for fid, f in sorted(df.files.items())]
        return out

    def _file(self, path: str) -> ElementaryFile | None:
        parts = path.upper().split("/")
        df = self._ssse
        if len(parts) == 2:
            child = df.children.get(_fid(parts[0]))
            if child is None:
                return None
            df = child
        elif len(parts) != 1:
            return None
        return df.files.get(_fid(parts[-1]))

    def _fill(self, path: str, content: Mapping[int, bytes] | bytes) -> None:
        f = self._file(path)
        if f is None:
            raise ConfigError(f"no file {path!r} on the virtual card")
        if isinstance(f, RecordFile):
            if not isinstance(content, Mapping):
                raise ConfigError(f"{path} is a record file")
            for tag, value in content.items():
                if not 1 <= tag <= 0xFE or len(value) > 0xFD:
                    raise ConfigError(f"{path} record {tag:#x}: tag or length out of range")
                f.records[tag] = bytes(value)
        else:
            if not isinstance(content, bytes | bytearray):
                raise ConfigError(f"{path} is a transparent file")
            f.data = bytes(content)

    # ----------------------------------------------------------------------------- session
    def _reset_session(self) -> None:
        self._df = None
        self._ef = None
        self._applet = None
        self._challenge = None
        self._pending = None
        self._ext_auth = False
        self._pin_verified = False
        for a in self.applets:
            a.reset()

    def _leave_ssse(self) -> None:
        """Security status is the SSSE's: lost when the selection leaves it."""
        self._ext_auth = False
        self._pin_verified = False

    def _emit(self, data: bytes, sw: int) -> bytes:
        if self.t0 and data and sw == SW_OK:
            self._pending = data
            return bytes((0x61, len(data) & 0xFF))
        return data + sw.to_bytes(2, "big")

    # ----------------------------------------------------------------------------- dispatch
    def _process(self, raw: bytes) -> bytes:
        pending, self._pending = self._pending, None
        challenge, self._challenge = self._challenge, None
        if self._card_blocked:
            return SW_CARD_BLOCKED.to_bytes(2, "big")
        if len(raw) < 4:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        try:
            cmd = CommandApdu.from_bytes(raw)
        except CardProtocolError:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        if cmd.cla == 0x00 and cmd.ins == 0xC0 and (pending is not None or self._applet is None):
            if pending is not None:
                self._challenge = challenge  # fetching GET CHALLENGE's data does not consume it
            return self._get_response(cmd, pending)
        if cmd.is_extended:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        if cmd.cla == 0x00 and cmd.ins == 0xA4:
            data, sw = self._select(cmd)
            if sw == SW_WARN_INVALIDATED:
                return data + sw.to_bytes(2, "big")  # a warning carries its FCI directly
            return self._emit(data, sw)
        if self._applet is not None:
            return self._to_applet(cmd, raw)
        return self._emit(*self._dispatch(cmd, challenge))

    def _to_applet(self, cmd: CommandApdu, raw: bytes) -> bytes:
        assert self._applet is not None  # checked by the caller
        resp = bytes(self._applet.process(raw))
        if len(resp) < 2:
            return SW_UNKNOWN.to_bytes(2, "big")
        data, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
        if cmd.cla == 0x84 and cmd.ins == 0x16 and sw == SW_OK:
            self._block_card()  # an issuer-script card block blocks the whole chip (§4)
        return self._emit(data, sw)

    def _get_response(self, cmd: CommandApdu, pending: bytes | None) -> bytes:
        if cmd.p1 or cmd.p2:
            return SW_BAD_P1P2.to_bytes(2, "big")
        if cmd.data:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        if pending is None:
            return SW_CONDITIONS.to_bytes(2, "big")
        ne = 256 if cmd.ne is None else cmd.ne
        if ne != 256 and ne > len(pending):
            self._pending = pending
            return bytes((0x6C, len(pending) & 0xFF))
        out, rest = pending[:ne], pending[ne:]
        if rest:
            self._pending = rest
            return out + bytes((0x61, len(rest) & 0xFF))
        return out + SW_OK.to_bytes(2, "big")

    def _dispatch(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        if cmd.cla not in _KNOWN_CLA:
            return b"", SW_CLA
        expected_cla = INS_CLA.get(cmd.ins)
        if expected_cla is None:
            return b"", SW_INS
        if expected_cla != cmd.cla:
            return b"", SW_CLA
        ins = cmd.ins
        if ins == 0x84:
            return self._get_challenge(cmd)
        if ins == 0x16:
            return self._card_block(cmd, challenge)
        gate = self._gate(ins, cmd)
        if gate is not None:
            return b"", gate
        if ins == 0xB2:
            return self._read_record(cmd)
        if ins == 0xB0:
            return self._read_binary(cmd)
        if ins == 0xDC:
            return self._update_record(cmd, challenge)
        if self._df is None:
            return b"", SW_CONDITIONS  # SSSE not selected
        if ins == 0x82:
            return self._external_auth(cmd, challenge)
        if ins == 0x20:
            return self._verify(cmd)
        if ins == 0x5E:
            return self._change_or_reset_pin(cmd, challenge)
        if ins == 0x24:
            return self._unblock_pin(cmd, challenge)
        if ins == 0x1E:
            return self._app_block(cmd, challenge)
        return self._app_unblock(cmd, challenge)  # 0x18

    def _gate(self, ins: int, cmd: CommandApdu) -> int | None:
        """Lifecycle rule for SSSE commands (CARD-PROTOCOL §1 "Lifecycle")."""
        lc = self.lifecycle
        if lc is Lifecycle.TEMP_LOCKED:
            if ins in (0x1E, 0x18):
                return None
            # EF05 (issuer data, free-read) stays readable: a terminal needs the card
            # identification code to diversify the key of the unblock MAC.
            if ins == 0xB2 and self._targets_issuer_data(cmd):
                return None
            return SW_CONDITIONS
        if lc is Lifecycle.PERM_LOCKED:
            return SW_PERM_LOCKED if ins == 0x18 else SW_CONDITIONS
        return None

    def _targets_issuer_data(self, cmd: CommandApdu) -> bool:
        if self._df is not self._ssse:
            return False
        sfi = cmd.p2 >> 3
        if sfi:
            return sfi == 0x05
        return self._ef is not None and self._ef.fid == 0xEF05

    # ----------------------------------------------------------------------------- SELECT
    def _select(self, cmd: CommandApdu) -> _Response:
        if cmd.p2 == 0x02:
            return b"", SW_NOT_FOUND  # no next occurrence of any name
        if cmd.p2 not in (0x00, 0x04, 0x0C):
            return b"", SW_BAD_P1P2
        want_fci = cmd.p2 != 0x0C
        p1, data = cmd.p1, cmd.data
        if p1 == 0x04:
            if not 1 <= len(data) <= 16:
                return b"", SW_WRONG_LENGTH
            return self._select_name(data, want_fci)
        if p1 == 0x03:
            if data:
                return b"", SW_WRONG_LENGTH
            if self._applet is not None or self._df is None:
                return b"", SW_NOT_FOUND
            if self._df is self._ssse:
                return self._select_mf()
            return self._select_ssse(want_fci)
        if p1 not in (0x00, 0x01, 0x02):
            return b"", SW_BAD_P1P2
        if not data and p1 == 0x00:
            return self._select_mf()
        if len(data) != 2:
            return b"", SW_WRONG_LENGTH
        fid = int.from_bytes(data, "big")
        if p1 == 0x00 and fid == MF_FID:
            return self._select_mf()
        df = None if self._applet is not None else self._df
        if df is None:
            return b"", SW_NOT_FOUND  # the MF holds no EF and no DF with a FID
        if p1 in (0x00, 0x02):
            ef = df.files.get(fid)
            if ef is not None:
                if self.lifecycle is Lifecycle.PERM_LOCKED:
                    return b"", SW_CONDITIONS
                self._ef = ef
                return b"", SW_OK
        if p1 in (0x00, 0x01):
            child = df.children.get(fid) or (self._ssse.children.get(fid) if p1 == 0x00 else None)
            if child is not None:
                return self._select_df(child, want_fci)
        return b"", SW_NOT_FOUND

    def _select_mf(self) -> _Response:
        self._applet = None
        self._df, self._ef = None, None
        self._leave_ssse()
        return b"", SW_OK

    def _select_name(self, name: bytes, want_fci: bool) -> _Response:
        if name == SSSE_AID:
            return self._select_ssse(want_fci)
        for child in self._ssse.children.values():
            if child.name == name:
                return self._select_df(child, want_fci)
        for applet in self.applets:
            if any(aid == name or (len(name) >= 5 and aid.startswith(name)) for aid in applet.aids):
                return self._select_applet(applet, name)
        return b"", SW_NOT_FOUND

    def _select_ssse(self, want_fci: bool) -> _Response:
        if self._applet is not None:
            self._leave_ssse()
        self._applet = None
        self._df, self._ef = self._ssse, None
        fci = self._fci(SSSE_AID) if want_fci else b""
        lc = self.lifecycle
        if lc is Lifecycle.PERM_LOCKED:
            return b"", SW_PERM_LOCKED
        if lc is Lifecycle.TEMP_LOCKED:
            return fci, SW_WARN_INVALIDATED
        return fci, SW_OK

    def _select_df(self, df: DedicatedFile, want_fci: bool) -> _Response:
        if self.lifecycle is Lifecycle.PERM_LOCKED:
            return b"", SW_CONDITIONS
        if self._applet is not None:
            self._leave_ssse()
        self._applet = None
        self._df, self._ef = df, None
        return (self._fci(df.name) if want_fci else b""), SW_OK

    def _select_applet(self, applet: SimApplet, name: bytes) -> _Response:
        resp = bytes(applet.select(name))
        if len(resp) < 2:
            return b"", SW_UNKNOWN
        data, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
        if sw >> 8 in (0x90, 0x61, 0x62, 0x63):
            self._leave_ssse()
            self._applet = applet
            self._df, self._ef = None, None
        return data, sw

    def _fci(self, name: bytes) -> bytes:
        """``6F{84 name, A5{9F0C 03 86 01 alg}}`` (CARD-PROTOCOL §1, §1.1)."""
        prop = b"\x9f\x0c\x03\x86\x01" + bytes((self.algorithm.indicator,))
        inner = bytes((0x84, len(name))) + name + bytes((0xA5, len(prop))) + prop
        return bytes((0x6F, len(inner))) + inner

    # ----------------------------------------------------------------------------- reading
    def _resolve_ef(self, sfi: int) -> tuple[ElementaryFile | None, int]:
        if sfi == 0:
            return (self._ef, SW_OK) if self._ef is not None else (None, SW_NO_CURRENT_EF)
        ef = self._df.by_sfi(sfi) if self._df is not None else None
        return (ef, SW_OK) if ef is not None else (None, SW_NOT_FOUND)

    def _access(self, ef: ElementaryFile) -> int | None:
        if ef.access is Access.HOLDER:
            needed = self.profile.needs_external_auth(self.spec_version)
            return SW_SECURITY if needed and not self._ext_auth else None
        if ef.access is Access.KEY:
            return None if self._ext_auth else SW_SECURITY
        if ef.access is Access.PIN:
            return None if self._pin_verified else SW_SECURITY
        return None

    def _read_record(self, cmd: CommandApdu) -> _Response:
        """``00 B2 <tag> 04|(SFI<<3)|4 Le`` → ``tag len value`` (§1.3)."""
        if cmd.data:
            return b"", SW_WRONG_LENGTH
        sfi, mode = cmd.p2 >> 3, cmd.p2 & 0x07
        if mode not in (0x04, 0x00) or sfi == 0x1F or cmd.p1 in (0x00, 0xFF):
            return b"", SW_BAD_P1P2
        ef, sw = self._resolve_ef(sfi)
        if ef is None:
            return b"", sw
        if not isinstance(ef, RecordFile):
            return b"", SW_INCOMPATIBLE
        denied = self._access(ef)
        if denied is not None:
            return b"", denied
        self._ef = ef
        value = ef.records.get(cmd.p1)
        if value is None:
            return b"", SW_NO_RECORD
        out = bytes((cmd.p1, len(value))) + value
        if cmd.ne is None or (cmd.ne != 256 and cmd.ne != len(out)):
            return b"", 0x6C00 | len(out)
        return out, SW_OK

    def _read_binary(self, cmd: CommandApdu) -> _Response:
        """``00 B0 <80|SFI> off Le`` or ``00 B0 offH offL Le`` (§2 READ BINARY)."""
        if cmd.data or cmd.ne is None:
            return b"", SW_WRONG_LENGTH
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                return b"", SW_BAD_P1P2
            ef, sw = self._resolve_ef(cmd.p1 & 0x1F)
            offset = cmd.p2
        else:
            ef, sw = self._resolve_ef(0)
            offset = (cmd.p1 << 8) | cmd.p2
        if ef is None:
            return b"", sw
        if not isinstance(ef, BinaryFile):
            return b"", SW_INCOMPATIBLE
        denied = self._access(ef)
        if denied is not None:
            return b"", denied
        self._ef = ef
        if offset >= len(ef.data):
            return b"", SW_OFFSET
        avail = ef.data[offset:]
        if cmd.ne == 256:
            return avail[:256], SW_OK
        if cmd.ne > len(avail):
            return b"", 0x6C00 | len(avail)
        return avail[: cmd.ne], SW_OK

    # ----------------------------------------------------------------------------- security
    def _get_challenge(self, cmd: CommandApdu) -> _Response:
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        if cmd.data or cmd.ne not in (4, 8, 16):
            return b"", SW_WRONG_LENGTH
        challenge = bytes(self._random(cmd.ne))
        self._challenge = challenge
        return challenge, SW_OK

    def _key_or_none(self, purpose: str) -> bytes | None:
        try:
            return self.card_key(purpose)
        except ConfigError:
            return None

    def _check_mac(self, cmd: CommandApdu, challenge: bytes | None, purpose: str) -> int | None:
        """Secure-messaging MAC check (CARD-PROTOCOL §1); None when it verifies."""
        if challenge is None:
            return SW_NO_CHALLENGE
        return self._verify_mac(cmd, challenge, purpose)

    def _verify_mac(self, cmd: CommandApdu, iv_seed: bytes, purpose: str) -> int | None:
        key = self._key_or_none(purpose)
        if key is None:
            return SW_NO_KEY
        data = cmd.data
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(data)))
        iv = crypto.card_mac_iv(self.algorithm, iv_seed)
        expected = crypto.mac(self.algorithm, key, header + data[:-MAC_LEN], iv)[:MAC_LEN]
        return None if hmac.compare_digest(expected, data[-MAC_LEN:]) else SW_BAD_MAC

    def _external_auth(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``00 82 00 <key id> <Lc> E_K(challenge ‖ 00…)`` with the card ``rkssse`` key."""
        if cmd.p1:
            return b"", SW_BAD_P1P2
        ref = self.profile.keys.get("rkssse")
        key = self._key_or_none("rkssse")
        if ref is None or key is None or cmd.p2 != ref.ext_auth_key_id:
            return b"", SW_NO_KEY
        if len(cmd.data) != self.algorithm.block_size:
            return b"", SW_WRONG_LENGTH
        if self._ext_tries == 0:
            return b"", SW_BLOCKED
        if challenge is None:
            return b"", SW_NO_CHALLENGE
        block = crypto.card_mac_iv(self.algorithm, challenge)
        expected = crypto.ecb_encrypt(self.algorithm, key, block)
        if hmac.compare_digest(expected, cmd.data):
            self._ext_tries = EXT_AUTH_MAX_TRIES
            self._ext_auth = True
            return b"", SW_OK
        self._ext_auth = False
        self._ext_tries -= 1
        return b"", SW_BLOCKED if self._ext_tries == 0 else 0x63C0 | self._ext_tries

    def _pin_fail(self) -> _Response:
        self._pin_verified = False
        self._pin_tries = max(0, self._pin_tries - 1)
        return b"", SW_BLOCKED if self._pin_tries == 0 else 0x63C0 | self._pin_tries

    def _pin_ok(self, pin: str | None) -> bool:
        return pin is not None and hmac.compare_digest(pin.encode(), self._pin.encode())

    def _verify(self, cmd: CommandApdu) -> _Response:
        """``00 20 00 00 [Lc PIN]``: no data asks the tries left (CARD-PROTOCOL §1)."""
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        if self._pin_tries == 0:
            return b"", SW_BLOCKED
        if not cmd.data:
            return b"", 0x63C0 | self._pin_tries
        if len(cmd.data) > PIN_MAX_DIGITS // 2:
            return b"", SW_WRONG_LENGTH
        if not self._pin_ok(pin_from_bcd(cmd.data)):
            return self._pin_fail()
        self._pin_tries = self.profile.pin_max_tries
        self._pin_verified = True
        return b"", SW_OK

    def _change_or_reset_pin(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        if cmd.p2 or cmd.p1 not in (0x00, 0x01):
            return b"", SW_BAD_P1P2
        if not cmd.data:
            return b"", SW_WRONG_LENGTH
        if cmd.p1 == 0x01:
            return self._change_pin(cmd.data)
        return self._reset_pin(cmd, challenge)

    def _change_pin(self, data: bytes) -> _Response:
        """``80 5E 01 00 Lc old ‖ FF ‖ new`` (plain; §2 CHANGE PIN)."""
        sep = data.find(b"\xff")
        if sep <= 0:
            return b"", SW_BAD_DATA
        new = pin_from_bcd(data[sep + 1 :])
        if not _valid_pin(new):
            return b"", SW_BAD_DATA
        assert new is not None  # _valid_pin checked it
        if self._pin_tries == 0:
            return b"", SW_BLOCKED
        if not self._pin_ok(pin_from_bcd(data[:sep])):
            return self._pin_fail()
        self._pin = new
        self._pin_tries = self.profile.pin_max_tries
        self._pin_verified = True
        return b"", SW_OK

    def _reset_pin(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``80 5E 00 00 Lc newPIN ‖ MAC4`` with ``rpk``; IV = challenge, or zero without one."""
        if len(cmd.data) < MAC_LEN + 2:
            return b"", SW_WRONG_LENGTH
        bad = self._verify_mac(cmd, challenge or b"", "rpk")
        if bad is not None:
            return b"", bad
        new = pin_from_bcd(cmd.data[:-MAC_LEN])
        if not _valid_pin(new):
            return b"", SW_BAD_DATA
        assert new is not None  # _valid_pin checked it
        self._pin, self._pin_tries, self._pin_verified = new, self.profile.pin_max_tries, False
        return b"", SW_OK

    def _unblock_pin(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``84 24 00 00 Lc E_Kpuk(pad_m2(len ‖ PIN)) ‖ MAC4`` (CARD-PROTOCOL §1)."""
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        body = cmd.data[:-MAC_LEN]
        block = self.algorithm.block_size
        if len(cmd.data) < MAC_LEN + block or len(body) % block:
            return b"", SW_WRONG_LENGTH
        bad = self._check_mac(cmd, challenge, "puk")
        if bad is not None:
            return b"", bad
        try:
            plain = crypto.unpad_m2(crypto.ecb_decrypt(self.algorithm, self.card_key("puk"), body))
        except AgentError:
            return b"", SW_BAD_DATA
        new = pin_from_bcd(plain[1:]) if plain and plain[0] == len(plain) - 1 else None
        if not _valid_pin(new):
            return b"", SW_BAD_DATA
        assert new is not None  # _valid_pin checked it
        self._pin, self._pin_tries, self._pin_verified = new, self.profile.pin_max_tries, False
        return b"", SW_OK

    # ----------------------------------------------------------------------------- lifecycle
    def _mac_only(self, cmd: CommandApdu, challenge: bytes | None) -> int | None:
        """Common checks of ``84 xx P1 P2 04 MAC4``."""
        if len(cmd.data) != MAC_LEN:
            return SW_WRONG_LENGTH
        return self._check_mac(cmd, challenge, "stk")

    def _app_block(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``84 1E 00 <P2> 04 MAC4``: P2 temporary / permanent from the profile."""
        temp, perm = self.profile.lock_p2_temporary, self.profile.lock_p2_permanent
        if cmd.p1 or cmd.p2 not in (temp, perm):
            return b"", SW_BAD_P1P2
        bad = self._mac_only(cmd, challenge)
        if bad is not None:
            return b"", bad
        if cmd.p2 == perm:
            self._perm_locked = True
        else:
            self._temp_locked = True
        return b"", SW_OK

    def _app_unblock(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``84 18 00 00 04 MAC4``: ends a temporary lock (9303 when permanent: the gate)."""
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        bad = self._mac_only(cmd, challenge)
        if bad is not None:
            return b"", bad
        self._temp_locked = False
        return b"", SW_OK

    def _card_block(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``84 16 00 00 04 MAC4``: every application answers 6A81 afterwards."""
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        bad = self._mac_only(cmd, challenge)
        if bad is not None:
            return b"", bad
        self._block_card()
        return b"", SW_OK

    def _block_card(self) -> None:
        self._card_blocked = True
        self._reset_session()

    def _update_record(self, cmd: CommandApdu, challenge: bytes | None) -> _Response:
        """``04 DC <tag> <(SFI<<3)|4> Lc TLV ‖ MAC4`` with ``stk`` (CARD-PROTOCOL §1)."""
        sfi, mode = cmd.p2 >> 3, cmd.p2 & 0x07
        if mode not in (0x04, 0x00) or sfi == 0x1F or cmd.p1 in (0x00, 0xFF):
            return b"", SW_BAD_P1P2
        if len(cmd.data) < MAC_LEN + 2:
            return b"", SW_WRONG_LENGTH
        ef, sw = self._resolve_ef(sfi)
        if ef is None:
            return b"", sw
        if not isinstance(ef, RecordFile):
            return b"", SW_INCOMPATIBLE
        old = ef.records.get(cmd.p1)
        if old is None:
            return b"", SW_NO_RECORD
        bad = self._check_mac(cmd, challenge, "stk")
        if bad is not None:
            return b"", bad
        tlv = cmd.data[:-MAC_LEN]
        if tlv[0] != cmd.p1 or tlv[1] != len(tlv) - 2:
            return b"", SW_BAD_DATA
        if len(tlv) - 2 != len(old):
            return b"", SW_WRONG_LENGTH
        ef.records[cmd.p1] = tlv[2:]
        self._ef = ef
        return b"", SW_OK


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _fid(text: str) -> int:
    """``"EF05"`` → 0xEF05, ``"DF01"`` → 0xDF01 (file ids are written in hex)."""
    try:
        return int(text, 16) if len(text) == 4 else -1
    except ValueError:
        return -1


def _state_kwargs(state: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments from ``to_state`` output (raises on anything malformed)."""
    if state.get("format") != STATE_FORMAT:
        raise SimStateError(f"unsupported card state format {state.get('format')!r}")
    files = state["files"]
    if not isinstance(files, dict):
        raise SimStateError("card state: files must be a mapping")
    contents: dict[str, Mapping[int, bytes] | bytes] = {}
    for path, content in files.items():
        if isinstance(content, dict):
            contents[path] = {int(t, 16): bytes.fromhex(v) for t, v in content.items()}
        else:
            contents[path] = bytes.fromhex(content)
    flags = {k: state[k] for k in ("t0", "temp_locked", "perm_locked", "card_blocked")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise SimStateError("card state: flags must be booleans")
    return {
        "algorithm": Algorithm(state["algorithm"]),
        "contents": contents,
        "pin": _str(state["pin"]),
        "pin_tries_left": _int(state["pin_tries_left"]),
        "ext_auth_tries_left": _int(state["ext_auth_tries_left"]),
        "applets": [_applet_from_state(a) for a in state.get("applets", [])],
        **flags,
    }


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise SimStateError("card state: expected a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimStateError("card state: expected an integer")
    return value


def _applet_from_state(entry: object) -> SimApplet:
    """Rebuild a hosted applet: ``{"type": "agent.sim.<module>:<Class>", "state": {...}}``."""
    if not isinstance(entry, dict):
        raise SimStateError("card state: applet entry must be a mapping")
    kind, state = entry.get("type"), entry.get("state")
    if not isinstance(kind, str) or ":" not in kind or not isinstance(state, dict):
        raise SimStateError("card state: applet entry needs type and state")
    module_name, _, qualname = kind.partition(":")
    if not module_name.startswith(APPLET_MODULE_PREFIXES) or "." in qualname:
        raise SimStateError(f"card state: refusing applet type {kind!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise SimStateError(f"card state: applet module {module_name} not found") from None
    cls = getattr(module, qualname, None)
    factory = getattr(cls, "from_state", None)
    if not callable(factory):
        raise SimStateError(f"card state: applet type {kind!r} cannot be restored")
    applet: SimApplet = factory(state)
    return applet
