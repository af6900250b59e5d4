"""Async ESC/POS receipt printer on a serial port: "printed" only when the printer says so.

DESIGN §7 and peer-lessons (c) 9: ESC/POS libraries report success with no paper, with the cover
open or with the printer off. Here a receipt counts as printed only when

1. the real-time status before printing (``DLE EOT`` 1..4) shows an online printer with paper and
   a closed cover — otherwise nothing is sent;
2. the in-order status request ``GS r 1`` appended to the receipt comes back: a printer answers it
   only after processing everything before it, so it is a print-completion barrier (a printer that
   stopped for paper end or an open cover never answers it; while waiting, the real-time status is
   polled so such a stop is seen at once);
3. the real-time status after printing is still good.

No answer to a status query within the timeout means offline. Every wait has a timeout.

I/O model: pyserial opens and configures the port (termios: speed, 8N1, raw mode, flow control,
exclusive lock); the event loop then reads and writes the non-blocking file descriptor with
``loop.add_reader``/``add_writer``. Not a worker thread because pyserial has no asyncio API and a
thread blocked in ``read()`` can neither be cancelled nor timed out cleanly (the blocking status
reads of python-escpos #143); with the fd in the loop, timeouts are ``asyncio.timeout`` and
cancellation is immediate. POSIX only, which is what the agent runs on (DESIGN §8).

Foreign exceptions (``serial.SerialException``, ``OSError``) stop here: they become
``PrinterError``; a missing answer becomes ``DeviceTimeoutError`` (or an "offline" status).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Final, Self
from urllib.parse import parse_qsl, urlsplit

import serial

from agent.drivers.escpos import (
    NotReady,
    PrinterStatus,
    Receipt,
    decode_paper_sensor,
    decode_status,
    is_realtime_status,
    is_transmit_status,
    status_query,
    transmit_status,
)
from agent.errors import ConfigError, DeviceTimeoutError, PrinterError

log = logging.getLogger(__name__)

DEFAULT_BAUD: Final = 115200


class NotPrinted(StrEnum):
    """Reasons a receipt was not printed besides the printer's own ``NotReady`` states."""

    WRITE_TIMEOUT = "write_timeout"
    NOT_CONFIRMED = "not_confirmed"
    IO_ERROR = "io_error"


