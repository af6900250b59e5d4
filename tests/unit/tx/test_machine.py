"""DESIGN §4 state machine: every state × every event, against an independent expectation."""

from __future__ import annotations

import itertools

import pytest

from agent.errors import InvalidTransitionError
from agent.tx.machine import SEALABLE, TABLE, UNACKED, Event, State, is_terminal, next_state

S, E = State, Event

# Written out independently of the module: the lifecycle as the design describes it.
EXPECTED = {
    (S.INTENT, E.CARD_CONFIRMED): S.CARD_DONE,
    (S.INTENT, E.CARD_REFUSED): S.FAILED,
    (S.INTENT, E.CRASH_RECOVERED): S.IN_DOUBT,
    (S.IN_DOUBT, E.RESOLVED_DONE): S.CARD_DONE,
    (S.IN_DOUBT, E.RESOLVED_FAILED): S.FAILED,
    (S.CARD_DONE, E.SEALED): S.SEALED,
    (S.FAILED, E.SEALED): S.SEALED,
    (S.SEALED, E.PUBLISHED): S.SENT,
    (S.SEALED, E.ACKED): S.ACKED,
    (S.SENT, E.PUBLISHED): S.SENT,
    (S.SENT, E.ACKED): S.ACKED,
    (S.SENT, E.ACK_TIMEOUT): S.SEALED,
    (S.ACKED, E.ACKED): S.ACKED,
    (S.ACKED, E.PUBLISHED): S.ACKED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_state_times_every_event(state: State, event: Event) -> None:
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransitionError):
            next_state(state, event)
    else:
        assert next_state(state, event) is expected
        assert next_state(str(state), str(event)) is expected  # journal passes plain text


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TABLE) == EXPECTED


def test_unknown_names_raise_the_machine_error() -> None:
    with pytest.raises(InvalidTransitionError):
        next_state("bogus", "sealed")
    with pytest.raises(InvalidTransitionError):
        next_state("intent", "bogus")


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TABLE[(S.ACKED, E.CARD_CONFIRMED)] = S.INTENT  # type: ignore[index]


def test_derived_sets() -> None:
    assert {S.CARD_DONE, S.FAILED} == SEALABLE
    assert {S.SEALED, S.SENT} == UNACKED
    assert is_terminal(S.ACKED)
    assert not is_terminal(S.FAILED)  # failed records are still sealed and delivered
    assert not is_terminal(S.IN_DOUBT)


def test_every_state_reaches_acked_except_none_is_stuck() -> None:
    """From every state there is a path to acked (nothing can be stranded in the outbox)."""
    for start in State:
        seen, frontier = {start}, [start]
        while frontier:
            s = frontier.pop()
            for (frm, _), nxt in TABLE.items():
                if frm is s and nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert S.ACKED in seen, start
