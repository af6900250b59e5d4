"""``Journal.ack``: set-based, idempotent, both tables in step, synchronous=FULL restored."""

from __future__ import annotations

import pytest

from agent.errors import JournalError
from agent.journal.store import Journal

from .conftest import done_and_seal, record


def _states(j: Journal) -> dict[int, tuple[str, str]]:
    rows = j._conn.execute(
        "SELECT o.seq, o.state, t.state FROM outbox o JOIN transactions t ON t.tx_id = o.tx_id"
    ).fetchall()
    return {seq: (o, t) for seq, o, t in rows}


def test_ranges_ack_sealed_and_sent_records_once(journal: Journal) -> None:
    for i in range(10):
        done_and_seal(journal, record(f"CARD{i:04d}"), ok=i % 3 != 0)
    assert journal.mark_sent([2, 3, 4]) == 3
    assert journal.ack([(2, 3), (5, 6), (9, 20)]) == 6  # sent and sealed alike; 20 is unknown
    states = _states(journal)
    assert {s for s, st in states.items() if st == ("acked", "acked")} == {2, 3, 5, 6, 9, 10}
    assert states[4] == ("sent", "sent")
    assert states[1] == ("sealed", "sealed")
    assert journal.ack([(1, 10)]) == 4  # idempotent: only the rest
    assert journal.ack([(1, 10)]) == 0
    assert journal.unacked() == []
    assert journal.mark_sent([4]) == 0  # a late PUBACK changes nothing
    assert all(r[0] is not None for r in journal._conn.execute("SELECT acked_at FROM outbox"))


def test_bad_and_empty_ranges(journal: Journal) -> None:
    done_and_seal(journal, record())
    with pytest.raises(JournalError):
        journal.ack([(1, 1), (3, 2)])
    assert journal.unacked()[0].state == "sealed"  # nothing of a refused call was applied
    assert journal.ack([]) == 0


def test_ack_leaves_the_store_at_synchronous_full(journal: Journal) -> None:
    done_and_seal(journal, record())
    journal.ack([(1, 1)])
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_mark_sent_and_requeue_in_chunks_with_repeats_and_strangers(journal: Journal) -> None:
    """A drain's PUBACK batch: more seqs than one ``IN`` list holds, repeated seqs, seqs the
    journal does not have and records already acked. Each record moves once, by the table."""
    n = 1203  # > 2 chunks of 500
    for i in range(n):
        done_and_seal(journal, record(f"CARD{i:04d}"))
    journal.ack([(1, 3)])
    seqs = [*range(n, 0, -1), 5, 5, n + 7, 0, -1]
    assert journal.mark_sent(seqs) == n - 3  # 1..3 acked: a late PUBACK changes nothing
    states = _states(journal)
    assert {states[s] for s in range(4, n + 1)} == {("sent", "sent")}
    assert {states[s] for s in (1, 2, 3)} == {("acked", "acked")}
    assert journal.mark_sent(seqs) == 0  # idempotent
    assert journal.requeue([*range(1, 601), 600]) == 597  # sent -> sealed; acked ones stay
    states = _states(journal)
    assert {states[s] for s in range(4, 601)} == {("sealed", "sealed")}
    assert {states[s] for s in range(601, n + 1)} == {("sent", "sent")}
    sent_at = dict(journal._conn.execute("SELECT seq, sent_at FROM outbox").fetchall())
    assert sent_at[4] is None  # a requeued record is unsent again
    assert sent_at[n] is not None
    assert journal.mark_sent([]) == 0
