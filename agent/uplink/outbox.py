"""The journal as the uplink's outbox, and the ``tx`` wire message of a sealed record (DESIGN §4–5).

:class:`JournalOutbox` implements :class:`agent.uplink.session.Outbox` over
:class:`agent.journal.Journal`: pending = sealed or sent, not yet acked records in seq order;
a record leaves only on central's ack (the SQLite outbox is the only queue).

The message on ``ssc/v1/<terminal>/tx`` is the sealed body's map with ``"mac"`` added,
deterministically encoded (``messages.cddl`` rule ``tx-record``)::

    tx   = canonical CBOR of { ...sealed body fields..., "mac": mac8 }
    body = the same map without "mac", canonical CBOR  (= the journal's stored body bytes)
    hash = SHA-256(body)    -> prev_hash of the next record; mac = seal MAC over hash

Because the journal's body is canonical CBOR, removing ``"mac"`` and encoding again gives back
the exact stored bytes, so central recomputes the digest, checks ``prev_hash`` and the MAC
without any other knowledge (:func:`parse_tx`).

PUBACKs (``mark_sent``) are buffered and written in batches: ``sent`` only records that the
broker took a copy, it never removes a record (``acked`` is accepted from ``sealed`` too), so a
crash that loses the buffer costs nothing and saves an fsync per record on the hot path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agent.errors import RecordFormatError, WireError
from agent.journal import Journal, SealedRecord, decode_body, encode_body, record_digest
from agent.uplink.session import OutboxItem
from agent.wire.cbor import decode, encode

__all__ = ["JournalOutbox", "ParsedTx", "parse_tx", "tx_payload"]

MARK_SENT_BATCH = 64


def tx_payload(record: SealedRecord) -> bytes:
    """The ``tx`` message of a sealed record: its body map plus ``mac``, canonical CBOR."""
    fields: dict[str, Any] = decode_body(record.body)
    fields["mac"] = record.mac
    return encode(fields)


@dataclass(frozen=True, slots=True)
class ParsedTx:
    """A ``tx`` message taken apart for verification (central side)."""

    obj: dict[str, Any]  # the decoded message, "mac" included
    body: bytes  # canonical body = the bytes the terminal hashed
    digest: bytes
    mac: bytes
    seq: int
    terminal: str
    prev_hash: bytes


def parse_tx(payload: bytes) -> ParsedTx:
    """Decode hostile ``tx`` bytes and rebuild the hashed body; ``WireError`` if malformed.

    The message must be canonical CBOR (what a terminal sends), so the body rebuilt without
    ``mac`` is byte for byte the body the security module sealed.
    """
    obj = decode(payload)
    if not isinstance(obj, dict):
        raise WireError("tx record is not a map")
    if encode(obj) != bytes(payload):
        raise WireError("tx record is not deterministically encoded")
    mac = obj.get("mac")
    if not isinstance(mac, bytes) or len(mac) != 8:
        raise WireError("tx record has no 8-byte mac")
    fields = {k: v for k, v in obj.items() if k != "mac"}
    try:
        body = encode_body(fields)
    except RecordFormatError as exc:
        raise WireError(f"tx record body: {exc.message}") from None
    return ParsedTx(
        obj=obj,
        body=body,
        digest=record_digest(body),
        mac=mac,
        seq=int(fields["seq"]),
        terminal=str(fields["terminal_id"]),
        prev_hash=bytes(fields["prev_hash"]),
    )


class JournalOutbox:
    """``Outbox`` over the journal (sync; the session calls it from worker threads)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._sent: list[int] = []
        self._lock = threading.Lock()

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        return [OutboxItem(r.seq, tx_payload(r)) for r in self.journal.unacked(after_seq, limit)]

    def mark_sent(self, seqs: list[int]) -> None:
        with self._lock:
            self._sent.extend(seqs)
            if len(self._sent) < MARK_SENT_BATCH:
                return
            batch, self._sent = self._sent, []
        self.journal.mark_sent(batch)

    def flush(self) -> None:
        """Write buffered PUBACKs (``sent``) now."""
        with self._lock:
            batch, self._sent = self._sent, []
        if batch:
            self.journal.mark_sent(batch)

    def ack(self, ranges: list[tuple[int, int]]) -> int:
        return self.journal.ack(ranges)

    def unacked_count(self) -> int:
        return self.journal.stats().unacked

    def max_seq(self) -> int:
        return self.journal.last_seq()

    def requeue_from(self, from_seq: int) -> int:
        """Central asked for everything from ``from_seq`` again: unacked ``sent`` records go back
        to ``sealed``. Returns how many unacked records are at or after ``from_seq``."""
        self.flush()
        seqs: list[int] = []
        total = 0
        after = from_seq - 1
        while True:
            batch = self.journal.unacked(after, 1000)
            if not batch:
                break
            seqs.extend(r.seq for r in batch if r.state == "sent")
            total += len(batch)
            after = batch[-1].seq
        self.journal.requeue(seqs)
        return total
