"""PSAM client: the terminal's PBOC-style PSAM over a ``CardChannel`` (docs/CARD-PROTOCOL.md §2).

Commands (ssc-card-protocol.md §3):

* ``00 A4 00 00 02 3F00`` select the MF, ``00 A4 04 00 Lc <psam_aid>`` select the application;
* ``00 B0 95 00 0E`` EF15 public info, ``00 B0 96 00 06`` EF16 terminal number (6 bytes BCD),
  ``00 B0 99 00 04`` EF19 terminal transaction sequence number (in the application DF);
* ``80 1A <usage> <index> <8×levels> factors`` delivery key (usage bits 8–6 = levels);
* ``80 FA 05 P2`` MAC in one command, or ``07`` first / ``03`` next / ``01`` last in chunks of at
  most ``0x30`` bytes; the data is ``IV ‖ data ‖ padding`` (caller-padded, §3 "MAC data layout");
* ``80 FA 00 P2`` (``02`` while more chunks follow) ECB encryption under the delivered key.

``P2`` of ``80 FA`` is the card algorithm indicator: ``00`` 3DES, ``03`` SM4 (see
``agent.sim.psam`` for why). ``61xx``/``6Cxx`` are handled by ``agent.card.t0.transceive``.

A status word other than 9000 raises ``PsamStatusError`` (``PsamKeyNotFoundError`` for 6A88 and
9403); malformed answers (wrong lengths, non-BCD terminal numbers) raise ``CardProtocolError``.
Unlike ``card``, this package is not sans-IO: ``PsamSecurityModule`` serialises access to the one
PSAM with an ``asyncio.Lock``, because a delivery key and its MAC must not interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.card.sw import describe
from agent.card.t0 import transceive
from agent.errors import (
    CardProtocolError,
    LocalProtocolError,
    PsamKeyNotFoundError,
    PsamStatusError,
    SecurityModuleError,
)
from agent.profile import CardProfile, card_factors
from agent.psam.crypto import Algorithm, card_mac_iv, pad_m2

MF_FID = bytes.fromhex("3F00")
CHUNK_MAX = 0x30
CARD_MAC_LEN = 4
SEAL_MAC_LEN = 8
SEAL_ALGORITHM = Algorithm.SM4

# 80 FA P1 values (ssc-card-protocol.md §3 "CIPHER DATA / MAC")
P1_ENCRYPT_LAST = 0x00
P1_ENCRYPT_MORE = 0x02
P1_MAC_SINGLE = 0x05
P1_MAC_FIRST = 0x07
P1_MAC_NEXT = 0x03
P1_MAC_LAST = 0x01


def cipher_p2(algorithm: Algorithm) -> int:
    """P2 of ``80 FA``: the algorithm indicator (00 = 3DES, 03 = SM4)."""
    return 0x03 if algorithm is Algorithm.SM4 else 0x00


def is_bcd(raw: bytes) -> bool:
    """True when every nibble is a decimal digit."""
    return all((b >> 4) <= 9 and (b & 0x0F) <= 9 for b in raw)


def terminal_id(terminal_number: bytes) -> str:
    """The 12-digit terminal id of a 6-byte BCD terminal number (EF16)."""
    if len(terminal_number) != 6 or not is_bcd(terminal_number):
        raise LocalProtocolError("terminal number must be 6 bytes BCD")
    return terminal_number.hex()


@dataclass(frozen=True, slots=True)
class PsamInfo:
    """EF15 public information (ssc-card-protocol.md §3 "Files")."""

    serial: bytes  # 10 bytes
    version: int
    key_card_type: int
    command_set_version: int
    raw: bytes


def _check(resp: ResponseApdu, command: str) -> ResponseApdu:
    """Raise the typed error for a non-9000 PSAM answer (the SW is data until here)."""
    if resp.sw == 0x9000:
        return resp
    if resp.sw in (0x6A88, 0x9403):
        raise PsamKeyNotFoundError(resp.sw, "key not found", command=command)
    if resp.sw == 0x6985:
        text = "conditions not satisfied (application not selected or no key delivered)"
        raise PsamStatusError(resp.sw, text, command=command)
    # describe() starts with the SW itself; PsamStatusError appends it already
    raise PsamStatusError(resp.sw, describe(resp.sw)[5:], command=command)


async def _exchange(channel: CardChannel, cmd: CommandApdu, command: str) -> ResponseApdu:
    return _check(await transceive(channel, cmd), command)


async def select_mf(channel: CardChannel) -> None:
    """Select the PSAM's MF (where EF15/EF16/EF17 live)."""
    await _exchange(channel, CommandApdu(0x00, 0xA4, 0x00, 0x00, MF_FID), "select MF")


