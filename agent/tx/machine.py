"""The transaction state machine of DESIGN §4, as one transition table.

::

    intent ──card_confirmed──▶ card_done ──sealed──▶ sealed ──published──▶ sent ──acked──▶ acked
      │                                                ▲  ◀──ack_timeout──┘
      ├──card_refused──▶ failed ──sealed──▶ sealed ─┘
      └──crash_recovered──▶ in_doubt ──resolved_done──▶ card_done
                                       └─resolved_failed─▶ failed

Decisions (told to the lead):

- **Failed attempts are sealed and delivered too.** ``failed`` is terminal *for the card* (no
  further card outcome can follow), but the record still moves ``failed → sealed → sent →
  acked``: central must learn of every attempt — refusals by the card, in-doubt records that
  turned out to have had no effect, blacklisted cards that refused a lock. The business outcome
  survives in the record's ``outcome`` field (``done`` / ``failed``), set by the event that left
  ``intent`` / ``in_doubt``; the state afterwards only tracks delivery.
- **Delivery tolerates the race between two channels.** The central ack (topic ``ack``) and the
  broker's PUBACK arrive on different paths, so ``acked`` is accepted from ``sealed`` as well as
  from ``sent``; a late ``published`` or a duplicate ``acked`` on an ``acked`` record is a no-op
  (self-loop), which is what makes ``Journal.ack`` idempotent. ``ack_timeout`` returns a ``sent``
  record to ``sealed`` so it is resent (the outbox is the only queue, DESIGN §5).
- ``crash_recovered`` applies only to ``intent``: every later state is already durable and
  complete on the card side; an ``in_doubt`` record stays ``in_doubt`` across further restarts.

Everything not in :data:`TABLE` raises :class:`agent.errors.InvalidTransitionError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from agent.errors import InvalidTransitionError


class State(StrEnum):
    """Where a transaction record is (stored as this text in the journal)."""

    INTENT = "intent"
    CARD_DONE = "card_done"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    SEALED = "sealed"
    SENT = "sent"
    ACKED = "acked"


class Event(StrEnum):
    """What happened to a record."""

    CARD_CONFIRMED = "card_confirmed"  # the card answered success to the write
    CARD_REFUSED = "card_refused"  # the card refused; no effect on the card
    CRASH_RECOVERED = "crash_recovered"  # found open at start, or card pulled mid-write
    RESOLVED_DONE = "resolved_done"  # re-read of the card shows the change happened
    RESOLVED_FAILED = "resolved_failed"  # re-read shows it did not happen
    SEALED = "sealed"  # seq, chain hash and MAC assigned
    PUBLISHED = "published"  # broker PUBACK
    ACKED = "acked"  # central ack
    ACK_TIMEOUT = "ack_timeout"  # no central ack in time: resend


S, E = State, Event

#: The one transition table: ``(state, event) -> next state``.
TABLE: Mapping[tuple[State, Event], State] = MappingProxyType(
    {
        (S.INTENT, E.CARD_CONFIRMED): S.CARD_DONE,
        (S.INTENT, E.CARD_REFUSED): S.FAILED,
        (S.INTENT, E.CRASH_RECOVERED): S.IN_DOUBT,
        (S.IN_DOUBT, E.RESOLVED_DONE): S.CARD_DONE,
        (S.IN_DOUBT, E.RESOLVED_FAILED): S.FAILED,
        (S.CARD_DONE, E.SEALED): S.SEALED,
        (S.FAILED, E.SEALED): S.SEALED,
        (S.SEALED, E.PUBLISHED): S.SENT,
        (S.SEALED, E.ACKED): S.ACKED,
        (S.SENT, E.PUBLISHED): S.SENT,  # a resend's second PUBACK
        (S.SENT, E.ACKED): S.ACKED,
        (S.SENT, E.ACK_TIMEOUT): S.SEALED,
        (S.ACKED, E.ACKED): S.ACKED,  # duplicate central ack
        (S.ACKED, E.PUBLISHED): S.ACKED,  # PUBACK that lost the race with the central ack
    }
)

#: States whose record has a card outcome and may be sealed.
SEALABLE: frozenset[State] = frozenset(s for (s, e) in TABLE if e is E.SEALED)
#: States of records that are in the outbox (sealed, not yet acked).
UNACKED: frozenset[State] = frozenset({S.SEALED, S.SENT})


def next_state(state: str, event: str) -> State:
    """The state after ``event``; raises ``InvalidTransitionError`` if the table has no entry."""
    try:
        key = (State(state), Event(event))
    except ValueError:
        raise InvalidTransitionError(f"unknown state or event: {state!r} + {event!r}") from None
    try:
        return TABLE[key]
    except KeyError:
        raise InvalidTransitionError(f"no transition from {state} on {event}") from None


def is_terminal(state: str) -> bool:
    """True when no event can move the record to another state."""
    s = State(state)
    return all(nxt is s for (frm, _), nxt in TABLE.items() if frm is s)
