"""The real serial driver against the simulated printer on a pseudo-terminal (DESIGN §7).

pyserial opens the pty slave, termios configures it, the driver's fd sits in the event loop; the
simulator decodes the ESC/POS bytes with the sans-IO parser and answers DLE EOT / GS r from its
injected state. Peer-lessons c.9: "printed" must mean printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from agent.drivers.escpos import Line, PrinterStatus, Receipt, Run
from agent.drivers.printer import NotPrinted, SerialPrinter
from agent.drivers.receipts import ReceiptData, build_receipt
from agent.errors import DeviceTimeoutError, PrinterError
from agent.sim.printer import SimPrinter, find_cjk_font

DATA = ReceiptData(
    kind="report_loss",
    terminal_id="T440300001",
    time=datetime(2025, 3, 4, 10, 11, 12),
    card_masked="*****1234",
    tx_id="01J9ZX3F7Q2V8K4M6N0P1R2S3T",
    seq=42,
    state="sealed",
    offline=True,
)
STATUS_QUERY_BYTES = 4 * 3  # DLE EOT 1..4


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimPrinter]:
    printer = SimPrinter(tmp_path / "receipts", dots=576)
    await printer.start()
    yield printer
    await printer.stop()


@pytest.fixture
async def printer(sim: SimPrinter) -> AsyncIterator[SerialPrinter]:
    # Generous per-answer timeout: 8 helpers share 2 CPUs; no timing is asserted here.
    driver = SerialPrinter(sim.url, timeout=1.0, print_timeout=10.0, poll_interval=0.05)
    await driver.open()
    yield driver
    await driver.close()


async def test_print_reaches_the_printer_as_gb18030(
    sim: SimPrinter, printer: SerialPrinter
) -> None:
    result = await printer.print_receipt(build_receipt(DATA))
    assert result.printed, result
    assert result.reason is None
    assert result.status_before == PrinterStatus()
    assert result.status_after == PrinterStatus()
    (receipt,) = sim.receipts
    assert receipt.printed
    assert "社保卡挂失".encode("gb18030") in bytes(sim.raw)
    assert "社保卡挂失" in receipt.text
    assert "待上传" in receipt.text
    assert "T440300001" in receipt.text
    assert receipt.qr_payloads == [b"SSC-TX:T440300001:01J9ZX3F7Q2V8K4M6N0P1R2S3T:42"]
    assert receipt.lines[0] == Line((Run("社会保障卡", True, 2, 2),), receipt.lines[0].align)


async def test_status_of_a_healthy_printer(sim: SimPrinter, printer: SerialPrinter) -> None:
    assert await printer.status() == PrinterStatus()
    sim.set_state(near_end=True)
    status = await printer.status()
    assert status.paper_near_end
    assert status.ready
    assert await printer.query(1) == 0x12


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"paper_out": True}, "paper_end"),
        ({"cover_open": True}, "cover_open"),
        ({"offline": True}, "offline"),
        ({"error": True}, "printer_error"),
    ],
)
async def test_not_ready_before_printing_sends_nothing(
    sim: SimPrinter, printer: SerialPrinter, flags: dict[str, bool], reason: str
) -> None:
    sim.set_state(**flags)
    result = await printer.print_receipt(build_receipt(DATA))
    assert not result.printed
    assert result.reason == reason
    assert result.status_after is None
    await asyncio.sleep(0.05)
    assert sim.bytes_received == STATUS_QUERY_BYTES  # only the status queries went out
    assert sim.receipts == []


@pytest.mark.parametrize(
    ("flags", "reason"), [({"paper_out": True}, "paper_end"), ({"cover_open": True}, "cover_open")]
)
async def test_fault_in_the_middle_of_a_receipt(
    sim: SimPrinter, printer: SerialPrinter, flags: dict[str, bool], reason: str
) -> None:
    sim.set_fault(STATUS_QUERY_BYTES + 300, **flags)  # after the status check, mid-receipt
    result = await printer.print_receipt(build_receipt(DATA))
    assert not result.printed
    assert result.reason == reason
    assert result.status_before is not None
    assert result.status_before.ready
    assert result.status_after is not None
    assert result.status_after.not_ready == reason
    (receipt,) = await sim.wait_receipts(1)
    assert receipt.interrupted == reason
    assert not receipt.printed
    assert 0 < len(receipt.printed_ops) < len(receipt.ops)


async def test_printing_resumes_after_the_paper_is_replaced(
    sim: SimPrinter, printer: SerialPrinter
) -> None:
    sim.set_fault(STATUS_QUERY_BYTES + 300, paper_out=True)
    assert not (await printer.print_receipt(build_receipt(DATA))).printed
    sim.set_state(paper_out=False)  # the held GS r answer of the stopped receipt goes out now
    result = await printer.print_receipt(build_receipt(replace(DATA, seq=43)))
    assert result.printed, result
    assert [r.printed for r in sim.receipts] == [False, True]


async def test_silent_printer_is_offline_within_the_timeout(
    sim: SimPrinter, printer: SerialPrinter
) -> None:
    sim.set_state(silent=True)
    async with asyncio.timeout(10):
        assert await printer.status() == PrinterStatus.unreachable()
        result = await printer.print_receipt(build_receipt(DATA))
    assert not result.printed
    assert result.reason == "no_answer"
    with pytest.raises(DeviceTimeoutError):
        await printer.query(1)


async def test_printer_that_goes_silent_mid_receipt(
    sim: SimPrinter, printer: SerialPrinter
) -> None:
    sim.set_fault(STATUS_QUERY_BYTES + 200, silent=True)
    async with asyncio.timeout(10):
        result = await printer.print_receipt(build_receipt(DATA))
    assert not result.printed
    assert result.reason == "no_answer"


async def test_printer_that_never_confirms(tmp_path: Path) -> None:
    """A printer that answers DLE EOT but ignores GS r: not confirmed, so not printed."""
    async with SimPrinter(tmp_path, supports_transmit_status=False) as sim:
        driver = SerialPrinter(sim.url, timeout=1.0, print_timeout=0.5, poll_interval=0.1)
        async with driver:
            result = await driver.print_receipt(Receipt().line("x").cut())
    assert not result.printed
    assert result.reason == NotPrinted.NOT_CONFIRMED


async def test_confirm_off_relies_on_status_after(sim: SimPrinter) -> None:
    async with SerialPrinter(sim.url + "?confirm=0", timeout=1.0) as driver:
        result = await driver.print_receipt(Receipt().line("OK").cut())
    assert result.printed
    assert sim.receipts[0].text == "OK"


async def test_port_lost_mid_session(sim: SimPrinter, printer: SerialPrinter) -> None:
    await sim.stop()  # the device side goes away: reads fail with EIO / EOF
    await asyncio.sleep(0.05)
    result = await printer.print_receipt(build_receipt(DATA))
    assert not result.printed
    assert result.reason in (NotPrinted.IO_ERROR, "no_answer")
    with pytest.raises(PrinterError):
        await printer.status()


async def test_open_missing_device() -> None:
    with pytest.raises(PrinterError):
        await SerialPrinter("serial:///dev/does-not-exist").open()


async def test_print_without_open(sim: SimPrinter) -> None:
    with pytest.raises(PrinterError):
        await SerialPrinter(sim.url).print_receipt(b"x\n")


async def test_png_is_rendered_and_not_blank(sim: SimPrinter, printer: SerialPrinter) -> None:
    assert find_cjk_font() is not None, "fonts-wqy-zenhei (or another CJK font) is needed"
    assert (await printer.print_receipt(build_receipt(DATA))).printed
    (receipt,) = await sim.wait_receipts(1)
    assert receipt.png is not None
    assert receipt.png.is_file()
    with Image.open(receipt.png) as img:
        assert img.width == 576
        assert 600 < img.height < 2000
        gray = img.convert("L")
        histogram = gray.histogram()
    dark = sum(histogram[:128])
    total = img.width * img.height
    assert 0.02 * total < dark < 0.5 * total  # text and a QR code, on mostly white paper


async def test_png_at_58mm(tmp_path: Path) -> None:
    async with SimPrinter(tmp_path, dots=384) as sim:
        async with SerialPrinter(sim.url, timeout=1.0) as driver:
            assert (await driver.print_receipt(build_receipt(DATA, columns=32))).printed
        (receipt,) = await sim.wait_receipts(1)
        assert receipt.png is not None
        with Image.open(receipt.png) as img:
            assert img.width == 384
