"""TxRecord, UUIDv7 (RFC 9562) and the canonical sealed body."""

from __future__ import annotations

import contextlib
import time
import uuid

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import RecordFormatError
from agent.journal.codec import BODY_FIELDS, GENESIS_HASH, decode_body, encode_body
from agent.tx.records import (
    Kind,
    TxRecord,
    canonical_bytes,
    chain_hash,
    record_digest,
    uuid7,
)


def test_uuid7_layout() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    ms = u.int >> 80
    assert before <= ms <= after + 1
    assert (u.int >> 76) & 0xF == 7
    assert (u.int >> 62) & 0b11 == 0b10


def test_uuid7_monotonic_within_a_millisecond_and_on_clock_step_back() -> None:
    ids = [uuid7(_now_ms=2_000_000_000_000) for _ in range(5000)]  # > 4096: counter overflow
    ids += [uuid7(_now_ms=1_000_000_000_000) for _ in range(10)]  # clock stepped back
    ids += [uuid7() for _ in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert str(ids[0]) < str(ids[-1])  # text form sorts too (fixed-width lower hex)


def test_uuid7_text_sorts_like_time() -> None:
    a = uuid7(_now_ms=3_000_000_000_000)
    b = uuid7(_now_ms=3_000_000_000_001)
    assert str(a) < str(b)
    assert a.int >> 80 <= 3_000_000_000_001


def rec(**kw: object) -> TxRecord:
    base: dict[str, object] = {
        "kind": Kind.LOCK,
        "terminal_id": "440300000001",
        "card_id_code": "440300D15600000501020304050607AA",
        "offline": False,
        "created_at": 1_700_000_000_000,
        "outcome": "done",
    }
    base.update(kw)
    return TxRecord(**base)  # type: ignore[arg-type]


def test_body_has_the_fixed_field_set_and_no_personal_data() -> None:
    r = rec(personal={"ssn": "110101199003071234", "name": "张三"}, kind=Kind.REPORT_LOSS)
    body = canonical_bytes(r, 1, GENESIS_HASH)
    fields = cbor2.loads(body)
    assert set(fields) == set(BODY_FIELDS)
    assert b"110101199003071234" not in body
    assert "张三".encode() not in body
    assert len(fields["personal_digest"]) == 32
    assert "110101" not in repr(r)


def test_personal_digest_depends_on_salt() -> None:
    p = {"ssn": "110101199003071234"}
    a = rec(personal=p, personal_salt=b"a" * 16).body_fields(1, GENESIS_HASH)
    b = rec(personal=p, personal_salt=b"b" * 16).body_fields(1, GENESIS_HASH)
    assert a["personal_digest"] != b["personal_digest"]


def test_canonical_bytes_are_deterministic_and_chain() -> None:
    r = rec()
    b1 = canonical_bytes(r, 7, b"\x01" * 32)
    assert b1 == canonical_bytes(r.replace(), 7, b"\x01" * 32)
    assert chain_hash(r, 7, b"\x01" * 32) == record_digest(b1)
    assert chain_hash(r, 7, b"\x02" * 32) != record_digest(b1)  # prev_hash is covered
    assert decode_body(b1)["seq"] == 7


def test_kind_and_state_are_normalised() -> None:
    r = TxRecord(kind="unlock", terminal_id="t", card_id_code="c", offline=True)  # type: ignore[arg-type]
    assert r.kind is Kind.UNLOCK
    assert r.updated_at == r.created_at
    assert (
        r.tx_id != TxRecord(kind=Kind.LOCK, terminal_id="t", card_id_code="c", offline=True).tx_id
    )


def test_encode_rejects_wrong_field_sets_and_types() -> None:
    good = rec().body_fields(1, GENESIS_HASH)
    with pytest.raises(RecordFormatError):
        encode_body({**good, "ssn": "x"})
    missing = dict(good)
    del missing["kind"]
    with pytest.raises(RecordFormatError):
        encode_body(missing)
    for name, bad in [("seq", True), ("offline", 1), ("prev_hash", b"short"), ("outcome", "")]:
        with pytest.raises(RecordFormatError):
            encode_body({**good, name: bad})


def test_decode_rejects_non_canonical_encoding() -> None:
    good = rec().body_fields(1, GENESIS_HASH)
    noncanon = cbor2.dumps(dict(sorted(good.items(), reverse=True)))
    assert noncanon != encode_body(good)
    with pytest.raises(RecordFormatError):
        decode_body(noncanon)
    with pytest.raises(RecordFormatError):
        decode_body(encode_body(good) + b"\x00")


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_decode_hostile_bytes_raise_only_record_format_error(data: bytes) -> None:
    with contextlib.suppress(RecordFormatError):
        decode_body(data)


@settings(max_examples=100)
@given(
    kind=st.sampled_from(list(Kind)),
    card=st.one_of(st.none(), st.text(max_size=40)),
    reason=st.one_of(st.none(), st.text(max_size=40)),
    offline=st.booleans(),
    seq=st.integers(1, 2**63 - 1),
    created=st.integers(0, 2**48),
    outcome=st.sampled_from(["done", "failed"]),
)
def test_body_round_trip(
    kind: Kind, card: str | None, reason: str | None, offline: bool, seq: int, created: int,
    outcome: str,
) -> None:  # fmt: skip
    r = rec(kind=kind, card_id_code=card, reason=reason, offline=offline, created_at=created,
            outcome=outcome)  # fmt: skip
    body = canonical_bytes(r, seq, b"\x07" * 32)
    assert decode_body(body) == r.body_fields(seq, b"\x07" * 32)
