"""A corrupt journal at start (DESIGN §4: "integrity check at start, a corrupt file is
quarantined and reported upstream").

A journal with sealed records is damaged while the agent is down — garbage over the whole
file, truncated mid-page, one page's bytes flipped, a zero-length file, a stray WAL — then
opened again. What must hold: the damaged file is moved aside (``<name>.corrupt-<stamp>``,
byte-for-byte as found: the evidence is kept, nothing is deleted), a fresh store is created,
a ``journal_quarantined`` event is queued for upstream, and the agent keeps working: a new
transaction runs and seals on the fresh chain. A journal whose damage SQLite does not notice
(a flip inside free space) is not quarantined and still verifies.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.reliability.conftest import Figures, SimTerminal, open_journal, scaled

pytest.importorskip("agent.tx.engine", reason="needs agent.tx.engine (TxEngine), being written")

DAMAGE = ("garbage", "truncated", "flipped_page", "header", "zero_length_wal_garbage")


async def _journal_with_records(db: Path, n: int = 6) -> SimTerminal:
    j = open_journal(db)
    t = SimTerminal(j)
    for _ in range(n):
        await t.toggle()
    j.close()
    return t


def _damage(db: Path, how: str, rng: random.Random) -> None:
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 4096
    if how == "garbage":
        db.write_bytes(rng.randbytes(len(raw)))
    elif how == "truncated":
        db.write_bytes(bytes(raw[: page + rng.randrange(1, page)]))
    elif how == "flipped_page":
        # page 2.. holds the schema's tables and indexes: overwrite one whole page with noise
        k = rng.randrange(1, max(2, len(raw) // page))
        raw[k * page : (k + 1) * page] = rng.randbytes(page)
        db.write_bytes(bytes(raw))
    elif how == "header":
        raw[:16] = b"NOT SQLITE AT AL"
        db.write_bytes(bytes(raw))
    else:  # an empty main file beside a garbage WAL
        db.write_bytes(b"")
        Path(f"{db}-wal").write_bytes(rng.randbytes(8192))


@pytest.mark.parametrize("how", DAMAGE)
async def test_corrupt_journal_is_quarantined_and_the_agent_keeps_working(
    how: str, tmp_path: Path, figures: Figures
) -> None:
    tries = scaled(2, 20)
    quarantined = 0
    unreported_loss = 0
    for i in range(tries):
        rng = random.Random(f"{how}-{i}")
        db = tmp_path / f"{i}" / "journal.db"
        db.parent.mkdir()
        await _journal_with_records(db)
        _damage(db, how, rng)
        damaged = db.read_bytes()
        j = open_journal(db)
        try:
            if j.quarantined is None:
                # not detected: the store must at least be sound; records the damage destroyed
                # without a quarantine event are counted as an unreported loss
                assert j.integrity_check() is None
                assert j.verify_chain().ok
                unreported_loss += 6 - j.stats().transactions
                continue
            quarantined += 1
            assert j.quarantined.exists()
            assert j.quarantined.read_bytes() == damaged, "evidence changed or lost"
            events = [e for e in j.events() if e.kind == "journal_quarantined"]
            assert len(events) == 1
            assert events[0].data["file"] == j.quarantined.name
            assert not events[0].reported  # queued for upstream
            t = SimTerminal(j, seed=11)
            rec = await t.toggle()
            assert str(rec.state) == "sealed"
            assert rec.seq == 1  # a fresh chain
            assert t.verify_chain().ok
            assert j.integrity_check() is None
        finally:
            j.close()
        # and the fresh store opens cleanly next time
        again = open_journal(db)
        assert again.quarantined is None
        assert again.stats().transactions == 1
        again.close()
    if how in ("garbage", "truncated", "header", "flipped_page"):
        assert quarantined == tries
        assert unreported_loss == 0
    figures.add(
        f"corrupt journal at start: {how}",
        "file damaged between runs",
        tries,
        unreported_loss,
        quarantined=quarantined,
        undetected_but_verified=tries - quarantined,
    )


async def test_a_journal_emptied_between_runs_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    await _journal_with_records(db)
    db.write_bytes(b"")
    j = open_journal(db)
    try:
        assert [e for e in j.events() if e.kind == "journal_quarantined"]
    finally:
        j.close()
