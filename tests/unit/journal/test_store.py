"""Journal behaviour: lifecycle through the state machine, outbox, chain, blacklist,
authorizations, counters, events, personal data at rest (DESIGN §4)."""

from __future__ import annotations

import dataclasses
import itertools
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import (
    BlacklistVersionError,
    DuplicateIntentError,
    InvalidTransitionError,
    JournalError,
    PolicyRefusal,
    SealConflictError,
)
from agent.journal.codec import GENESIS_HASH, decode_body, record_digest
from agent.journal.store import Journal, schema_versions
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord, canonical_bytes

from .conftest import done_and_seal, mac, record, verify_mac

DAY = 86_400_000


def test_pragmas(journal: Journal) -> None:
    c = journal._conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA user_version").fetchone()[0] == max(schema_versions())


def test_full_lifecycle(journal: Journal) -> None:
    rec = record(idempotency_key="req-1", reason="citizen request")
    row = journal.create_intent(rec)
    assert row.state == "intent"
    assert row.outcome is None
    assert row.seq is None
    assert [r.tx_id for r in journal.open_intents()] == [rec.tx_id]
    row = journal.transition(rec.tx_id, "card_confirmed", result="locked")
    assert (row.state, row.outcome, row.result) == ("card_done", "done", "locked")
    sealed = journal.seal(rec.tx_id, mac)
    assert sealed.seq == 1
    assert sealed.prev_hash == GENESIS_HASH
    assert sealed.hash == record_digest(sealed.body)
    # the journal's body is exactly the one tx.records computes from the stored row
    stored = TxRecord.from_row(journal.get(rec.tx_id))  # type: ignore[arg-type]
    assert canonical_bytes(stored, 1, GENESIS_HASH) == sealed.body
    assert stored.state == "sealed"
    assert stored.hash == sealed.hash
    assert stored.mac == sealed.mac
    assert [s.seq for s in journal.unacked()] == [1]
    assert journal.mark_sent([1]) == 1
    assert journal.get(rec.tx_id).state == "sent"  # type: ignore[union-attr]
    assert journal.ack([(1, 1)]) == 1
    assert journal.get(rec.tx_id).state == "acked"  # type: ignore[union-attr]
    assert journal.unacked() == []
    assert journal.ack([(1, 1)]) == 0  # idempotent
    assert journal.mark_sent([1]) == 0  # late PUBACK after the central ack
    assert journal.find_by_idempotency_key("req-1").tx_id == rec.tx_id  # type: ignore[union-attr]
    assert journal.find_by_idempotency_key("nope") is None


def test_failed_records_are_sealed_and_delivered(journal: Journal) -> None:
    rec = record()
    journal.create_intent(rec)
    journal.transition(rec.tx_id, "card_refused", error_code="card_locked")
    s = journal.seal(rec.tx_id, mac)
    body = decode_body(s.body)
    assert body["outcome"] == "failed"
    assert body["error_code"] == "card_locked"


@pytest.mark.parametrize("event", ["sealed", "published", "acked", "ack_timeout"])
def test_outbox_events_are_not_for_transition(journal: Journal, event: str) -> None:
    rec = record()
    journal.create_intent(rec)
    with pytest.raises(InvalidTransitionError):
        journal.transition(rec.tx_id, event)


def test_transition_obeys_the_table(journal: Journal) -> None:
    rec = record()
    journal.create_intent(rec)
    with pytest.raises(InvalidTransitionError):
        journal.transition(rec.tx_id, "resolved_done")  # intent is not in_doubt
    with pytest.raises(InvalidTransitionError):
        journal.seal(rec.tx_id, mac)  # intent cannot be sealed
    journal.transition(rec.tx_id, "card_confirmed")
    with pytest.raises(InvalidTransitionError):
        journal.transition(rec.tx_id, "card_refused")
    with pytest.raises(JournalError):
        journal.transition(rec.tx_id, "card_confirmed", state="acked")  # not a mutable field
    with pytest.raises(JournalError):
        journal.transition("no-such-tx", "card_confirmed")
    assert journal.get(rec.tx_id).state == "card_done"  # type: ignore[union-attr]


