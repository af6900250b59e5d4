"""The vpcd bridge: a simulated card or PSAM appears in a real PC/SC reader (DESIGN §7).

vsmartcard's ``vpcd`` is a pcscd reader driver (``libifdvpcd.so``). Each of its readers listens
on a TCP port (``reader.conf`` ``DEVICENAME /dev/null:<port>``; slot *n* listens on
``port + n``). The virtual card is the TCP **client**: connecting is inserting the card,
disconnecting is pulling it out.

Wire format (vsmartcard ``vpcd.c``, ``sendToVICC``/``recvFromVICC``): every message in both
directions is a 2-byte big-endian length followed by that many bytes. From vpcd to the card:

* a 1-byte control message: ``00`` power off, ``01`` power on, ``02`` reset, ``04`` get ATR;
* anything longer: a command APDU.

The card answers only ``get ATR`` (with the ATR) and APDUs (with ``data ‖ SW1 SW2``); power
messages get no answer. vpcd asks for the ATR on every presence poll (about every 400 ms), so
that request must never touch session state. A zero-length answer makes vpcd eject the card,
so the bridge never sends one.

``VpcdDecoder`` is the sans-IO framing (bytes in, messages out, never raises on garbage);
``VpcdBridge`` is the thin asyncio shell that drives a ``SimDevice`` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from agent.drivers import loopcalls
from agent.sim.base import SimDevice

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_PAYLOAD",
    "BridgeState",
    "Control",
    "VpcdBridge",
    "VpcdDecoder",
    "VpcdMessage",
    "encode_frame",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963  # Debian /etc/reader.conf.d/vpcd: CHANNELID 0x8C7B, "Virtual PCD 00 00"
MAX_PAYLOAD = 0xFFFF  # the length prefix is 16 bits
SW_NO_DIAGNOSIS = b"\x6f\x00"  # ISO 7816-4: "no precise diagnosis"


class Control(enum.IntEnum):
    """vpcd control bytes (vsmartcard ``vpcd.h``: VPCD_CTRL_*)."""

    OFF = 0
    ON = 1
    RESET = 2
    ATR = 4


@dataclass(frozen=True, slots=True)
class VpcdMessage:
    """One decoded message from vpcd: a control byte, or an APDU (``control is None``)."""

    control: Control | None = None
    apdu: bytes = b""
    unknown: int | None = None  # a 1-byte message that is no known control code (ignored)


def encode_frame(payload: bytes) -> bytes:
    """Length-prefix one message. Raises ``ValueError`` when it cannot be framed."""
    if not payload or len(payload) > MAX_PAYLOAD:
        raise ValueError(f"vpcd payload must be 1..{MAX_PAYLOAD} bytes, got {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class VpcdDecoder:
    """Sans-IO decoder of the vpcd stream. ``feed`` never raises; partial frames are kept.

    Zero-length frames carry nothing (vpcd never sends them) and are skipped; 1-byte frames
    with an unknown code are reported as ``unknown`` so the shell can log and ignore them.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[VpcdMessage]:
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[VpcdMessage]:
        while len(self._buf) >= 2:
            size = int.from_bytes(self._buf[:2], "big")
            if len(self._buf) < 2 + size:
                return
            payload = bytes(self._buf[2 : 2 + size])
            del self._buf[: 2 + size]
            if size == 0:
                continue
            if size == 1:
                code = payload[0]
                try:
                    yield VpcdMessage(control=Control(code))
                except ValueError:
                    yield VpcdMessage(unknown=code)
                continue
            yield VpcdMessage(apdu=payload)


def answer(device: SimDevice, message: VpcdMessage) -> bytes | None:
    """Drive ``device`` with one message; the framed reply, or None when vpcd expects none.

    The simulator is a process boundary for the bridge: a simulator bug answers ``6F00``
    instead of killing the reader, and is logged.
    """
    if message.control is Control.ATR:
        atr = bytes(device.atr)
        return encode_frame(atr) if 0 < len(atr) <= MAX_PAYLOAD else None
    if message.control is Control.ON or message.control is Control.RESET:
        device.power_on()
        return None
    if message.control is Control.OFF:
        device.power_off()
        return None
    if message.unknown is not None:
        log.warning("vpcd: ignoring unknown control byte %02X", message.unknown)
        return None
    try:
        response = bytes(device.process(message.apdu))
    except Exception:  # documented boundary: a broken simulator must not kill the bridge
        log.exception("vpcd: simulator raised on an APDU; answering 6F00")
        response = SW_NO_DIAGNOSIS
    if not 2 <= len(response) <= MAX_PAYLOAD:
        log.error("vpcd: simulator answered %d bytes; answering 6F00", len(response))
        response = SW_NO_DIAGNOSIS
    return encode_frame(response)