@dataclass(frozen=True, slots=True)
class PrinterUrl:
    """Where and how to open the printer: ``serial:///dev/ttyUSB0?baud=115200`` or a path.

    Query parameters: ``baud``, ``rtscts`` (0/1), ``xonxoff`` (0/1), ``confirm`` (0/1: wait for
    the ``GS r 1`` barrier; turn off only for printers that do not implement ``GS r``).
    """

    path: str
    baud: int = DEFAULT_BAUD
    rtscts: bool = False
    xonxoff: bool = False
    confirm: bool = True

    @classmethod
    def parse(cls, url: str) -> PrinterUrl:
        """Parse a printer URL; errors name the offending part (``ConfigError``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("", "serial"):
            raise ConfigError(f"printer URL scheme must be serial:// (got {parts.scheme!r})")
        if parts.netloc:
            raise ConfigError("printer URL has a host; use serial:///dev/ttyUSB0 (three slashes)")
        if not parts.path:
            raise ConfigError("printer URL has no device path")
        flags: dict[str, bool] = {}
        baud = DEFAULT_BAUD
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "baud":
                if not value.isdigit() or not 0 < int(value) <= 4_000_000:
                    raise ConfigError(f"printer URL baud must be a positive integer: {value!r}")
                baud = int(value)
            elif key in ("rtscts", "xonxoff", "confirm"):
                if value not in ("0", "1"):
                    raise ConfigError(f"printer URL {key} must be 0 or 1: {value!r}")
                flags[key] = value == "1"
            else:
                raise ConfigError(f"unknown printer URL parameter {key!r}")
        return cls(parts.path, baud, **flags)


@dataclass(frozen=True, slots=True)
class PrintResult:
    """The truth about one receipt: ``printed`` is False with a ``reason`` code otherwise.

    ``reason`` is a ``NotReady`` value (``no_answer``, ``cover_open``, ``paper_end``,
    ``printer_error``, ``offline``) or a ``NotPrinted`` value (``write_timeout``,
    ``not_confirmed``, ``io_error``). ``status_after`` is None when nothing was sent.
    """

    printed: bool
    reason: str | None
    status_before: PrinterStatus
    status_after: PrinterStatus | None

    def to_dict(self) -> dict[str, object]:
        """JSON-able form for the journal and events."""
        return {
            "printed": self.printed,
            "reason": self.reason,
            "status_before": self.status_before.to_dict(),
            "status_after": None if self.status_after is None else self.status_after.to_dict(),
        }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SerialPrinter:
    """An ESC/POS printer on a serial port (or a pseudo-terminal, for the simulator).

    ``timeout`` bounds each status answer, ``print_timeout`` the whole print (write + barrier),
    ``poll_interval`` how often the real-time status is polled while waiting for the barrier.
    One operation at a time (an internal lock), so status answers are never interleaved.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        print_timeout: float = 15.0,
        poll_interval: float = 0.25,
    ) -> None:
        self.url = PrinterUrl.parse(url)
        self.timeout = timeout
        self.print_timeout = print_timeout
        self.poll_interval = poll_interval
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._realtime: deque[int] = deque(maxlen=64)
        self._in_order: deque[int] = deque(maxlen=64)
        self._arrived = asyncio.Event()
        self._failure: PrinterError | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether the port is open and has not failed."""
        return self._serial is not None and self._failure is None

    async def open(self) -> None:
        """Open and configure the port; ``PrinterError`` if it cannot be opened."""
        if self._serial is not None:
            return
        try:
            port = serial.Serial(
                self.url.path,
                baudrate=self.url.baud,
                timeout=0,
                write_timeout=0,
                rtscts=self.url.rtscts,
                xonxoff=self.url.xonxoff,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PrinterError(f"cannot open printer port {self.url.path}: {exc}") from exc
        try:
            port.reset_input_buffer()  # stale answers from a previous session mean nothing now
            fd = port.fileno()
            os.set_blocking(fd, False)
        except (serial.SerialException, OSError) as exc:
            port.close()
            raise PrinterError(f"cannot configure printer port {self.url.path}: {exc}") from exc
        self._serial, self._fd, self._failure = port, fd, None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)
        log.debug("printer port %s open at %d baud", self.url.path, self.url.baud)

    async def close(self) -> None:
        """Close the port (idempotent)."""
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.warning("closing printer port %s: %s", self.url.path, exc)
        self._fd = -1

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- byte I/O ------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        self._read_available(signalled=True)

    def _read_available(self, *, signalled: bool) -> bool:
        """Read what is there and sort it by the command it answers; False if nothing was.

        With pyserial's termios (VMIN=0) an empty read is normal when polling; only when the loop
        signalled the fd readable does it mean hang-up (device gone, pty master closed).
        """
        try:
            data = os.read(self._fd, 256)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(f"printer port read failed: {exc}")
            return False
        if not data:
            if signalled:
                self._fail("printer port closed by the device")
            return False
        for value in data:
            # The fixed bits tell which command a byte answers (escpos module docstring).
            if is_realtime_status(value):
                self._realtime.append(value)
            elif is_transmit_status(value):
                self._in_order.append(value)
            else:
                log.debug("printer sent %#04x (XON/XOFF or noise), ignored", value)
        self._arrived.set()
        return True

    def _drain(self) -> None:
        """Take in bytes already waiting in the port before a new request."""
        while self._failure is None and self._read_available(signalled=False):
            pass

    def _fail(self, message: str) -> PrinterError:
        self._failure = PrinterError(message)
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)  # an fd in error stays readable: stop the callbacks
        self._arrived.set()
        return self._failure

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._serial is None:
            raise PrinterError("printer port is not open")

    async def _read(self, queue: deque[int], within: float) -> int:
        try:
            async with asyncio.timeout(within):
                while not queue:
                    self._check_usable()
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise DeviceTimeoutError(f"printer did not answer within {within:.2f} s") from None
        return queue.popleft()

    async def _write(self, data: bytes, within: float) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        try:
            async with asyncio.timeout(within):
                while view:
                    self._check_usable()
                    try:
                        view = view[os.write(self._fd, view) :]
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise self._fail(f"printer port write failed: {exc}") from exc
                    if view:
                        ready: asyncio.Future[None] = loop.create_future()
                        loop.add_writer(self._fd, _resolve, ready)
                        try:
                            await ready
                        finally:
                            loop.remove_writer(self._fd)
        except TimeoutError:
            raise DeviceTimeoutError(
                f"printer accepted only {len(data) - len(view)} of {len(data)} bytes in time"
            ) from None

    # -- status --------------------------------------------------------------------------------
    async def query(self, n: int) -> int:
        """Raw answer byte to ``DLE EOT n``; ``DeviceTimeoutError`` if none in time."""
        async with self._lock:
            return await self._query(n)

    async def _query(self, n: int) -> int:
        self._check_usable()
        self._drain()
        self._realtime.clear()  # a late answer to an earlier query must not be taken for this one
        await self._write(status_query(n), self.timeout)
        return await self._read(self._realtime, self.timeout)

    async def status(self) -> PrinterStatus:
        """Real-time status (``DLE EOT`` 1..4); a query without answer means offline.

        Raises ``PrinterError`` only if the port itself failed or is not open.
        """
        async with self._lock:
            return await self._status()

    async def _status(self) -> PrinterStatus:
        answers: dict[int, int] = {}
        for n in (1, 2, 3, 4):
            try:
                answers[n] = await self._query(n)
            except DeviceTimeoutError:
                return PrinterStatus.unreachable()
        return decode_status(answers)

    # -- printing ------------------------------------------------------------------------------
    async def print_receipt(self, receipt: Receipt | bytes) -> PrintResult:
        """Print one receipt and say truthfully whether it was printed (module docstring).

        Every printer condition, including a port that fails mid-way, is a ``PrintResult`` with
        ``printed=False`` and a reason; ``PrinterError`` is raised only if the port is not open.
        """
        data = receipt.to_bytes() if isinstance(receipt, Receipt) else bytes(receipt)
        if self._serial is None:
            raise PrinterError("printer port is not open")
        async with self._lock:
            before = PrinterStatus.unreachable()
            after: PrinterStatus | None = None
            try:
                before = await self._status()
                if (not_ready := before.not_ready) is not None:
                    return PrintResult(False, not_ready, before, None)
                return await self._print(data, before)
            except DeviceTimeoutError:
                after = await self._status_or_unreachable()
                return PrintResult(
                    False, after.not_ready or NotPrinted.WRITE_TIMEOUT, before, after
                )
            except PrinterError as exc:
                log.warning("printer I/O failed: %s", exc.message)
                return PrintResult(False, NotPrinted.IO_ERROR, before, after)

    async def _status_or_unreachable(self) -> PrinterStatus:
        try:
            return await self._status()
        except PrinterError:
            return PrinterStatus.unreachable()

    async def _print(self, data: bytes, before: PrinterStatus) -> PrintResult:
        confirm = self.url.confirm
        self._drain()
        self._in_order.clear()  # a held answer from an earlier, stopped print is not this one's
        await self._write(data + (transmit_status(1) if confirm else b""), self.print_timeout)
        if not confirm:
            after = await self._status()
            return PrintResult(after.ready, after.not_ready, before, after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.print_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                after = await self._status()
                return PrintResult(
                    False, after.not_ready or NotPrinted.NOT_CONFIRMED, before, after
                )
            try:
                answer = await self._read(self._in_order, min(self.poll_interval, remaining))
                break
            except DeviceTimeoutError:
                polled = await self._status()  # still printing, or stopped for good?
                if polled.not_ready is not None:
                    return PrintResult(False, polled.not_ready, before, polled)
        _near_end, paper_end = decode_paper_sensor(answer)
        after = await self._status()
        if paper_end:
            return PrintResult(False, NotReady.PAPER_END, before, after)
        return PrintResult(after.ready, after.not_ready, before, after)
