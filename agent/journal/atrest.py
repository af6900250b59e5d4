"""Encryption at rest of the personal data the journal keeps (DESIGN §4: "what is kept at rest is
encrypted").

AES-256-GCM under a 32-byte key file created at first start with mode 0600 (``O_EXCL``, so two
starting processes cannot both create one). Each blob is ``nonce(12) ‖ ciphertext ‖ tag(16)``;
the associated data binds the blob to its row (the tx id), so a blob copied onto another row
does not decrypt.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.errors import JournalError

KEY_SIZE = 32
NONCE_SIZE = 12


class AtRestKeyError(JournalError):
    """The at-rest key file is unreadable or malformed."""

    code = "journal_key"


class AtRestDecryptError(JournalError):
    """An encrypted blob does not decrypt under the journal's key (wrong key, wrong row, damage)."""

    code = "journal_decrypt"


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; created (32 random bytes, mode 0600) if the file does not exist.

    An existing key file readable by group or others is tightened to 0600.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            key = os.urandom(KEY_SIZE)
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
        key = path.read_bytes()
    except OSError as exc:
        raise AtRestKeyError(f"cannot read journal key {path.name}: {exc.strerror}") from None
    if len(key) != KEY_SIZE:
        raise AtRestKeyError(f"journal key {path.name} has {len(key)} bytes, expected {KEY_SIZE}")
    return key


class Sealer:
    """AES-GCM encrypt/decrypt of small blobs bound to an associated-data label."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise AtRestKeyError("at-rest key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < NONCE_SIZE + 16:
            raise AtRestDecryptError("encrypted blob too short")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise AtRestDecryptError("encrypted blob does not verify") from None
