"""Hypothesis strategies for ESC/POS operations (canonical forms: see ``normalize``)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from agent.drivers.escpos import (
    Align,
    Cut,
    Feed,
    Init,
    Line,
    Op,
    Qr,
    QrEc,
    Run,
    StatusQuery,
    TransmitStatus,
)

# Printable text: no C0 controls (commands), no surrogates (not encodable); CJK and ASCII often.
texts = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
        st.characters(min_codepoint=0x20, exclude_categories=("Cs",)),
    ),
    max_size=16,
)
runs = st.builds(Run, texts, st.booleans(), st.integers(1, 8), st.integers(1, 8))
lines = st.builds(Line, st.lists(runs, max_size=4).map(tuple), st.sampled_from(Align))
qrs = st.builds(
    Qr,
    st.binary(min_size=1, max_size=80),
    st.integers(1, 16),
    st.sampled_from(QrEc),
    st.sampled_from([1, 2]),
    st.sampled_from(Align),
)
ops = st.lists(
    st.one_of(
        st.just(Init()),
        lines,
        lines,
        qrs,
        st.builds(Feed, st.integers(0, 255)),
        st.builds(Cut, st.booleans(), st.none() | st.integers(0, 255)),
        st.builds(StatusQuery, st.integers(1, 4)),
        st.builds(TransmitStatus, st.sampled_from([1, 2])),
    ),
    max_size=12,
)


def normalize(op: Op) -> Op:
    """Canonical form: empty runs dropped, adjacent runs of the same style merged."""
    if not isinstance(op, Line):
        return op
    merged: list[Run] = []
    for run in op.runs:
        if not run.text:
            continue
        if merged and merged[-1].same_style(run):
            merged[-1] = replace(merged[-1], text=merged[-1].text + run.text)
        else:
            merged.append(run)
    return Line(tuple(merged), op.align)
