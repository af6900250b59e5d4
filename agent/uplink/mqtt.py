"""One MQTT connection whose socket never outlives its ``async with`` block (DESIGN §5).

aiomqtt leaves the paho socket open when ``__aenter__`` fails after the TCP connect (a refused
or timed-out CONNACK) or is cancelled (aiomqtt issue #377). The socket then stays registered
with the event loop until the garbage collector finds the paho client, whose ``__del__`` calls
back into the loop — after ``asyncio.run`` has closed it, that is ``RuntimeError: Event loop is
closed``. On a terminal whose broker refuses it for days, every attempt would also leak a file
descriptor. :func:`connection` closes the socket through paho's own path (which unregisters it
from the loop) as the block ends, however it ends.

:class:`RecordPublisher` is the drain's fast path for QoS 1 publishes (see its docstring).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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


#: ``done(reason_code)`` of :meth:`RecordPublisher.publish`: the PUBACK's MQTT 5 reason code
#: (below 128 the broker took the message; 128 and above it refused it).
PublishDone = Callable[[int], None]


class RecordPublisher:
    """QoS 1 publishes of the drain's records, each finished by its PUBACK (DESIGN §5).

    aiomqtt's ``publish`` costs as much CPU again as paho's own publish and PUBACK handling
    (``docs/PERFORMANCE.md``): per call an ``asyncio.Event``, a ``wait_for`` and two scans of
    every pending call, so O(window) per record. The drain hands a window of records to paho
    at once, so it publishes them through the paho client that aiomqtt drives (on aiomqtt's
    event loop, through aiomqtt's socket callbacks) and finds each PUBACK by its message id in
    one dict. Everything else (status, events, replies) still goes through aiomqtt, whose
    ``on_publish`` gets every PUBACK that is not one of these.

    One publisher per connection: a connection that ends drops its pending callbacks (those
    records are still unacked and go again on the next connection, as with aiomqtt).
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        paho_client = getattr(client, "_client", None)
        if paho_client is None or not hasattr(paho_client, "on_publish"):  # pragma: no cover
            raise RuntimeError("aiomqtt internals changed: no paho client to publish through")
        self._paho: paho.Client = paho_client
        self._pending: dict[int, PublishDone] = {}
        self._chained = paho_client.on_publish  # aiomqtt's: its own publishes
        paho_client.on_publish = self._on_publish

    @property
    def pending(self) -> int:
        """Publishes still waiting for their PUBACK."""
        return len(self._pending)

    def publish(self, topic: str, payload: bytes, done: PublishDone) -> None:
        """Hand ``payload`` to paho at QoS 1; ``done`` runs on the loop when the PUBACK comes.

        ``aiomqtt.MqttCodeError`` at once when paho refuses it (not connected, queue full).
        """
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # A QoS 1 PUBACK is read by aiomqtt's socket callback on this same thread, so it
        # cannot arrive before the entry exists.
        self._pending[info.mid] = done

    def close(self) -> None:
        """Forget the pending publishes and give ``on_publish`` back to aiomqtt."""
        self._pending.clear()
        self._paho.on_publish = self._chained

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        done = self._pending.pop(mid, None)
        if done is None:
            if self._chained is not None:
                self._chained(client, userdata, mid, reason_code, properties)
            return
        done(reason_code.value)


def route_topic(client: aiomqtt.Client, topic: str, handler: Callable[[bytes], None]) -> None:
    """Hand messages on ``topic`` straight to ``handler(payload)`` instead of aiomqtt's queue.

    ``handler`` runs on the event loop's thread, inside paho's read callback (aiomqtt drives
    paho from the loop), before paho sends the PUBACK; it must be quick and must not raise
    (an exception ends the connection, as aiomqtt does with any failure in paho's callbacks).
    The drain takes central's acks this way: through aiomqtt each message costs a ``Message``,
    a queue and a task switch to the reader, hundreds of microseconds an ack
    (``docs/PERFORMANCE.md``), while an ack only has to free its records from the window.
    Subscribe to the topic through aiomqtt as usual; paho gives a message to every handler
    whose filter matches it and to aiomqtt's ``on_message`` only when none does.
    """
    paho_client = getattr(client, "_client", None)
    if paho_client is None or not hasattr(paho_client, "message_callback_add"):  # pragma: no cover
        raise RuntimeError("aiomqtt internals changed: no paho client to route a topic through")

    def callback(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        handler(bytes(message.payload))

    paho_client.message_callback_add(topic, callback)
