"""The online authorization messages: the ``authorization_request`` event and the
``authorization_refused`` command (strict shape, both directions, and the CDDL agrees)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import MessageEncodingError, WireError
from agent.wire import schema
from agent.wire.codec import (
    AuthorizationRefused,
    AuthorizationRequest,
    Command,
    EventMessage,
)

from .strategies import authorization_requests, data_maps

T = "440300000001"
RID = bytes(range(16))
CARD = bytes.fromhex("440300d15600000586001a2b3c4d5e6f")


def _event(data: dict[str, Any], kind: str = "authorization_request") -> dict[str, Any]:
    return {"id": RID, "data": data, "time": 1_767_225_607, "type": kind, "terminal": T}


@given(authorization_requests)
@settings(max_examples=100)
def test_request_round_trips_and_matches_the_schema(req: AuthorizationRequest) -> None:
    ev = EventMessage(T, req.request_id, 1, "authorization_request", req.to_data())
    again = EventMessage.from_cbor(ev.to_cbor(), validate=True)
    assert again == ev
    assert again.authorization_request() == req


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "unlock", "request_id": RID},
        {"kind": "unlock", "request_id": RID, "card_id_code": CARD, "extra": 1},
        {"kind": "lock", "request_id": RID, "card_id_code": CARD},
        {"kind": "unlock", "request_id": RID[:15], "card_id_code": CARD},
        {"kind": "unlock", "request_id": RID.hex(), "card_id_code": CARD},
        {"kind": "unlock", "request_id": RID, "card_id_code": CARD.hex().upper()},
    ],
    ids=["empty", "no card", "extra key", "kind", "short id", "text id", "hex card"],
)
def test_a_malformed_request_is_refused_by_codec_and_schema(data: dict[str, Any]) -> None:
    obj = _event(data)
    with pytest.raises(WireError):
        EventMessage.from_cbor(cbor2.dumps(obj))
    with pytest.raises(WireError, match=r"messages\.cddl"):
        schema.validate("event", obj)
    with pytest.raises(MessageEncodingError):
        EventMessage(T, RID, 1, "authorization_request", data)


@given(data_maps)
@settings(max_examples=50)
def test_other_events_keep_open_data(data: dict[str, Any]) -> None:
    ev = EventMessage(T, RID, 1, "pong", data)
    with pytest.raises(WireError, match="not an authorization request"):
        ev.authorization_request()


def test_request_from_data_blames_the_peer() -> None:
    with pytest.raises(WireError):
        AuthorizationRequest.from_data({"kind": "unlock"})
    with pytest.raises(MessageEncodingError):
        AuthorizationRequest(RID, "pin_change", CARD)


@given(
    st.sampled_from(("unlock", "pin_reset", "pin_unblock")),
    st.sampled_from(("card_replaced", "formal_loss", "denied")),
    st.binary(min_size=16, max_size=16),
)
@settings(max_examples=50)
def test_refusal_round_trips(kind: str, reason: str, rid: bytes) -> None:
    cmd = Command(RID, T, 7, 10, 20, AuthorizationRefused(kind, reason, rid, CARD))
    again = Command.from_cbor(cmd.to_cbor(), validate=True)
    assert again == cmd


@pytest.mark.parametrize(
    ("field", "value"),
    [("reason", "because"), ("kind", "lock"), ("request_id", b"\x00"), ("card_id_code", "x")],
)
def test_a_malformed_refusal_is_refused(field: str, value: Any) -> None:
    good = Command(RID, T, 7, 10, 20, AuthorizationRefused("unlock", "denied", RID, CARD))
    obj = good.to_obj()
    obj["body"] = {**obj["body"], field: value}
    with pytest.raises(WireError):
        Command.from_cbor(cbor2.dumps(obj))
    with pytest.raises(WireError, match=r"messages\.cddl"):
        schema.validate("command", obj)
