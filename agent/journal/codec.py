"""The sealed-record body: canonical CBOR, digest and hash chain (DESIGN §4, §5).

The body is what central verifies: a CBOR map with exactly the keys of :data:`BODY_FIELDS`,
encoded deterministically (RFC 8949 §4.2.1 core deterministic encoding: shortest integer and
length forms, map keys sorted by their encoded bytes, no indefinite lengths; cbor2
``canonical=True``). The same bytes are stored in the outbox, hashed and sent, so no re-encoding
can ever change them.

- ``digest = SHA-256(body)``; the body contains ``prev_hash`` (the previous record's digest, or
  32 zero bytes for the first record), so the digest *is* the chain hash: one hash per record,
  easy for C firmware and for central to recompute.
- ``mac = SecurityModule.seal_mac(digest)`` (the terminal's ``seal`` key).

CDDL (for ``agent/wire/messages.cddl``)::

    sealed-body = {
      "v": 1, "seq": uint, "prev_hash": bstr .size 32, "tx_id": tstr, "terminal_id": tstr,
      "kind": tstr, "outcome": "done" / "failed", "card_id_code": tstr / null,
      "reason": tstr / null, "offline": bool, "created_at": uint, "completed_at": uint,
      "idempotency_key": tstr / null, "result": tstr / null, "error_code": tstr / null,
      "auth_id": tstr / null, "personal_digest": bstr .size 32 / null,
    }

Times are integer milliseconds since the Unix epoch (UTC). Personal data (ID number, name) is
never in the body: when central needs it (a loss report with the card absent) it travels next to
the body and is bound to it by ``personal_digest = SHA-256(salt ‖ canonical CBOR(personal))``,
with a random 16-byte salt so the digest cannot be reversed by enumerating ID numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import cbor2

from agent.errors import RecordFormatError
from agent.wire import pii

BODY_VERSION = 1
GENESIS_HASH = bytes(32)
HASH_SIZE = 32

#: Every key of the body and the Python types its value may have.
BODY_FIELDS: Mapping[str, tuple[type, ...]] = {
    "v": (int,),
    "seq": (int,),
    "prev_hash": (bytes,),
    "tx_id": (str,),
    "terminal_id": (str,),
    "kind": (str,),
    "outcome": (str,),
    "card_id_code": (str, type(None)),
    "reason": (str, type(None)),
    "offline": (bool,),
    "created_at": (int,),
    "completed_at": (int,),
    "idempotency_key": (str, type(None)),
    "result": (str, type(None)),
    "error_code": (str, type(None)),
    "auth_id": (str, type(None)),
    "personal_digest": (bytes, type(None)),
}
OUTCOMES = ("done", "failed")


def _check(fields: Mapping[str, Any]) -> None:
    keys = set(fields)
    if keys != set(BODY_FIELDS):
        missing = sorted(set(BODY_FIELDS) - keys)
        extra = sorted(keys - set(BODY_FIELDS))
        raise RecordFormatError(f"sealed body fields: missing {missing}, unexpected {extra}")
    for name, types in BODY_FIELDS.items():
        value = fields[name]
        # bool is an int subclass: only "offline" may be a bool, and it must be one
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise RecordFormatError(f"sealed body field {name!r} has type {type(value).__name__}")
    if fields["v"] != BODY_VERSION:
        raise RecordFormatError(f"sealed body version {fields['v']} is not {BODY_VERSION}")
    if fields["seq"] < 1 or fields["created_at"] < 0 or fields["completed_at"] < 0:
        raise RecordFormatError("sealed body seq/times out of range")
    if len(fields["prev_hash"]) != HASH_SIZE:
        raise RecordFormatError("prev_hash must be 32 bytes")
    pd = fields["personal_digest"]
    if pd is not None and len(pd) != HASH_SIZE:
        raise RecordFormatError("personal_digest must be 32 bytes")
    if fields["outcome"] not in OUTCOMES:
        raise RecordFormatError(f"outcome must be one of {OUTCOMES}")


def encode_body(fields: Mapping[str, Any]) -> bytes:
    """Canonical CBOR of a body with exactly :data:`BODY_FIELDS`; raises ``RecordFormatError``."""
    _check(fields)
    return cbor2.dumps(dict(fields), canonical=True)


def decode_body(data: bytes) -> dict[str, Any]:
    """Parse and validate a body; the bytes must be the canonical encoding of the result.

    Garbage, trailing bytes, non-canonical encodings and wrong field sets raise
    ``RecordFormatError``.
    """
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RecordFormatError(f"sealed body is not CBOR: {exc.__class__.__name__}") from None
    if not isinstance(value, dict):
        raise RecordFormatError("sealed body is not a CBOR map")
    _check(value)
    if cbor2.dumps(value, canonical=True) != data:
        raise RecordFormatError("sealed body is not canonically encoded")
    return value


def record_digest(body: bytes) -> bytes:
    """SHA-256 of the canonical body: the record's hash and the next record's ``prev_hash``."""
    return hashlib.sha256(body).digest()


def personal_digest(personal: Mapping[str, str], salt: bytes) -> bytes:
    """Binds the personal data sent beside a body to it (see module docstring)."""
    if len(salt) != 16:
        raise RecordFormatError("personal-data salt must be 16 bytes")
    return pii.personal_digest(personal, salt)


class BodySource(Protocol):
    """What a body is built from (``journal.store.TxRow``, ``tx.records.TxRecord``)."""

    @property
    def tx_id(self) -> str: ...
    @property
    def terminal_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def card_id_code(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def offline(self) -> bool: ...
    @property
    def created_at(self) -> int: ...
    @property
    def updated_at(self) -> int: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def result(self) -> str | None: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def auth_id(self) -> str | None: ...
    @property
    def personal(self) -> Mapping[str, str] | None: ...
    @property
    def personal_salt(self) -> bytes: ...


def body_fields(rec: BodySource, seq: int, prev_hash: bytes) -> dict[str, Any]:
    """The fixed field set of a record's sealed body; ``completed_at`` is the last update time."""
    return {
        "v": BODY_VERSION,
        "seq": seq,
        "prev_hash": prev_hash,
        "tx_id": rec.tx_id,
        "terminal_id": rec.terminal_id,
        "kind": str(rec.kind),
        "outcome": rec.outcome or "",
        "card_id_code": rec.card_id_code,
        "reason": rec.reason,
        "offline": rec.offline,
        "created_at": rec.created_at,
        "completed_at": rec.updated_at,
        "idempotency_key": rec.idempotency_key,
        "result": rec.result,
        "error_code": rec.error_code,
        "auth_id": rec.auth_id,
        "personal_digest": (
            personal_digest(rec.personal, rec.personal_salt) if rec.personal else None
        ),
    }
