"""The ``SecurityModule`` port: the only way card flows obtain MACs and cryptograms (DESIGN §3).

Implementations: ``agent.psam.client.PsamSecurityModule`` (a PSAM in a PC/SC slot, ``80 1A`` /
``80 FA``), ``agent.psam.soft.SoftSecurityModule`` (test master keys from a profile; simulators
and the reference central only), and later a remote HSM (加密机) client. Flows never see keys.

Every method takes the key *purpose* (see ``agent.profile``) and the card's 8-byte
diversification factors, already resolved by the caller with ``agent.profile.card_factors``.
"""

from __future__ import annotations

from typing import Protocol

from agent.psam.crypto import Algorithm


class SecurityModule(Protocol):
    """Key operations for card flows and record sealing."""

    async def terminal_number(self) -> bytes:
        """The 6-byte BCD terminal number (PSAM EF16); its 12 digits are the terminal id."""
        ...

    async def card_mac(
        self,
        purpose: str,
        algorithm: Algorithm,
        factors: list[bytes],
        challenge: bytes,
        data: bytes,
    ) -> bytes:
        """4-byte secure-messaging MAC over ``data`` (command header with Lc ‖ body, unpadded).

        IV = card challenge left-aligned in one zero block (ssc-card-protocol.md §2, §3.1 step 4).
        """
        ...

    async def encrypt(
        self, purpose: str, algorithm: Algorithm, factors: list[bytes], data: bytes
    ) -> bytes:
        """ECB encryption of whole blocks under the diversified card key (auth cryptograms,
        enciphered PIN blocks)."""
        ...

    async def seal_mac(self, digest: bytes) -> bytes:
        """MAC over a sealed record's digest with the terminal's ``seal`` key (8 bytes)."""
        ...
