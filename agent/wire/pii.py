"""Personal data of a record, sealed for central alone (HPKE, RFC 9180; DESIGN §4, §5).

A loss report made without the card (挂失) names the card only by the citizen's ID number and
card number, and central needs them to find the card. Nobody else may read them: not the
broker, not a subscriber to ``ssc/v1/+/tx``, not whoever reads the terminal's disk. The sealed
body carries only ``personal_digest = SHA-256(salt ‖ canonical CBOR(personal))``
(``agent.journal.codec``); the ``tx`` message carries the data itself beside the body, in its
``pii`` member (``messages.cddl``), sealed with

* HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (cryptography's
  ``hpke.Suite``): ``pii = enc (32 bytes) ‖ ciphertext ‖ tag (16 bytes)``;
* to central's X25519 public key (``uplink.central_pii_key``; ``ssc-agent central pubkey``);
* with ``info = "ssc/v1 pii" ‖ 0x00 ‖ terminal id ‖ 0x00 ‖ tx_id``, so a box opens only as the
  personal data of the record it came with;
* plaintext: canonical CBOR ``{"salt": bstr .size 16, "personal": {"ssn": tstr,
  "card_number": tstr, ? "name": tstr}}``.

Central opens it and recomputes the digest: equal to the sealed (MAC'd, chained) body's
``personal_digest``, the data is the data the citizen gave at that terminal. HPKE encryption is
randomised, so a record sent twice carries two different boxes; the body, and so the digest
central dedupes by, is the same. Everything that fails is :class:`agent.errors.WireError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.errors import ConfigError, WireError
from agent.wire.cbor import decode_deterministic
from agent.wire.codec import PII_MAX_SIZE, PII_MIN_SIZE

__all__ = [
    "PERSONAL_KEYS",
    "PII_MAX_SIZE",
    "PII_MIN_SIZE",
    "check_personal",
    "open_personal",
    "personal_digest",
    "pii_public_key",
    "seal_personal",
]

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_ENC, _TAG = 32, 16  # HPKE's encapsulated X25519 key and ChaCha20-Poly1305's tag
_INFO = b"ssc/v1 pii"
#: The personal fields a box may hold (``name`` is optional) and each one's length bound.
PERSONAL_KEYS: Mapping[str, int] = {"ssn": 32, "card_number": 32, "name": 64}
_REQUIRED = frozenset({"ssn", "card_number"})


def _info(terminal: str, tx_id: str) -> bytes:
    return b"\x00".join((_INFO, terminal.encode(), tx_id.encode()))


def personal_digest(personal: Mapping[str, str], salt: bytes) -> bytes:
    """``SHA-256(salt ‖ canonical CBOR(personal))``: the sealed body's ``personal_digest``, which
    binds a box's data to its record (``agent.journal.codec`` seals it, central checks it)."""
    return hashlib.sha256(bytes(salt) + cbor2.dumps(dict(personal), canonical=True)).digest()


def check_personal(personal: object) -> dict[str, str]:
    """The personal data as a box may hold it (``ssn``, ``card_number``, optional ``name``,
    each text within its bound); ``WireError`` otherwise. The terminal checks a loss report's
    data with this before journaling it, so a record can never be too big to send."""
    if not isinstance(personal, Mapping):
        raise WireError("pii: personal data must be a map")
    keys = set(personal)
    if not keys >= _REQUIRED or not keys <= set(PERSONAL_KEYS):
        raise WireError(f"pii: personal data must hold {sorted(_REQUIRED)} and may hold name")
    out: dict[str, str] = {}
    for key, value in personal.items():
        if not isinstance(value, str) or not 1 <= len(value) <= PERSONAL_KEYS[key]:
            raise WireError(f"pii: {key} must be text of 1..{PERSONAL_KEYS[key]} characters")
        out[key] = value
    return out


def seal_personal(
    personal: Mapping[str, str], salt: bytes, key: X25519PublicKey, terminal: str, tx_id: str
) -> bytes:
    """The ``pii`` member for a record's personal data and salt (see the module docstring)."""
    if len(salt) != 16:
        raise WireError("pii: the salt must be 16 bytes")
    plain = cbor2.dumps({"salt": bytes(salt), "personal": check_personal(personal)}, canonical=True)
    if not PII_MIN_SIZE <= len(plain) + _ENC + _TAG <= PII_MAX_SIZE:
        raise WireError("pii: personal data outside the size bounds")
    return SUITE.encrypt(plain, key, _info(terminal, tx_id))


def open_personal(
    box: bytes, key: X25519PrivateKey, terminal: str, tx_id: str
) -> tuple[dict[str, str], bytes]:
    """Central's side: ``(personal, salt)`` from a record's ``pii``; ``WireError`` if the box
    is not for this key and this record, or holds anything but personal data."""
    if not PII_MIN_SIZE <= len(box) <= PII_MAX_SIZE:
        raise WireError(f"pii: {len(box)} bytes, outside {PII_MIN_SIZE}..{PII_MAX_SIZE}")
    try:
        plain = SUITE.decrypt(box, key, _info(terminal, tx_id))
    except (InvalidTag, ValueError):
        raise WireError("pii: does not open with central's key for this record") from None
    obj = decode_deterministic(plain, max_size=PII_MAX_SIZE)
    if not isinstance(obj, dict) or set(obj) != {"salt", "personal"}:
        raise WireError("pii: the plaintext must be a map of salt and personal")
    salt = obj["salt"]
    if not isinstance(salt, bytes) or len(salt) != 16:
        raise WireError("pii: the salt must be 16 bytes")
    return check_personal(obj["personal"]), salt


def pii_public_key(text: str, name: str = "uplink.central_pii_key") -> X25519PublicKey | None:
    """Central's X25519 public key from its hex form (``None`` for an empty setting)."""
    if not text.strip():
        return None
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError:
        raise ConfigError(f"{name}: not an X25519 public key (64 hex digits)") from None