class BridgeState(enum.Enum):
    REMOVED = "removed"  # not connected, by request
    CONNECTING = "connecting"  # inserted by request, waiting for vpcd to listen
    INSERTED = "inserted"  # connected to vpcd


def _tune(sock: socket.socket | None, option: int | None) -> None:
    """Set a TCP option if the platform has it (best effort: a tuning, not a requirement)."""
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)


class VpcdBridge:
    """Attach one ``SimDevice`` to one vpcd reader slot (DESIGN §7).

    ``await insert()`` connects (the card appears in the reader), ``await remove()``
    disconnects (the card is pulled, mid-APDU if need be), ``await swap(other)`` pulls the
    card and inserts another one. With ``reconnect=True`` the bridge keeps the card inserted
    across pcscd restarts: it reconnects with jittered backoff until vpcd listens again.
    """

    def __init__(
        self,
        device: SimDevice,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        reconnect: bool = True,
        backoff_max: float = 1.0,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.reconnect = reconnect
        self.backoff_max = backoff_max
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._state = BridgeState.REMOVED
        self.connections = 0  # successful connects so far (observable by tests)
        self.apdus = 0  # APDUs answered so far

    @property
    def state(self) -> BridgeState:
        return self._state

    @property
    def inserted(self) -> bool:
        return self._state is BridgeState.INSERTED

    async def insert(self, *, wait: bool = True, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Insert the card: connect to vpcd. With ``wait``, return once connected."""
        if self._task is None or self._task.done():
            self._connected.clear()
            self._state = BridgeState.CONNECTING
            self._task = asyncio.create_task(self._run(), name=f"vpcd-bridge:{self.port}")
        if wait:
            async with asyncio.timeout(timeout):
                await self._connected.wait()

    async def remove(self) -> None:
        """Pull the card: close the connection (vpcd sees the card gone on its next poll)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()
        if self._state is not BridgeState.REMOVED:
            self.device.power_off()  # a pulled card loses power, and its session with it
        self._state = BridgeState.REMOVED

    async def swap(self, device: SimDevice, *, wait: bool = True) -> None:
        """Pull the current card and insert ``device`` in its place."""
        await self.remove()
        self.device = device
        await self.insert(wait=wait)

    async def aclose(self) -> None:
        await self.remove()

    async def __aenter__(self) -> VpcdBridge:
        await self.insert()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()

    async def _run(self) -> None:
        # this loop answers the reader: the driver must not block it waiting for the answer
        with loopcalls.device_served_here():
            await self._run_attached()

    async def _run_attached(self) -> None:
        delay = 0.05
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                if not self.reconnect:
                    log.warning("vpcd %s:%d: connect failed: %s", self.host, self.port, exc)
                    self._state = BridgeState.REMOVED
                    return
                # full jitter: many bridges restarting together do not stampede pcscd
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - not crypto
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = 0.05
            self.connections += 1
            self._state = BridgeState.INSERTED
            self._connected.set()
            try:
                await self._serve(reader, writer)
            finally:
                self._connected.clear()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            # vpcd closed the connection (pcscd stopped or ejected the card)
            self.device.power_off()
            if not self.reconnect:
                self._state = BridgeState.REMOVED
                return
            self._state = BridgeState.CONNECTING

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = VpcdDecoder()
        sock = writer.get_extra_info("socket")
        _tune(sock, socket.TCP_NODELAY)
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                return
            if not data:
                return
            # vpcd writes each command in two small segments: with Nagle on its side and
            # delayed ACK on ours every exchange would wait ~40 ms. Linux re-arms delayed ACK
            # after each read, so quick-ack is set again every time.
            _tune(sock, getattr(socket, "TCP_QUICKACK", None))
            for message in decoder.feed(data):
                reply = answer(self.device, message)
                if message.apdu:
                    self.apdus += 1
                if reply is not None:
                    writer.write(reply)
            try:
                await writer.drain()
            except OSError:
                return
