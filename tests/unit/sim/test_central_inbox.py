"""Central's inbox: aiomqtt's incoming queue replaced by burst-at-a-time delivery."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from agent.sim.central import _Inbox


def _msg(topic: str, payload: object) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)  # type: ignore[arg-type]


async def test_messages_come_out_in_arrival_order_a_burst_at_a_time() -> None:
    inbox = _Inbox()
    queue = inbox.queue_type()(maxsize=0)  # what aiomqtt builds from its ``queue_type``
    for i in range(5):
        queue.put_nowait(_msg("ssc/v1/440300907950/tx", bytes([i])))
    assert queue.qsize() == 0  # nothing reaches the queue itself
    assert len(inbox) == 5
    assert await inbox.take(3) == [("ssc/v1/440300907950/tx", bytes([i])) for i in range(3)]
    assert await inbox.take(100) == [("ssc/v1/440300907950/tx", bytes([i])) for i in (3, 4)]
    assert len(inbox) == 0


async def test_take_waits_for_the_next_message() -> None:
    inbox = _Inbox()
    queue = inbox.queue_type()()
    waiter = asyncio.create_task(inbox.take(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.put_nowait(_msg("ssc/v1/440300907950/event", b"\x01"))
    queue.put_nowait(_msg("ssc/v1/440300907950/event", b"\x02"))
    assert await asyncio.wait_for(waiter, 1) == [
        ("ssc/v1/440300907950/event", b"\x01"),
        ("ssc/v1/440300907950/event", b"\x02"),
    ]


@pytest.mark.parametrize("payload", [None, "text", 3, 1.5])
async def test_a_message_without_bytes_is_dropped(payload: object) -> None:
    """tx and event payloads are CBOR bytes; aiomqtt decodes nothing else into them."""
    inbox = _Inbox()
    inbox.queue_type()().put_nowait(_msg("ssc/v1/440300907950/tx", payload))
    assert len(inbox) == 0
