"""``tx-batch``: round trip, the single-record case, and hostile input (messages.cddl)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import MessageEncodingError, WireError
from agent.wire import schema
from agent.wire.codec import TX_BATCH_MAX, TX_BATCH_MAX_SIZE, encode_tx_batch, split_tx_payload
from agent.wire.examples import examples

RECORDS = [e.cbor for e in examples() if e.rule == "tx-record"]


@given(st.lists(st.binary(max_size=300), min_size=2, max_size=TX_BATCH_MAX))
def test_round_trip(payloads: list[bytes]) -> None:
    assert split_tx_payload(encode_tx_batch(payloads)) == payloads


@given(st.sampled_from(RECORDS))
def test_a_single_record_is_itself(record: bytes) -> None:
    assert split_tx_payload(record) == [record]


def test_real_records_in_a_batch_match_the_schema() -> None:
    batch = encode_tx_batch(RECORDS)
    schema.validate("tx-batch", cbor2.loads(batch))
    assert split_tx_payload(batch) == RECORDS


@pytest.mark.parametrize("n", [0, 1, TX_BATCH_MAX + 1])
def test_encoder_refuses_a_wrong_count(n: int) -> None:
    with pytest.raises(MessageEncodingError):
        encode_tx_batch([b"\xa0"] * n)


def test_encoder_refuses_an_oversized_batch() -> None:
    with pytest.raises(MessageEncodingError):
        encode_tx_batch([bytes(TX_BATCH_MAX_SIZE // 2), bytes(TX_BATCH_MAX_SIZE // 2)])


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("80"),
        bytes.fromhex("8141a0"),
        bytes.fromhex("820102"),
        bytes.fromhex("82416141"),
        bytes.fromhex("980241a041a0"),
        bytes.fromhex("9f41a041a0ff"),
        bytes.fromhex("8241a082a0a0"),
        bytes.fromhex("8241a041a000"),
        cbor2.dumps([b"\xa0"] * (TX_BATCH_MAX + 1)),
    ],
    ids=[
        "empty", "single", "ints", "truncated", "long-form length", "indefinite", "nested",
        "trailing", "too many",
    ],
)  # fmt: skip
def test_malformed_batches_are_wire_errors(payload: bytes) -> None:
    with pytest.raises(WireError):
        split_tx_payload(payload)


@settings(max_examples=500)
@given(st.binary(max_size=200).map(lambda b: bytes([0x80 | (b[0] & 0x1F if b else 0)]) + b[1:]))
def test_hostile_arrays_parse_or_raise_wire_error(payload: bytes) -> None:
    """Anything with an array head: a list of byte strings that re-encodes to the input, or
    WireError; never another exception."""
    try:
        out = split_tx_payload(payload)
    except WireError:
        return
    assert all(isinstance(x, bytes) for x in out)
    assert 2 <= len(out) <= TX_BATCH_MAX
    assert encode_tx_batch(out) == payload
