"""Durable journal: SQLite WAL store of transactions, outbox, blacklist, authorizations,
counters and events (DESIGN §4). See :mod:`agent.journal.store`."""

from agent.journal.codec import GENESIS_HASH, decode_body, encode_body, record_digest
from agent.journal.store import (
    Authorization,
    ChainReport,
    Journal,
    JournalEvent,
    JournalStats,
    PruneReport,
    SealDraft,
    SealedRecord,
    TxRow,
)

__all__ = [
    "GENESIS_HASH",
    "Authorization",
    "ChainReport",
    "Journal",
    "JournalEvent",
    "JournalStats",
    "PruneReport",
    "SealDraft",
    "SealedRecord",
    "TxRow",
    "decode_body",
    "encode_body",
    "record_digest",
]
