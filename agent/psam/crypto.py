"""Card-key cryptography shared by the PSAM client, the virtual PSAM and the virtual card. Sans-IO.

Implements (ssc-card-protocol.md §2, §3):

* ISO/IEC 9797-1 padding method 2 (``80 00 …``);
* the PBOC/ISO 9797-1 MAC algorithm 3 ("retail MAC") with a 16-byte 3DES key and an 8-byte IV
  (DES cards: IV = 4-byte card challenge ‖ 00000000);
* the SM4 CBC-MAC (16-byte blocks, padding method 2) for algorithm indicator 03;
* PBOC key diversification, one level per 8-byte factor (up to 3 levels):
  DES: ``K' = 3DES_K(f) ‖ 3DES_K(~f)``; SM4: ``K' = SM4_K(f ‖ ~f)``.

All functions are pure: bytes in, bytes out. Keys are 16 bytes for both algorithms.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.errors import LocalProtocolError


class Algorithm(Enum):
    """Card algorithm from the SSSE FCI tag 9F0C (§1.1): 01 DES/3DES, 03 SM4."""

    DES = "des"
    SM4 = "sm4"

    @property
    def block_size(self) -> int:
        return 8 if self is Algorithm.DES else 16

    @classmethod
    def from_indicator(cls, value: int) -> Algorithm:
        """Map the 9F0C algorithm byte; 02 (SSF33) is not supported and raises."""
        if value == 0x01:
            return cls.DES
        if value == 0x03:
            return cls.SM4
        raise LocalProtocolError(f"unsupported card algorithm indicator {value:02X}")

    @property
    def indicator(self) -> int:
        return 0x01 if self is Algorithm.DES else 0x03


def _check_key(key: bytes) -> None:
    if len(key) != 16:
        raise LocalProtocolError(f"card keys are 16 bytes, got {len(key)}")


def pad_m2(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 2: append 80, then 00 to a multiple of ``block``."""
    d = bytes(data) + b"\x80"
    return d + b"\x00" * (-len(d) % block)


def unpad_m2(data: bytes) -> bytes:
    """Strip padding method 2; raises if absent."""
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise LocalProtocolError("padding method 2 not found")
    return stripped[:-1]


def _des3(key16: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key16 + key16[:8]), modes.ECB())


def _des1(key8: bytes) -> Cipher[modes.ECB]:
    # Single DES as 3DES with K1=K2=K3 (24-byte key avoids cryptography's 8-byte-key warning).
    return Cipher(TripleDES(key8 * 3), modes.ECB())


def _sm4(key16: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.SM4(key16), modes.ECB())


def ecb_encrypt(algorithm: Algorithm, key: bytes, data: bytes) -> bytes:
    """Block-cipher ECB encryption (3DES two-key or SM4); ``data`` must be whole blocks."""
    _check_key(key)
    if len(data) % algorithm.block_size:
        raise LocalProtocolError("ECB data is not a whole number of blocks")
    c = _des3(key) if algorithm is Algorithm.DES else _sm4(key)
    enc = c.encryptor()
    return enc.update(data) + enc.finalize()


def ecb_decrypt(algorithm: Algorithm, key: bytes, data: bytes) -> bytes:
    """Block-cipher ECB decryption (3DES two-key or SM4)."""
    _check_key(key)
    if len(data) % algorithm.block_size:
        raise LocalProtocolError("ECB data is not a whole number of blocks")
    c = _des3(key) if algorithm is Algorithm.DES else _sm4(key)
    dec = c.decryptor()
    return dec.update(data) + dec.finalize()


