"""Gapless seq under concurrent sealers, and crash safety under SIGKILL (DESIGN §4, §9)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import JournalError, SealConflictError
from agent.journal.store import Journal
from agent.tx.machine import TABLE

from .conftest import done_and_seal, mac, record, verify_mac

ROOT = Path(__file__).resolve().parents[3]


def test_gapless_seq_under_concurrent_sealers(open_journal: Callable[..., Journal]) -> None:
    j = open_journal()
    per_thread, threads = 40, 4
    recs = [[record(f"T{t}-{i}") for i in range(per_thread)] for t in range(threads + 1)]
    errors: list[BaseException] = []

    def sealer(batch: list) -> None:  # type: ignore[type-arg]
        try:
            for r in batch:
                j.create_intent(r)
                j.transition(r.tx_id, "card_confirmed")
                time.sleep(0)  # let the others interleave
                j.seal(r.tx_id, lambda d: (time.sleep(0.0005), mac(d))[1])
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    def two_phase(batch: list) -> None:  # type: ignore[type-arg]
        """A sealer that does not take the seal mutex: must detect conflicts and retry."""
        try:
            for r in batch:
                j.create_intent(r)
                j.transition(r.tx_id, "card_confirmed")
                while True:
                    d = j.prepare_seal(r.tx_id)
                    try:
                        j.commit_seal(d, mac(d.digest))
                        break
                    except SealConflictError:
                        continue
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=sealer, args=(recs[t],)) for t in range(threads)]
    ts.append(threading.Thread(target=two_phase, args=(recs[threads],)))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    total = per_thread * (threads + 1)
    out = j.unacked(limit=total + 1)
    assert [s.seq for s in out] == list(range(1, total + 1))
    assert len({s.tx_id for s in out}) == total
    report = j.verify_chain(verify_mac)
    assert report.ok
    assert report.checked == total


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    rng = random.Random(9562)
    reported_sealed: dict[int, str] = {}
    reported_intents: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _round in range(6):
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_crash_child.py")), str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.4))
        child.send_signal(signal.SIGKILL)
        tail, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        for line in tail.splitlines():
            parts = line.split()
            if parts[:1] == ["sealed"] and len(parts) == 3:
                reported_sealed[int(parts[1])] = parts[2]
            elif parts[:1] == ["intent"] and len(parts) == 2:
                reported_intents.add(parts[1])

        j = Journal(path, transitions=TABLE)
        try:
            assert j.quarantined is None
            report = j.verify_chain(verify_mac)
            assert report.ok, report
            stored = {r.tx_id: r for r in j.records(limit=1_000_000)}
            # every intent the child saw committed is there, in some state
            assert reported_intents <= set(stored)
            # every reported seal is there with the same seq; nothing duplicated
            for seq, tx_id in reported_sealed.items():
                assert stored[tx_id].seq == seq
            seqs = [r.seq for r in stored.values() if r.seq is not None]
            assert len(seqs) == len(set(seqs))
            assert sorted(seqs) == list(range(1, len(seqs) + 1))
            assert report.checked == len(seqs)
        finally:
            j.close()
    assert len(reported_sealed) > 0


def test_seal_refused_when_a_prune_moved_the_anchor(journal: Journal) -> None:
    """Between prepare and commit another sealer took the seq and a prune removed it: the
    commit must not reuse the seq (the primary key alone would let it in)."""
    clock = [1_000_000]
    journal._clock = lambda: clock[0]  # type: ignore[method-assign]
    a, b = record("A"), record("B")
    for r in (a, b):
        journal.create_intent(r)
        journal.transition(r.tx_id, "card_confirmed")
    draft = journal.prepare_seal(a.tx_id)
    journal.seal(b.tx_id, mac)
    journal.ack([(1, 1)])
    clock[0] += 10 * 86_400_000
    assert journal.prune(1).records == 1
    with pytest.raises(SealConflictError):
        journal.commit_seal(draft, mac(draft.digest))
    assert journal.seal(a.tx_id, mac).seq == 2
    assert journal.verify_chain(verify_mac).ok


def test_seal_that_keeps_losing_the_race_finishes(open_journal: Callable[..., Journal]) -> None:
    """Another writer (its own connection, like another process) seals a record during every
    MAC: the optimistic attempts all conflict, and the last one, holding the write lock from
    prepare to commit, shuts the competitor out and seals."""
    j: Journal = open_journal()
    other: Journal = open_journal()
    other._conn.execute("PRAGMA busy_timeout = 50")
    blocked: list[str] = []

    def racing_mac(digest: bytes) -> bytes:
        try:
            done_and_seal(other, record(f"THIEF{len(blocked)}-{digest.hex()[:6]}"))
        except JournalError as exc:
            blocked.append(str(exc))
        return mac(digest)

    rec = record("SLOW")
    j.create_intent(rec)
    j.transition(rec.tx_id, "card_confirmed")
    sealed = j.seal(rec.tx_id, racing_mac, attempts=4)
    assert sealed.seq == 4  # three thieves got in first, one per optimistic attempt
    assert len(blocked) == 1  # the fourth was kept out while the last attempt held the lock
    assert j.verify_chain(verify_mac).ok
