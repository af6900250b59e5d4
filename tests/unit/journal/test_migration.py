"""Schema migrations on a real v1 store from the field (``tests/fixtures/journal_v1``, written
by the agent that only knew ``schemas/v1.sql``): opening it with this agent migrates it in place
and nothing is lost; the v2 indexes are the ones the hot queries use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.journal.store import Journal, schema_versions
from agent.tx.machine import TABLE
from tests.fixtures.journal_v1.make import row_summary

from .conftest import done_and_seal, record, verify_mac

FIXTURE = Path(__file__).parents[2] / "fixtures" / "journal_v1"


@pytest.fixture
def v1_store(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    for name in ("journal.db", "journal.db.key"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    (tmp_path / "journal.db.key").chmod(0o600)
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    return tmp_path / "journal.db", expected


def _version(path: Path) -> int:
    import sqlite3

    c = sqlite3.connect(path)
    try:
        return int(c.execute("PRAGMA user_version").fetchone()[0])
    finally:
        c.close()


def test_fixture_is_v1(v1_store: tuple[Path, dict[str, Any]]) -> None:
    path, _ = v1_store
    assert _version(path) == 1


def test_v1_store_migrates_without_loss(v1_store: tuple[Path, dict[str, Any]]) -> None:
    path, expected = v1_store
    now = expected["clock"]
    with Journal(path, transitions=TABLE, clock=lambda: now) as j:
        assert j.quarantined is None
        assert j._conn.execute("PRAGMA user_version").fetchone()[0] == max(schema_versions())
        assert j.integrity_check() is None
        report = j.verify_chain(verify_mac)
        assert report.ok, report
        assert report.checked == expected["chain_checked"]
        assert j.last_seq() == expected["last_seq"]
        assert [s.seq for s in j.unacked()] == expected["unacked"]
        for tx_id, want in expected["transactions"].items():
            row = j.get(tx_id)
            assert row is not None, tx_id
            assert row_summary(row) == want, tx_id
        assert j.blacklist_version() == expected["blacklist_version"]
        assert {c: j.blacklist_reason(c) for c in expected["blacklist"]} == expected["blacklist"]
        assert j.counter_get("activate_offline", "2026-02-10") == 2
        assert [e.kind for e in j.events()] == expected["events"]
        assert j.meta_get("terminal_note") == "v1 fixture"
        # the migrated store keeps working: the open intent is recovered, the in-doubt one is
        # found by card, the chain goes on from seq 9, an idempotency key stays unique
        stats = j.stats()
        assert (stats.open_intents, stats.in_doubt) == (1, 1)
        assert [r.card_id_code for r in j.recover_open_intents()] == ["CARD0300"]
        assert [r.card_id_code for r in j.in_doubt_for_card("CARD0200")] == ["CARD0200"]
        assert j.find_by_idempotency_key("kiosk-7f3a-0001") is not None
        sealed = done_and_seal(j, record("AFTER-MIGRATION"))
        assert sealed.seq == expected["last_seq"] + 1
        assert j.ack([(6, sealed.seq)]) == 4
        assert j.verify_chain(verify_mac).ok
    # and a second open is a no-op
    with Journal(path, transitions=TABLE) as j:
        assert j.last_seq() == expected["last_seq"] + 1


def _plan(j: Journal, sql: str, *args: object) -> str:
    rows = j._conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    return " | ".join(str(r[3]) for r in rows)


def test_hot_queries_use_the_v2_indexes(journal: Journal) -> None:
    """The literal open-state term must stay identical to the partial index's WHERE, or the
    planner silently falls back to scanning every record at start and on each health check."""
    from agent.journal.store import _OPEN, _OPEN_STATES, SCHEMA_DIR

    v2 = (SCHEMA_DIR / "v2.sql").read_text(encoding="utf-8")
    assert " ".join(f"WHERE {_OPEN};".split()) in " ".join(v2.split())
    assert f"state IN ({', '.join(repr(x) for x in _OPEN_STATES)})" == _OPEN
    assert "transactions_open" in _plan(
        journal, f"SELECT COUNT(*) FROM transactions WHERE {_OPEN} AND state = ?", "intent"
    )
    for state in _OPEN_STATES:  # records(state) and recovery
        assert "transactions_open" in _plan(
            journal, f"SELECT * FROM transactions t WHERE t.{_OPEN} AND t.state = ?", state
        )
    assert "transactions_idempotency" in _plan(
        journal, "SELECT * FROM transactions WHERE idempotency_key = ?", "k"
    )
    assert "transactions_open" in _plan(  # in_doubt_for_card: no card index since v2
        journal,
        f"SELECT * FROM transactions t WHERE t.{_OPEN} AND t.state = ? AND t.card_id_code = ?",
        "in_doubt",
        "C",
    )


def test_a_new_or_small_migrated_store_has_no_dead_pages(
    journal: Journal, v1_store: tuple[Path, dict[str, Any]]
) -> None:
    """A new store is made as v1 and migrated; the rebuilt tables' old pages are given back,
    so every page holds something the integrity check can vouch for."""
    assert journal._conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    path, _ = v1_store
    with Journal(path, transitions=TABLE) as j:
        assert j._conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert j.verify_chain(verify_mac).ok
