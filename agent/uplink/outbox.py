"""The journal as the uplink's outbox, and the ``tx`` wire message of a sealed record (DESIGN §4–5).

:class:`JournalOutbox` implements :class:`agent.uplink.session.Outbox` over
:class:`agent.journal.Journal`: pending = sealed or sent, not yet acked records in seq order;
a record leaves only on central's ack (the SQLite outbox is the only queue).

The message on ``ssc/v1/<terminal>/tx`` is :class:`agent.wire.codec.TxMessage` (``messages.cddl``
rule ``tx-record``): the sealed body's fields with ``"mac"`` added, deterministically encoded::

    tx   = canonical CBOR of { ...sealed body fields..., "mac": mac8 }
    body = the same map without "mac", canonical CBOR  (= the journal's stored body bytes)
    hash = SHA-256(body)    -> prev_hash of the next record; mac = seal MAC over hash

Because the journal's body is canonical CBOR, the message without ``"mac"`` is exactly the
stored bytes, so central recomputes the digest, checks ``prev_hash`` and the MAC without any
other knowledge (:func:`parse_tx`). Personal data never leaves in the clear: the body holds
only the salted ``personal_digest``. A record that has personal data (a loss report made without
the card) carries it in the message's ``pii`` member, sealed to central's X25519 key
(``uplink.central_pii_key``, :mod:`agent.wire.pii`); without that key it stays in the journal,
encrypted at rest, and central learns only that a loss was reported.

Each record's payload is encoded once and cached until it is acked, so a drain wake-up costs a
journal read, not a re-encode of the whole window. A sealed record the wire codec refuses
(``MessageEncodingError``: a value outside the schema's bounds, an upstream bug) is logged once
and left in the outbox, where the journal's unacked count shows it; the rest still drains.

PUBACKs (``mark_sent``) are buffered and written in batches: ``sent`` only records that the
broker took a copy, it never removes a record (``acked`` is accepted from ``sealed`` too), so a
crash that loses the buffer costs nothing and saves an fsync per record on the hot path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.errors import MessageEncodingError, WireError
from agent.journal import Journal, SealedRecord, record_digest
from agent.uplink.session import OutboxItem
from agent.wire.cbor import decode_deterministic
from agent.wire.codec import TxMessage
from agent.wire.pii import seal_personal

__all__ = ["JournalOutbox", "ParsedTx", "parse_tx", "tx_message", "tx_payload"]

log = logging.getLogger("agent.uplink.outbox")

MARK_SENT_BATCH = 64
#: Encoded payloads kept for records still in the outbox (a record is encoded once, not once
#: per drain wake-up); the cache only ever holds unacked records, at most this many.
PAYLOAD_CACHE_MAX = 4096


def tx_message(record: SealedRecord) -> TxMessage:
    """The typed ``tx`` message of a sealed record: its body fields plus ``mac``.

    ``MessageEncodingError`` if the journal sealed something the wire cannot carry (a value
    outside ``messages.cddl``'s bounds: a bug upstream, never the peer's fault).
    """
    try:
        fields = cbor2.loads(record.body)  # our own canonical bytes (checked in tx_payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        raise MessageEncodingError(f"sealed record {record.seq}: body is not CBOR") from None
    if not isinstance(fields, dict):
        raise MessageEncodingError(f"sealed record {record.seq}: body is not a map")
    return TxMessage.from_body(fields, record.mac)


def tx_payload(record: SealedRecord, pii_key: X25519PublicKey | None = None) -> bytes:
    """The ``tx`` message of a sealed record, deterministic CBOR (``TxMessage.to_cbor``).

    The stored body with the ``mac`` member spliced in (``TxMessage.with_mac``), so what
    central hashes is byte for byte what the security module sealed; the journal stores bodies
    in deterministic encoding (``agent.journal.codec.encode_body``). Its fields are checked
    against the wire's bounds first (``tx_message``). A record with personal data gets its
    ``pii`` member when central's key is given (:func:`agent.wire.pii.seal_personal`).
    """
    msg = tx_message(record)
    pii = None
    if record.personal and pii_key is not None:
        try:
            pii = seal_personal(
                record.personal, record.personal_salt, pii_key, msg.terminal_id, msg.tx_id
            )
        except WireError as exc:
            raise MessageEncodingError(f"sealed record {record.seq}: {exc.message}") from None
    return TxMessage.with_mac(record.body, record.mac, pii)


@dataclass(frozen=True, slots=True)
class ParsedTx:
    """A ``tx`` message taken apart for verification (central side)."""

    msg: TxMessage
    obj: dict[str, Any]  # the decoded message, "mac" included (for sampled schema checks)
    body: bytes  # canonical body = the bytes the terminal hashed
    digest: bytes

    @property
    def mac(self) -> bytes:
        return self.msg.mac

    @property
    def seq(self) -> int:
        return self.msg.seq

    @property
    def terminal(self) -> str:
        return self.msg.terminal_id

    @property
    def prev_hash(self) -> bytes:
        return self.msg.prev_hash


def parse_tx(payload: bytes) -> ParsedTx:
    """Decode hostile ``tx`` bytes through :class:`TxMessage`; ``WireError`` if malformed.

    One decode: the message must be deterministic CBOR (what a terminal sends), which
    ``decode_deterministic`` checks by encoding the decoded value again; ``TxMessage`` then
    takes exactly its fields with exactly their types, so the typed message encodes to the
    same bytes. The hashed body is cut out of the payload (``TxMessage.body_of``), byte for
    byte what the security module sealed.
    """
    raw = bytes(payload)
    obj = decode_deterministic(raw, max_size=TxMessage.MAX_SIZE)
    msg = TxMessage.from_obj(obj)
    body = TxMessage.body_of(raw)
    return ParsedTx(msg=msg, obj=obj, body=body, digest=record_digest(body))


class JournalOutbox:
    """``Outbox`` over the journal (sync; the session calls it from worker threads)."""

    def __init__(self, journal: Journal, pii_key: X25519PublicKey | None = None) -> None:
        self.journal = journal
        #: Central's key for personal data (``uplink.central_pii_key``); ``None``: loss reports
        #: made without the card go without it (logged once per record).
        self.pii_key = pii_key
        self._warned: set[int] = set()
        self._sent: list[int] = []
        self._lock = threading.Lock()
        self._payloads: dict[int, bytes] = {}
        self._poisoned: set[int] = set()

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        out = []
        for r in self.journal.unacked(after_seq, limit):
            with self._lock:
                payload = self._payloads.get(r.seq)
            if payload is None:
                if r.personal and self.pii_key is None and r.seq not in self._warned:
                    self._warned.add(r.seq)  # said once; the record still goes
                    log.warning(
                        "record %d goes without its personal data: uplink.central_pii_key is "
                        "not set, so central learns only that a loss was reported",
                        r.seq,
                    )
                try:
                    payload = tx_payload(r, self.pii_key)
                except MessageEncodingError as exc:
                    # Sealed but outside the wire's bounds (an upstream bug): it stays in the
                    # outbox, unacked and visible in the journal's stats, and the rest drains.
                    if r.seq not in self._poisoned:
                        self._poisoned.add(r.seq)
                        log.error(  # noqa: TRY400 - a known refusal, no traceback wanted
                            "sealed record %d cannot be sent: %s", r.seq, exc.message
                        )
                    continue
                with self._lock:
                    if len(self._payloads) >= PAYLOAD_CACHE_MAX:
                        self._payloads.clear()  # entries an ack raced past; start afresh
                    self._payloads[r.seq] = payload
            out.append(OutboxItem(r.seq, payload))
        return out

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
        n = self.journal.ack(ranges)
        with self._lock:
            for lo, hi in ranges:
                if hi - lo < len(self._payloads):
                    for s in range(lo, hi + 1):
                        self._payloads.pop(s, None)
                else:
                    for s in [s for s in self._payloads if lo <= s <= hi]:
                        del self._payloads[s]
        return n

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
