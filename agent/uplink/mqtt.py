"""One MQTT connection whose socket never outlives its ``async with`` block (DESIGN §5).

aiomqtt leaves the paho socket open when ``__aenter__`` fails after the TCP connect (a refused
or timed-out CONNACK) or is cancelled (aiomqtt issue #377). The socket then stays registered
with the event loop until the garbage collector finds the paho client, whose ``__del__`` calls
back into the loop — after ``asyncio.run`` has closed it, that is ``RuntimeError: Event loop is
closed``. On a terminal whose broker refuses it for days, every attempt would also leak a file
descriptor. :func:`connection` closes the socket through paho's own path (which unregisters it
from the loop) as the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aiomqtt

log = logging.getLogger("agent.uplink")


@contextlib.asynccontextmanager
async def connection(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client``, then release the socket (also when connecting failed)."""
    try:
        async with client:
            yield client
    finally:
        release(client)


def release(client: aiomqtt.Client) -> None:
    """Close the client's socket if aiomqtt left it open. Call in the client's event loop."""
    # paho's _sock_close is the one path that runs aiomqtt's socket callbacks (remove the loop's
    # reader and writer, cancel the misc task) before closing; closing the socket directly would
    # leave paho to run them at garbage collection, on a loop that may be gone.
    paho_client = getattr(client, "_client", None)
    close = getattr(paho_client, "_sock_close", None)
    if not callable(close):  # pragma: no cover - guards against an aiomqtt/paho refactor
        log.debug("cannot release the MQTT socket: aiomqtt/paho internals changed")
        return
    try:
        close()
    except (OSError, RuntimeError, ValueError) as exc:  # a socket already half torn down
        log.debug("releasing the MQTT socket: %r", exc)
