"""Software security module from a profile's **test** master keys (docs/CARD-PROTOCOL.md §2).

For the simulators, the reference central's verification and tests only: a production profile
has no ``[test_master_keys]`` and every call here then raises ``SecurityModuleError``.

It computes exactly what a PSAM computes (``agent.sim.psam``, ssc-card-protocol.md §3):

* card key = ``diversify(alg, master[purpose], factors)``;
* card MAC = leftmost 4 bytes of the algorithm's MAC over ``pad_m2(data)`` with IV = the card
  challenge left-aligned in a zero block (§2 "MAC for 84/04");
* seal MAC = leftmost 8 bytes of the SM4 CBC-MAC over ``pad_m2(digest)``, IV zero, under the
  ``seal`` master diversified with the profile's seal factors (``terminal``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from agent.errors import LocalProtocolError, SecurityModuleError
from agent.profile import CardProfile, card_factors
from agent.psam.crypto import (
    Algorithm,
    card_mac_iv,
    diversify,
    ecb_encrypt,
    mac,
    sm4_cbc_mac,
    sm4_cbc_mac_function,
)

CARD_MAC_LEN = 4
SEAL_MAC_LEN = 8
SEAL_ALGORITHM = Algorithm.SM4


def _is_bcd(raw: bytes) -> bool:
    return all((b >> 4) <= 9 and (b & 0x0F) <= 9 for b in raw)


def _master(profile: CardProfile, algorithm: Algorithm, purpose: str) -> bytes:
    key = profile.test_master_keys.get(algorithm.value, {}).get(purpose)
    if key is None:
        raise SecurityModuleError(
            f"profile {profile.name!r} has no test master key {algorithm.value}.{purpose}"
        )
    return key


def _key(
    profile: CardProfile, algorithm: Algorithm, purpose: str, factors: Sequence[bytes]
) -> bytes:
    ref = profile.key(purpose)
    if len(factors) != ref.levels:
        raise LocalProtocolError(
            f"key {purpose!r} takes {ref.levels} factors, {len(factors)} given"
        )
    return diversify(algorithm, _master(profile, algorithm, purpose), list(factors))


def card_key(
    profile: CardProfile, algorithm: Algorithm, purpose: str, card_id_code: bytes
) -> bytes:
    """The card's key for ``purpose``: the master diversified by the profile's card factors."""
    factors = card_factors(profile.key(purpose).factors, card_id_code)
    return _key(profile, algorithm, purpose, factors)


def seal_key(profile: CardProfile, terminal_number: bytes) -> bytes:
    """The terminal's SM4 seal key (``seal`` master, factors resolved for this terminal)."""
    factors = card_factors(profile.key("seal").factors, b"", terminal_number)
    return _key(profile, SEAL_ALGORITHM, "seal", factors)


def compute_seal(profile: CardProfile, terminal_number: bytes, digest: bytes) -> bytes:
    """The 8-byte seal MAC a terminal's PSAM gives for ``digest``."""
    full = sm4_cbc_mac(seal_key(profile, terminal_number), digest)
    return full[:SEAL_MAC_LEN]


def seal_function(profile: CardProfile, terminal_number: bytes) -> Callable[[bytes], bytes]:
    """:func:`compute_seal` for one terminal with its key derived once (the derivation costs
    more than the MAC itself)."""
    cbc_mac = sm4_cbc_mac_function(seal_key(profile, terminal_number))

    def seal(digest: bytes) -> bytes:
        return cbc_mac(digest)[:SEAL_MAC_LEN]

    return seal


def verify_seal(profile: CardProfile, terminal_number: bytes, digest: bytes, mac: bytes) -> bool:
    """True when ``mac`` is the terminal's seal of ``digest`` (constant-time compare).

    False for a wrong MAC or a terminal number that is not 6 bytes BCD; a profile without the
    ``seal`` test key raises ``SecurityModuleError`` (a setup bug of central, not a bad record).
    """
    if len(terminal_number) != 6 or not _is_bcd(terminal_number):
        return False
    expected = compute_seal(profile, terminal_number, digest)
    return hmac.compare_digest(expected, bytes(mac))


class SoftSecurityModule:
    """``SecurityModule`` from test master keys (``agent.psam.module``). Not for production."""

    def __init__(self, profile: CardProfile, terminal_number: bytes) -> None:
        if len(terminal_number) != 6 or not _is_bcd(terminal_number):
            raise LocalProtocolError("terminal number must be 6 bytes BCD")
        self._profile = profile
        self._terminal = bytes(terminal_number)
        self._seal: Callable[[bytes], bytes] | None = None  # derived on first use

    async def terminal_number(self) -> bytes:
        return self._terminal

    async def card_mac(
        self,
        purpose: str,
        algorithm: Algorithm,
        factors: list[bytes],
        challenge: bytes,
        data: bytes,
    ) -> bytes:
        key = _key(self._profile, algorithm, purpose, factors)
        return mac(algorithm, key, data, card_mac_iv(algorithm, challenge))[:CARD_MAC_LEN]

    async def encrypt(
        self, purpose: str, algorithm: Algorithm, factors: list[bytes], data: bytes
    ) -> bytes:
        return ecb_encrypt(algorithm, _key(self._profile, algorithm, purpose, factors), data)

    async def seal_mac(self, digest: bytes) -> bytes:
        if self._seal is None:
            self._seal = seal_function(self._profile, self._terminal)
        return self._seal(digest)
