"""Fuzz target: BER-TLV decoding of card answers (agent.card.tlv; ISO 7816-4 §5.2.2).

Invariant: ``decode`` / ``walk`` / ``find`` return data objects or raise ``TlvError`` — nothing
else; a strict decode without padding re-encodes to exactly the input (no silent repair).
The first input byte picks the mode: strict, EMV padding skipped, or lenient lengths.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.card import tlv
    from agent.errors import TlvError

DICTIONARY = [
    b"\x6f",
    b"\x84",
    b"\xa5",
    b"\x9f\x0c",
    b"\x70",
    b"\x61",
    b"\x4f",
    b"\xbf\x0c",
    b"\x81\x80",
    b"\x82\x01\x00",
    b"\x84\xff\xff\xff\xff",
    b"\x80",
    b"\x1f\x80\x80",
]


def _seeds() -> list[bytes]:
    from fuzz._seeds import responses

    return [bytes([m]) + r[:-2] for r in responses() for m in (0, 1) if len(r) > 2]


SEEDS = _seeds()


def test_one_input(data: bytes) -> str:
    mode = data[0] % 3 if data else 0
    body = data[1:]
    try:
        items = tlv.decode(body, skip_padding=mode == 1, strict=mode != 2)
        nodes = list(tlv.walk(items))
        tlv.find(items, 0x9F0C)
    except TlvError as e:
        return _harness.outcome(e)
    _harness.expect(all(isinstance(n.value, bytes) for n in nodes), "non-bytes value")
    if mode == 0:
        again = b"".join(i.to_bytes() for i in items)
        _harness.expect(again == body, "strict decode does not re-encode to its input")
    return "ok"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