async def select_app(channel: CardChannel, aid: bytes) -> bytes:
    """Select the PSAM application DF by AID (profile ``psam_aid``); returns the FCI."""
    if not 5 <= len(aid) <= 16:
        raise LocalProtocolError("PSAM AID must be 5..16 bytes")
    resp = await _exchange(channel, CommandApdu(0x00, 0xA4, 0x04, 0x00, aid), "select PSAM app")
    return resp.data


async def _read_sfi(channel: CardChannel, sfi: int, length: int, command: str) -> bytes:
    resp = await _exchange(channel, CommandApdu(0x00, 0xB0, 0x80 | sfi, 0x00, ne=length), command)
    if len(resp.data) != length:
        raise CardProtocolError(f"{command}: expected {length} bytes, got {len(resp.data)}")
    return resp.data


async def read_public_info(channel: CardChannel) -> PsamInfo:
    """``00 B0 95 00 0E``: EF15 (current DF must be the MF; see ``select_mf``)."""
    raw = await _read_sfi(channel, 0x15, 0x0E, "read PSAM EF15")
    return PsamInfo(raw[:10], raw[10], raw[11], raw[12], raw)


async def read_terminal_number(channel: CardChannel) -> bytes:
    """``00 B0 96 00 06``: EF16, 6 bytes BCD (current DF must be the MF)."""
    raw = await _read_sfi(channel, 0x16, 6, "read PSAM EF16")
    if not is_bcd(raw):
        raise CardProtocolError("PSAM terminal number (EF16) is not BCD")
    return raw


async def read_tsn(channel: CardChannel) -> int:
    """``00 B0 99 00 04``: EF19 terminal transaction sequence number (application DF selected)."""
    return int.from_bytes(await _read_sfi(channel, 0x19, 4, "read PSAM EF19"), "big")


async def deliver_key(
    channel: CardChannel, usage: int, index: int, factors: Sequence[bytes]
) -> None:
    """``80 1A <usage> <index> <8×levels> factors`` (§3 DELIVERY KEY).

    The usage byte's bits 8–6 are the number of diversification levels and must equal the
    number of 8-byte factors; a mismatch is our bug and raises ``LocalProtocolError``.
    """
    if not 0 <= usage <= 0xFF or not 0 <= index <= 0xFF:
        raise LocalProtocolError("PSAM key usage and index are bytes")
    if usage >> 5 != len(factors):
        raise LocalProtocolError(
            f"key usage {usage:02X} gives {usage >> 5} levels but {len(factors)} factors"
        )
    if any(len(f) != 8 for f in factors):
        raise LocalProtocolError("diversification factors are 8 bytes each")
    cmd = CommandApdu(0x80, 0x1A, usage, index, b"".join(factors))
    await _exchange(channel, cmd, f"delivery key {usage:02X}/{index:02X}")


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_MAX] for i in range(0, len(data), CHUNK_MAX)]


async def compute_mac(channel: CardChannel, algorithm: Algorithm, payload: bytes) -> bytes:
    """MAC of ``payload`` = ``IV ‖ data ‖ padding`` under the delivered key (``80 FA``).

    One ``80 FA 05`` when the payload fits in a chunk, else ``07``/``03``…/``01``. Returns the
    MAC as the PSAM answers it (4 bytes for card keys, 8 for the seal key on the virtual PSAM).
    """
    bs = algorithm.block_size
    if len(payload) < 2 * bs or len(payload) % bs:
        raise LocalProtocolError("MAC payload must be IV plus at least one padded block")
    p2 = cipher_p2(algorithm)
    chunks = _chunks(payload)
    if len(chunks) == 1:
        resp = await _exchange(channel, CommandApdu(0x80, 0xFA, P1_MAC_SINGLE, p2, payload), "MAC")
    else:
        for i, chunk in enumerate(chunks[:-1]):
            p1 = P1_MAC_FIRST if i == 0 else P1_MAC_NEXT
            mid = await _exchange(channel, CommandApdu(0x80, 0xFA, p1, p2, chunk), "MAC chain")
            if mid.data:
                raise CardProtocolError("PSAM answered data to an intermediate MAC chunk")
        last = CommandApdu(0x80, 0xFA, P1_MAC_LAST, p2, chunks[-1])
        resp = await _exchange(channel, last, "MAC chain")
    if not CARD_MAC_LEN <= len(resp.data) <= bs:
        raise CardProtocolError(f"PSAM MAC of {len(resp.data)} bytes")
    return resp.data


