"""Child process for the crash-safety test: seals records forever, reporting each commit.

Run as ``python _crash_child.py <journal path>``; prints ``ready``, then ``intent <tx_id>``
after each committed intent and ``sealed <seq> <tx_id>`` after each committed seal.
"""

from __future__ import annotations

import hashlib
import hmac
import sys

from agent.journal.store import Journal
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord


def mac(digest: bytes) -> bytes:
    return hmac.new(b"test-seal-key-not-for-production", digest, hashlib.sha256).digest()[:8]


def main() -> None:
    j = Journal(sys.argv[1], transitions=TABLE)
    for row in j.recover_open_intents():
        j.transition(row.tx_id, "resolved_failed")
    for state in ("card_done", "failed"):
        for row in j.records(state):
            j.seal(row.tx_id, mac)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        i += 1
        rec = TxRecord(kind=Kind.LOCK, terminal_id="t1", card_id_code=f"C{i}", offline=True)
        j.create_intent(rec)
        out.write(f"intent {rec.tx_id}\n")
        out.flush()
        j.transition(rec.tx_id, "card_confirmed" if i % 4 else "card_refused")
        s = j.seal(rec.tx_id, mac)
        out.write(f"sealed {s.seq} {rec.tx_id}\n")
        out.flush()
        if i % 7 == 0:
            j.ack([(max(1, s.seq - 3), s.seq)])


if __name__ == "__main__":
    main()
