"""The social-security application (SSSE) seen from the terminal: read, lifecycle, PIN.

Implements docs/CARD-PROTOCOL.md §1 (the contract the virtual card serves) over any
``CardChannel``; the public record behind it is ssc-card-protocol.md §1–2 and §3.1. Keys never
appear here: every MAC and cryptogram comes from the ``SecurityModule`` (PSAM or HSM), given the
key purpose and the card's diversification factors from the profile (DESIGN §3).

Status words are data until a method decides: a refusal becomes the typed error of
``agent.card.sw.error_for`` (``PinError``/``PinBlockedError`` for 63Cx/6983 on PIN commands,
``ApplicationLockedError``, ``SecurityStatusError`` for 6988 and friends, ...), except where the
same SW means something else here (63Cx on EXTERNAL AUTHENTICATE counts key tries, not PIN
tries: ``SecurityStatusError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from agent.card import sw as swmod
from agent.card.t0 import transceive
from agent.errors import (
    ApplicationLockedError,
    CardProtocolError,
    LocalProtocolError,
    SecurityModuleError,
    SecurityStatusError,
)
from agent.profile import card_factors
from agent.psam.crypto import Algorithm, pad_m2
from agent.ssc import commands as c
from agent.ssc import files

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
    from agent.profile import CardProfile
    from agent.psam.module import SecurityModule
    from agent.ssc.files import CardIdentity, Holder

SW_OK = 0x9000
SW_TEMP_LOCKED = 0x6283
SW_PERM_LOCKED = 0x9303
SW_CARD_BLOCKED = 0x6A81
SW_CONDITIONS = 0x6985
SW_NO_RECORD = 0x6A83


class CardState(Enum):
    """Lifecycle of the SSSE application (CARD-PROTOCOL §1 "Lifecycle")."""

    ACTIVE = "active"
    NOT_ACTIVATED = "not_activated"
    TEMP_LOCKED = "temp_locked"
    PERM_LOCKED = "perm_locked"
    CARD_BLOCKED = "card_blocked"

    @property
    def locked(self) -> bool:
        return self in (CardState.TEMP_LOCKED, CardState.PERM_LOCKED, CardState.CARD_BLOCKED)


#: SELECT status words that announce a lifecycle state (§2 SELECT; §6 "treated as locked").
_SELECT_LOCK = {
    SW_TEMP_LOCKED: CardState.TEMP_LOCKED,
    SW_PERM_LOCKED: CardState.PERM_LOCKED,
    SW_CARD_BLOCKED: CardState.CARD_BLOCKED,
}


@dataclass(frozen=True, slots=True)
class Selection:
    """Result of SELECT SSSE: the status word, the algorithm (None when the card sent no FCI,
    e.g. 9303 / 6A81) and the lifecycle hint the status word gives (None = not locked)."""

    sw: int
    algorithm: Algorithm | None
    lock: CardState | None
    fci: bytes


@dataclass(frozen=True, slots=True)
class CardStatus:
    """Lifecycle state and the PIN try counter (None when a locked card will not tell)."""

    state: CardState
    pin_tries_left: int | None

    @property
    def pin_blocked(self) -> bool:
        return self.pin_tries_left == 0


def algorithm_from_fci(fci: bytes) -> Algorithm:
    """9F0C of the FCI → ``Algorithm`` (CARD-PROTOCOL §1; unknown indicator: protocol error)."""
    indicator = files.decode_fci_algorithm(fci)
    try:
        return Algorithm.from_indicator(indicator)
    except LocalProtocolError:
        raise CardProtocolError(f"card announces unsupported algorithm {indicator:02X}") from None


class SscApplication:
    """The SSSE application of one card session.

    ``card_id_code`` and ``algorithm`` may be given when the caller already knows them (e.g. from
    the journal) for a card that will not tell: a temporarily locked card serves only SELECT,
    GET CHALLENGE and the lifecycle commands (CARD-PROTOCOL §1), so its identification code —
    the diversification input of the unblock MAC — cannot be read from it.
    """

    def __init__(
        self,
        channel: CardChannel,
        profile: CardProfile,
        sam: SecurityModule | None = None,
        *,
        card_id_code: bytes | None = None,
        algorithm: Algorithm | None = None,
    ) -> None:
        if card_id_code is not None and len(card_id_code) != 16:
            raise LocalProtocolError("card identification code must be 16 bytes")
        self._channel = channel
        self._profile = profile
        self._sam = sam
        self._card_id_code = card_id_code
        self._algorithm_hint = algorithm
        self._selection: Selection | None = None
        self._identity: CardIdentity | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def _send(self, cmd: CommandApdu) -> ResponseApdu:
        return await transceive(self._channel, cmd)

    def _raise(self, resp: ResponseApdu, command: str) -> None:
        """Raise the typed error for a refusal; 6985 on a locked app says *locked*."""
        sel = self._selection
        if resp.sw == SW_CONDITIONS and sel is not None and sel.lock is not None:
            raise ApplicationLockedError(
                sel.sw,
                f"application is {sel.lock.value} ({swmod.describe(resp.sw)})",
                command=command,
            )
        raise swmod.error_for(resp.sw, command)

    async def _request(self, cmd: CommandApdu, command: str) -> ResponseApdu:
        resp = await self._send(cmd)
        if not resp.ok:
            self._raise(resp, command)
        return resp

    async def _ensure_selected(self) -> Selection:
        return self._selection if self._selection is not None else await self.select()

    async def _algorithm(self) -> Algorithm:
        sel = await self._ensure_selected()
        alg = sel.algorithm or self._algorithm_hint
        if alg is None:
            raise ApplicationLockedError(
                sel.sw, "the card did not announce its algorithm", command="select SSSE"
            )
        return alg

    def _require_sam(self, what: str) -> SecurityModule:
        if self._sam is None:
            raise SecurityModuleError(f"{what} needs a security module (PSAM or HSM)")
        return self._sam

    async def _factors(self, purpose: str) -> list[bytes]:
        """The card's diversification factors for ``purpose`` (profile ``keys.<purpose>``)."""
        key = self._profile.key(purpose)
        if self._card_id_code is None:
            await self.read_identity()
        assert self._card_id_code is not None  # read_identity sets it
        return card_factors(key.factors, self._card_id_code)

    async def _challenge(self, length: int) -> bytes:
        resp = await self._request(c.get_challenge(length), "get challenge")
        if len(resp.data) != length:
            raise CardProtocolError(f"challenge of {len(resp.data)} bytes, asked for {length}")
        return resp.data

    async def _secure(self, cmd: c.SmCommand) -> ResponseApdu:
        """GET CHALLENGE, MAC from the security module, send (CARD-PROTOCOL §1 "Secure
        messaging MAC"; §3.1 steps 2–5). The challenge is fetched last: any command in between
        would consume it."""
        sam = self._require_sam(cmd.name)
        alg = await self._algorithm()
        factors = await self._factors(cmd.purpose)
        challenge = await self._challenge(4 if alg is Algorithm.DES else 8)
        mac = await sam.card_mac(cmd.purpose, alg, factors, challenge, cmd.mac_input)
        return await self._request(cmd.with_mac(mac), cmd.name)

    async def _select_ef(self, fid: int) -> None:
        await self._request(c.select_ef(fid), f"select EF{fid:04X}")

    async def _read(self, spec: c.RecordSpec, *, optional: bool = False) -> bytes | None:
        """READ RECORD ``spec``; the raw TLV (None for an absent optional record, 6A83)."""
        resp = await self._send(spec.read())
        if resp.ok:
            return resp.data
        if optional and resp.sw == SW_NO_RECORD:
            return None
        self._raise(resp, f"read record {spec.tag:02X}")
        return None  # pragma: no cover - _raise always raises

    # -- selection and reading --------------------------------------------------------------
    @property
    def selection(self) -> Selection | None:
        return self._selection

    @property
    def identity(self) -> CardIdentity | None:
        return self._identity

    async def select(self) -> Selection:
        """SELECT SSSE; the lifecycle hint is data, not an error (6283 temporarily locked with
        FCI, 9303 permanently locked, 6A81 card blocked). Not an SSC (6A82) raises."""
        resp = await self._send(c.select_ssse())
        lock = _SELECT_LOCK.get(resp.sw)
        if not resp.ok and lock is None:
            self._selection = None
            raise swmod.error_for(resp.sw, "select SSSE")
        algorithm = algorithm_from_fci(resp.data) if (resp.ok or resp.data) else None
        if algorithm is not None:
            # Remember it: after a permanent lock the card stops announcing it (9303, no FCI),
            # and the card block that may follow still needs it for its MAC.
            self._algorithm_hint = algorithm
        self._selection = Selection(resp.sw, algorithm, lock, resp.data)
        return self._selection

    async def read_identity(self) -> CardIdentity:
        """EF05 records 01, 02, 03, 05, 06, 07 (§1.3) → ``CardIdentity``."""
        await self._ensure_selected()
        await self._select_ef(c.EF05)
        records: dict[int, bytes] = {}
        for spec in c.EF05_RECORDS:
            raw = await self._read(spec)
            assert raw is not None  # not optional: _read raised otherwise
            records[spec.tag] = raw
        identity = files.decode_identity(records)
        if self._card_id_code is not None and self._card_id_code != identity.card_id_code:
            raise CardProtocolError("this is not the card the session was opened for")
        self._identity = identity
        self._card_id_code = identity.card_id_code
        return identity

    async def external_authenticate(self) -> None:
        """External authentication with the ``rkssse`` key (CARD-PROTOCOL §1; §1.2, §5):
        GET CHALLENGE 8, cryptogram = E_K(challenge ‖ 00…) in one block from the security
        module, ``00 82 00 <key id>``."""
        sam = self._require_sam("reading holder data of this card")
        alg = await self._algorithm()
        key = self._profile.key("rkssse")
        factors = await self._factors("rkssse")
        challenge = await self._challenge(8)
        block = challenge + bytes(alg.block_size - len(challenge))
        cryptogram = await sam.encrypt("rkssse", alg, factors, block)
        if len(cryptogram) != alg.block_size:
            raise SecurityModuleError("the security module returned a cryptogram of wrong size")
        resp = await self._send(c.external_authenticate(key.ext_auth_key_id, cryptogram))
        if resp.ok:
            return
        tries = swmod.tries_left(resp.sw)
        if tries is not None:
            # 63Cx / 6983 here count *key* tries: a wrong key, not a wrong PIN.
            raise SecurityStatusError(
                resp.sw,
                f"external authentication refused, {tries} key tries left",
                command="external authenticate",
            )
        self._raise(resp, "external authenticate")

    async def read_holder(self) -> Holder:
        """EF06 records 08, 09, 4E, 0A–0D (§1.3) → ``Holder``; external authentication first
        when the profile says this spec version needs it (3.0 cards, §1.2)."""
        identity = self._identity or await self.read_identity()
        await self._select_ef(c.EF06)
        if self._profile.needs_external_auth(identity.spec_version):
            await self.external_authenticate()
        records: dict[int, bytes] = {}
        for spec in c.EF06_RECORDS:
            raw = await self._read(spec, optional=spec is c.NAME_EXT)
            if raw is not None:
                records[spec.tag] = raw
        return files.decode_holder(records)

    # -- state ------------------------------------------------------------------------------
    async def pin_tries_left(self) -> int:
        """VERIFY without data: 63Cx → x, 6983 → 0 (no try consumed; CARD-PROTOCOL §1).
        9000 means the PIN is verified in this session, so the counter is full."""
        await self._ensure_selected()
        resp = await self._send(c.pin_tries())
        tries = swmod.tries_left(resp.sw)
        if tries is not None:
            return tries
        if resp.ok:
            return self._profile.pin_max_tries
        self._raise(resp, "PIN tries")
        return 0  # pragma: no cover - _raise always raises

    async def activation_state(self) -> CardState:
        """EF05 status record (profile ``activation``): active or not activated; a card
        without the record is active (CARD-PROTOCOL §1 "Lifecycle")."""
        act = self._profile.activation
        if act.step == "none":
            return CardState.ACTIVE
        await self._ensure_selected()
        await self._select_ef(c.EF05)
        spec = c.RecordSpec(act.record_tag, "status", len(act.active_value), c.Enc.B, c.SFI_EF05)
        raw = await self._read(spec, optional=True)
        if raw is None:
            return CardState.ACTIVE
        value = files.decode_record(spec, raw)
        if value == act.active_value:
            return CardState.ACTIVE
        if value == act.inactive_value:
            return CardState.NOT_ACTIVATED
        raise CardProtocolError("activation status record holds an unknown value")

    async def state(self) -> CardStatus:
        """Lifecycle state and PIN tries, from a fresh SELECT (so it is true *now*)."""
        sel = await self.select()
        if sel.lock is not None:
            return CardStatus(sel.lock, None)
        lifecycle = await self.activation_state()
        return CardStatus(lifecycle, await self.pin_tries_left())

    # -- lifecycle (MAC'd with stk) ---------------------------------------------------------
    async def block(self, *, permanent: bool = False) -> None:
        """APPLICATION BLOCK ``84 1E 00 <P2>``; P2 from the profile (§2; CARD-PROTOCOL §1)."""
        p = self._profile
        await self._secure(c.app_block(p.lock_p2_permanent if permanent else p.lock_p2_temporary))
        self._selection = None  # the application is invalidated: re-select before anything else

    async def unblock(self) -> None:
        """APPLICATION UNBLOCK ``84 18`` (9303 if permanently locked)."""
        await self._secure(c.app_unblock())
        self._selection = None

    async def card_block(self) -> None:
        """CARD BLOCK ``84 16``: irreversible; every application answers 6A81 afterwards."""
        await self._secure(c.card_block())
        self._selection = None

    async def activate(self) -> bool:
        """Social-security activation, card side (profile ``activation``): UPDATE RECORD of the
        EF05 status record with ``04 DC`` (stk MAC). False when the profile has no card step."""
        act = self._profile.activation
        if act.step == "none":
            return False
        await self._secure(c.update_record(act.record_tag, c.SFI_EF05, act.active_value))
        return True

    # -- PIN --------------------------------------------------------------------------------
    async def verify_pin(self, pin: str) -> None:
        """VERIFY ``00 20``: PinError (63Cx) / PinBlockedError (6983) on refusal."""
        cmd = c.verify_pin(pin)  # validate the PIN before touching the card
        await self._ensure_selected()
        await self._request(cmd, "verify PIN")

    async def change_pin(self, old: str, new: str) -> None:
        """CHANGE PIN ``80 5E 01 00 old ‖ FF ‖ new``; 63Cx / 6983 refer to the old PIN."""
        cmd = c.change_pin(old, new)
        await self._ensure_selected()
        await self._request(cmd, "change PIN")

    async def reset_pin(self, new: str) -> None:
        """PIN RELOAD ``80 5E 00 00 newPIN ‖ MAC4`` with ``rpk``: sets the PIN, restores the
        counter, unblocks the PIN (§2; CARD-PROTOCOL §1)."""
        await self._secure(c.reset_pin(new))

    async def unblock_pin(self, new: str) -> None:
        """PIN UNBLOCK ``84 24 00 00 E_Kpuk(pad_m2(len ‖ PIN)) ‖ MAC4`` (§2; CARD-PROTOCOL §1)."""
        block = c.pin_block_plain(new)
        sam = self._require_sam("PIN unblock")
        alg = await self._algorithm()
        plain = pad_m2(block, alg.block_size)
        enciphered = await sam.encrypt("puk", alg, await self._factors("puk"), plain)
        if len(enciphered) != len(plain):
            raise SecurityModuleError("the security module returned a PIN block of wrong size")
        await self._secure(c.unblock_pin(enciphered))
