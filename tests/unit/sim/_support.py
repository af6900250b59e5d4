"""Test support for the virtual card: a raw-bytes terminal that computes MACs itself.

The MACs and cryptograms are computed here from the profile's test master keys with
``agent.psam.crypto`` directly (not with the card's own key helper), so the tests check the
contract (CARD-PROTOCOL §1) rather than the card against itself.
"""

from __future__ import annotations

from agent.profile import card_factors, load_profile
from agent.psam import crypto
from agent.psam.crypto import Algorithm
from agent.sim.card import SSSE_AID, VirtualSscCard
from agent.sim.factory import CardFactory

PROFILE = load_profile("default")
STATES = ("not_activated", "active", "temp_locked", "perm_locked", "card_blocked")
SELECT_SSSE = bytes.fromhex("00A404000F") + SSSE_AID + b"\x00"


def make_card(
    algorithm: str = "des",
    *,
    state: str = "active",
    t0: bool = False,
    spec_version: str = "3.00",
    seed: int = 7,
    long_name: bool = False,
) -> VirtualSscCard:
    factory = CardFactory(PROFILE, seed, with_bank=False)
    return factory.issue(
        algorithm=algorithm,
        state=state,
        t0=t0,
        spec_version=spec_version,
        long_name=long_name,
    )


def card_key(card: VirtualSscCard, purpose: str) -> bytes:
    """The card key as the security module derives it (CARD-PROTOCOL §1 "Card keys")."""
    alg = card.algorithm
    ref = PROFILE.key(purpose)
    factors = card_factors(ref.factors, card.card_id_code)
    return crypto.diversify(alg, PROFILE.master_key(alg.value, purpose), factors)


class Terminal:
    """Sends raw bytes to a card; follows 61xx itself when the card is in T=0 mode."""

    def __init__(self, card: VirtualSscCard) -> None:
        self.card = card
        self.log: list[tuple[bytes, bytes]] = []

    @property
    def alg(self) -> Algorithm:
        return self.card.algorithm

    def raw(self, apdu: bytes | str) -> bytes:
        cmd = bytes.fromhex(apdu) if isinstance(apdu, str) else apdu
        resp = self.card.process(cmd)
        self.log.append((cmd, resp))
        assert len(resp) >= 2
        return resp

    def send(self, apdu: bytes | str) -> tuple[bytes, int]:
        """Send one command; in T=0 mode fetch 61xx data with GET RESPONSE."""
        resp = self.raw(apdu)
        data, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
        while sw >> 8 == 0x61:
            resp = self.raw(bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF)))
            more, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
            data += more
        return data, sw

    def sw(self, apdu: bytes | str) -> int:
        return self.send(apdu)[1]

    def select_ssse(self) -> int:
        return self.sw(SELECT_SSSE)

    def challenge(self, length: int = 4) -> bytes:
        data, sw = self.send(bytes((0x00, 0x84, 0x00, 0x00, length)))
        return data if sw == 0x9000 else b""

    def sm_apdu(
        self,
        cla: int,
        ins: int,
        p1: int,
        p2: int,
        body: bytes,
        purpose: str,
        challenge: bytes | None,
        *,
        corrupt: bool = False,
    ) -> bytes:
        """``CLA INS P1 P2 Lc body ‖ MAC4`` with the contract's MAC (IV = challenge block)."""
        lc = len(body) + 4
        header = bytes((cla, ins, p1, p2, lc))
        iv = crypto.card_mac_iv(self.alg, challenge or b"")
        mac = crypto.mac(self.alg, card_key(self.card, purpose), header + body, iv)[:4]
        if corrupt:
            mac = bytes((mac[0] ^ 0x01,)) + mac[1:]
        return header + body + mac

    def sm(
        self,
        cla: int,
        ins: int,
        p1: int,
        p2: int,
        body: bytes = b"",
        purpose: str = "stk",
        *,
        corrupt: bool = False,
        challenge_len: int = 4,
    ) -> int:
        """GET CHALLENGE, then the MAC'd command; returns the command's SW."""
        ch = self.challenge(challenge_len)
        return self.sw(self.sm_apdu(cla, ins, p1, p2, body, purpose, ch, corrupt=corrupt))

    # --- contract commands ------------------------------------------------------------------
    def app_block(self, permanent: bool = False) -> int:
        p2 = PROFILE.lock_p2_permanent if permanent else PROFILE.lock_p2_temporary
        return self.sm(0x84, 0x1E, 0x00, p2)

    def app_unblock(self) -> int:
        return self.sm(0x84, 0x18, 0x00, 0x00)

    def card_block(self) -> int:
        return self.sm(0x84, 0x16, 0x00, 0x00)

    def activate(self, value: bytes = b"\x01") -> int:
        tag = PROFILE.activation.record_tag
        return self.sm(0x04, 0xDC, tag, (0x05 << 3) | 4, bytes((tag, len(value))) + value)

    def ext_auth_cryptogram(self, challenge: bytes) -> bytes:
        block = crypto.card_mac_iv(self.alg, challenge)
        return crypto.ecb_encrypt(self.alg, card_key(self.card, "rkssse"), block)

    def ext_auth(self, *, corrupt: bool = False) -> int:
        ch = self.challenge(8)
        crypt = self.ext_auth_cryptogram(ch)
        if corrupt:
            crypt = bytes((crypt[0] ^ 0xFF,)) + crypt[1:]
        key_id = PROFILE.key("rkssse").ext_auth_key_id
        return self.sw(bytes((0x00, 0x82, 0x00, key_id, len(crypt))) + crypt)

    def verify(self, pin: str) -> int:
        bcd = pin_bcd(pin)
        return self.sw(bytes((0x00, 0x20, 0x00, 0x00, len(bcd))) + bcd)

    def change_pin(self, old: str, new: str) -> int:
        data = pin_bcd(old) + b"\xff" + pin_bcd(new)
        return self.sw(bytes((0x80, 0x5E, 0x01, 0x00, len(data))) + data)

    def reset_pin(self, new: str) -> int:
        return self.sm(0x80, 0x5E, 0x00, 0x00, pin_bcd(new), "rpk")

    def unblock_pin_apdu(self, new: str, challenge: bytes) -> bytes:
        bcd = pin_bcd(new)
        block = crypto.pad_m2(bytes((len(bcd),)) + bcd, self.alg.block_size)
        enc = crypto.ecb_encrypt(self.alg, card_key(self.card, "puk"), block)
        return self.sm_apdu(0x84, 0x24, 0x00, 0x00, enc, "puk", challenge)

    def unblock_pin(self, new: str) -> int:
        return self.sw(self.unblock_pin_apdu(new, self.challenge()))


def pin_bcd(pin: str) -> bytes:
    return bytes.fromhex(pin + ("F" if len(pin) % 2 else ""))


def card_in_state(state: str, algorithm: str = "des", *, t0: bool = False) -> VirtualSscCard:
    """A card brought into ``state`` by raw contract commands (from a fresh card)."""
    base = "not_activated" if state == "not_activated" else "active"
    card = make_card(algorithm, state=base, t0=t0)
    term = Terminal(card)
    term.select_ssse()
    if state == "temp_locked":
        assert term.app_block() == 0x9000
    elif state == "perm_locked":
        assert term.app_block(permanent=True) == 0x9000
    elif state == "card_blocked":
        assert term.card_block() == 0x9000
    assert card.state == state
    card.power_on()
    return card
