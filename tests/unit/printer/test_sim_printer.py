"""The simulated printer's device logic, in memory (no pty): every state x every input."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from agent.drivers.escpos import (
    PrinterStatus,
    Receipt,
    encode_paper_sensor,
    encode_status_byte,
    status_query,
    transmit_status,
)
from agent.sim.printer import SimPrinter, SimPrinterState, render_png

STATES = {
    "normal": SimPrinterState(),
    "near_end": SimPrinterState(near_end=True),
    "paper_out": SimPrinterState(paper_out=True),
    "cover_open": SimPrinterState(cover_open=True),
    "offline": SimPrinterState(offline=True),
    "error": SimPrinterState(error=True),
    "silent": SimPrinterState(silent=True),
}
# state -> (printing stopped reason, DLE EOT status reported or None if silent, GS r answered)
EXPECTED: dict[str, tuple[str | None, PrinterStatus | None]] = {
    "normal": (None, PrinterStatus()),
    "near_end": (None, PrinterStatus(paper_near_end=True)),
    "paper_out": (
        "paper_end",
        PrinterStatus(online=False, paper_end_stop=True, paper_near_end=True, paper_end=True),
    ),
    "cover_open": ("cover_open", PrinterStatus(online=False, cover_open=True)),
    "offline": ("offline", PrinterStatus(online=False)),
    "error": ("printer_error", PrinterStatus(online=False, error=True, unrecoverable_error=True)),
    "silent": ("no_answer", None),
}


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_status_query_in_every_state(state: str, n: int) -> None:
    sim = SimPrinter()
    sim.state = STATES[state]
    sim.receive(status_query(n))
    reported = EXPECTED[state][1]
    assert bytes(sim.sent) == (
        b"" if reported is None else bytes([encode_status_byte(n, reported)])
    )


@pytest.mark.parametrize("state", sorted(STATES))
def test_transmit_status_in_every_state(state: str) -> None:
    sim = SimPrinter()
    sim.state = STATES[state]
    sim.receive(transmit_status(1))
    stopped = EXPECTED[state][0]
    near = STATES[state].near_end
    assert bytes(sim.sent) == (b"" if stopped else bytes([encode_paper_sensor(near, False)]))
    sim.set_state(paper_out=False, cover_open=False, offline=False, error=False, silent=False)
    held = stopped is not None and state != "silent"  # a powered-off printer forgot the request
    assert bytes(sim.sent) == (
        bytes([encode_paper_sensor(near, False)]) if held or not stopped else b""
    )


@pytest.mark.parametrize("state", sorted(STATES))
def test_printing_in_every_state(state: str) -> None:
    sim = SimPrinter()
    sim.state = STATES[state]
    sim.receive(Receipt().line("社保").cut().to_bytes())
    (receipt,) = sim.receipts
    assert receipt.text == "社保"
    assert receipt.interrupted == EXPECTED[state][0]
    assert receipt.printed is (EXPECTED[state][0] is None)


@pytest.mark.parametrize("after", [0, 1, 4, 5, 8, 10, 11])
def test_fault_after_n_bytes(after: int) -> None:
    data = Receipt().line("ab").line("cd").cut().to_bytes()  # ESC @ a b LF c d LF GS V 0
    sim = SimPrinter()
    sim.set_fault(after, paper_out=True)
    sim.receive(data)
    (receipt,) = sim.receipts
    assert len(data) == 11
    assert receipt.interrupted == ("paper_end" if after < 11 else None)  # cut is the 11th byte
    printed_lines = [op for op in receipt.printed_ops if op in receipt.lines]
    # a line prints if its LF arrived before the fault: LFs are bytes 5 and 8 (1-based)
    assert len(printed_lines) == (after >= 5) + (after >= 8)
    assert sim.state.paper_out


def test_fault_flags_validated() -> None:
    sim = SimPrinter()
    with pytest.raises(ValueError):
        sim.set_fault(1)
    with pytest.raises(ValueError):
        sim.set_fault(1, on_fire=True)
    with pytest.raises(ValueError):
        sim.set_fault(-1, paper_out=True)


def test_unknown_commands_are_kept() -> None:
    sim = SimPrinter()
    sim.receive(b"\x1b\x99hello\n\x1dV\x00")
    assert sim.unknown_ops
    assert sim.receipts[0].text == "hello"


def test_render_png(tmp_path: Path) -> None:
    ops = Receipt().line("社会保障卡 Social Security").qr("SSC-TX:T1:1").cut().ops
    path = render_png(ops, tmp_path / "r.png", dots=384)
    with Image.open(path) as img:
        assert img.width == 384
        dark = sum(img.convert("L").histogram()[:128])
    assert dark > 1000
