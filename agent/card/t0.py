"""T=0 response handling as a pure, table-driven state machine (ISO/IEC 7816-3 §10.3.5, 7816-4
§5.3.4), plus ``transceive``/``request`` that drive it over any ``CardChannel``. Sans-IO: the
machine is data in, data out; the two ``async def`` helpers only await the channel.

Rules (ssc-card-protocol.md §2 "GET RESPONSE", CARD-PROTOCOL.md §1):

* ``61xx``: ``xx`` more bytes are waiting; send ``GET RESPONSE 00 C0 00 00 xx`` and keep the
  data received so far (``xx = 00`` means 256);
* ``6Cxx``: wrong Le; re-issue the last command with ``Le = xx``; a second ``6Cxx`` in a row is a
  protocol error (the card contradicts itself);
* anything else ends the exchange: accumulated data ‖ last data, last status word;
* at most ``max_rounds`` commands per exchange (a hostile card could answer ``61xx`` forever).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.card.sw import SW_OK, check
from agent.errors import CardProtocolError, InvalidTransitionError, LocalProtocolError

DEFAULT_MAX_ROUNDS = 32


class State(Enum):
    """Where the exchange stands."""

    SENT = "sent"  # the original command is out
    GETTING = "getting"  # a GET RESPONSE is out
    REISSUED = "reissued"  # a command was re-issued with the Le from 6Cxx
    DONE = "done"  # final response produced
    FAILED = "failed"  # protocol error raised


class Event(Enum):
    """Class of the status word just received."""

    MORE = "61xx"
    WRONG_LE = "6Cxx"
    FINAL = "final"


class Action(Enum):
    GET_RESPONSE = "get_response"
    REISSUE = "reissue"
    FINISH = "finish"
    FAIL = "fail"


#: (state, event) → (next state, action). DONE and FAILED accept nothing.
TABLE: dict[tuple[State, Event], tuple[State, Action]] = {
    (State.SENT, Event.MORE): (State.GETTING, Action.GET_RESPONSE),
    (State.SENT, Event.WRONG_LE): (State.REISSUED, Action.REISSUE),
    (State.SENT, Event.FINAL): (State.DONE, Action.FINISH),
    (State.GETTING, Event.MORE): (State.GETTING, Action.GET_RESPONSE),
    (State.GETTING, Event.WRONG_LE): (State.REISSUED, Action.REISSUE),
    (State.GETTING, Event.FINAL): (State.DONE, Action.FINISH),
    (State.REISSUED, Event.MORE): (State.GETTING, Action.GET_RESPONSE),
    (State.REISSUED, Event.WRONG_LE): (State.FAILED, Action.FAIL),
    (State.REISSUED, Event.FINAL): (State.DONE, Action.FINISH),
}


def classify(sw: int) -> Event:
    """Map a status word to the machine's input."""
    sw1 = sw >> 8
    if sw1 == 0x61:
        return Event.MORE
    if sw1 == 0x6C:
        return Event.WRONG_LE
    return Event.FINAL


def get_response(length: int) -> CommandApdu:
    """``00 C0 00 00 xx`` for ``xx`` announced by ``61xx`` (0 means 256)."""
    return CommandApdu(0x00, 0xC0, 0x00, 0x00, b"", length or 256)


class T0Exchange:
    """One command's T=0 exchange. ``start()`` gives the first command; ``feed(resp)`` gives the
    next command to send, or the final ``ResponseApdu``."""

    def __init__(self, command: CommandApdu, *, max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        if max_rounds < 1:
            raise LocalProtocolError("max_rounds must be at least 1")
        self.command = command
        self.max_rounds = max_rounds
        self.state = State.SENT
        self.rounds = 0
        self._last = command
        self._data = bytearray()
        self._started = False

    def start(self) -> CommandApdu:
        if self._started:
            raise InvalidTransitionError("T=0 exchange already started")
        self._started = True
        self.rounds = 1
        return self.command

    def _next(self, cmd: CommandApdu) -> CommandApdu:
        if self.rounds >= self.max_rounds:
            self.state = State.FAILED
            raise CardProtocolError(
                f"T=0 exchange exceeded {self.max_rounds} commands (card keeps asking for more)"
            )
        self.rounds += 1
        self._last = cmd
        return cmd

    def feed(self, resp: ResponseApdu) -> CommandApdu | ResponseApdu:
        if not self._started:
            raise InvalidTransitionError("T=0 exchange not started")
        event = classify(resp.sw)
        try:
            new_state, action = TABLE[(self.state, event)]
        except KeyError:
            raise InvalidTransitionError(
                f"T=0 exchange in state {self.state.value} cannot take {event.value}"
            ) from None
        self.state = new_state
        if action is Action.FAIL:
            raise CardProtocolError(f"card answered 6Cxx twice in a row ({resp.sw:04X})")
        if action is Action.FINISH:
            return ResponseApdu(bytes(self._data) + bytes(resp.data), resp.sw)
        if action is Action.GET_RESPONSE:
            self._data += resp.data
            return self._next(get_response(resp.sw2))
        # Action.REISSUE: a 6Cxx carries no data worth keeping.
        return self._next(self._last.with_ne(resp.sw2 or 256))


async def transceive(
    channel: CardChannel, cmd: CommandApdu, *, max_rounds: int = DEFAULT_MAX_ROUNDS
) -> ResponseApdu:
    """Send ``cmd`` and follow 61xx/6Cxx until a final response (status word left as data)."""
    exchange = T0Exchange(cmd, max_rounds=max_rounds)
    step: CommandApdu | ResponseApdu = exchange.start()
    while isinstance(step, CommandApdu):
        step = exchange.feed(await channel.transmit(step))
    return step


async def request(
    channel: CardChannel,
    cmd: CommandApdu,
    *,
    expect: Collection[int] = frozenset({SW_OK}),
    command: str = "",
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> ResponseApdu:
    """``transceive`` then raise the typed error (``sw.check``) unless the SW is in ``expect``."""
    resp = await transceive(channel, cmd, max_rounds=max_rounds)
    return check(resp, expect, command)
