"""ATR parsing (agent.card.atr, ISO 7816-3 §8)."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card.atr import InterfaceGroup, parse_atr
from agent.errors import AtrError

SSC_ATR = bytes.fromhex("3B6D000000815 44C97868432 02AD932A48".replace(" ", ""))
JCOP_T1 = bytes.fromhex("3BF81300008131FE454A434F5076323431B7")
T0_T1 = bytes.fromhex("3B8A80014A434F503331563233327A")


def test_ssc_atr_from_research_notes() -> None:
    atr = parse_atr(SSC_ATR)
    assert not atr.inverse
    assert atr.groups == (InterfaceGroup(1, None, 0x00, 0x00, None),)
    assert atr.historical == bytes.fromhex("0081544C9786843202AD932A48")
    assert atr.protocols == (0,)
    assert atr.tck is None
    assert atr.fi_di == (372, 1)
    assert atr.extra_guard_time == 0


def test_t1_atr_with_tck() -> None:
    atr = parse_atr(JCOP_T1)
    assert atr.protocols == (1,)
    assert atr.tck == 0xB7
    assert atr.historical == b"JCOPv241"
    assert atr.ta1 == 0x13
    assert atr.fi_di == (372, 4)
    assert [g.index for g in atr.groups] == [1, 2, 3]
    assert atr.groups[2] == InterfaceGroup(3, 0xFE, 0x45, None, None)


def test_t0_and_t1_offered() -> None:
    atr = parse_atr(T0_T1)
    assert atr.protocols == (0, 1)
    assert atr.historical == b"JCOP31V232"
    assert atr.tck == 0x7A


def test_minimal_and_inverse() -> None:
    atr = parse_atr(bytes.fromhex("3F00"))
    assert atr.inverse
    assert atr.groups == ()
    assert atr.historical == b""
    assert atr.protocols == (0,)


@pytest.mark.parametrize(
    ("hexdata", "why"),
    [
        ("", "too short"),
        ("3B", "too short"),
        ("3C00", "bad TS"),
        ("3B10", "truncated"),
        ("3B0241", "historical"),
        ("3B0000", "unexpected"),
        ("3BF81300008131FE454A434F5076323431", "TCK missing"),
        ("3BF81300008131FE454A434F5076323431B6", "TCK check"),
        ("3B80", "truncated"),
        ("3B" + "0F" + "00" * 32, "longer than"),
    ],
)
def test_malformed(hexdata: str, why: str) -> None:
    with pytest.raises(AtrError, match=why):
        parse_atr(bytes.fromhex(hexdata))


def test_reserved_fi_di() -> None:
    atr = parse_atr(bytes.fromhex("3B10" + "70"))
    with pytest.raises(AtrError, match="reserved"):
        _ = atr.fi_di


def test_non_bytes() -> None:
    with pytest.raises(AtrError):
        parse_atr("3B00")  # type: ignore[arg-type]


@st.composite
def valid_atrs(draw: st.DrawFn) -> bytes:
    hist = draw(st.binary(max_size=8))
    groups = draw(st.integers(0, 3))
    protos = [draw(st.sampled_from([0, 1, 15])) for _ in range(groups)]
    body = bytearray()
    ys: list[int] = []
    for i in range(groups + 1):
        y = draw(st.integers(0, 7))  # TA/TB/TC presence
        if i < groups:
            y |= 8
        ys.append(y)
    t0 = (ys[0] << 4) | len(hist)
    for i, y in enumerate(ys):
        for bit in (1, 2, 4):
            if y & bit:
                body.append(draw(st.integers(0, 255)))
        if y & 8:
            body.append((ys[i + 1] << 4) | protos[i])
    raw = bytearray([0x3B, t0]) + body + hist
    if any(p != 0 for p in protos):
        raw.append(reduce(lambda a, b: a ^ b, raw[1:], 0))
    return bytes(raw)


@settings(max_examples=200)
@given(valid_atrs())
def test_generated_atrs_parse(raw: bytes) -> None:
    atr = parse_atr(raw)
    assert atr.raw == raw
    assert len(atr.historical) == raw[1] & 0x0F
    assert all(p in (0, 1) for p in atr.protocols)


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_hostile_atr_only_raises_atr_error(raw: bytes) -> None:
    try:
        atr = parse_atr(raw)
    except AtrError:
        return
    assert atr.raw == raw
    try:
        fi, di = atr.fi_di
    except AtrError:
        return
    assert fi > 0
    assert di > 0