def test_crash_recovery_and_in_doubt_resolution(journal: Journal) -> None:
    a, b, c = record("C1"), record("C1"), record("C2")
    for r in (a, b, c):
        journal.create_intent(r)
    journal.transition(c.tx_id, "card_confirmed")
    recovered = journal.recover_open_intents()
    assert {r.tx_id for r in recovered} == {a.tx_id, b.tx_id}
    assert journal.open_intents() == []
    assert [r.tx_id for r in journal.in_doubt_for_card("C1")] == [a.tx_id, b.tx_id]
    assert journal.in_doubt_for_card("C2") == []
    journal.transition(a.tx_id, "resolved_done")
    journal.transition(b.tx_id, "resolved_failed")
    assert (journal.get(a.tx_id).outcome, journal.get(b.tx_id).outcome) == ("done", "failed")  # type: ignore[union-attr]
    assert journal.in_doubt_for_card("C1") == []


def test_duplicates_are_refused(journal: Journal) -> None:
    rec = record(idempotency_key="k")
    journal.create_intent(rec)
    with pytest.raises(DuplicateIntentError):
        journal.create_intent(rec)
    with pytest.raises(DuplicateIntentError):
        journal.create_intent(record(idempotency_key="k"))


def test_seq_is_gapless_and_chained(journal: Journal) -> None:
    sealed = [done_and_seal(journal, record(f"C{i}"), ok=i % 3 != 0) for i in range(20)]
    assert [s.seq for s in sealed] == list(range(1, 21))
    for prev, cur in itertools.pairwise(sealed):
        assert cur.prev_hash == prev.hash
    report = journal.verify_chain(verify_mac)
    assert report.ok
    assert report.checked == 20
    assert (report.first_seq, report.last_seq) == (1, 20)


def test_unacked_cursor_and_requeue(journal: Journal) -> None:
    for i in range(5):
        done_and_seal(journal, record(f"C{i}"))
    assert [s.seq for s in journal.unacked(after_seq=2, limit=2)] == [3, 4]
    journal.mark_sent([1, 2, 3])
    journal.ack([(2, 2)])
    assert [(s.seq, s.state) for s in journal.unacked()] == [
        (1, "sent"), (3, "sent"), (4, "sealed"), (5, "sealed"),
    ]  # fmt: skip
    assert journal.requeue([1, 2, 4]) == 1  # only the sent, unacked one moves
    assert journal.sealed_record(1).state == "sealed"  # type: ignore[union-attr]
    assert journal.ack([(1, 3), (4, 100)]) == 4
    assert journal.unacked() == []
    with pytest.raises(JournalError):
        journal.ack([(5, 4)])


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("body", None, "hash does not match the body"),
        ("hash", b"\x00" * 32, "hash does not match the body"),
        ("prev_hash", b"\x01" * 32, "prev_hash does not link to the previous record"),
        ("mac", b"\x00" * 8, "MAC does not verify"),
    ],
)
def test_tampered_row_is_found(
    journal: Journal, column: str, value: bytes | None, reason: str
) -> None:
    for i in range(6):
        done_and_seal(journal, record(f"C{i}"))
    if value is None:  # change one field of the body, keep it valid CBOR
        body = journal.sealed_record(4).body  # type: ignore[union-attr]
        value = body.replace(b"C3", b"C9")
        assert value != body
    journal._conn.execute(f"UPDATE outbox SET {column} = ? WHERE seq = 4", (value,))
    report = journal.verify_chain(verify_mac)
    assert not report.ok
    assert (report.bad_seq, report.reason, report.checked) == (4, reason, 3)


def test_consistent_forgery_without_the_mac_key_is_found(journal: Journal) -> None:
    """Rewriting body + hash + the next prev_hash consistently still fails on the MAC."""
    for i in range(3):
        done_and_seal(journal, record(f"C{i}"))
    body = journal.sealed_record(2).body.replace(b"C1", b"C7")  # type: ignore[union-attr]
    h = record_digest(body)
    journal._conn.execute("UPDATE outbox SET body = ?, hash = ? WHERE seq = 2", (body, h))
    journal._conn.execute("UPDATE outbox SET prev_hash = ? WHERE seq = 3", (h,))
    assert journal.verify_chain().ok is False  # seq 3's body still names the old prev_hash
    report = journal.verify_chain(verify_mac)
    assert (report.ok, report.bad_seq, report.reason) == (False, 2, "MAC does not verify")


