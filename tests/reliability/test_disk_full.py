"""Disk full during a mixed load (DESIGN §4: "a full disk refuses new work with a clear error
and never damages committed records").

The store lives on a tiny tmpfs (when the test runs as root and may mount one: a real ENOSPC
from the kernel) or, otherwise, is bounded with ``Journal(max_bytes=…)`` (SQLITE_FULL at the
page limit, the same code path). The load: lock/unlock cycles of a virtual card through
``TxEngine`` (intent → card write → seal, with online authorizations for the unlocks) mixed with
journal events, until the journal keeps refusing.

What must hold:

* the refusal is ``JournalFullError`` (``retryable``), raised by the engine, never another error;
* nothing committed is lost: every record whose intent was committed (``tx_intent`` event) is in
  the journal after it is reopened with room again — no more, no fewer; every call that
  returned a sealed record finds it sealed; the hash chain with the PSAM MACs verifies; the
  file passes ``quick_check`` and is not quarantined;
* with room again, start-up recovery seals what was left ``card_done`` / resolves what was left
  ``intent`` against the card, and new transactions succeed, the chain continuing gaplessly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import JournalFullError
from tests.reliability.conftest import Figures, SimTerminal, open_journal, scaled

pytest.importorskip("agent.tx.engine", reason="needs agent.tx.engine (TxEngine), being written")

FILLER = {"pad": "x" * 1500}


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` at ``where``; yields False when that is not possible."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    ok = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if ok.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _grow(where: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(where)], capture_output=True, check=True
    )


async def _load_until_full(t: SimTerminal, max_ops: int) -> dict[str, Any]:
    """Run the mixed load; returns what happened (successes, refusals, records left open)."""
    sealed: list[str] = []
    refused_before_intent = 0
    full_after_intent: list[str] = []
    in_a_row = 0
    ops = 0
    not_retryable = 0
    while ops < max_ops and in_a_row < 10:
        ops += 1
        if ops % 2 == 0:
            with contextlib.suppress(JournalFullError):
                t.journal.add_event("filler", FILLER)
        known = len(t.intents)
        try:
            rec = await t.toggle()
        except JournalFullError as e:
            not_retryable += not e.retryable
            in_a_row += 1
            if len(t.intents) > known:
                full_after_intent.append(t.intents[-1])
            else:
                refused_before_intent += 1
            continue
        in_a_row = 0
        assert str(rec.state) in ("sealed", "card_done"), rec
        if str(rec.state) == "sealed":
            sealed.append(rec.tx_id)
    assert not_retryable == 0
    return {
        "ops": ops,
        "sealed": sealed,
        "refused_before_intent": refused_before_intent,
        "full_after_intent": full_after_intent,
    }


def _check_nothing_lost(t: SimTerminal, journal: Any, result: dict[str, Any]) -> dict[str, Any]:
    assert journal.quarantined is None
    assert journal.integrity_check() is None
    rows = {r.tx_id: r for r in journal.records(limit=100_000)}
    assert set(rows) == set(t.intents), "committed intents lost or phantom records"
    for tx_id in result["sealed"]:
        assert str(rows[tx_id].state) == "sealed", tx_id
    report = t.verify_chain(journal)
    assert report.ok, report
    stats = journal.stats()
    assert report.checked == stats.last_seq  # gapless from seq 1
    return {"records": len(rows), "chain_checked": report.checked}


async def _recover_and_continue(t: SimTerminal) -> None:
    from agent.tx.recovery import Recovery

    rec = Recovery(t.engine)
    await rec.start()
    await rec.on_card_seen(t.channel(), auto_lock=False)
    await rec.seal_pending()
    stats = t.journal.stats()
    assert stats.open_intents == 0
    assert stats.in_doubt == 0
    before = stats.last_seq
    for _ in range(4):
        out = await t.toggle()
        assert str(out.state) == "sealed"
    assert t.journal.stats().last_seq == before + 4
    assert t.verify_chain().ok


@pytest.mark.parametrize("backend", ["tmpfs", "max_bytes"])
async def test_disk_full_refuses_new_work_and_loses_nothing(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    rounds = scaled(1, 5)
    totals = {"ops": 0, "refusals": 0, "records": 0, "left_open": 0}
    for n in range(rounds):
        where = tmp_path / f"fs{n}"
        size_kib = 768 + 256 * n
        with (
            _tmpfs(where, f"{size_kib}k")
            if backend == "tmpfs"
            else contextlib.nullcontext(True) as mounted
        ):
            if backend == "tmpfs" and not mounted:
                pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
            where.mkdir(parents=True, exist_ok=True)
            db = where / "journal.db"
            limit = {"max_bytes": size_kib * 1024 // 4} if backend == "max_bytes" else {}
            journal = open_journal(db, **limit)
            t = SimTerminal(journal, seed=3 + n)
            result = await _load_until_full(t, scaled(3000, 10000))
            refusals = result["refused_before_intent"] + len(result["full_after_intent"])
            assert refusals >= 10, result
            assert result["sealed"], "the store was full before any work"
            # still in the same process: the store is consistent right now
            assert journal.integrity_check() is None
            journal.close()
            if backend == "tmpfs":
                _grow(where, "64m")
            reopened = open_journal(db)
            checked = _check_nothing_lost(t, reopened, result)
            t2 = SimTerminal(reopened, seed=3 + n)
            t2.card = t.card  # the same card is still in the reader
            t2.intents = list(t.intents)
            await _recover_and_continue(t2)
            reopened.close()
        totals["ops"] += result["ops"]
        totals["refusals"] += refusals
        totals["records"] += checked["records"]
        totals["left_open"] += len(result["full_after_intent"])
    figures.add(
        f"disk full ({backend})",
        "tmpfs of 768 KiB+ (ENOSPC)" if backend == "tmpfs" else "Journal(max_bytes) page limit",
        totals["ops"],
        0,
        rounds=rounds,
        refusals=totals["refusals"],
        committed_records_checked=totals["records"],
        intents_left_open_then_recovered=totals["left_open"],
    )
