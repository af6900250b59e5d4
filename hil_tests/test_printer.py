"""Printer: real-time status, a test receipt confirmed printed, paper-out detection."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

from agent.drivers.escpos import Align, Receipt
from hil_tests.conftest import HilEnv, HilFailure

pytestmark = pytest.mark.printer

_HINTS = {
    "no_answer": "printer does not answer: check power, cable, device path and baud rate",
    "cover_open": "close the printer cover",
    "paper_end": "load paper",
    "printer_error": "clear the jam or power-cycle the printer",
    "offline": "press the printer's online/feed button",
}


def _receipt() -> Receipt:
    now = dt.datetime.now().astimezone()
    r = Receipt()
    r.align(Align.CENTER).bold().line("社会保障卡终端测试").bold(False)
    r.line("SSC terminal HIL test receipt").line(f"{now:%Y-%m-%d %H:%M:%S %z}")
    return r.feed(3).cut(partial=True)


async def test_printer_status(hil: HilEnv, printer: Any) -> None:
    t0 = time.perf_counter()
    status = await printer.status()
    hil.run.add_timing(
        "printer status (DLE EOT 1-4)", f"{(time.perf_counter() - t0) * 1000:.0f} ms"
    )
    not_ready = status.not_ready
    hil.run.add_inventory(
        "printer status",
        f"{hil.printer}: "
        + (not_ready.value if not_ready else "online, paper loaded, cover closed")
        + (", paper near end" if status.paper_near_end else ""),
    )
    if not_ready is not None:
        raise HilFailure(f"printer not ready: {not_ready.value}", _HINTS[not_ready.value])


async def test_test_receipt(hil: HilEnv, printer: Any) -> None:
    t0 = time.perf_counter()
    result = await printer.print_receipt(_receipt())
    hil.run.add_timing(
        "test receipt printed and confirmed", f"{(time.perf_counter() - t0) * 1000:.0f} ms"
    )
    if not result.printed:
        raise HilFailure(
            f"test receipt not printed: {result.reason}",
            _HINTS.get(result.reason or "", "check the printer and its cable"),
        )
    if hil.sim is not None:
        status = await hil.control("status")
        assert status["printer"]["receipts"] >= 1


async def _until(printer: Any, pred: Any) -> Any:
    while True:
        status = await printer.status()
        if pred(status):
            return status
        await asyncio.sleep(0.2)


async def test_paper_out_detected(hil: HilEnv, printer: Any) -> None:
    sim = hil.sim is not None

    async def fault(name: str) -> None:
        await hil.control("printer.fault", {"fault": name})

    status = await hil.act(
        "take the paper roll out of the printer (or open the cover) now",
        lambda: _until(printer, lambda s: s.not_ready is not None),
        sim=(lambda: fault("paper_out")) if sim else None,
    )
    try:
        reason = status.not_ready.value
        hil.run.add_inventory("printer fault detected", reason)
        result = await printer.print_receipt(_receipt())
        assert not result.printed, "a receipt must not count as printed without paper"
        assert result.reason in ("paper_end", "cover_open")
    finally:
        await hil.act(
            "put the paper back and close the cover now",
            lambda: _until(printer, lambda s: s.not_ready is None),
            sim=(lambda: fault("clear")) if sim else None,
        )
