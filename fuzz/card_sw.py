"""Fuzz target: response APDUs, status words and the T=0 exchange (agent.card.apdu, .sw, .t0).

The input is a sequence of raw answers (``len ‖ bytes`` chunks) fed to one T=0 exchange of a
READ RECORD, as a card would answer it, then judged by ``sw.check``.

Invariant: ``ResponseApdu.from_bytes`` raises ``CardProtocolError`` for < 2 bytes; the exchange
ends in a ``ResponseApdu`` or ``CardProtocolError`` (6Cxx twice, too many rounds) and never
sends more than ``max_rounds`` commands; ``describe``/``error_for``/``tries_left`` accept every
status word; ``check`` returns or raises a ``CardStatusError`` carrying the same SW. Nothing
else is ever raised.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.card import sw as swmod
    from agent.card.apdu import CommandApdu, ResponseApdu
    from agent.card.t0 import T0Exchange
    from agent.errors import CardProtocolError, CardStatusError

MAX_ROUNDS = 8
DICTIONARY = [
    b"\x90\x00",
    b"\x61\x00",
    b"\x61\x10",
    b"\x6c\x00",
    b"\x6c\x08",
    b"\x63\xc2",
    b"\x69\x83",
    b"\x6a\x82",
    b"\x62\x83",
    b"\x93\x03",
    b"\x65\x81",
    b"\x6f\x00",
]


def _seeds() -> list[bytes]:
    from fuzz._seeds import responses

    rs = responses()
    out = [bytes([len(r)]) + r for r in rs if len(r) < 256]
    out += [
        b"\x02\x61\x05\x07\x01\x02\x03\x04\x05\x90\x00",
        b"\x02\x6c\x04\x06\xaa\xbb\xcc\xdd\x90\x00",
        b"\x02\x6c\x04\x02\x6c\x04",
        b"\x02\x61\x00" * 9,
        b"\x01\x90",
        b"\x00",
    ]
    return out


SEEDS = _seeds()


def _chunks(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = data[pos]
        out.append(data[pos + 1 : pos + 1 + n])
        pos += 1 + n
    return out


def test_one_input(data: bytes) -> str:
    answers = _chunks(data)
    ex = T0Exchange(CommandApdu(0x00, 0xB2, 0x01, 0x2C, b"", 256), max_rounds=MAX_ROUNDS)
    ex.start()
    sent = 1
    final: ResponseApdu | None = None
    try:
        for raw in answers:
            resp = ResponseApdu.from_bytes(raw)
            _harness.expect(resp.to_bytes() == raw, "response does not re-encode")
            swmod.describe(resp.sw)
            err = swmod.error_for(resp.sw, "fuzz")
            _harness.expect(err.sw == resp.sw, "error_for lost the status word")
            swmod.tries_left(resp.sw)
            step = ex.feed(resp)
            if isinstance(step, ResponseApdu):
                final = step
                break
            sent += 1
            _harness.expect(sent <= MAX_ROUNDS, "T=0 exchange sent more than max_rounds")
    except CardProtocolError as e:
        return _harness.outcome(e)
    if final is None:
        return "incomplete"
    try:
        swmod.check(final, command="fuzz")
    except CardStatusError as e:
        _harness.expect(e.sw == final.sw, "check raised for another status word")
        return _harness.outcome(e)
    return "ok"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
