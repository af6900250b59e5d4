"""Fuzz target: EF05 / EF06 record decoders and the SSSE FCI (agent.ssc.files; §1.2–1.3).

The input is split into records (``len ‖ bytes`` chunks) given to the decoders by tag; a mode
byte picks identity, holder, activation status or the FCI algorithm indicator.

Invariant: every decoder returns a value or raises ``CardProtocolError`` (``TlvError`` is one)
— never ``ValueError``, ``UnicodeDecodeError`` or ``IndexError``; a decoded identity or holder
re-encodes to records that decode to the same value.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.errors import CardProtocolError
    from agent.ssc import commands as c
    from agent.ssc import files

DICTIONARY = [bytes([s.tag, s.length]) for s in c.EF05_RECORDS + c.EF06_RECORDS] + [
    b"\x00",
    b"\xff",
    b"\x20",
    b"X",
    b"\xd6\xd0",
    b"\xa1\xa4",
    b"20261301",
    b"19991231",
]


def _seeds() -> list[bytes]:
    from fuzz._seeds import read_exchanges

    tags05 = {s.tag for s in c.EF05_RECORDS}
    tags06 = {s.tag for s in c.EF06_RECORDS}
    # T=0 cards answer READ RECORD with 61xx and the record comes with GET RESPONSE: take
    # every successful answer and group consecutive records per card (a tag repeats: next card)
    groups05: list[list[bytes]] = [[]]
    groups06: list[list[bytes]] = [[]]
    fcis: list[bytes] = []
    for _cmd, r in read_exchanges():
        if r[-2:] != b"\x90\x00" or len(r) < 4:
            continue
        data = r[:-2]
        if data[0] == 0x6F:
            fcis.append(data)
        for tags, groups in ((tags05, groups05), (tags06, groups06)):
            if data[0] in tags and len(data) == data[1] + 2:
                if any(g[0] == data[0] for g in groups[-1]):
                    groups.append([])
                groups[-1].append(data)

    def pack(mode: int, items: list[bytes]) -> bytes:
        return bytes([mode]) + b"".join(bytes([len(i)]) + i for i in items)

    out = [pack(0, g) for g in groups05 if g] + [pack(1, g) for g in groups06 if g]
    out += [pack(2, [g[0]]) for g in groups05 if g]
    out += [bytes([3]) + f for f in fcis[:8]]
    return out


SEEDS = _seeds()


def _records(body: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        n = body[pos]
        rec = body[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if rec:
            out.setdefault(rec[0], rec)
    return out


def test_one_input(data: bytes) -> str:
    mode = data[0] % 4 if data else 0
    body = data[1:]
    try:
        if mode == 0:
            ident = files.decode_identity(_records(body))
            again = files.decode_identity(files.encode_identity(ident))
            _harness.expect(again == ident, "identity does not survive encode/decode")
        elif mode == 1:
            holder = files.decode_holder(_records(body))
            again_h = files.decode_holder(files.encode_holder(holder))
            _harness.expect(again_h == holder, "holder does not survive encode/decode")
        elif mode == 2:
            files.decode_status(body, 0x10, 1)
        else:
            files.decode_fci_algorithm(body)
    except CardProtocolError as e:
        return _harness.outcome(e)
    return "ok"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
