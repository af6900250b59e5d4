"""Round trips, strict field checks and hostile input for agent.wire.codec (DESIGN §5, §6)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import MessageEncodingError, WireError
from agent.wire import codec
from agent.wire.examples import examples

from .strategies import ALL, acks, commands, tx_messages

CLASSES = {cls for _, cls in ALL}


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip_is_exact_and_deterministic(
    strategy: Any, cls: type, data: st.DataObject
) -> None:
    msg = data.draw(strategy)
    raw = msg.to_cbor()
    back = cls.from_cbor(raw)
    assert back == msg
    assert back.to_cbor() == raw
    # deterministic: the canonical re-encoding of the decoded value is the same bytes
    assert cbor2.dumps(cbor2.loads(raw), canonical=True) == raw


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_generated_messages_match_the_cddl(strategy: Any, cls: type, data: st.DataObject) -> None:
    msg = data.draw(strategy)
    cls.from_cbor(msg.to_cbor(), validate=True)


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_wire_error_or_valid(
    strategy: Any, cls: type, data: st.DataObject
) -> None:
    raw = bytearray(data.draw(strategy).to_cbor())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(WireError):
        cls.from_cbor(bytes(raw))


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_truncations_are_wire_errors(strategy: Any, cls: type, data: st.DataObject) -> None:
    raw = data.draw(strategy).to_cbor()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(WireError):
        cls.from_cbor(raw[:cut])


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_extra_or_missing_keys_are_wire_errors(
    strategy: Any, cls: type, data: st.DataObject
) -> None:
    obj = data.draw(strategy).to_obj()
    extra = dict(obj, zz_extra=1)
    with pytest.raises(WireError, match="unexpected"):
        cls.from_cbor(cbor2.dumps(extra))
    optional = OPTIONAL_KEYS.get(cls, set())
    key = data.draw(st.sampled_from(sorted(set(obj) - optional)))
    missing = {k: v for k, v in obj.items() if k != key}
    with pytest.raises(WireError):
        cls.from_cbor(cbor2.dumps(missing))
    for key in optional & set(obj):  # an optional member may be left out, and only that changes
        without = cls.from_cbor(cbor2.dumps({k: v for k, v in obj.items() if k != key}))
        assert without == dataclasses.replace(cls.from_obj(obj), **{key: None})


#: Members a message may leave out (every other one must be present, null or not).
OPTIONAL_KEYS: dict[type, set[str]] = {codec.TxMessage: {"pii"}}


WRONG_VALUES = [True, -1, 2**64, "x", b"x", None, [], {}, 1.5]


@pytest.mark.parametrize(("strategy", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_wrong_types_are_wire_errors(strategy: Any, cls: type, data: st.DataObject) -> None:
    obj = data.draw(strategy).to_obj()
    key = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(st.sampled_from(WRONG_VALUES))
    bad = dict(obj, **{key: value})
    try:
        msg = cls.from_cbor(cbor2.dumps(bad))
    except WireError:
        return
    # some replacements are legal values (e.g. {} for event data, None for an error id):
    # then the message must still be internally consistent and re-encode to valid CBOR
    assert cls.from_cbor(msg.to_cbor()) == msg


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_bytes_only_raise_wire_error(raw: bytes) -> None:
    for cls in CLASSES:
        with contextlib.suppress(WireError):
            cls.from_cbor(raw)
    with contextlib.suppress(WireError):
        codec.decode_client_frame(raw)


def test_non_map_top_levels_are_wire_errors() -> None:
    for value in [1, "x", b"x", [1], None, True, 1.5, [], {1: 2}]:
        for cls in CLASSES:
            with pytest.raises(WireError):
                cls.from_cbor(cbor2.dumps(value))


@given(tx_messages())
@settings(max_examples=50)
def test_tx_record_digest_covers_everything_but_the_mac(msg: codec.TxMessage) -> None:
    other_mac = msg.__class__(**{**_fields(msg), "mac": bytes(8)})
    assert other_mac.digest() == msg.digest()
    assert "mac" not in cbor2.loads(msg.body_cbor())
    changed = msg.__class__(**{**_fields(msg), "seq": msg.seq + 1 if msg.seq < 2**63 else 1})
    assert changed.digest() != msg.digest()


def _fields(msg: Any) -> dict[str, Any]:
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


GOOD_TX = codec.TxMessage(
    terminal_id="440300000001",
    seq=1,
    prev_hash=bytes(32),
    tx_id="019b7a4e-1c00-7d3a-8f2b-4c5d6e7f8091",
    kind="lock",
    outcome="done",
    offline=False,
    created_at=1_767_225_600_000,
    completed_at=1_767_225_600_900,
    mac=bytes(8),
    card_id_code="440300D15600000586001A2B3C4D5E6F",
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"terminal_id": "44030000000a"}, "terminal_id"),
        ({"terminal_id": "４４０３００００００01"}, "terminal_id"),
        ({"seq": 0}, "seq"),
        ({"tx_id": "019b7a4e1c007d3a8f2b4c5d6e7f8091"}, "tx_id"),
        ({"tx_id": "019B7A4E-1C00-7D3A-8F2B-4C5D6E7F8091"}, "tx_id"),
        ({"tx_id": "019b7a4e-1c00-7d3a-8f2b-4c5d6e7f809x"}, "tx_id"),
        ({"tx_id": b"\x00" * 16}, "tx_id"),
        ({"tx_id": "-19b7a4e-1c00-7d3a-8f2b-4c5d6e7f8091"}, "tx_id"),
        ({"tx_id": "019b7a4e-1c00-7d3a-8f2b-4c5d6e7f809-"}, "tx_id"),
        ({"kind": "explode"}, "kind"),
        ({"outcome": "card_done"}, "outcome"),
        ({"outcome": ""}, "outcome"),
        ({"created_at": -1}, "created_at"),
        ({"completed_at": 2**64}, "completed_at"),
        ({"offline": 1}, "offline"),
        ({"prev_hash": bytes(31)}, "prev_hash"),
        ({"mac": bytes(9)}, "mac"),
        ({"card_id_code": "440300d15600000586001a2b3c4d5e6f"}, "card_id_code"),
        ({"card_id_code": bytes(16)}, "card_id_code"),
        ({"card_id_code": "4403"}, "card_id_code"),
        ({"result": ""}, "result"),
        ({"result": "x" * 65}, "result"),
        ({"error_code": 7}, "error_code"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"auth_id": "a" * 65}, "auth_id"),
        ({"personal_digest": bytes(31)}, "personal_digest"),
    ],
)
def test_building_a_bad_tx_record_is_a_local_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MessageEncodingError, match=message):
        codec.TxMessage(**{**_fields(GOOD_TX), **change})


def test_tx_record_is_the_sealed_body_plus_mac() -> None:
    body = GOOD_TX.body_obj()
    assert set(body) == codec.TxMessage.BODY_KEYS
    assert set(cbor2.loads(GOOD_TX.to_cbor())) == codec.TxMessage.BODY_KEYS | {"mac"}
    assert codec.TxMessage.from_body(body, GOOD_TX.mac) == GOOD_TX
    # nullable members are present as null: a fixed key set, as in the journal's body
    assert body["reason"] is None
    assert body["personal_digest"] is None
    with pytest.raises(MessageEncodingError, match="unexpected"):
        codec.TxMessage.from_body({**body, "ssn": "110101199003071234"}, GOOD_TX.mac)
    with pytest.raises(MessageEncodingError, match="missing"):
        codec.TxMessage.from_body({k: v for k, v in body.items() if k != "auth_id"}, bytes(8))
    with pytest.raises(MessageEncodingError, match="v out of range"):
        codec.TxMessage.from_body({**body, "v": 2}, GOOD_TX.mac)


@given(tx_messages())
@settings(max_examples=100)
def test_body_of_cuts_the_exact_body_out_of_the_message(msg: codec.TxMessage) -> None:
    assert codec.TxMessage.body_of(msg.to_cbor()) == msg.body_cbor()


@given(tx_messages())
@settings(max_examples=100)
def test_with_mac_splices_the_mac_into_the_body(msg: codec.TxMessage) -> None:
    """The inverse of ``body_of``: the message's own deterministic encoding."""
    assert codec.TxMessage.with_mac(msg.body_cbor(), msg.mac, msg.pii) == msg.to_cbor()