def retail_mac(key16: bytes, data: bytes, iv: bytes = bytes(8), *, pad: bool = True) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with padding method 2 (PBOC "3DES MAC"); 8 bytes.

    Single-DES CBC with K_L over all blocks, then D_KR and E_KL on the last (§2 "MAC for 84/04").
    """
    _check_key(key16)
    if len(iv) != 8:
        raise LocalProtocolError("retail MAC IV must be 8 bytes")
    d = pad_m2(data, 8) if pad else bytes(data)
    if not d or len(d) % 8:
        raise LocalProtocolError("retail MAC data is not a whole number of blocks")
    # single-DES CBC over every block in one cipher call: its last block is the CBC-MAC
    x = Cipher(TripleDES(key16[:8] * 3), modes.CBC(iv)).encryptor().update(d)[-8:]
    x = _des1(key16[8:]).decryptor().update(x)
    return _des1(key16[:8]).encryptor().update(x)


def sm4_cbc_mac(key16: bytes, data: bytes, iv: bytes = bytes(16), *, pad: bool = True) -> bytes:
    """SM4 CBC-MAC with padding method 2; returns the 16-byte last block."""
    _check_key(key16)
    if len(iv) != 16:
        raise LocalProtocolError("SM4 MAC IV must be 16 bytes")
    d = pad_m2(data, 16) if pad else bytes(data)
    if not d or len(d) % 16:
        raise LocalProtocolError("SM4 MAC data is not a whole number of blocks")
    # CBC over every block in one cipher call: its last block is the CBC-MAC
    return Cipher(algorithms.SM4(key16), modes.CBC(iv)).encryptor().update(d)[-16:]


def sm4_cbc_mac_function(key16: bytes) -> Callable[[bytes], bytes]:
    """:func:`sm4_cbc_mac` (zero IV, padding method 2) under one key, for many MACs.

    One SM4 block encryptor serves every call and the CBC chaining is done here: building a
    cipher context costs more than the MAC of a 32-byte digest itself (the reference central
    verifies one seal per record). Thread-safe: the encryptor is used under a lock.
    """
    _check_key(key16)
    block = Cipher(
        algorithms.SM4(key16), modes.ECB()
    ).encryptor()  # one block per call: CBC chained below
    lock = threading.Lock()

    def cbc_mac(data: bytes) -> bytes:
        d = pad_m2(data, 16)
        x = 0
        with lock:
            for i in range(0, len(d), 16):
                x ^= int.from_bytes(d[i : i + 16], "big")
                x = int.from_bytes(block.update(x.to_bytes(16, "big")), "big")
        return x.to_bytes(16, "big")

    return cbc_mac


def mac(algorithm: Algorithm, key16: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """The algorithm's MAC (8 bytes DES, 16 bytes SM4); callers keep the leftmost 4."""
    if algorithm is Algorithm.DES:
        return retail_mac(key16, data, iv if iv is not None else bytes(8))
    return sm4_cbc_mac(key16, data, iv if iv is not None else bytes(16))


def card_mac_iv(algorithm: Algorithm, challenge: bytes) -> bytes:
    """IV for a secure-messaging MAC: the card challenge left-aligned, zero-filled (§2)."""
    size = algorithm.block_size
    if len(challenge) > size:
        raise LocalProtocolError("challenge longer than a block")
    return bytes(challenge) + bytes(size - len(challenge))


def diversify(
    algorithm: Algorithm, master: bytes, factors: list[bytes] | tuple[bytes, ...]
) -> bytes:
    """PBOC key diversification, one level per 8-byte factor (0–3 levels; §3 ``80 1A``)."""
    _check_key(master)
    if len(factors) > 3:
        raise LocalProtocolError("at most 3 diversification levels")
    key = bytes(master)
    for f in factors:
        if len(f) != 8:
            raise LocalProtocolError(f"diversification factor must be 8 bytes, got {len(f)}")
        inv = bytes(b ^ 0xFF for b in f)
        if algorithm is Algorithm.DES:
            key = ecb_encrypt(algorithm, key, f) + ecb_encrypt(algorithm, key, inv)
        else:
            key = ecb_encrypt(algorithm, key, f + inv)
    return key