def test_gap_is_found(journal: Journal) -> None:
    for i in range(4):
        done_and_seal(journal, record(f"C{i}"))
    journal._conn.execute("PRAGMA foreign_keys = OFF")
    journal._conn.execute("DELETE FROM outbox WHERE seq = 2")
    report = journal.verify_chain(verify_mac)
    assert (report.ok, report.bad_seq) == (False, 3)
    assert report.reason is not None
    assert report.reason.startswith("gap")


def test_prepare_commit_conflict(journal: Journal) -> None:
    a, b = record("A"), record("B")
    for r in (a, b):
        journal.create_intent(r)
        journal.transition(r.tx_id, "card_confirmed")
    da = journal.prepare_seal(a.tx_id)
    db = journal.prepare_seal(b.tx_id)
    assert da.seq == db.seq == 1
    journal.commit_seal(db, mac(db.digest))
    with pytest.raises(SealConflictError):
        journal.commit_seal(da, mac(da.digest))
    journal.seal(a.tx_id, mac)
    assert journal.verify_chain(verify_mac).ok


def test_commit_seal_refuses_a_record_changed_since_prepare(journal: Journal) -> None:
    """Another writer moved the record between prepare and commit: nothing is written (no
    outbox row, state unchanged), and a fresh prepare seals it."""
    table = {**TABLE, ("card_done", "annotated"): "card_done"}
    with Journal(journal.path.with_name("changed.db"), transitions=table) as j:  # type: ignore[arg-type]
        rec = record()
        j.create_intent(rec)
        j.transition(rec.tx_id, "card_confirmed")
        draft = j.prepare_seal(rec.tx_id)
        j._clock = lambda: draft.updated_at + 5  # type: ignore[method-assign]
        j.transition(rec.tx_id, "annotated", result="changed")
        with pytest.raises(SealConflictError):
            j.commit_seal(draft, mac(draft.digest))
        row = j.get(rec.tx_id)
        assert row is not None
        assert (row.state, row.seq, row.result) == ("card_done", None, "changed")
        assert j.unacked() == []
        sealed = j.seal(rec.tx_id, mac)
        assert sealed.seq == draft.seq
        assert j.verify_chain(verify_mac).ok


async def test_seal_async(journal: Journal) -> None:
    async def amac(digest: bytes) -> bytes:
        return mac(digest)

    recs = [record(f"C{i}") for i in range(3)]
    for r in recs:
        journal.create_intent(r)
        journal.transition(r.tx_id, "card_confirmed")
    import asyncio

    out = await asyncio.gather(*(journal.seal_async(r.tx_id, amac) for r in recs))
    assert sorted(s.seq for s in out) == [1, 2, 3]
    assert journal.verify_chain(verify_mac).ok


def test_prune_keeps_a_verifiable_chain(open_journal: Callable[..., Journal]) -> None:
    now = [1_700_000_000_000]
    j = open_journal(clock=lambda: now[0])
    for i in range(6):
        done_and_seal(j, record(f"C{i}"))
    j.ack([(1, 2), (4, 4)])  # 3 is not acked: only 1..2 form a prunable prefix
    now[0] += 200 * DAY
    done_and_seal(j, record("late"))
    rep = j.prune(180)
    assert rep.records == 2
    assert [s.seq for s in j.unacked()] == [3, 5, 6, 7]
    report = j.verify_chain(verify_mac)
    assert report.ok
    assert report.first_seq == 3
    assert report.checked == 5
    j.ack([(1, 7)])
    now[0] += 200 * DAY
    assert j.prune(180).records == 5
    assert j.verify_chain(verify_mac).ok
    assert j.last_seq() == 7
    s = done_and_seal(j, record("after-prune"))  # seq continues after an empty outbox
    assert s.seq == 8
    report = j.verify_chain(verify_mac)
    assert report.ok
    assert (report.first_seq, report.checked) == (8, 1)


