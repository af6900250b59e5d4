"""Virtual PSAM: the device side of the PSAM contract (docs/CARD-PROTOCOL.md §2). Sans-IO.

Implements the PBOC PSAM command subset the agent uses (ssc-card-protocol.md §3), answering raw
bytes like a T=0 card (responses with data answer ``61 xx``; the host must GET RESPONSE):

========================  =====================================================================
``00 A4 04 00 Lc AID``    select the application DF (AID = ``profile.psam_aid``; FCI via 61xx,
                          none with P2 ``0C``); ``00 A4 00 00 02 3F00`` selects the MF (9000).
``00 B0 <80|SFI> off Le`` read binary by SFI in the *current* DF: MF holds EF15 (public info,
                          14 bytes), EF16 (terminal number, 6 bytes BCD), EF17 (key info, 25
                          bytes); the application DF holds EF19 (TSN, 4 bytes).
``80 1A P1 P2 Lc f…``     delivery key: P1 = usage (bits 8–6 = levels), P2 = index, Lc = 8 ×
                          levels. The key is looked up in ``profile.keys`` by (usage, index) and
                          diversified from ``profile.test_master_keys`` for *both* DES and SM4.
``80 FA P1 P2 Lc data``   P1 ``05`` MAC single, ``07`` first / ``03`` next / ``01`` last of a
                          chained MAC, ``00`` encrypt (``02`` encrypt, more blocks follow).
``00 C0 00 00 Le``        GET RESPONSE.
========================  =====================================================================

**Algorithm rule** (not settled by the public record, so fixed here and in the report to the
lead): a delivery key loads both the DES and the SM4 derivation of the purpose's master key;
``80 FA`` picks one by **P2 = the card algorithm indicator** (SSSE FCI ``9F0C``): ``00`` or ``01``
→ 3DES (8-byte blocks, the contract's ``80 FA 05 00``), ``03`` → SM4 (16-byte blocks). The
data of a MAC is ``IV ‖ data ‖ padding`` (one IV block first, the host pads, the PSAM does not);
the MAC is ISO 9797-1 algorithm 3 (DES) or CBC-MAC (SM4) over the data with that IV.

**MAC length**: card keys answer ``61 04`` (leftmost 4 bytes, the contract); the key of purpose
``seal`` answers ``61 08`` (leftmost 8 bytes, the contract's "full 8 bytes" record seal).

Chunks carry at most ``0x30`` bytes (the contract's chunk size; longer → ``6700``). A chained
MAC is discarded by any command other than its continuation; ``03``/``01`` without a chain
answer ``6985``. Each MAC computed increments the 4-byte TSN in EF19 (wraps at 2³²).

Errors: ``6985`` no key delivered / no chain / application not selected, ``6A88`` no such key
(or no master key for that algorithm), ``6700`` wrong length, ``6A86`` bad P1/P2, ``6A82`` file
or application not found, ``6B00`` offset beyond the file, ``6Cxx`` wrong Le, ``6D00`` unknown
INS, ``6E00`` wrong CLA. ``process`` never raises: garbage in, a status word out.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.card.apdu import CommandApdu
from agent.errors import ConfigError, ProtocolError
from agent.profile import CardProfile
from agent.psam.crypto import Algorithm, diversify, ecb_encrypt, retail_mac, sm4_cbc_mac

DEFAULT_TERMINAL_NUMBER = bytes.fromhex("440300907950")
DEFAULT_SERIAL = bytes.fromhex("44030000000000000001")
ATR = bytes.fromhex("3B6A0000") + b"PSAM-SSC01"  # T=0, TB1/TC1 = 00, 10 historical bytes
MF_FID = bytes.fromhex("3F00")
CHUNK_MAX = 0x30
MAC_LEN_CARD = 4
MAC_LEN_SEAL = 8

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_NO_CURRENT_EF = 0x6986
SW_CONDITIONS = 0x6985
SW_NOT_FOUND = 0x6A82
SW_BAD_P1P2 = 0x6A86
SW_KEY_NOT_FOUND = 0x6A88
SW_OFFSET = 0x6B00
SW_INS = 0x6D00
SW_CLA = 0x6E00

# INS -> the only CLA it is served with
_INS_CLA = {0xA4: 0x00, 0xB0: 0x00, 0xC0: 0x00, 0x1A: 0x80, 0xFA: 0x80}


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


def _is_bcd(raw: bytes) -> bool:
    return all((b >> 4) <= 9 and (b & 0x0F) <= 9 for b in raw)


@dataclass(slots=True)
class _Session:
    """The delivered key: both derivations, and the MAC length of its purpose."""

    purpose: str
    keys: dict[Algorithm, bytes]

    @property
    def mac_len(self) -> int:
        return MAC_LEN_SEAL if self.purpose == "seal" else MAC_LEN_CARD


@dataclass(slots=True)
class _Chain:
    """A chained MAC in progress (80 FA 07 … 03 … 01)."""

    algorithm: Algorithm
    data: bytes


class VirtualPsam:
    """A PSAM holding the profile's test master keys (simulators only).

    ``terminal_number`` is EF16 (6 bytes BCD); ``serial`` the 10-byte PSAM serial in EF15;
    ``tsn`` the starting value of the EF19 transaction sequence number.
    """

    def __init__(
        self,
        profile: CardProfile,
        *,
        terminal_number: bytes = DEFAULT_TERMINAL_NUMBER,
        serial: bytes = DEFAULT_SERIAL,
        tsn: int = 0,
    ) -> None:
        if len(terminal_number) != 6 or not _is_bcd(terminal_number):
            raise ConfigError("virtual PSAM terminal number must be 6 bytes BCD")
        if len(serial) != 10:
            raise ConfigError("virtual PSAM serial must be 10 bytes")
        if isinstance(tsn, bool) or not isinstance(tsn, int) or not 0 <= tsn < 2**32:
            raise ConfigError("virtual PSAM TSN must be an integer 0..2^32-1")
        self.profile = profile
        self.terminal_number = bytes(terminal_number)
        self.serial = bytes(serial)
        self.tsn = tsn
        self._app_selected = False
        self._session: _Session | None = None
        self._chain: _Chain | None = None
        self._pending: bytes | None = None

    # ----------------------------------------------------------------------------- SimDevice
    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        self._reset_session()
        return ATR

    def power_off(self) -> None:
        self._reset_session()

    def process(self, apdu: bytes) -> bytes:
        """Answer one raw command APDU; never raises (garbage → a status word)."""
        try:
            return self._process(bytes(apdu))
        except ProtocolError:
            # Lengths that do not add up (CommandApdu.from_bytes) are a wrong-length command.
            self._pending = None
            self._chain = None
            return _sw(SW_WRONG_LENGTH)

    # ----------------------------------------------------------------------------- state
    def to_state(self) -> dict[str, object]:
        """Persistent state (EF16, EF15 serial, EF19 TSN) as JSON-able data."""
        return {
            "terminal_number": self.terminal_number.hex().upper(),
            "serial": self.serial.hex().upper(),
            "tsn": self.tsn,
        }

    @classmethod
    def from_state(cls, profile: CardProfile, state: dict[str, object]) -> VirtualPsam:
        """Rebuild a PSAM from ``to_state`` output; a malformed state raises ``ConfigError``."""
        tn, serial, tsn = state.get("terminal_number"), state.get("serial"), state.get("tsn")
        if not isinstance(tn, str) or not isinstance(serial, str) or not isinstance(tsn, int):
            raise ConfigError("virtual PSAM state needs terminal_number, serial (hex) and tsn")
        try:
            tn_raw, serial_raw = bytes.fromhex(tn), bytes.fromhex(serial)
        except ValueError:
            raise ConfigError("virtual PSAM state: terminal_number/serial not hex") from None
        return cls(profile, terminal_number=tn_raw, serial=serial_raw, tsn=tsn)

    # ----------------------------------------------------------------------------- files
    @property
    def ef15(self) -> bytes:
        """Public info: serial(10) ‖ version ‖ key-card type ‖ command-set version ‖ RFU."""
        return self.serial + bytes((0x01, 0x00, 0x01, 0x00))

    @property
    def ef17(self) -> bytes:
        """Key info: key index ‖ issuer id(8) ‖ user id(8) ‖ start(4) ‖ expiry(4), BCD dates."""
        return (
            b"\x01"
            + bytes.fromhex("4403000000000000")
            + self.serial[-8:]
            + bytes.fromhex("20240101")
            + bytes.fromhex("20341231")
        )

    def _file(self, sfi: int) -> bytes | None:
        if self._app_selected:
            return self.tsn.to_bytes(4, "big") if sfi == 0x19 else None
        return {0x15: self.ef15, 0x16: self.terminal_number, 0x17: self.ef17}.get(sfi)

    # ----------------------------------------------------------------------------- dispatch
    def _reset_session(self) -> None:
        self._app_selected = False
        self._session = None
        self._chain = None
        self._pending = None

    def _respond(self, data: bytes) -> bytes:
        """T=0: data waits for GET RESPONSE behind ``61 xx``."""
        self._pending = data
        return _sw(0x6100 | len(data))

    def _process(self, raw: bytes) -> bytes:
        if len(raw) < 4:
            self._pending = None
            self._chain = None
            return _sw(SW_WRONG_LENGTH)
        cla, ins = raw[0], raw[1]
        if cla not in (0x00, 0x80):
            return self._fail(SW_CLA)
        if ins not in _INS_CLA:
            return self._fail(SW_INS)
        if _INS_CLA[ins] != cla:
            return self._fail(SW_CLA)
        cmd = CommandApdu.from_bytes(raw)
        if cmd.is_extended:
            return self._fail(SW_WRONG_LENGTH)
        if ins == 0xC0:
            return self._get_response(cmd)
        self._pending = None
        if not (ins == 0xFA and cmd.p1 in (0x03, 0x01)):
            self._chain = None  # a chain survives only its own continuation
        if ins == 0xA4:
            return self._select(cmd)
        if ins == 0xB0:
            return self._read_binary(cmd)
        if ins == 0x1A:
            return self._delivery_key(cmd)
        return self._cipher(cmd)

    def _fail(self, sw: int) -> bytes:
        self._pending = None
        self._chain = None
        return _sw(sw)

    # ----------------------------------------------------------------------------- commands
    def _get_response(self, cmd: CommandApdu) -> bytes:
        self._chain = None
        pending, self._pending = self._pending, None
        if cmd.p1 or cmd.p2:
            return _sw(SW_BAD_P1P2)
        if cmd.data or cmd.ne is None:
            return _sw(SW_WRONG_LENGTH)
        if pending is None:
            return _sw(SW_CONDITIONS)
        if cmd.ne > len(pending) and cmd.ne != 256:
            self._pending = pending
            return _sw(0x6C00 | len(pending))
        out, rest = pending[: cmd.ne], pending[cmd.ne :]
        if rest:
            self._pending = rest
            return _sw(0x6100 | len(rest), out)
        return _sw(SW_OK, out)

    def _select(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 == 0x04 and cmd.p2 in (0x00, 0x0C):
            if not cmd.data or cmd.data != self.profile.psam_aid:
                return _sw(SW_NOT_FOUND)
            self._app_selected, self._session = True, None
            if cmd.p2 == 0x0C:
                return _sw(SW_OK)
            aid = self.profile.psam_aid
            return self._respond(bytes((0x6F, len(aid) + 2, 0x84, len(aid))) + aid)
        if cmd.p1 == 0x00 and cmd.p2 in (0x00, 0x0C):
            if cmd.data != MF_FID:
                return _sw(SW_NOT_FOUND if len(cmd.data) == 2 else SW_WRONG_LENGTH)
            self._app_selected, self._session = False, None
            return _sw(SW_OK)
        return _sw(SW_BAD_P1P2)

    def _read_binary(self, cmd: CommandApdu) -> bytes:
        if cmd.data or cmd.ne is None:
            return _sw(SW_WRONG_LENGTH)
        if not cmd.p1 & 0x80:
            return _sw(SW_NO_CURRENT_EF)  # only read by SFI: there is no current EF
        if cmd.p1 & 0x60:
            return _sw(SW_BAD_P1P2)
        content = self._file(cmd.p1 & 0x1F)
        if content is None:
            return _sw(SW_NOT_FOUND)
        if cmd.p2 >= len(content):
            return _sw(SW_OFFSET)
        avail = content[cmd.p2 :]
        if cmd.ne == 256:
            return _sw(SW_OK, avail)
        if cmd.ne > len(avail):
            return _sw(0x6C00 | len(avail))
        return _sw(SW_OK, avail[: cmd.ne])

    def _delivery_key(self, cmd: CommandApdu) -> bytes:
        if not self._app_selected:
            return _sw(SW_CONDITIONS)
        self._session = None
        levels = cmd.p1 >> 5
        if levels > 3:
            return _sw(SW_BAD_P1P2)
        if cmd.ne is not None or len(cmd.data) != 8 * levels:
            return _sw(SW_WRONG_LENGTH)
        purpose = next(
            (p for p, k in self.profile.keys.items() if (k.usage, k.index) == (cmd.p1, cmd.p2)),
            None,
        )
        if purpose is None:
            return _sw(SW_KEY_NOT_FOUND)
        factors = [cmd.data[i : i + 8] for i in range(0, len(cmd.data), 8)]
        keys: dict[Algorithm, bytes] = {}
        for alg in Algorithm:
            master = self.profile.test_master_keys.get(alg.value, {}).get(purpose)
            if master is not None:
                keys[alg] = diversify(alg, master, factors)
        if not keys:
            return _sw(SW_KEY_NOT_FOUND)
        self._session = _Session(purpose, keys)
        return _sw(SW_OK)

    def _cipher(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 not in (0x00, 0x01, 0x02, 0x03, 0x05, 0x07):
            self._chain = None
            return _sw(SW_BAD_P1P2)
        if cmd.p2 not in (0x00, 0x01, 0x03):
            self._chain = None
            return _sw(SW_BAD_P1P2)
        algorithm = Algorithm.SM4 if cmd.p2 == 0x03 else Algorithm.DES
        session = self._session
        if session is None:
            self._chain = None
            return _sw(SW_CONDITIONS)
        key = session.keys.get(algorithm)
        if key is None:
            self._chain = None
            return _sw(SW_KEY_NOT_FOUND)
        bs = algorithm.block_size
        data = cmd.data
        if not data or len(data) % bs or len(data) > CHUNK_MAX:
            self._chain = None
            return _sw(SW_WRONG_LENGTH)
        if cmd.p1 in (0x00, 0x02):
            return self._respond(ecb_encrypt(algorithm, key, data))
        if cmd.p1 == 0x05:
            if len(data) < 2 * bs:
                return _sw(SW_WRONG_LENGTH)
            return self._mac(session, algorithm, key, data)
        if cmd.p1 == 0x07:
            self._chain = _Chain(algorithm, data)
            return _sw(SW_OK)
        chain = self._chain
        if chain is None:
            return _sw(SW_CONDITIONS)
        if chain.algorithm is not algorithm:
            self._chain = None
            return _sw(SW_BAD_P1P2)
        if cmd.p1 == 0x03:
            chain.data += data
            return _sw(SW_OK)
        self._chain = None
        return self._mac(session, algorithm, key, chain.data + data)

    def _mac(self, session: _Session, algorithm: Algorithm, key: bytes, data: bytes) -> bytes:
        bs = algorithm.block_size
        iv, body = data[:bs], data[bs:]
        if algorithm is Algorithm.DES:
            full = retail_mac(key, body, iv, pad=False)
        else:
            full = sm4_cbc_mac(key, body, iv, pad=False)
        self.tsn = (self.tsn + 1) % 2**32
        return self._respond(full[: session.mac_len])
