"""sd_notify without libsystemd: READY, STATUS, STOPPING, WATCHDOG (DESIGN §8).

The watchdog is fed by the supervisor only while the event loop, the readers and the drain make
progress (``agent.app``); this module only speaks the datagram protocol of sd_notify(3).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a no-op when not run by systemd."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self.dropped = 0
        if self.address:
            # Non-blocking: the sends happen on the event loop, and a service manager that stops
            # reading (or a test harness) must never freeze the agent. A full socket drops the
            # message; the next ping follows within a watchdog tick.
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def _send(self, message: str) -> None:
        if self._sock is None:
            return
        addr = self.address
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        try:
            self._sock.sendto(message.encode(), addr)
        except OSError:
            # systemd gone or its queue full (BlockingIOError): the manager notices by itself
            self.dropped += 1

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
