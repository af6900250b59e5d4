"""A central that acks each record the moment it arrives and does nothing else (bench only).

``python bench/_ack_each_central.py PORT``: subscribes to every terminal's ``tx`` (the
reference central's shared group) with paho's own network thread and answers every record with
an ``ack`` of that one seq, QoS 1. It verifies and stores nothing, so it is not a central; it
is the other end a drain meets from the simplest central an integrator could write, and the
cheapest one: ``bench/drain.py`` measures the agent against it (``ack_each_central``), where
the agent gets one ack message per record instead of the reference central's ranges.
"""

from __future__ import annotations

import sys
import threading

import cbor2
import paho.mqtt.client as paho

from agent.uplink import topics
from agent.wire.codec import AckMessage


def main() -> None:
    port = int(sys.argv[1])
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="bench-ack-each", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(0)  # no cap: the drain's window is the cap

    def on_message(c: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        terminal = msg.topic.split("/")[2]
        seq = int(cbor2.loads(msg.payload)["seq"])
        c.publish(topics.ack(terminal), AckMessage(terminal, ((seq, seq),)).to_cbor(), qos=1)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topics.shared("central", "ssc/v1/+/tx"), qos=1)
    client.loop_start()
    threading.Event().wait()  # until terminated


if __name__ == "__main__":
    main()
