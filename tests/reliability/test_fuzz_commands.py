"""Hostile MQTT command payloads (DESIGN §5, §9): fuzz/mqtt_commands.py under hypothesis.

Invariant (checked inside the target): the verifier accepts a command or raises
``CommandRejectedError`` with a known reason; the codec raises ``WireError`` only; an accepted
command round-trips and is rejected as ``replayed`` once recorded.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import mqtt_commands
from tests.reliability.conftest import Figures, fuzz_examples, hostile


def test_every_example_command_is_accepted_once_then_replayed() -> None:
    accepted = [
        o
        for s in mqtt_commands.SEEDS
        if (o := mqtt_commands.test_one_input(s)).startswith("accepted:")
    ]
    assert {"accepted:ping", "accepted:authorize", "accepted:blacklist_delta"} <= set(accepted)


def test_hostile_command_payloads(figures: Figures) -> None:
    count = {"n": 0}

    @settings(
        max_examples=fuzz_examples(), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        data=st.one_of(
            hostile(mqtt_commands.SEEDS), st.binary(max_size=64).map(lambda b: b"\x01" + b)
        )
    )
    def run(data: bytes) -> None:
        count["n"] += 1
        mqtt_commands.test_one_input(data)

    run()
    figures.add(
        "hostile MQTT command payloads",
        "hypothesis (raw, signed-garbage, codec, ack)",
        count["n"],
        0,
    )