def _with_pii(size: int) -> codec.TxMessage:
    return dataclasses.replace(
        GOOD_TX, kind="report_loss", card_id_code=None, personal_digest=bytes(range(32)),
        pii=bytes(size),
    )  # fmt: skip


@pytest.mark.parametrize("size", [codec.PII_MIN_SIZE, 255, 256, codec.PII_MAX_SIZE])
def test_pii_is_the_third_member_and_never_part_of_the_body(size: int) -> None:
    """Both byte-string heads (one and two length bytes) splice and cut out exactly."""
    msg = _with_pii(size)
    raw = msg.to_cbor()
    assert list(cbor2.loads(raw))[:4] == ["v", "mac", "pii", "seq"]
    assert codec.TxMessage.body_of(raw) == msg.body_cbor() == _with_pii(size).body_cbor()
    assert "pii" not in cbor2.loads(msg.body_cbor())
    assert codec.TxMessage.with_mac(msg.body_cbor(), msg.mac, msg.pii) == raw
    assert codec.TxMessage.from_cbor(raw, validate=True) == msg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pii": bytes(codec.PII_MIN_SIZE - 1)}, "pii shorter"),
        ({"pii": bytes(codec.PII_MAX_SIZE + 1)}, "pii longer"),
        ({"pii": "sealed"}, "pii must be a byte string"),
        ({"personal_digest": None}, "pii needs the personal_digest"),
    ],
)
def test_pii_outside_its_bounds_or_unbound_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MessageEncodingError, match=message):
        dataclasses.replace(_with_pii(100), **change)
    raw = cbor2.loads(_with_pii(100).to_cbor())
    raw.update(change)
    with pytest.raises(WireError):
        codec.TxMessage.from_cbor(cbor2.dumps(raw, canonical=True))