def test_personal_data_is_encrypted_at_rest(
    open_journal: Callable[..., Journal], tmp_path: Path
) -> None:
    j = open_journal()
    ssn, name = "110101199003071234", "张三丰"
    rec = TxRecord(
        kind=Kind.REPORT_LOSS, terminal_id="t", card_id_code=None, offline=True,
        personal={"ssn": ssn, "name": name},
    )  # fmt: skip
    j.create_intent(rec)
    j.transition(rec.tx_id, "card_confirmed", result="pending")
    s = j.seal(rec.tx_id, mac)
    j.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("journal.db*") if p.suffix != ".key")
    assert ssn.encode() not in raw
    assert name.encode("utf-8") not in raw
    key = tmp_path / "journal.db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    j2 = open_journal()
    row = j2.get(rec.tx_id)
    assert row is not None
    assert row.personal == {"ssn": ssn, "name": name}
    assert "110101" not in repr(row)
    out = j2.unacked()[0]
    assert out.personal == {"ssn": ssn, "name": name}
    assert (
        decode_body(s.body)["personal_digest"]
        == TxRecord.from_row(row).body_fields(1, GENESIS_HASH)["personal_digest"]
    )
    # a lost key: records still readable, personal data gone (not an exception)
    j2.close()
    key.unlink()
    j3 = open_journal()
    assert j3.get(rec.tx_id).personal is None  # type: ignore[union-attr]
    assert j3.verify_chain(verify_mac).ok


def test_key_file_permissions_are_tightened(tmp_path: Path) -> None:
    from agent.journal.atrest import AtRestKeyError, load_or_create_key

    k = tmp_path / "k"
    key = load_or_create_key(k)
    k.chmod(0o644)
    assert load_or_create_key(k) == key
    assert stat.S_IMODE(k.stat().st_mode) == 0o600
    k.write_bytes(b"short")
    with pytest.raises(AtRestKeyError):
        load_or_create_key(k)


def test_blacklist_snapshot_and_delta(journal: Journal) -> None:
    assert journal.blacklist_version() == 0
    assert (
        journal.blacklist_snapshot_replace(5, [("A", "temporary_loss"), ("B", "formal_loss")]) == 2
    )
    assert journal.blacklist_reason("A") == "temporary_loss"
    assert journal.is_blacklisted("B")
    assert not journal.is_blacklisted("C")
    journal.blacklist_apply_delta(5, 6, added=[("C", "replaced")], removed=["A"])
    assert (journal.blacklist_version(), journal.blacklist_size()) == (6, 2)
    assert not journal.is_blacklisted("A")
    assert journal.blacklist_reason("C") == "replaced"
    journal.blacklist_apply_delta(5, 6, added=[("Z", "x")], removed=[])  # re-delivery: no-op
    assert not journal.is_blacklisted("Z")
    with pytest.raises(BlacklistVersionError):
        journal.blacklist_apply_delta(7, 8, added=[("D", "x")], removed=[])
    with pytest.raises(JournalError):
        journal.blacklist_apply_delta(6, 6, added=[], removed=[])
    assert journal.blacklist_version() == 6
    assert not journal.is_blacklisted("D")


def test_blacklist_lookup_uses_the_primary_key(journal: Journal) -> None:
    plan = journal._conn.execute(
        "EXPLAIN QUERY PLAN SELECT reason FROM blacklist WHERE card_id_code = ?", ("x",)
    ).fetchall()
    assert any("PRIMARY KEY" in str(r[-1]) for r in plan)


def test_blacklist_100k_snapshot_and_failed_delta_leaves_old_version(journal: Journal) -> None:
    n = 100_000
    journal.blacklist_snapshot_replace(1, ((f"CARD{i:08d}", "formal_loss") for i in range(n)))
    assert (journal.blacklist_size(), journal.blacklist_version()) == (n, 1)
    journal.blacklist_apply_delta(
        1, 2, added=((f"NEW{i:06d}", "temporary_loss") for i in range(50_000)),
        removed=(f"CARD{i:08d}" for i in range(0, n, 2)),
    )  # fmt: skip
    assert (journal.blacklist_size(), journal.blacklist_version()) == (100_000, 2)

    def exploding() -> object:
        for i in range(10_000):
            yield (f"BAD{i}", "x")
        raise RuntimeError("feed broke mid-delta")

    with pytest.raises(RuntimeError):
        journal.blacklist_apply_delta(2, 3, added=exploding(), removed=["CARD00000001"])  # type: ignore[arg-type]
    assert (journal.blacklist_size(), journal.blacklist_version()) == (100_000, 2)
    assert journal.is_blacklisted("CARD00000001")
    assert not journal.is_blacklisted("BAD1")
    with pytest.raises(RuntimeError):
        journal.blacklist_snapshot_replace(9, exploding())  # type: ignore[arg-type]
    assert (journal.blacklist_size(), journal.blacklist_version()) == (100_000, 2)


