"""Broker and central outages during a drain of thousands of records (DESIGN §5, §9).

Beyond the single broker kill of ``tests/integration/test_drain_journal.py``: the broker is
SIGKILLed and restarted again and again while a paced backlog of a few thousand sealed records
drains (in-flight publishes, PUBACKs and central's acks are lost each time); then the same
with new records sealed during the outages (live lane before backlog); then with central
itself going away and coming back on its database. Each time central must end with every
record exactly once (by terminal + seq), its hash chain verified in order over all of them,
no alert, and the agent's outbox empty.

Default: 3,000 records and 8 outages per test. ``RELIABILITY_LONG=1``: 10,000 and 40.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent.journal import Journal
from agent.profile import CardProfile, load_profile
from agent.psam.soft import verify_seal
from agent.sim.central import ReferenceCentral, seed_backlog, seed_state_dir
from agent.testing.mosquitto import Mosquitto
from agent.tx.machine import TABLE
from agent.uplink.outbox import JournalOutbox
from agent.uplink.session import UplinkSession, UplinkSettings
from agent.wire.codec import StatusMessage, ack_ranges
from tests.reliability.conftest import LONG, Figures, scaled

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.timeout(600 if LONG else 120),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
TERMINAL = "440300907950"
N = scaled(3000, 10000)
OUTAGES = scaled(8, 40)
#: Backlog pace (records/s), low enough that every outage lands in the middle of the drain.
RATE = scaled(200, 100)


class UplinkDiedError(AssertionError):
    """``UplinkSession.run()`` ended by itself (it must reconnect forever)."""


def _journal(path: Path) -> Journal:
    return Journal(path, transitions=TABLE)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def profile() -> CardProfile:
    return load_profile("default")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, profile: CardProfile) -> Path:
    return seed_state_dir(tmp_path_factory.mktemp("backlog"), TERMINAL, N, profile, TABLE)


@pytest.fixture
def journal(seeded: Path, tmp_path: Path) -> Iterator[Journal]:
    d = tmp_path / "agent"
    shutil.copytree(seeded, d)
    j = _journal(d / "journal.db")
    yield j
    j.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mq") as m:
        yield m


class Central:
    """The reference central as a restartable service on one database file."""

    def __init__(self, broker: Mosquitto, db: Path, profile: CardProfile) -> None:
        self.args = (broker.url, db, profile)
        self.instance: ReferenceCentral | None = None
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        url, db, profile = self.args
        self.instance = ReferenceCentral(url, db, profile, schema_every=100)
        self.task = asyncio.create_task(self.instance.run(), name="central")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.instance is not None:
            self.instance.close()
        self.task = self.instance = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
        self.restarts += 1

    @property
    def now(self) -> ReferenceCentral:
        assert self.instance is not None
        return self.instance


@contextlib.asynccontextmanager
async def _central(
    broker: Mosquitto, tmp_path: Path, profile: CardProfile
) -> AsyncIterator[Central]:
    c = Central(broker, tmp_path / "central.db", profile)
    await c.start()
    try:
        async with asyncio.timeout(10):
            await c.now.wait_ready()
        yield c
    finally:
        await c.stop()


@contextlib.asynccontextmanager
async def _uplink(broker: Mosquitto, journal: Journal) -> AsyncIterator[UplinkSession]:
    """The session running; :func:`_wait` fails fast (``UplinkDiedError``) if it ends."""
    settings = UplinkSettings(
        terminal=TERMINAL,
        host="127.0.0.1",
        port=broker.port,
        window=64,
        backlog_rate=float(RATE),
        ack_timeout_s=2.0,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    session = UplinkSession(
        settings,
        JournalOutbox(journal),
        encode_status=lambda on: StatusMessage(TERMINAL, on, "test", int(time.time())).to_cbor(),
        decode_ack=lambda p: ack_ranges(p, TERMINAL),
    )
    task = asyncio.create_task(session.run(), name="uplink")
    _TASKS.append(task)
    try:
        yield session
    finally:
        _TASKS.remove(task)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except BaseExceptionGroup as group:
            raise UplinkDiedError(f"UplinkSession.run() ended with {group!r}") from group


_TASKS: list[asyncio.Task[None]] = []


async def _wait(pred: Callable[[], bool], limit_s: float) -> None:
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(pred):  # a store in threads: nothing to await on
            for task in _TASKS:
                if task.done():
                    exc = None if task.cancelled() else task.exception()
                    raise UplinkDiedError(f"UplinkSession.run() ended with {exc!r}") from exc
            await asyncio.sleep(0.05)


async def _outages(
    rng: random.Random, journal: Journal, down: Callable[[], object], up: Callable[[], object]
) -> int:
    """``OUTAGES`` outages, each started while records are still unacked."""
    done = 0
    for _ in range(OUTAGES):
        await asyncio.sleep(rng.uniform(0.3, 0.9))
        assert await asyncio.to_thread(lambda: journal.stats().unacked) > 0, "drain too fast"
        await asyncio.to_thread(down)
        done += 1
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        await asyncio.to_thread(up)
    return done


def _check(central: ReferenceCentral, journal: Journal, profile: CardProfile, n: int) -> int:
    """Everything exactly once, byte for byte, in chain order; returns redeliveries deduped."""
    rows = central.records(TERMINAL)
    assert [r["seq"] for r in rows] == list(range(1, n + 1))  # each once, gapless
    assert {r["chain"] for r in rows} == {"ok"}  # chain verified over all, in order
    assert central.chain_state(TERMINAL) == (n, n)
    assert central.alerts() == []
    for r in rows[:: max(1, n // 200)]:  # what central stored is what the agent sealed
        rec = journal.sealed_record(r["seq"])
        assert rec is not None
        assert bytes.fromhex(r["digest"]) == rec.hash
    assert journal.stats().unacked == 0
    tn = bytes.fromhex(TERMINAL)
    assert journal.verify_chain(lambda d, m: verify_seal(profile, tn, d, m)).ok
    return sum(int(r["duplicates"]) for r in rows)


async def test_broker_killed_repeatedly_during_a_drain(
    broker: Mosquitto, journal: Journal, tmp_path: Path, profile: CardProfile, figures: Figures
) -> None:
    rng = random.Random(81)
    async with _central(broker, tmp_path, profile) as central, _uplink(broker, journal) as up:
        done = await _outages(rng, journal, broker.stop, broker.start)
        await _wait(lambda: journal.stats().unacked == 0, 120)
        redelivered = _check(central.now, journal, profile, N)
    # reconnected after the outages (two outages may fall in one backoff, so not one each)
    assert up.stats.connects >= 2
    figures.add(
        "Broker killed repeatedly during a drain",
        f"mosquitto SIGKILLed {done} times mid-drain of {N} records, restarted on its port",
        done,
        0,
        records=N,
        reconnects=up.stats.connects,
        resent_after_ack_timeout=up.stats.resent,
        redeliveries_deduped=redelivered,
        duplicates_stored=0,
    )


async def test_records_sealed_during_outages_arrive_once_in_order(
    broker: Mosquitto, journal: Journal, tmp_path: Path, profile: CardProfile, figures: Figures
) -> None:
    rng = random.Random(82)
    live = 0

    async def seal_live() -> None:
        nonlocal live
        while True:
            await asyncio.to_thread(seed_backlog, journal, TERMINAL, 1, profile)
            live += 1
            up.wake()
            await asyncio.sleep(0.05)

    async with _central(broker, tmp_path, profile) as central, _uplink(broker, journal) as up:
        sealer = asyncio.create_task(seal_live())
        try:
            done = await _outages(rng, journal, broker.stop, broker.start)
        finally:
            sealer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sealer
        await _wait(lambda: journal.stats().unacked == 0, 120)
        # the last sealer call may have sealed before its cancellation reached ``live += 1``
        total = journal.last_seq()
        assert total in (N + live, N + live + 1)
        redelivered = _check(central.now, journal, profile, total)
    assert live > 0
    figures.add(
        "Broker killed repeatedly while new records are sealed",
        f"mosquitto SIGKILLed {done} times; {total - N} records sealed during the outages on top "
        f"of a {N}-record backlog",
        done,
        0,
        records=total,
        live_records=total - N,
        redeliveries_deduped=redelivered,
    )


async def test_central_and_broker_outages_during_a_drain(
    broker: Mosquitto, journal: Journal, tmp_path: Path, profile: CardProfile, figures: Figures
) -> None:
    rng = random.Random(83)
    async with _central(broker, tmp_path, profile) as central, _uplink(broker, journal):
        loop = asyncio.get_running_loop()
        kinds: list[str] = []

        def down() -> None:
            if rng.random() < 0.5:
                kinds.append("broker")
                broker.stop()
            else:
                kinds.append("central")
                asyncio.run_coroutine_threadsafe(central.stop(), loop).result(10)

        def up_() -> None:
            if kinds[-1] == "broker":
                broker.start()
            else:
                asyncio.run_coroutine_threadsafe(central.start(), loop).result(10)

        done = await _outages(rng, journal, down, up_)
        await _wait(lambda: journal.stats().unacked == 0, 120)
        redelivered = _check(central.now, journal, profile, N)
    figures.add(
        "Central and broker outages during a drain",
        f"{kinds.count('central')} central restarts and {kinds.count('broker')} broker kills "
        f"mid-drain of {N} records",
        done,
        0,
        records=N,
        central_restarts=kinds.count("central"),
        broker_kills=kinds.count("broker"),
        redeliveries_deduped=redelivered,
    )
