"""Status decoding: every bit of DLE EOT 1..4, fixed bits, GS r 1, readiness."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.escpos import (
    NotReady,
    PrinterStatus,
    decode_paper_sensor,
    decode_status,
    decode_status_byte,
    encode_paper_sensor,
    encode_status_byte,
    is_realtime_status,
    is_transmit_status,
)
from agent.errors import LocalProtocolError, PrinterProtocolError

# Written from the ESC/POS manual, independently of the module's table: (n, bit) -> (field, value
# of the field when the bit is set). Bits 0, 1, 4, 7 are fixed (0, 1, 1, 0).
MANUAL = {
    (1, 2): ("drawer_pin3_high", True),
    (1, 3): ("online", False),
    (1, 5): ("waiting_online_recovery", True),
    (1, 6): ("feed_button_pressed", True),
    (2, 2): ("cover_open", True),
    (2, 3): ("feeding_by_button", True),
    (2, 5): ("paper_end_stop", True),
    (2, 6): ("error", True),
    (3, 2): ("recoverable_error", True),
    (3, 3): ("cutter_error", True),
    (3, 5): ("unrecoverable_error", True),
    (3, 6): ("auto_recoverable_error", True),
    (4, 2): ("paper_near_end", True),
    (4, 3): ("paper_near_end", True),
    (4, 5): ("paper_end", True),
    (4, 6): ("paper_end", True),
}
FIXED_BITS = (0, 1, 4, 7)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("bit", range(8))
def test_every_bit(n: int, bit: int) -> None:
    value = 0x12 ^ (1 << bit)
    if bit in FIXED_BITS:
        with pytest.raises(PrinterProtocolError):
            decode_status({n: value})
        return
    name, on = MANUAL[(n, bit)]
    assert decode_status({n: value}) == replace(PrinterStatus(), **{name: on})


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_idle_byte_means_all_clear(n: int) -> None:
    assert decode_status({n: 0x12}) == PrinterStatus()
    assert PrinterStatus().ready


def test_real_answers_of_an_epson_printer() -> None:
    # Paper out: n=1 offline, n=2 paper-end stop, n=4 near end + end; cover closed, no error.
    status = decode_status({1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x7E})
    assert not status.online
    assert status.paper_end
    assert status.paper_near_end
    assert status.paper_end_stop
    assert not status.cover_open
    assert status.not_ready is NotReady.PAPER_END


status_flags = st.fixed_dictionaries(
    {f.name: st.booleans() for f in fields(PrinterStatus) if f.name != "responding"}
)


@settings(deadline=None)
@given(status_flags)
def test_encode_decode_round_trip(flags: dict[str, bool]) -> None:
    status = PrinterStatus(**flags)
    answers = {n: encode_status_byte(n, status) for n in (1, 2, 3, 4)}
    assert all(is_realtime_status(v) for v in answers.values())
    assert decode_status(answers) == status


@settings(deadline=None)
@given(st.integers(0, 255))
def test_decode_total_on_bytes(value: int) -> None:
    for n in (1, 2, 3, 4):
        if is_realtime_status(value):
            assert isinstance(decode_status_byte(n, value), dict)
        else:
            with pytest.raises(PrinterProtocolError):
                decode_status_byte(n, value)


@pytest.mark.parametrize("value", [-1, 256, 0x1000])
def test_out_of_range_byte(value: int) -> None:
    with pytest.raises(PrinterProtocolError):
        decode_status_byte(1, value)
    with pytest.raises(PrinterProtocolError):
        decode_paper_sensor(value)


@pytest.mark.parametrize("n", [0, 5])
def test_bad_query_number(n: int) -> None:
    with pytest.raises(LocalProtocolError):
        decode_status_byte(n, 0x12)
    with pytest.raises(LocalProtocolError):
        encode_status_byte(n, PrinterStatus())


@pytest.mark.parametrize(
    ("value", "kind"),
    [(0x12, "rt"), (0x7E, "rt"), (0x00, "tx"), (0x0F, "tx"), (0x6C, "tx"), (0x11, None),
     (0x13, None), (0x80, None), (0x10, None)],
)  # fmt: skip
def test_answers_are_told_apart_by_fixed_bits(value: int, kind: str | None) -> None:
    assert is_realtime_status(value) == (kind == "rt")
    assert is_transmit_status(value) == (kind == "tx")


@pytest.mark.parametrize(
    ("near", "end", "value"),
    [(False, False, 0), (True, False, 3), (False, True, 12), (True, True, 15)],
)
def test_paper_sensor(near: bool, end: bool, value: int) -> None:
    assert encode_paper_sensor(near, end) == value
    assert decode_paper_sensor(value) == (near, end)


def test_paper_sensor_one_bit_is_enough() -> None:
    assert decode_paper_sensor(0x01) == (True, False)
    assert decode_paper_sensor(0x08) == (False, True)
    with pytest.raises(PrinterProtocolError):
        decode_paper_sensor(0x12)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (PrinterStatus(), None),
        (PrinterStatus(paper_near_end=True), None),
        (PrinterStatus.unreachable(), NotReady.NO_ANSWER),
        (PrinterStatus(online=False), NotReady.OFFLINE),
        (PrinterStatus(online=False, cover_open=True, paper_end=True), NotReady.COVER_OPEN),
        (PrinterStatus(paper_end=True), NotReady.PAPER_END),
        (PrinterStatus(paper_end_stop=True), NotReady.PAPER_END),
        (PrinterStatus(online=False, cutter_error=True), NotReady.PRINTER_ERROR),
        (PrinterStatus(error=True), NotReady.PRINTER_ERROR),
        (PrinterStatus(recoverable_error=True), NotReady.PRINTER_ERROR),
        (PrinterStatus(unrecoverable_error=True), NotReady.PRINTER_ERROR),
        (PrinterStatus(auto_recoverable_error=True), NotReady.PRINTER_ERROR),
    ],
)
def test_not_ready_reason(status: PrinterStatus, reason: NotReady | None) -> None:
    assert status.not_ready is reason
    assert status.ready is (reason is None)


def test_to_dict_lists_every_flag() -> None:
    d = PrinterStatus.unreachable().to_dict()
    assert d["responding"] is False
    assert d["online"] is False
    assert set(d) == {f.name for f in fields(PrinterStatus)}
