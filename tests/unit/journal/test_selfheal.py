"""Self-healing store (DESIGN §4): corrupt files are quarantined and the agent keeps working;
a full store refuses new work and never damages committed records; migrations."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import JournalError, JournalFullError
from agent.journal.store import Journal, schema_versions
from agent.tx.machine import TABLE

from .conftest import done_and_seal, mac, record, verify_mac


def _populated(open_journal: Callable[..., Journal], n: int = 200) -> Path:
    j = open_journal()
    for i in range(n):
        done_and_seal(j, record(f"CARD{i:04d}", reason="x" * 200))
    j.close()
    return j.path


def _assert_quarantined_and_working(j: Journal, path: Path) -> None:
    assert j.quarantined is not None
    assert j.quarantined.exists()
    assert j.quarantined.name.startswith(f"{path.name}.corrupt-")
    events = j.events()
    assert [e.kind for e in events] == ["journal_quarantined"]
    assert events[0].data["file"] == j.quarantined.name
    s = done_and_seal(j, record("AFTER"))  # the agent keeps working on a fresh store
    assert s.seq == 1
    assert j.verify_chain(verify_mac).ok


def test_garbage_file_is_quarantined(open_journal: Callable[..., Journal], tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(os.urandom(8192))
    j = open_journal()
    _assert_quarantined_and_working(j, path)
    assert j.quarantined is not None
    assert j.quarantined.read_bytes() != b""


def test_text_file_is_quarantined(open_journal: Callable[..., Journal], tmp_path: Path) -> None:
    (tmp_path / "journal.db").write_text("not a database\n")
    _assert_quarantined_and_working(open_journal(), tmp_path / "journal.db")


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_truncated_database_is_quarantined(
    open_journal: Callable[..., Journal], keep: float
) -> None:
    path = _populated(open_journal)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(int(size * keep) + 100)  # not on a page boundary
    _assert_quarantined_and_working(open_journal(), path)


def test_truncated_on_page_boundary_is_quarantined(open_journal: Callable[..., Journal]) -> None:
    path = _populated(open_journal)
    with path.open("r+b") as f:
        f.truncate(4096 * 3)
    _assert_quarantined_and_working(open_journal(), path)


def test_flipped_bytes_in_a_page_are_quarantined(open_journal: Callable[..., Journal]) -> None:
    path = _populated(open_journal)
    data = bytearray(path.read_bytes())
    # page 3 and onwards hold the tables' b-tree pages: smash a page header and cell pointers
    for page in (3, 5):
        off = 4096 * (page - 1)
        for k in range(0, 64):
            data[off + k] ^= 0xFF
    path.write_bytes(bytes(data))
    _assert_quarantined_and_working(open_journal(), path)


def test_wal_and_shm_move_with_the_corrupt_file(
    open_journal: Callable[..., Journal], tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"garbage" * 100)
    Path(f"{path}-wal").write_bytes(b"w")
    Path(f"{path}-shm").write_bytes(b"s")
    j = open_journal()
    assert j.quarantined is not None
    assert Path(f"{j.quarantined}-wal").read_bytes() == b"w"
    assert Path(f"{j.quarantined}-shm").read_bytes() == b"s"


def test_healthy_file_is_not_quarantined(open_journal: Callable[..., Journal]) -> None:
    path = _populated(open_journal, 10)
    j = open_journal()
    assert j.quarantined is None
    assert j.events() == []
    assert j.verify_chain(verify_mac).checked == 10
    assert path.exists()


# ---- full store ---------------------------------------------------------------------------
def _fill_until_full(j: Journal) -> int:
    for i in range(100_000):
        try:
            done_and_seal(j, record(f"CARD{i:06d}", reason="r" * 500))
        except JournalFullError:
            return i
    pytest.fail("the journal never became full")


def _assert_committed_intact(j: Journal, sealed: int) -> None:
    report = j.verify_chain(verify_mac)
    assert report.ok
    assert report.checked == sealed
    assert [s.seq for s in j.unacked(limit=sealed + 10)] == list(range(1, sealed + 1))


def test_full_database_refuses_new_intents_and_keeps_records(
    open_journal: Callable[..., Journal],
) -> None:
    now = [1_700_000_000_000]
    j = open_journal(max_bytes=256 * 1024, clock=lambda: now[0])
    sealed = _fill_until_full(j)
    assert sealed > 50
    refused: list[JournalFullError] = []
    for i in range(50):  # some may still fit in a partly filled page; then it refuses
        try:
            j.create_intent(record(f"NEW{i}", reason="r" * 2000))
        except JournalFullError as exc:
            refused.append(exc)
    assert len(refused) >= 45
    assert refused[0].code == "journal_full"
    assert refused[0].retryable
    _assert_committed_intact(j, sealed)
    # acks of existing rows still work; once acked records are pruned, new work is accepted
    assert j.ack([(1, sealed)]) == sealed
    now[0] += 2 * 86_400_000
    assert j.prune(1).records == sealed
    after = done_and_seal(j, record("AFTER-PRUNE"))
    assert after.seq == sealed + 1
    assert j.verify_chain(verify_mac).checked == 1
    j.close()
    j2 = open_journal()  # reopen without the bound: everything committed is still there
    report = j2.verify_chain(verify_mac)
    assert report.ok
    assert report.first_seq == sealed + 1
    assert j2.integrity_check() is None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs"
)
def test_full_disk_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    j: Journal | None = None
    try:
        j = Journal(mnt / "journal.db", transitions=TABLE)
        sealed = _fill_until_full(j)
        assert sealed > 0
        _assert_committed_intact(j, sealed)
        with pytest.raises(JournalFullError):
            j.create_intent(record("NEW", reason="r" * 4000))
        j.close()
        j = Journal(mnt / "journal.db", transitions=TABLE)
        assert j.quarantined is None
        _assert_committed_intact(j, sealed)
    finally:
        if j is not None:
            j.close()
        subprocess.run(["umount", str(mnt)], check=False)


# ---- migrations ---------------------------------------------------------------------------
def _schemas_plus(tmp_path: Path, sql: str) -> tuple[Path, int]:
    """The shipped schema files plus one more version with ``sql``; returns (dir, its number)."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shipped = schema_versions()
    for n, p in shipped.items():
        shutil.copy(p, schemas / f"v{n}.sql")
    nxt = max(shipped) + 1
    (schemas / f"v{nxt}.sql").write_text(sql)
    return schemas, nxt


