"""The journal as outbox: every sealed record goes out as a ``TxMessage`` and comes back, at
central, as the exact sealed bytes (DESIGN §4-5); no personal data in the clear on the wire, and
a loss report's personal data sealed for central's key alone."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import WireError
from agent.journal import Journal, SealedRecord
from agent.journal.codec import personal_digest
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord
from agent.uplink.outbox import JournalOutbox, parse_tx, tx_message, tx_payload
from agent.wire import schema
from agent.wire.codec import TxMessage
from agent.wire.pii import open_personal

T = "440300907950"
SSN = "110101199003071234"
CARD_NUMBER = "A1234567X"


def mac(digest: bytes) -> bytes:
    return digest[:8]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    yield j  # type: ignore[misc]
    j.close()


def _seal(j: Journal, rec: TxRecord, event: str = "card_confirmed", **fields: str) -> SealedRecord:
    j.create_intent(rec)
    j.transition(rec.tx_id, event, **fields)
    return j.seal(rec.tx_id, mac)


def _mixed(j: Journal) -> list[SealedRecord]:
    """One record of each shape the journal seals."""
    card = "44030000D15600000586001A2B3C4D5E"
    j.add_authorization("ab" * 16, card, "pin_unblock", 2**62, b"signed")
    return [
        _seal(j, TxRecord(kind=Kind.LOCK, terminal_id=T, card_id_code=card, offline=True,
                          reason="holder", idempotency_key="kiosk/1"), result="ok"),
        _seal(j, TxRecord(kind=Kind.REPORT_LOSS, terminal_id=T, card_id_code=None, offline=True,
                          reason="holder",
                          personal={"ssn": SSN, "card_number": CARD_NUMBER, "name": "张三"}),
              result="pending"),
        _seal(j, TxRecord(kind=Kind.PIN_UNBLOCK, terminal_id=T, card_id_code=card, offline=True,
                          auth_id="ab" * 16), "card_refused", error_code="pin_blocked",
              result="declined"),
    ]  # fmt: skip


def test_every_sealed_shape_round_trips_to_the_sealed_bytes(journal: Journal) -> None:
    for sealed in _mixed(journal):
        msg = tx_message(sealed)
        assert msg.body_cbor() == sealed.body  # the typed message IS the sealed body
        assert msg.digest() == sealed.hash
        payload = tx_payload(sealed)
        schema.validate("tx-record", cbor2.loads(payload))
        rec = parse_tx(payload)
        assert rec.msg == msg
        assert rec.body == sealed.body
        assert rec.digest == sealed.hash
        assert (rec.seq, rec.terminal, rec.prev_hash, rec.mac) == (
            sealed.seq, T, sealed.prev_hash, sealed.mac,
        )  # fmt: skip


def test_loss_report_sends_no_personal_data(journal: Journal) -> None:
    loss = journal.sealed_record(_mixed(journal)[1].seq)
    assert loss is not None
    assert loss.personal is not None  # kept, encrypted, in the journal
    payload = tx_payload(loss)
    for secret in (SSN, CARD_NUMBER, "张三"):
        assert secret.encode() not in payload
    obj = cbor2.loads(payload)
    assert obj["card_id_code"] is None
    assert len(obj["personal_digest"]) == 32


def test_with_centrals_key_a_loss_report_carries_its_personal_data_sealed(
    journal: Journal,
) -> None:
    """Only central's key opens it, as the data the sealed personal_digest names; the other
    records carry nothing extra, and the plain text is nowhere in the message."""
    key = X25519PrivateKey.generate()
    lock, loss, unblock = _mixed(journal)
    box = JournalOutbox(journal, key.public_key())
    payloads = {i.seq: i.payload for i in box.pending(0, 10)}
    for plain in (lock, unblock):
        assert payloads[plain.seq] == tx_payload(plain)
    rec = parse_tx(payloads[loss.seq])
    assert rec.body == loss.body  # the sealed bytes, pii cut out
    assert rec.msg.pii is not None
    schema.validate("tx-record", rec.obj)
    data, salt = open_personal(rec.msg.pii, key, T, loss.tx_id)
    assert data == {"ssn": SSN, "card_number": CARD_NUMBER, "name": "张三"}
    assert personal_digest(data, salt) == rec.msg.personal_digest
    for secret in (SSN, CARD_NUMBER, "张三"):
        assert secret.encode() not in payloads[loss.seq]
    with pytest.raises(WireError):
        open_personal(rec.msg.pii, X25519PrivateKey.generate(), T, loss.tx_id)


def test_without_centrals_key_a_loss_report_goes_without_it_and_says_so_once(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    loss = _mixed(journal)[1]
    box = JournalOutbox(journal)
    for _ in range(2):
        items = {i.seq: i.payload for i in box.pending(0, 10)}
        assert "pii" not in cbor2.loads(items[loss.seq])
    warned = [r for r in caplog.records if "central_pii_key" in r.getMessage()]
    assert len(warned) == 1
    assert SSN not in warned[0].getMessage()


def test_parse_tx_refuses_non_deterministic_and_foreign_messages(journal: Journal) -> None:
    payload = tx_payload(_mixed(journal)[0])
    obj = cbor2.loads(payload)
    reordered = cbor2.dumps(dict(reversed(list(obj.items()))))  # valid, not canonical
    with pytest.raises(WireError, match="deterministic"):
        parse_tx(reordered)
    with pytest.raises(WireError):
        parse_tx(cbor2.dumps({**obj, "ssn": SSN}, canonical=True))
    with pytest.raises(WireError):
        parse_tx(payload + b"\x00")


def test_mac_is_not_part_of_the_body(journal: Journal) -> None:
    sealed = _mixed(journal)[0]
    forged = TxMessage.from_body(cbor2.loads(sealed.body), bytes(8)).to_cbor()
    assert parse_tx(forged).body == sealed.body
    assert parse_tx(forged).mac == bytes(8)


@given(st.binary(max_size=400), st.integers(0, 399), st.integers(0, 255))
@settings(max_examples=200, deadline=None)
def test_hostile_bytes_are_wire_errors_or_valid(raw: bytes, i: int, b: int) -> None:
    with contextlib.suppress(WireError):
        parse_tx(raw)
    good = bytearray(_GOOD)
    good[i % len(good)] = b
    with contextlib.suppress(WireError):
        rec = parse_tx(bytes(good))
        assert rec.msg.body_cbor() == rec.body  # whatever parses, the body is exact


_GOOD = TxMessage(
    terminal_id=T, seq=7, prev_hash=bytes(32), tx_id="019b7a4e-1c00-7d3a-8f2b-4c5d6e7f8091",
    kind="lock", outcome="done", offline=False, created_at=1, completed_at=2, mac=bytes(8),
    card_id_code="0" * 32,
).to_cbor()  # fmt: skip


def test_outbox_encodes_each_record_once_and_forgets_it_on_ack(journal: Journal) -> None:
    sealed = _mixed(journal)
    box = JournalOutbox(journal)
    first = box.pending(0, 10)
    assert [i.seq for i in first] == [1, 2, 3]
    assert [i.payload for i in first] == [tx_payload(s) for s in sealed]
    again = box.pending(0, 10)
    assert all(a.payload is b.payload for a, b in zip(first, again, strict=True))  # cached
    assert box.ack([(1, 2)]) == 2
    assert [i.seq for i in box.pending(0, 10)] == [3]
    assert set(box._payloads) == {3}


def test_a_record_the_wire_cannot_carry_stays_and_the_rest_drains(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    card = "44030000D15600000586001A2B3C4D5E"
    _seal(journal, TxRecord(kind=Kind.LOCK, terminal_id=T, card_id_code=card, offline=True,
                            reason="r" * 65), result="ok")  # fmt: skip
    _seal(journal, TxRecord(kind=Kind.LOCK, terminal_id=T, card_id_code=card, offline=True),
          result="ok")  # fmt: skip
    box = JournalOutbox(journal)
    assert [i.seq for i in box.pending(0, 10)] == [2]
    assert [i.seq for i in box.pending(0, 10)] == [2]
    assert sum("cannot be sent" in r.message for r in caplog.records) == 1  # logged once
    assert box.unacked_count() == 2
