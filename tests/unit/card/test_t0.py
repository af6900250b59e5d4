"""T=0 exchange machine (agent.card.t0): every state × every input, and the async drivers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.card.t0 import (
    Event,
    State,
    T0Exchange,
    classify,
    get_response,
    request,
    transceive,
)
from agent.errors import (
    CardProtocolError,
    FileNotFoundOnCardError,
    InvalidTransitionError,
    LocalProtocolError,
)

CMD = CommandApdu(0x00, 0xB2, 0x01, 0x0C, b"", 256)
SAMPLE = {Event.MORE: 0x6104, Event.WRONG_LE: 0x6C0A, Event.FINAL: 0x9000}


def _machine_in(state: State) -> T0Exchange:
    m = T0Exchange(CMD)
    m.start()
    if state is State.GETTING:
        m.feed(ResponseApdu(b"ab", 0x6102))
    elif state is State.REISSUED:
        m.feed(ResponseApdu(b"", 0x6C05))
    elif state is State.DONE:
        m.feed(ResponseApdu(b"", 0x9000))
    elif state is State.FAILED:
        m.feed(ResponseApdu(b"", 0x6C05))
        with pytest.raises(CardProtocolError):
            m.feed(ResponseApdu(b"", 0x6C05))
    assert m.state is state
    return m


# Written out by hand (not copied from t0.TABLE), so a wrong table entry fails here.
EXPECTED: dict[tuple[State, Event], str] = {
    (State.SENT, Event.MORE): "get_response",
    (State.SENT, Event.WRONG_LE): "reissue",
    (State.SENT, Event.FINAL): "finish",
    (State.GETTING, Event.MORE): "get_response",
    (State.GETTING, Event.WRONG_LE): "reissue",
    (State.GETTING, Event.FINAL): "finish",
    (State.REISSUED, Event.MORE): "get_response",
    (State.REISSUED, Event.WRONG_LE): "fail",
    (State.REISSUED, Event.FINAL): "finish",
    (State.DONE, Event.MORE): "invalid",
    (State.DONE, Event.WRONG_LE): "invalid",
    (State.DONE, Event.FINAL): "invalid",
    (State.FAILED, Event.MORE): "invalid",
    (State.FAILED, Event.WRONG_LE): "invalid",
    (State.FAILED, Event.FINAL): "invalid",
}


PAIRS = sorted(EXPECTED, key=lambda k: (k[0].value, k[1].value))


def test_expected_covers_every_pair() -> None:
    assert set(EXPECTED) == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize(("state", "event"), PAIRS)
def test_every_state_every_input(state: State, event: Event) -> None:
    m = _machine_in(state)
    resp = ResponseApdu(b"xy", SAMPLE[event])
    outcome = EXPECTED[(state, event)]
    prior = b"ab" if state is State.GETTING else b""
    if outcome == "invalid":
        with pytest.raises(InvalidTransitionError):
            m.feed(resp)
        assert m.state is state
    elif outcome == "fail":
        with pytest.raises(CardProtocolError, match="6Cxx twice"):
            m.feed(resp)
        assert m.state is State.FAILED
    elif outcome == "finish":
        out = m.feed(resp)
        assert out == ResponseApdu(prior + b"xy", 0x9000)
        assert m.state is State.DONE
    elif outcome == "get_response":
        out = m.feed(resp)
        assert out == CommandApdu(0x00, 0xC0, 0x00, 0x00, b"", 0x04)
        assert m.state is State.GETTING
    else:
        out = m.feed(resp)
        assert isinstance(out, CommandApdu)
        assert out.ne == 0x0A
        # re-issues the command that got the 6Cxx: the original, or the pending GET RESPONSE
        expected_base = get_response(2) if state is State.GETTING else CMD
        assert out.to_bytes()[:4] == expected_base.to_bytes()[:4]
        assert m.state is State.REISSUED


def test_classify() -> None:
    assert classify(0x6100) is Event.MORE
    assert classify(0x61FF) is Event.MORE
    assert classify(0x6C00) is Event.WRONG_LE
    assert classify(0x9000) is Event.FINAL
    assert classify(0x6A82) is Event.FINAL
    assert classify(0x6283) is Event.FINAL


def test_zero_lengths_mean_256() -> None:
    m = T0Exchange(CommandApdu(0x80, 0xCA, 0x9F, 0x36))
    m.start()
    assert m.feed(ResponseApdu(b"", 0x6100)) == get_response(256)
    m2 = T0Exchange(CommandApdu(0x80, 0xCA, 0x9F, 0x36))
    m2.start()
    reissued = m2.feed(ResponseApdu(b"", 0x6C00))
    assert isinstance(reissued, CommandApdu)
    assert reissued.ne == 256
    assert reissued.to_bytes() == bytes.fromhex("80CA9F3600")


def test_start_and_feed_order() -> None:
    m = T0Exchange(CMD)
    with pytest.raises(InvalidTransitionError):
        m.feed(ResponseApdu(b"", 0x9000))
    m.start()
    with pytest.raises(InvalidTransitionError):
        m.start()
    with pytest.raises(LocalProtocolError):
        T0Exchange(CMD, max_rounds=0)


def test_round_bound() -> None:
    m = T0Exchange(CMD, max_rounds=3)
    m.start()
    m.feed(ResponseApdu(b"a", 0x6101))
    m.feed(ResponseApdu(b"b", 0x6101))
    with pytest.raises(CardProtocolError, match="exceeded 3"):
        m.feed(ResponseApdu(b"c", 0x6101))
    assert m.state is State.FAILED


class ScriptedChannel:
    """A CardChannel that answers from a list and records what it was sent."""

    def __init__(self, answers: list[ResponseApdu]) -> None:
        self.answers = list(answers)
        self.sent: list[CommandApdu] = []

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        self.sent.append(command)
        if not self.answers:
            return ResponseApdu(b"", 0x6110)  # a card that never stops asking
        return self.answers.pop(0)


async def test_transceive_get_response_chain() -> None:
    ch = ScriptedChannel(
        [ResponseApdu(b"", 0x6105), ResponseApdu(b"12345", 0x6103), ResponseApdu(b"678", 0x9000)]
    )
    cmd = CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00")
    resp = await transceive(ch, cmd)
    assert resp == ResponseApdu(b"12345678", 0x9000)
    assert [c.to_bytes().hex() for c in ch.sent] == [
        "00a4040002a000",
        "00c0000005",
        "00c0000003",
    ]


async def test_transceive_6c_then_61() -> None:
    ch = ScriptedChannel(
        [ResponseApdu(b"", 0x6C12), ResponseApdu(b"", 0x6112), ResponseApdu(b"r" * 18, 0x9000)]
    )
    resp = await transceive(ch, CommandApdu(0x00, 0xB2, 0x01, 0x04, b"", 0x10))
    assert resp == ResponseApdu(b"r" * 18, 0x9000)
    assert [c.to_bytes().hex() for c in ch.sent] == ["00b2010410", "00b2010412", "00c0000012"]


async def test_transceive_endless_card_is_bounded() -> None:
    ch = ScriptedChannel([])
    with pytest.raises(CardProtocolError):
        await transceive(ch, CMD, max_rounds=5)
    assert len(ch.sent) == 5


async def test_request_raises_typed_error_and_accepts_expected() -> None:
    ch = ScriptedChannel([ResponseApdu(b"", 0x6A82)])
    with pytest.raises(FileNotFoundOnCardError) as ei:
        await request(ch, CMD, command="READ RECORD")
    assert ei.value.command == "READ RECORD"
    ch2 = ScriptedChannel([ResponseApdu(b"\x6f\x00", 0x6283)])
    resp = await request(ch2, CMD, expect={0x9000, 0x6283})
    assert resp.sw == 0x6283


@settings(max_examples=200)
@given(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 0xFFFF)), max_size=12))
def test_machine_never_raises_other_errors(answers: list[tuple[bytes, int]]) -> None:
    m = T0Exchange(CMD, max_rounds=8)
    m.start()
    for data, sw in answers:
        try:
            out = m.feed(ResponseApdu(data, sw))
        except (CardProtocolError, InvalidTransitionError):
            return
        if isinstance(out, ResponseApdu):
            assert m.state is State.DONE
            assert classify(out.sw) is Event.FINAL
            return
        assert m.rounds <= 8