def test_migration_to_a_new_version(open_journal: Callable[..., Journal], tmp_path: Path) -> None:
    path = _populated(open_journal, 5)
    schemas, nxt = _schemas_plus(
        tmp_path, "ALTER TABLE events ADD COLUMN source TEXT;\nCREATE TABLE extra (x INTEGER);\n"
    )
    j = Journal(path, transitions=TABLE, schema_dir=schemas)
    assert j._conn.execute("PRAGMA user_version").fetchone()[0] == nxt
    assert j._conn.execute("SELECT COUNT(*) FROM extra").fetchone()[0] == 0
    assert j.verify_chain(verify_mac).checked == 5  # data survived
    j.close()


def test_failed_migration_is_rolled_back(
    open_journal: Callable[..., Journal], tmp_path: Path
) -> None:
    path = _populated(open_journal, 3)
    schemas, nxt = _schemas_plus(tmp_path, "CREATE TABLE half (x);\nTHIS IS NOT SQL;\n")
    with pytest.raises(JournalError):
        Journal(path, transitions=TABLE, schema_dir=schemas)
    j = open_journal()
    assert j._conn.execute("PRAGMA user_version").fetchone()[0] == nxt - 1
    assert j._conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    assert j.quarantined is None
    assert j.verify_chain(verify_mac).checked == 3


def test_newer_schema_is_refused_not_quarantined(open_journal: Callable[..., Journal]) -> None:
    path = _populated(open_journal, 1)
    j = open_journal()
    j._conn.execute("PRAGMA user_version = 99")
    j.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path, transitions=TABLE)
    assert path.exists()


def test_schema_files_must_be_gapless(tmp_path: Path) -> None:
    (tmp_path / "v1.sql").write_text("")
    (tmp_path / "v3.sql").write_text("")
    with pytest.raises(JournalError):
        schema_versions(tmp_path)
    assert mac(b"x") != mac(b"y")