def test_with_mac_refuses_a_pii_outside_its_bounds() -> None:
    for size in (codec.PII_MIN_SIZE - 1, codec.PII_MAX_SIZE + 1):
        with pytest.raises(MessageEncodingError, match="pii"):
            codec.TxMessage.with_mac(GOOD_TX.body_cbor(), GOOD_TX.mac, bytes(size))


@pytest.mark.parametrize(
    "cut", [1, 2, 3, 50], ids=["head-only", "one-length-byte", "short", "truncated-content"]
)
def test_body_of_refuses_a_truncated_pii_member(cut: int) -> None:
    raw = _with_pii(300).to_cbor()
    at = raw.index(b"\x63pii") + 4
    with pytest.raises(WireError):
        codec.TxMessage.body_of(raw[: at + cut])


@pytest.mark.parametrize(
    ("body", "mac"),
    [
        (b"", bytes(8)),
        (b"\xa0", bytes(8)),
        (b"\xb1\x61w\x01", bytes(8)),
        (GOOD_TX.body_cbor(), bytes(7)),
    ],
)
def test_with_mac_refuses_what_is_not_a_body_and_a_mac(body: bytes, mac: bytes) -> None:
    with pytest.raises(MessageEncodingError):
        codec.TxMessage.with_mac(body, mac)


@pytest.mark.parametrize(
    "raw", [b"", b"\xa0", b"\xb2", cbor2.dumps({"mac": bytes(8), "v": 1}), b"\xb2\x61v\x01\x63mac"]
)
def test_body_of_refuses_what_is_not_a_tx_record(raw: bytes) -> None:
    with pytest.raises(WireError):
        codec.TxMessage.body_of(raw)


def test_tx_record_has_no_field_for_personal_data() -> None:
    names = {f.name for f in dataclasses.fields(codec.TxMessage)}
    assert not names & {"ssn", "ssn_hash", "name", "card_number", "pan", "personal"}
    loss = codec.TxMessage(
        **{**_fields(GOOD_TX), "kind": "report_loss", "card_id_code": None,
           "personal_digest": bytes(range(32))},
    )  # fmt: skip
    assert cbor2.loads(loss.to_cbor())["card_id_code"] is None


@given(acks())
def test_ack_ranges_checks_the_terminal(msg: codec.AckMessage) -> None:
    assert codec.ack_ranges(msg.to_cbor(), msg.terminal) == list(msg.ranges)
    other = "999999999999" if msg.terminal != "999999999999" else "000000000000"
    with pytest.raises(WireError):
        codec.ack_ranges(msg.to_cbor(), other)


@pytest.mark.parametrize(
    "ranges", [[], [[2, 1]], [[0, 1]], [[1]], [[1, 2, 3]], [[1, 2]] * 257, [["1", 2]]]
)
def test_bad_ack_ranges_are_wire_errors(ranges: list[Any]) -> None:
    raw = cbor2.dumps({"ranges": ranges, "terminal": "440300000001"})
    with pytest.raises(WireError):
        codec.AckMessage.from_cbor(raw)