def test_authorizations(open_journal: Callable[..., Journal]) -> None:
    now = [1_000_000]
    j = open_journal(clock=lambda: now[0])
    assert j.add_authorization("A1", "CARD", "unlock", 2_000_000, b"signed")
    assert not j.add_authorization("A1", "CARD", "unlock", 2_000_000, b"signed")  # re-delivery
    j.add_authorization("A0", "CARD", "unlock", 1_500_000, b"signed0")
    j.add_authorization("P1", "CARD", "pin_reset", 2_000_000, b"p")
    with pytest.raises(JournalError):
        j.add_authorization("X", "CARD", "lock", 2_000_000, b"")
    assert j.find_valid_authorization("CARD", "unlock").auth_id == "A0"  # type: ignore[union-attr]
    assert j.find_valid_authorization("OTHER", "unlock") is None
    assert j.find_valid_authorization("CARD", "pin_unblock") is None
    now[0] = 1_600_000  # A0 expired
    assert j.find_valid_authorization("CARD", "unlock").auth_id == "A1"  # type: ignore[union-attr]
    assert not j.consume_authorization("A0", "tx")  # expired
    assert j.consume_authorization("A1", "tx1")
    assert not j.consume_authorization("A1", "tx2")  # used
    assert j.find_valid_authorization("CARD", "unlock") is None
    assert j.get_authorization("A1").used_by == "tx1"  # type: ignore[union-attr]


def test_create_intent_consumes_its_authorization_atomically(
    open_journal: Callable[..., Journal],
) -> None:
    now = [1_000_000]
    j = open_journal(clock=lambda: now[0])
    j.add_authorization("A1", "CARD", "unlock", 2_000_000, b"s")
    first = record("CARD", Kind.UNLOCK, auth_id="A1")
    j.create_intent(first)
    assert j.get_authorization("A1").used_by == first.tx_id  # type: ignore[union-attr]
    second = record("CARD", Kind.UNLOCK, auth_id="A1")
    with pytest.raises(PolicyRefusal) as err:
        j.create_intent(second)
    assert err.value.code == "authorization_unavailable"
    assert j.get(second.tx_id) is None  # nothing written
    j.add_authorization("A2", "CARD", "pin_reset", 2_000_000, b"s")
    with pytest.raises(PolicyRefusal):  # wrong kind
        j.create_intent(record("CARD", Kind.UNLOCK, auth_id="A2"))
    with pytest.raises(PolicyRefusal):  # wrong card
        j.create_intent(record("OTHER", Kind.PIN_RESET, auth_id="A2"))


def test_counters_and_events(journal: Journal) -> None:
    assert journal.counter_get("activate_offline", "2025-01-31") == 0
    assert journal.counter_incr("activate_offline", "2025-01-31") == 1
    assert journal.counter_incr("activate_offline", "2025-01-31", 2) == 3
    assert journal.counter_get("activate_offline", "2025-02-01") == 0
    e1 = journal.add_event("refused", {"code": "online_only", "card": "C1"})
    e2 = journal.add_event("auto_lock", {"card": "C2"})
    assert [e.kind for e in journal.events()] == ["refused", "auto_lock"]
    assert journal.events(after_id=e1)[0].data == {"card": "C2"}
    journal.mark_events_reported([e1])
    assert [e.id for e in journal.events(unreported_only=True)] == [e2]


def test_stats_and_meta(journal: Journal) -> None:
    done_and_seal(journal, record("A"))
    journal.create_intent(record("B"))
    st = journal.stats()
    assert (st.transactions, st.open_intents, st.unacked, st.last_seq) == (2, 1, 1, 1)
    assert st.size_bytes > 0
    assert st.oldest_unacked_at is not None
    journal.meta_set("x", "y")
    assert journal.meta_get("x") == "y"
    assert journal.meta_get("nope") is None
    assert journal.integrity_check() is None


def test_memory_journal_works() -> None:
    from agent.tx.machine import TABLE

    with Journal(":memory:", transitions=TABLE) as j:
        s = done_and_seal(j, record())
        assert s.seq == 1
        assert j.verify_chain(verify_mac).ok


