"""COSE_Sign1 with EdDSA / Ed25519 (RFC 9052 §4.4, RFC 9053 §2.2; DESIGN §5).

Commands from central are ``18([protected, unprotected, payload, signature])`` where

- ``protected`` is the byte string of the deterministic map ``{1: -8}`` (alg: EdDSA), optionally
  with ``4: kid``; the agent emits ``h'a10127'``;
- ``unprotected`` is ``{}`` or ``{4: kid}`` (the key id, RFC 9052 §3.1);
- ``signature`` = Ed25519 over ``Sig_structure = ["Signature1", protected, external_aad,
  payload]`` (RFC 9052 §4.4), encoded deterministically; ``external_aad`` is empty unless the
  caller binds something (the agent does not).

Verification is strict: the COSE_Sign1 tag is required, headers may carry only alg and kid,
alg must be -8 and must be protected, a kid must name a known key (without a kid every known
key is tried), and the signature must be 64 bytes. Every failure is
:class:`agent.errors.SignatureError` with ``code`` ``unsigned`` (not a tagged, complete
COSE_Sign1), ``bad_signature`` (wrong algorithm, unknown key, signature does not verify) or
``malformed`` (not CBOR at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import MessageEncodingError, SignatureError, WireError
from agent.wire.cbor import decode, encode

__all__ = [
    "ALG_EDDSA",
    "COSE_SIGN1_TAG",
    "HDR_ALG",
    "HDR_KID",
    "Verified",
    "sig_structure",
    "sign",
    "verify",
    "verify_detailed",
]

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_KID = 4
ALG_EDDSA = -8
SIGNATURE_SIZE = 64
MAX_KID = 32
#: Default size limit of a signed message (a full blacklist snapshot is about 1.7 MB).
DEFAULT_MAX_SIZE = 2 * 1024 * 1024 + 1024


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes that are signed (RFC 9052 §4.4), deterministically encoded."""
    return encode(["Signature1", protected, external_aad, payload])


def sign(
    payload: bytes,
    private_key: Ed25519PrivateKey,
    kid: bytes | None = None,
    *,
    external_aad: bytes = b"",
) -> bytes:
    """A tagged COSE_Sign1 of ``payload``; ``kid`` goes in the unprotected header."""
    if not isinstance(payload, bytes):
        raise MessageEncodingError("COSE payload must be bytes")
    if kid is not None and not 1 <= len(kid) <= MAX_KID:
        raise MessageEncodingError(f"kid must be 1..{MAX_KID} bytes")
    protected = encode({HDR_ALG: ALG_EDDSA})
    unprotected: dict[int, bytes] = {HDR_KID: kid} if kid is not None else {}
    signature = private_key.sign(sig_structure(protected, payload, external_aad))
    return encode(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, unprotected, payload, signature]))


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified COSE_Sign1: the payload and the id of the key that signed it."""

    payload: bytes
    kid: bytes | None


def _unsigned(message: str) -> SignatureError:
    return SignatureError(message, code="unsigned")


def _bad(message: str) -> SignatureError:
    return SignatureError(message, code="bad_signature")


def _header(value: Any, where: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _unsigned(f"{where} header is not a map")
    for label in value:
        if label not in (HDR_ALG, HDR_KID):
            # crit and every other parameter are refused: we cannot honour what we do not know
            raise _bad(f"{where} header parameter {label!r} is not accepted")
    kid = value.get(HDR_KID)
    if kid is not None and (not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID):
        raise _bad("kid must be 1..32 bytes")
    return value


def verify_detailed(
    data: bytes,
    public_keys: Mapping[bytes, Ed25519PublicKey],
    *,
    external_aad: bytes = b"",
    max_size: int = DEFAULT_MAX_SIZE,
) -> Verified:
    """Verify a tagged COSE_Sign1 against ``public_keys`` (kid -> key); see the module doc."""
    try:
        obj = decode(data, max_size=max_size, max_depth=4, max_items=16, top_tag=COSE_SIGN1_TAG)
    except WireError as exc:
        raise SignatureError(f"not a COSE_Sign1: {exc.message}", code="malformed") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise _unsigned("not a tagged COSE_Sign1 (tag 18)")
    value = obj.value  # cbor2 6 decodes a tag's content as immutable (tuple, frozendict)
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise _unsigned("COSE_Sign1 must be an array of 4")
    protected, unprotected_raw, payload, signature = value
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise _unsigned("COSE_Sign1 protected header and payload must be byte strings")
    if not isinstance(signature, bytes) or not signature:
        raise _unsigned("COSE_Sign1 has no signature")
    if not protected:
        raise _bad("algorithm is not protected")
    try:
        prot_obj = decode(protected, max_size=256, max_depth=2, max_items=8)
    except WireError:
        raise _bad("protected header is not CBOR") from None
    prot = _header(prot_obj, "protected")
    unprot = _header(unprotected_raw, "unprotected")
    if HDR_ALG in unprot:
        raise _bad("algorithm must be in the protected header")
    if prot.get(HDR_ALG) != ALG_EDDSA:
        raise _bad("algorithm must be EdDSA (-8)")
    if HDR_KID in prot and HDR_KID in unprot:
        raise _bad("kid in both headers")
    kid = prot.get(HDR_KID, unprot.get(HDR_KID))
    if len(signature) != SIGNATURE_SIZE:
        raise _bad("an Ed25519 signature is 64 bytes")
    if kid is not None:
        key = public_keys.get(kid)
        if key is None:
            raise _bad("signed with an unknown key")
        candidates = [(kid, key)]
    else:
        candidates = list(public_keys.items())
    to_be_signed = sig_structure(protected, payload, external_aad)
    for key_id, key in candidates:
        try:
            key.verify(signature, to_be_signed)
        except InvalidSignature:
            continue
        return Verified(payload, key_id)
    raise _bad("signature does not verify")


def verify(
    data: bytes,
    public_keys: Mapping[bytes, Ed25519PublicKey],
    *,
    external_aad: bytes = b"",
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Verify a tagged COSE_Sign1 and return its payload; ``SignatureError`` otherwise."""
    return verify_detailed(data, public_keys, external_aad=external_aad, max_size=max_size).payload