async def encrypt_data(channel: CardChannel, algorithm: Algorithm, data: bytes) -> bytes:
    """ECB encryption of whole blocks under the delivered key (``80 FA 00``; ``02`` for chunks
    that more chunks follow)."""
    bs = algorithm.block_size
    if not data or len(data) % bs:
        raise LocalProtocolError("encryption data must be whole cipher blocks")
    p2 = cipher_p2(algorithm)
    chunks = _chunks(data)
    out = b""
    for i, chunk in enumerate(chunks):
        p1 = P1_ENCRYPT_LAST if i == len(chunks) - 1 else P1_ENCRYPT_MORE
        resp = await _exchange(channel, CommandApdu(0x80, 0xFA, p1, p2, chunk), "encrypt")
        if len(resp.data) != len(chunk):
            raise CardProtocolError(f"PSAM encrypted {len(chunk)} bytes into {len(resp.data)}")
        out += resp.data
    return out


class PsamSecurityModule:
    """``SecurityModule`` backed by a PSAM (``agent.psam.module``; CARD-PROTOCOL.md §2).

    One PSAM, many callers: every operation (select, delivery key, MAC) runs under one
    ``asyncio.Lock`` so that a delivered key is never used by another caller's MAC. The
    application is selected at the start of each operation, which makes each operation
    independent of PSAM resets and of chains left over by a cancelled caller.
    """

    def __init__(self, channel: CardChannel, profile: CardProfile) -> None:
        self._channel = channel
        self._profile = profile
        self._lock = asyncio.Lock()
        self._terminal: bytes | None = None
        self._info: PsamInfo | None = None

    async def terminal_number(self) -> bytes:
        """EF16, read once (MF selected first) and cached."""
        async with self._lock:
            return await self._terminal_number_locked()

    async def _terminal_number_locked(self) -> bytes:
        if self._terminal is None:
            await select_mf(self._channel)
            self._terminal = await read_terminal_number(self._channel)
        return self._terminal

    async def public_info(self) -> PsamInfo:
        """EF15, read once and cached."""
        async with self._lock:
            if self._info is None:
                await select_mf(self._channel)
                self._info = await read_public_info(self._channel)
            return self._info

    async def _deliver(self, purpose: str, factors: Sequence[bytes]) -> None:
        key = self._profile.key(purpose)
        if len(factors) != key.levels:
            raise LocalProtocolError(
                f"key {purpose!r} takes {key.levels} factors, {len(factors)} given"
            )
        await select_app(self._channel, self._profile.psam_aid)
        await deliver_key(self._channel, key.usage, key.index, factors)

    async def card_mac(
        self,
        purpose: str,
        algorithm: Algorithm,
        factors: list[bytes],
        challenge: bytes,
        data: bytes,
    ) -> bytes:
        """4-byte MAC: ``80 1A`` for the purpose, then ``80 FA`` over IV ‖ pad(data) (§2)."""
        payload = card_mac_iv(algorithm, challenge) + pad_m2(data, algorithm.block_size)
        async with self._lock:
            await self._deliver(purpose, factors)
            out = await compute_mac(self._channel, algorithm, payload)
        return out[:CARD_MAC_LEN]

    async def encrypt(
        self, purpose: str, algorithm: Algorithm, factors: list[bytes], data: bytes
    ) -> bytes:
        """ECB encryption under the diversified card key (``80 FA 00``)."""
        async with self._lock:
            await self._deliver(purpose, factors)
            return await encrypt_data(self._channel, algorithm, data)

    async def seal_mac(self, digest: bytes) -> bytes:
        """8-byte record seal: ``seal`` key with the ``terminal`` factor, SM4, IV zero."""
        payload = bytes(SEAL_ALGORITHM.block_size) + pad_m2(digest, SEAL_ALGORITHM.block_size)
        async with self._lock:
            terminal = await self._terminal_number_locked()
            factors = card_factors(self._profile.key("seal").factors, b"", terminal)
            await self._deliver("seal", factors)
            out = await compute_mac(self._channel, SEAL_ALGORITHM, payload)
        if len(out) < SEAL_MAC_LEN:
            raise SecurityModuleError(f"the PSAM gives {len(out)}-byte MACs, the seal needs 8")
        return out[:SEAL_MAC_LEN]