@pytest.mark.parametrize(
    ("body_type", "body"),
    [
        ("blacklist_snapshot", {"entries": [bytes(16), bytes(16)], "version": 1}),
        (
            "blacklist_delta",
            {"add": [bytes(16)], "remove": [bytes(16)], "version": 2, "base_version": 1},
        ),
        ("blacklist_delta", {"add": [], "remove": [], "version": 1, "base_version": 1}),
        ("authorize", {"kind": "lock", "expires": 1, "card_id_code": bytes(16)}),
        ("config_set", {"key": "terminal.id", "value": "1"}),
        ("config_set", {"key": "log.level", "value": "LOUD"}),
        ("config_set", {"key": "uplink.inflight_window", "value": 0}),
        ("config_set", {"key": "log.trace_apdus", "value": 1}),
        ("ping", {"x": 1}),
        ("resend", {"from_seq": 0}),
        ("explode", {}),
    ],
)
def test_bad_command_bodies_are_wire_errors(body_type: str, body: dict[str, Any]) -> None:
    cmd = {
        "id": bytes(16),
        "body": body,
        "type": body_type,
        "issued": 1,
        "counter": 1,
        "expires": 2,
        "terminal": "all",
    }
    with pytest.raises(WireError):
        codec.Command.from_cbor(cbor2.dumps(cmd))


def test_command_must_expire_after_issue() -> None:
    cmd = {
        "id": bytes(16),
        "body": {},
        "type": "ping",
        "issued": 5,
        "counter": 1,
        "expires": 5,
        "terminal": "all",
    }
    with pytest.raises(WireError, match="expire"):
        codec.Command.from_cbor(cbor2.dumps(cmd))


@given(commands())
@settings(max_examples=50)
def test_command_type_matches_body(cmd: codec.Command) -> None:
    assert cbor2.loads(cmd.to_cbor())["type"] == cmd.type


def test_api_response_shapes() -> None:
    ok = codec.ApiResponse.success(1, {"a": [1, 2]})
    assert cbor2.loads(ok.to_cbor()) == {"id": 1, "ok": True, "result": {"a": [1, 2]}}
    err = codec.ApiResponse.failure(None, "bad_request", "no id")
    assert cbor2.loads(err.to_cbor()) == {
        "id": None,
        "ok": False,
        "error": {"code": "bad_request", "message": "no id"},
    }
    with pytest.raises(MessageEncodingError):
        codec.ApiResponse(1, True, None, "x", "y")
    with pytest.raises(MessageEncodingError):
        codec.ApiResponse(None, True, 1)
    with pytest.raises(MessageEncodingError):
        codec.ApiRequest(1, "op", {"f": float("nan")})
    with pytest.raises(MessageEncodingError):
        codec.ApiRequest(1, "op", {"f": object()})
    deep: Any = 1
    for _ in range(codec.API_MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(MessageEncodingError):
        codec.ApiRequest(1, "op", {"deep": deep})


def test_client_frames_dispatch_on_event_key() -> None:
    ev = codec.ApiEvent("card_inserted", {"reader": "r"})
    assert codec.decode_client_frame(ev.to_cbor(), validate=True) == ev
    resp = codec.ApiResponse.success(3, None)
    assert codec.decode_client_frame(resp.to_cbor(), validate=True) == resp


def test_api_request_honours_the_frame_limit() -> None:
    raw = codec.ApiRequest(1, "op", {"blob": b"x" * 1000}).to_cbor()
    assert codec.ApiRequest.from_cbor(raw, max_size=2000).op == "op"
    with pytest.raises(WireError):
        codec.ApiRequest.from_cbor(raw, max_size=500)


def test_examples_round_trip() -> None:
    by_rule = {
        "tx-record": codec.TxMessage,
        "event": codec.EventMessage,
        "status": codec.StatusMessage,
        "telemetry": codec.TelemetryMessage,
        "ack": codec.AckMessage,
        "command": codec.Command,
        "api-request": codec.ApiRequest,
        "api-response": codec.ApiResponse,
        "api-event": codec.ApiEvent,
    }
    for ex in examples():
        cls = by_rule.get(ex.rule)
        if cls is not None:
            assert cls.from_cbor(ex.cbor, validate=True).to_cbor() == ex.cbor


def test_large_blacklist_snapshot_decodes() -> None:
    entries = tuple(i.to_bytes(16, "big") for i in range(20_000))
    cmd = codec.Command(bytes(16), "all", 1, 1, 2, codec.BlacklistSnapshot(3, entries))
    raw = cmd.to_cbor()
    assert codec.Command.from_cbor(raw).body == cmd.body
