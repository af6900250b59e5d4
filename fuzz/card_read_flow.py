"""Fuzz target: the full card read (SSSE select, EF05 identity, external authentication, EF06
holder, lifecycle, PIN tries, then the bank application) over a channel whose answers are
fuzzed (agent.tx.read.read_card; DESIGN §3 "a hostile or broken card is an attacker").

The input is a list of mutations ``index ‖ op ‖ len ‖ payload``: the answer to APDU ``index``
is replaced, bit-flipped, truncated, given another status word, given other data, or turned
into a 61xx/6Cxx. The virtual card executes every command it receives, as a real one would.

Invariant: ``read_card`` returns a report or raises ``CardProtocolError`` (malformed answer,
``TlvError``/``AtrError`` included) or the ``CardStatusError`` family (a well-formed refusal);
never a ``LocalProtocolError``, ``ValueError``, ``IndexError``... Nothing is lost: the read
changes nothing on the card but, at most, the external-authentication try counter (a mutated
challenge makes the terminal send a wrong cryptogram, which the card counts).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.card.apdu import CommandApdu, ResponseApdu
    from agent.errors import CardProtocolError, CardStatusError
    from agent.sim.card import VirtualSscCard
    from agent.sim.channel import SimChannel
    from agent.tx.read import read_card

from fuzz._seeds import issue, profile, sam

DICTIONARY = [
    b"\x90\x00",
    b"\x61\x08",
    b"\x6c\x10",
    b"\x6a\x82",
    b"\x62\x83",
    b"\x93\x03",
    b"\x6f\x0e\x84",
    b"\x9f\x0c\x03\x86\x01",
    b"\x70",
    b"\x57",
    b"\x5a",
    b"\x94",
]
OPS = 6
_CARDS = {alg: issue(alg, seed=5).to_state() for alg in ("des", "sm4")}
_SAM = sam()
_LOOP = asyncio.new_event_loop()


class FuzzChannel:
    """Passes commands to the virtual card and mutates the answers of chosen APDUs."""

    def __init__(self, inner: SimChannel, mutations: dict[int, tuple[int, bytes]]) -> None:
        self.inner = inner
        self.mutations = mutations
        self.count = 0

    @property
    def atr(self) -> bytes | None:
        return self.inner.atr

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        index = self.count
        self.count += 1
        resp = await self.inner.transmit(command)
        m = self.mutations.get(index)
        if m is None:
            return resp
        op, payload = m
        raw = resp.to_bytes()
        if op == 0:
            raw = payload
        elif op == 1 and payload:
            i = payload[0] % len(raw)
            raw = raw[:i] + bytes([raw[i] ^ (1 << (payload[-1] % 8))]) + raw[i + 1 :]
        elif op == 2:
            raw = resp.data + payload[:2]
        elif op == 3:
            raw = raw[: payload[0] if payload else 0]
        elif op == 4:
            raw = payload + raw[-2:]
        else:
            raw = (b"\x61" if payload[:1] < b"\x80" else b"\x6c") + payload[1:2].ljust(1, b"\x00")
        return ResponseApdu.from_bytes(raw)  # CardProtocolError for < 2 bytes, as a reader


def _parse(data: bytes) -> tuple[str, dict[int, tuple[int, bytes]]]:
    alg = "sm4" if data[:1] and data[0] & 1 else "des"
    muts: dict[int, tuple[int, bytes]] = {}
    pos = 1
    while pos + 3 <= len(data):
        index, op, n = data[pos], data[pos + 1] % OPS, data[pos + 2]
        muts[index % 64] = (op, data[pos + 3 : pos + 3 + n])
        pos += 3 + n
    return alg, muts


def _seeds() -> list[bytes]:
    out = [b"\x00", b"\x01"]
    for i in range(0, 48, 3):
        out.append(bytes([i & 1, i, i % OPS, 2, 0x6A, 0x82]))
        out.append(bytes([i & 1, i, 1, 2, i * 7 % 256, 3]))
        out.append(bytes([i & 1, i, 3, 1, i % 9]))
    return out


SEEDS = _seeds()


async def _read(card: VirtualSscCard, muts: dict[int, tuple[int, bytes]]) -> str:
    channel = FuzzChannel(SimChannel(card), muts)
    try:
        await read_card(channel, profile(), _SAM)
    except (CardProtocolError, CardStatusError) as e:
        return _harness.outcome(e)
    return "ok"


def test_one_input(data: bytes) -> str:
    alg, muts = _parse(data)
    before = _CARDS[alg]
    card = VirtualSscCard.from_state(profile(), before)
    result = _LOOP.run_until_complete(_read(card, muts))
    after = card.to_state()
    changed = {k for k in before if before[k] != after.get(k)} - {"ext_auth_tries_left"}
    _harness.expect(not changed, f"a read changed the card: {sorted(changed)}")
    return result


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
