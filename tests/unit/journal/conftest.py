"""Shared helpers for the journal tests: a journal on the real state machine and a test MAC."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.journal.store import Journal, SealedRecord
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord

MAC_KEY = b"test-seal-key-not-for-production"


def mac(digest: bytes) -> bytes:
    return hmac.new(MAC_KEY, digest, hashlib.sha256).digest()[:8]


def verify_mac(digest: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(digest), tag)


def record(card: str = "CARD0001", kind: Kind = Kind.LOCK, **kw: object) -> TxRecord:
    return TxRecord(kind=kind, terminal_id="440300000001", card_id_code=card, offline=False, **kw)  # type: ignore[arg-type]


def done_and_seal(j: Journal, rec: TxRecord, *, ok: bool = True) -> SealedRecord:
    j.create_intent(rec)
    j.transition(rec.tx_id, "card_confirmed" if ok else "card_refused")
    return j.seal(rec.tx_id, mac)


@pytest.fixture
def open_journal(tmp_path: Path) -> Iterator[Callable[..., Journal]]:
    opened: list[Journal] = []

    def _open(name: str = "journal.db", **kw: object) -> Journal:
        j = Journal(tmp_path / name, transitions=TABLE, **kw)  # type: ignore[arg-type]
        opened.append(j)
        return j

    yield _open
    for j in opened:
        j.close()


@pytest.fixture
def journal(open_journal: Callable[..., Journal]) -> Journal:
    return open_journal()