def test_errors_from_sqlite_are_translated(journal: Journal) -> None:
    journal._conn.execute("DROP TABLE counters")
    with pytest.raises(JournalError) as err:
        journal.counter_incr("x", "y")
    assert err.value.__suppress_context__  # no sqlite3 exception leaks as the cause
    assert "counter" in err.value.message


# ---- rows returned by the writers are the rows stored -------------------------------------
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(list(Kind)),
    card=st.none() | st.text(alphabet="0123456789ABCDEF", min_size=32, max_size=32),
    offline=st.booleans(),
    reason=st.none() | _TEXT,
    keyed=st.booleans(),
    personal=st.none() | st.dictionaries(_TEXT, _TEXT, max_size=3),
    fields=st.dictionaries(st.sampled_from(["reason", "result", "error_code"]), st.none() | _TEXT),
    ok=st.booleans(),
)
def test_rows_returned_by_create_and_transition_equal_the_stored_rows(
    journal: Journal,
    kind: Kind,
    card: str | None,
    offline: bool,
    reason: str | None,
    keyed: bool,
    personal: dict[str, str] | None,
    fields: dict[str, str | None],
    ok: bool,
) -> None:
    """``create_intent`` builds its row from what it wrote and ``transition`` reads it back with
    ``UPDATE … RETURNING``; neither may differ from a fresh ``get`` (personal data included)."""
    rec = TxRecord(
        kind=kind,
        terminal_id="440300000001",
        card_id_code=card,
        offline=offline,
        reason=reason,
        personal=personal,
    )
    if keyed:  # unique per example: the journal outlives the examples
        rec = dataclasses.replace(rec, idempotency_key=f"idem-{rec.tx_id}")
    created = journal.create_intent(rec)
    assert created == journal.get(rec.tx_id)
    assert created.personal == journal.get(rec.tx_id).personal  # type: ignore[union-attr]
    moved = journal.transition(rec.tx_id, "card_confirmed" if ok else "card_refused", **fields)
    assert moved == journal.get(rec.tx_id)
    assert moved.personal == created.personal
    sealed = journal.seal(rec.tx_id, mac)
    after = journal.get(rec.tx_id)
    assert after is not None
    assert (after.seq, after.hash, after.mac) == (sealed.seq, sealed.hash, sealed.mac)


def test_transition_of_a_sealed_record_returns_its_chain_fields(tmp_path: Path) -> None:
    """A table with an event out of ``sealed`` (not ours, but the journal takes any table):
    the row ``transition`` returns still carries the record's seq, hash and MAC."""
    table = {**TABLE, ("sealed", "annotated"): "sealed"}
    with Journal(tmp_path / "j.db", transitions=table) as j:  # type: ignore[arg-type]
        rec = record()
        sealed = done_and_seal(j, rec)
        moved = j.transition(rec.tx_id, "annotated", result="noted")
        assert (moved.seq, moved.prev_hash, moved.hash, moved.mac) == (
            sealed.seq, sealed.prev_hash, sealed.hash, sealed.mac,
        )  # fmt: skip
        assert moved == j.get(rec.tx_id)


def test_card_codes_like_finds_distinct_cards_of_the_asked_kinds_only(journal: Journal) -> None:
    for card, kind in [
        ("4403AA01", Kind.LOCK),
        ("4403AA01", Kind.AUTO_LOCK),  # the same card twice: one code
        ("4403BB01", Kind.UNLOCK),  # matches, but not a lock
        ("5501AA01", Kind.LOCK),  # a lock, but no match
        ("4403CC01", Kind.AUTO_LOCK),
    ]:
        journal.create_intent(record(card, kind))
    locks = ("lock", "auto_lock")
    assert journal.card_codes_like("4403AA__", locks) == ["4403AA01"]
    assert sorted(journal.card_codes_like("4403____", locks)) == ["4403AA01", "4403CC01"]
    assert len(journal.card_codes_like("4403____", locks, limit=1)) == 1
    assert journal.card_codes_like("4403BB__", locks) == []
    assert journal.card_codes_like("4403BB__", ["unlock"]) == ["4403BB01"]
    assert journal.card_codes_like("4403____", []) == []
