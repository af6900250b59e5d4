"""MQTT topics (DESIGN §5): everything under ``ssc/v1/<terminal-id>/``."""

from __future__ import annotations

import re

ROOT = "ssc/v1"
BROADCAST_BLACKLIST = f"{ROOT}/all/blacklist"
_TERMINAL_RE = re.compile(r"\d{12}")


def _check(terminal: str) -> str:
    if not _TERMINAL_RE.fullmatch(terminal):
        raise ValueError(f"terminal id must be 12 digits, got {terminal!r}")
    return terminal


def tx(terminal: str) -> str:
    """Sealed transaction records (QoS 1)."""
    return f"{ROOT}/{_check(terminal)}/tx"


def event(terminal: str) -> str:
    """Events (QoS 1)."""
    return f"{ROOT}/{_check(terminal)}/event"


def status(terminal: str) -> str:
    """Retained status, also the last will."""
    return f"{ROOT}/{_check(terminal)}/status"


def telemetry(terminal: str) -> str:
    """Counters (QoS 0)."""
    return f"{ROOT}/{_check(terminal)}/telemetry"


def ack(terminal: str) -> str:
    """Inbound: central's acks of records."""
    return f"{ROOT}/{_check(terminal)}/ack"


def cmd(terminal: str) -> str:
    """Inbound: signed commands for this terminal."""
    return f"{ROOT}/{_check(terminal)}/cmd"


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription, so several central consumers split the load."""
    return f"$share/{group}/{topic_filter}"


def terminal_of(topic: str) -> str | None:
    """The terminal id in ``ssc/v1/<id>/...``, or None."""
    parts = topic.split("/")
    if (
        len(parts) >= 4
        and parts[0] == "ssc"
        and parts[1] == "v1"
        and _TERMINAL_RE.fullmatch(parts[2])
    ):
        return parts[2]
    return None
