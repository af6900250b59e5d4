"""Test helpers for the PSAM area: a tiny CardChannel over a SimDevice, independent crypto.

The reference crypto here is written straight on ``cryptography`` (TripleDES/SM4 in CBC mode),
not on ``agent.psam.crypto``, so that known-answer and cross checks compare two implementations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.sim.base import SimDevice


class SimChannel:
    """CardChannel: CommandApdu bytes → ``device.process`` → ResponseApdu (no T=0 help)."""

    def __init__(
        self,
        device: SimDevice,
        *,
        tamper: Callable[[bytes, bytes], bytes] | None = None,
        yield_each: bool = False,
    ) -> None:
        self.device = device
        self.tamper = tamper
        self.yield_each = yield_each
        self.log: list[bytes] = []
        device.power_on()

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        raw = command.to_bytes()
        self.log.append(raw)
        if self.yield_each:
            await asyncio.sleep(0)  # let other callers run between APDUs
        answer = self.device.process(raw)
        if self.tamper is not None:
            answer = self.tamper(raw, answer)
        return ResponseApdu.from_bytes(answer)


# ------------------------------------------------------------------ independent reference crypto
def ref_pad(data: bytes, block: int) -> bytes:
    out = bytearray(data) + b"\x80"
    while len(out) % block:
        out.append(0)
    return bytes(out)


def _cbc_last(cipher_alg: TripleDES | algorithms.SM4, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(cipher_alg, modes.CBC(iv)).encryptor()
    return (enc.update(data) + enc.finalize())[-len(iv) :]


def ref_retail_mac(key16: bytes, iv: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC alg. 3, padding method 2: DES-CBC(K_L) then D(K_R), E(K_L)."""
    kl, kr = key16[:8], key16[8:]
    last = _cbc_last(TripleDES(kl * 3), iv, ref_pad(data, 8))
    dec = Cipher(TripleDES(kr * 3), modes.ECB()).decryptor()
    x = dec.update(last) + dec.finalize()
    enc = Cipher(TripleDES(kl * 3), modes.ECB()).encryptor()
    return enc.update(x) + enc.finalize()


def ref_sm4_mac(key16: bytes, iv: bytes, data: bytes) -> bytes:
    return _cbc_last(algorithms.SM4(key16), iv, ref_pad(data, 16))


def ref_ecb(alg: str, key16: bytes, data: bytes) -> bytes:
    c = TripleDES(key16 + key16[:8]) if alg == "des" else algorithms.SM4(key16)
    enc = Cipher(c, modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def ref_diversify(alg: str, master: bytes, factors: list[bytes]) -> bytes:
    key = master
    for f in factors:
        inv = bytes(255 - b for b in f)
        key = (
            ref_ecb(alg, key, f) + ref_ecb(alg, key, inv)
            if alg == "des"
            else ref_ecb(alg, key, f + inv)
        )
    return key
