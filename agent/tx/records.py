"""Transaction records: ids (UUIDv7), the ``TxRecord`` dataclass and its sealed bytes (DESIGN §4).

The canonical body encoder lives in :mod:`agent.journal.codec` (the journal seals records and may
not import ``tx``); this module builds bodies from a ``TxRecord`` through that one encoder, so the
bytes the journal stores and the bytes computed here are the same by construction.

Personal data: the sealed body carries only the card identification code (卡识别码, not personal
data). ID number and name, when central needs them (loss report with the card absent), are kept
in ``personal`` — encrypted at rest by the journal, never in the body, never in ``repr`` — and
bound to the body by ``personal_digest`` (see ``agent.journal.codec``). PAN is never recorded.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.journal.codec import GENESIS_HASH, body_fields, encode_body, record_digest
from agent.journal.store import TxRow
from agent.tx.machine import State

__all__ = [
    "GENESIS_HASH",
    "Kind",
    "TxRecord",
    "canonical_bytes",
    "chain_hash",
    "new_tx_id",
    "now_ms",
    "record_digest",
    "uuid7",
]


class Kind(StrEnum):
    """Card-changing operations (config ``TX_KINDS``)."""

    LOCK = "lock"
    UNLOCK = "unlock"
    REPORT_LOSS = "report_loss"
    ACTIVATE = "activate"
    BANK_ACTIVATE = "bank_activate"
    PIN_CHANGE = "pin_change"
    PIN_RESET = "pin_reset"
    PIN_UNBLOCK = "pin_unblock"
    AUTO_LOCK = "auto_lock"


# --------------------------------------------------------------------------------------------
# UUIDv7 (RFC 9562 §5.7, monotonic by §6.2 method 1: a 12-bit counter in rand_a)
# --------------------------------------------------------------------------------------------
class _Uuid7Clock:
    """Last timestamp and counter, shared by every caller in the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0

    def next(self, ms: int) -> tuple[int, int]:
        with self.lock:
            if ms > self.last_ms:
                self.last_ms = ms
                self.counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            else:
                self.counter += 1
                if self.counter > 0xFFF:
                    self.last_ms += 1
                    self.counter = 0
            return self.last_ms, self.counter


_clock = _Uuid7Clock()


def uuid7(*, _now_ms: int | None = None) -> uuid.UUID:
    """A time-ordered UUID: 48-bit Unix ms ‖ ver 7 ‖ 12-bit counter ‖ var 10 ‖ 62 random bits.

    Within one millisecond (or when the clock steps back) the counter increments, so ids from
    this process are strictly increasing; on counter overflow the timestamp is advanced by one
    millisecond (RFC 9562 §6.2 allows this). A new millisecond seeds the counter with 11 random
    bits, leaving headroom for at least 2048 ids per millisecond.
    """
    ms, counter = _clock.next(time.time_ns() // 1_000_000 if _now_ms is None else _now_ms)
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def new_tx_id() -> str:
    """A fresh transaction id (UUIDv7 text form)."""
    return str(uuid7())


def now_ms() -> int:
    """Wall-clock time as integer Unix milliseconds (the unit of every record time)."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TxRecord:
    """One card-changing operation, as journaled (DESIGN §4).

    ``state``, ``outcome``, ``seq``, ``prev_hash``, ``hash`` and ``mac`` are set by the journal
    (``seq``/``prev_hash``/``hash``/``mac`` at seal time). Satisfies the journal's ``IntentLike``
    protocol, so ``journal.create_intent(record)`` takes it directly.
    """

    kind: Kind
    terminal_id: str
    card_id_code: str | None
    offline: bool
    tx_id: str = field(default_factory=new_tx_id)
    created_at: int = field(default_factory=now_ms)
    updated_at: int = 0
    state: State = State.INTENT
    reason: str | None = None
    idempotency_key: str | None = None
    auth_id: str | None = None
    outcome: str | None = None
    result: str | None = None
    error_code: str | None = None
    seq: int | None = None
    prev_hash: bytes | None = None
    hash: bytes | None = None
    mac: bytes | None = None
    personal: Mapping[str, str] | None = field(default=None, repr=False)
    personal_salt: bytes = field(default_factory=lambda: os.urandom(16), repr=False)

    def __post_init__(self) -> None:
        if not self.updated_at:
            object.__setattr__(self, "updated_at", self.created_at)
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "state", State(self.state))

    def replace(self, **changes: Any) -> TxRecord:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_row(cls, row: TxRow) -> TxRecord:
        """The record as the journal stores it."""
        return cls(
            kind=Kind(row.kind),
            terminal_id=row.terminal_id,
            card_id_code=row.card_id_code,
            offline=row.offline,
            tx_id=row.tx_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            state=State(row.state),
            reason=row.reason,
            idempotency_key=row.idempotency_key,
            auth_id=row.auth_id,
            outcome=row.outcome,
            result=row.result,
            error_code=row.error_code,
            seq=row.seq,
            prev_hash=row.prev_hash,
            hash=row.hash,
            mac=row.mac,
            personal=row.personal,
            personal_salt=row.personal_salt,
        )

    def body_fields(self, seq: int, prev_hash: bytes) -> dict[str, Any]:
        """The fixed field set of the sealed body (``agent.journal.codec.BODY_FIELDS``)."""
        return body_fields(self, seq, prev_hash)


def canonical_bytes(record: TxRecord, seq: int, prev_hash: bytes) -> bytes:
    """Deterministic CBOR of the record's sealed body (what is hashed, MAC'd and sent)."""
    return encode_body(record.body_fields(seq, prev_hash))


def chain_hash(record: TxRecord, seq: int, prev_hash: bytes) -> bytes:
    """The record's chain hash = ``record_digest(canonical_bytes(...))`` (covers ``prev_hash``)."""
    return record_digest(canonical_bytes(record, seq, prev_hash))
