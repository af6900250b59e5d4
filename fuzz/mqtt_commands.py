"""Fuzz target: MQTT command payloads from central — ``CommandVerifier`` + the strict codec
(agent.wire.commands, agent.wire.codec, agent.wire.cose; DESIGN §5).

The first byte picks what the rest is: (0) the raw ``cmd`` topic payload; (1) a payload that
central's key *signs* (so the fuzz reaches the command codec, binding, freshness and replay
checks behind a valid signature); (2) a bare command for ``Command.from_cbor``; (3) an ``ack``
payload for ``ack_ranges``.

Invariant: the verifier returns a ``Command`` or raises ``CommandRejectedError`` with a reason
in ``REASONS``; the codec returns or raises ``WireError``; nothing else. An accepted command
round-trips through its canonical encoding, and once recorded (counter, id) the same bytes
are rejected as ``replayed``: nothing is ever applied twice.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.errors import CommandRejectedError, WireError
    from agent.wire import codec, cose
    from agent.wire import examples as ex
    from agent.wire.commands import REASONS, CommandVerifier

KEY = ex.example_signing_key()
KID = ex.EXAMPLE_KID
TERMINAL = ex.TERMINAL
NOW = ex.T0 + 60


@dataclass
class MemoryReplay:
    counter: int = 0
    ids: set[bytes] = field(default_factory=set)

    def last_counter(self) -> int:
        return self.counter

    def seen(self, command_id: bytes) -> bool:
        return command_id in self.ids


def _verifier(replay: MemoryReplay) -> CommandVerifier:
    return CommandVerifier({KID: KEY.public_key()}, TERMINAL, lambda: NOW, replay)


def _seeds() -> list[bytes]:
    out: list[bytes] = []
    for e in ex.examples():
        if e.rule == "command":
            out += [b"\x01" + e.cbor, b"\x02" + e.cbor, b"\x00" + cose.sign(e.cbor, KEY, KID)]
        elif e.rule == "signed-command":
            out.append(b"\x00" + e.cbor)
        elif e.rule == "ack":
            out.append(b"\x03" + e.cbor)
    return out


SEEDS = _seeds()
DICTIONARY = [
    b"\xd2",
    b"\x84",
    b"\x43\xa1\x01\x27",
    b"\xa1\x04",
    b"\x58\x40",
    b"\x64type",
    b"\x64body",
    b"\x67counter",
    b"\x67expires",
    b"\x66issued",
    b"\x68terminal",
    b"\x63all",
    b"\x50",
    b"\x1a\x69\x55\xb9\x00",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
]


def _rejected(e: CommandRejectedError) -> str:
    _harness.expect(e.reason in REASONS, f"unknown rejection reason {e.reason!r}")
    return f"rejected:{e.reason}"


def test_one_input(data: bytes) -> str:
    mode = data[0] % 4 if data else 0
    body = data[1:]
    if mode == 2:
        try:
            cmd = codec.Command.from_cbor(body)
        except WireError as e:
            return _harness.outcome(e)
        _harness.expect(codec.Command.from_cbor(cmd.to_cbor()) == cmd, "no round trip")
        return "decoded"
    if mode == 3:
        try:
            ranges = codec.ack_ranges(body, TERMINAL)
        except WireError as e:
            return _harness.outcome(e)
        _harness.expect(all(1 <= lo <= hi for lo, hi in ranges), f"bad ranges {ranges}")
        return "ack"
    payload = cose.sign(body, KEY, KID) if mode == 1 else body
    replay = MemoryReplay()
    verifier = _verifier(replay)
    try:
        cmd = verifier.verify(payload)
    except CommandRejectedError as e:
        return _rejected(e)
    _harness.expect(cmd.terminal in (TERMINAL, "all"), "accepted a command for another terminal")
    _harness.expect(cmd.issued <= NOW + 300 and cmd.expires + 300 >= NOW, "accepted a stale one")
    _harness.expect(codec.Command.from_cbor(cmd.to_cbor()) == cmd, "no round trip")
    replay.counter = max(replay.counter, cmd.counter)  # what the journal records on apply
    replay.ids.add(cmd.id)
    try:
        verifier.verify(payload)
    except CommandRejectedError as e:
        _harness.expect(e.reason == "replayed", f"second delivery rejected as {e.reason}")
    else:
        raise _harness.InvariantViolation("the same command was accepted twice")
    return f"accepted:{cmd.type}"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
