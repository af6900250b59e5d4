"""Signed commands end to end: reference central → mosquitto → agent session → journal.

The agent side is the real wiring: ``UplinkSession`` with ``CommandHandler`` as ``on_command``
and the session's ``publish`` as the event publisher; central is ``ReferenceCentral``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.journal import Journal
from agent.profile import load_profile
from agent.sim.central import ReferenceCentral
from agent.testing.mosquitto import Mosquitto
from agent.tx.machine import TABLE
from agent.uplink import topics
from agent.uplink.commands import CommandHandler, EventReporter, JournalReplayStore
from agent.uplink.mqtt import connection
from agent.uplink.outbox import JournalOutbox
from agent.uplink.session import UplinkSession, UplinkSettings
from agent.wire import cose
from agent.wire.codec import Command, Ping, StatusMessage, ack_ranges
from agent.wire.commands import CommandVerifier

pytestmark = pytest.mark.mqtt
T = "440300907950"
CARD_A = "44030000D15600000500000000000001"
CARD_B = "44030000D15600000500000000000002"
CARD_C = "44030000D15600000500000000000003"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mq") as m:
        yield m


class Agent:
    def __init__(self, tmp: Path, broker: Mosquitto, central: ReferenceCentral) -> None:
        self.journal = Journal(tmp / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
        verifier = CommandVerifier(
            {central.kid: central.key.public_key()}, T, time.time, JournalReplayStore(self.journal)
        )
        settings = UplinkSettings(
            terminal=T, host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        )  # fmt: skip
        self.handler = CommandHandler(
            verifier, self.journal, T, reporter=EventReporter(self.journal, T)
        )
        self.session = UplinkSession(
            settings,
            JournalOutbox(self.journal),
            encode_status=lambda on: StatusMessage(T, on, "test", int(time.time())).to_cbor(),
            decode_ack=lambda p: ack_ranges(p, T),
            on_command=self.handler,
        )
        self.handler.reporter.publisher = self.session.publish
        self.handler.on_resend = self.session.resend_from


@contextlib.asynccontextmanager
async def system(tmp: Path, broker: Mosquitto) -> AsyncIterator[tuple[ReferenceCentral, Agent]]:
    central = ReferenceCentral(broker.url, tmp / "central.db", load_profile("default"))
    agent = Agent(tmp, broker, central)
    tasks = [asyncio.create_task(central.run()), asyncio.create_task(agent.session.run())]
    try:
        async with asyncio.timeout(10):
            await central.wait_ready()
            await agent.session.wait_online()
        yield central, agent
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        agent.journal.close()
        central.close()


async def until(pred: Callable[[], bool], limit_s: float = 10) -> None:
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(pred):  # noqa: ASYNC110 - stores live in threads
            await asyncio.sleep(0.05)


def _types(central: ReferenceCentral) -> list[str]:
    return [e.type for e in central.events(T)]


async def test_blacklist_add_reaches_the_journal(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker) as (central, agent):
        assert await central.blacklist_add([CARD_A, CARD_B]) == 1
        await until(lambda: agent.journal.is_blacklisted(CARD_B))
        assert agent.journal.blacklist_version() == 1
        await central.blacklist_remove([CARD_A])
        await until(lambda: agent.journal.blacklist_version() == 2)
        assert not agent.journal.is_blacklisted(CARD_A)
        await until(lambda: _types(central).count("blacklist_updated") == 2)


async def test_missed_delta_is_repaired_by_a_snapshot(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker) as (central, agent):
        # two versions the agent never heard of (changed in the database only)
        central.store.blacklist_change([CARD_A], [])
        central.store.blacklist_change([CARD_B], [])
        await central.blacklist_add([CARD_C])  # delta 2 -> 3: base mismatch at the agent
        await until(lambda: agent.journal.blacklist_version() == 3)
        assert all(agent.journal.is_blacklisted(c) for c in (CARD_A, CARD_B, CARD_C))
        assert "command_rejected" in _types(central)


async def test_authorize_unlock_is_stored(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker) as (central, agent):
        assert await central.authorize("unlock", CARD_A, T, ttl_s=600) == T
        await until(lambda: agent.journal.find_valid_authorization(CARD_A, "unlock") is not None)
        await central.ping(T)
        await until(lambda: "pong" in _types(central))


async def test_bad_commands_are_rejected_and_reported(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker) as (central, agent):
        now = int(time.time())
        good = central.sign(T, Ping())
        unsigned = Command(b"\x02" * 16, T, 10**6, now, now + 60, Ping()).to_cbor()
        forged = cose.sign(unsigned, Ed25519PrivateKey.generate(), central.kid)
        # validly signed, but it expired an hour ago
        old = Command(b"\x03" * 16, T, 10**6 + 1, now - 7200, now - 3600, Ping()).to_cbor()
        expired = cose.sign(old, central.key, central.kid)
        async with connection(aiomqtt.Client("127.0.0.1", broker.port, identifier="attacker")) as c:
            for payload in (good, good, unsigned, forged, expired):
                await c.publish(topics.cmd(T), payload, qos=1)
        want = ["replayed", "unsigned", "bad_signature", "expired"]

        def reasons() -> list[str]:
            return [
                str(e.data["reason"]) for e in central.events(T) if e.type == "command_rejected"
            ]

        await until(lambda: sorted(reasons()) == sorted(want))
        stored = [e for e in agent.journal.events(0, 100) if e.kind == "command_rejected"]
        assert sorted(str(e.data["reason"]) for e in stored) == sorted(want)
        assert "pong" in _types(central)  # the good one was applied once
