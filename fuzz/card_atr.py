"""Fuzz target: answer-to-reset parsing (agent.card.atr; ISO 7816-3 §8.2).

Invariant: ``parse_atr`` returns an ``Atr`` whose derived properties (protocols, Fi/Di, guard
time) either compute or raise ``AtrError``; nothing else is ever raised; a parsed ATR keeps its
raw bytes unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.card.atr import parse_atr
    from agent.errors import AtrError

DICTIONARY = [b"\x3b", b"\x3f", b"\x80", b"\x81", b"\x11", b"\x96", b"\x00", b"\xff"]


def _seeds() -> list[bytes]:
    from fuzz._seeds import issue

    out = [issue("des").atr, issue("sm4", seed=3).atr]
    out += [
        bytes.fromhex("3B6800000073C84000009000"),
        bytes.fromhex("3B8F8001804F0CA000000306030001000000006A"),
        bytes.fromhex("3BFF1800FF8131FE45656311066602500010F45A7B6041CD"),
        bytes.fromhex("3F6525082204689000"),
        bytes.fromhex("3B9F95801FC78031E073FE211B63E208A8830F9000B6"),
    ]
    return out


SEEDS = _seeds()


def test_one_input(data: bytes) -> str:
    try:
        atr = parse_atr(data)
        atr.protocols  # noqa: B018  # derived properties must compute or raise AtrError
        atr.extra_guard_time  # noqa: B018
        atr.fi_di  # noqa: B018
    except AtrError as e:
        return _harness.outcome(e)
    _harness.expect(atr.raw == data, "parsed ATR does not keep its raw bytes")
    return "ok"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
