"""May this process call a device stack on its event loop's thread? (DESIGN §7)

``agent.drivers.pcsc`` sends the APDUs of a proven-fast reader from the loop's own thread (see
``INLINE_MAX_S`` there). That is only safe while the device at the other end of pcscd is served
by something else than this event loop: a simulator attached to vpcd by *this* process (tests,
an in-process HIL run) would wait for the loop that waits for it, until pcscd timed out. Every
such in-process device holds :func:`device_served_here` for as long as it is attached; while
one does, every PC/SC call of the process goes through the reader's worker thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_served_here = [0]  # devices served by this process now (a list: mutable without ``global``)


@contextlib.contextmanager
def device_served_here() -> Iterator[None]:
    """Hold while a device answering through pcscd is served by this process."""
    with _lock:
        _served_here[0] += 1
    try:
        yield
    finally:
        with _lock:
            _served_here[0] -= 1


def allowed() -> bool:
    """True when no device is served by this process (a plain read: it is on the APDU path)."""
    return _served_here[0] == 0
