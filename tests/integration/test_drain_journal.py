"""Journal → uplink → mosquitto → reference central: exactly once, in order, through outages.

A real mosquitto (``agent.testing.mosquitto``), the real journal, the lead's ``UplinkSession``
over ``JournalOutbox``, and ``ReferenceCentral`` verifying MACs and the chain. The broker is
killed in the middle of a 1,000-record drain; the agent process (``ssc-agent uplink drain``) is
killed at random moments. Each time central must end with seqs 1..1000 stored once, the chain
verified over all of them, no alerts, and the agent's outbox empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent.journal import Journal
from agent.profile import CardProfile, load_profile
from agent.sim.central import ReferenceCentral, seed_state_dir
from agent.testing.mosquitto import Mosquitto, free_port
from agent.tx.machine import TABLE
from agent.uplink.outbox import JournalOutbox
from agent.uplink.session import UplinkSession, UplinkSettings
from agent.wire.codec import StatusMessage, ack_ranges

pytestmark = pytest.mark.mqtt
TERMINAL = "440300907950"
N = 1000
CLI = [sys.executable, "-m", "agent"]


def _journal(path: Path) -> Journal:
    return Journal(path, transitions=TABLE)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def profile() -> CardProfile:
    return load_profile("default")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, profile: CardProfile) -> Path:
    """A state dir whose journal holds N sealed, unacked records (built once, copied per test)."""
    return seed_state_dir(tmp_path_factory.mktemp("seeded"), TERMINAL, N, profile, TABLE)


@pytest.fixture
def state(seeded: Path, tmp_path: Path) -> Path:
    d = tmp_path / "agent"
    shutil.copytree(seeded, d)
    return d


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mq") as m:
        yield m


@contextlib.asynccontextmanager
async def running(central: ReferenceCentral) -> AsyncIterator[ReferenceCentral]:
    task = asyncio.create_task(central.run())
    try:
        async with asyncio.timeout(10):
            await central.wait_ready()
        yield central
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        central.close()


def _central(broker: Mosquitto, tmp_path: Path, profile: CardProfile) -> ReferenceCentral:
    # every 50th record also through zcbor: the full CDDL check costs ~10 ms a record
    return ReferenceCentral(broker.url, tmp_path / "central.db", profile, schema_every=50)


def _session(broker: Mosquitto, outbox: JournalOutbox) -> UplinkSession:
    settings = UplinkSettings(
        terminal=TERMINAL,
        host="127.0.0.1",
        port=broker.port,
        window=64,
        backlog_rate=5000.0,
        ack_timeout_s=3.0,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    return UplinkSession(
        settings,
        outbox,
        encode_status=lambda on: StatusMessage(TERMINAL, on, "test", int(time.time())).to_cbor(),
        decode_ack=lambda p: ack_ranges(p, TERMINAL),
    )


def _assert_exactly_once(central: ReferenceCentral, state: Path) -> None:
    rows = central.records(TERMINAL)
    assert [r["seq"] for r in rows] == list(range(1, N + 1))  # each once, gapless
    assert {r["chain"] for r in rows} == {"ok"}  # chain verified over all, in order
    assert central.chain_state(TERMINAL) == (N, N)
    assert central.alerts() == []
    j = _journal(state / "journal.db")
    try:
        assert j.stats().unacked == 0
        # what central stored is byte for byte what the agent sealed
        assert j.verify_chain().ok
    finally:
        j.close()


async def _wait(pred: Callable[[], bool], limit_s: float) -> None:
    """Poll a store that lives in threads (no event to wait on)."""
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(pred):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_broker_killed_mid_drain(
    broker: Mosquitto, state: Path, tmp_path: Path, profile: CardProfile
) -> None:
    j = _journal(state / "journal.db")
    outbox = JournalOutbox(j)
    session = _session(broker, outbox)
    async with running(_central(broker, tmp_path, profile)) as central:
        task = asyncio.create_task(session.run())
        try:
            await _wait(lambda: outbox.unacked_count() <= N - 300, 30)
            broker.stop()  # SIGKILL mid-drain: in-flight publishes and acks are lost
            await asyncio.sleep(1.0)
            broker.start()  # same port
            await _wait(lambda: outbox.unacked_count() == 0, 40)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            j.close()
        assert session.stats.connects >= 2
        _assert_exactly_once(central, state)


def _drain_cmd(
    state: Path, broker: Mosquitto, timeout: float = 30, rate: int | None = None
) -> list[str]:
    return [
        *CLI, "uplink", "drain", "--state-dir", str(state), "--broker", broker.url,
        "--timeout", str(timeout), "--ack-timeout", "3", "--json",
        *(["--rate", str(rate)] if rate else []),
    ]  # fmt: skip


async def test_agent_killed_at_random_and_restarted(
    broker: Mosquitto, state: Path, tmp_path: Path, profile: CardProfile
) -> None:
    rng = random.Random(20251123)
    async with running(_central(broker, tmp_path, profile)) as central:
        kills = 0
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec(
                # paced, so the random kill lands mid-drain (unpaced, 1,000 records can be
                # done before the first kill)
                *_drain_cmd(state, broker, rate=400),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            await proc.wait()
        proc = await asyncio.create_subprocess_exec(
            *_drain_cmd(state, broker), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        assert json.loads(out)["remaining"] == 0
        assert kills >= 1
        stored = central.stats["stored"]
        _assert_exactly_once(central, state)
        assert stored == N  # duplicates were acked again, never stored twice


def test_drain_unreachable_broker_is_an_error_object(state: Path) -> None:
    cmd = [
        *CLI, "uplink", "drain", "--state-dir", str(state), "--broker",
        f"mqtt://127.0.0.1:{free_port()}", "--timeout", "1.5", "--json",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode != 0
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "uplink_error"
    assert "broker" in err["message"]
    j = _journal(state / "journal.db")
    try:
        assert j.stats().unacked == N  # nothing lost, nothing marked
    finally:
        j.close()


def test_drain_empty_journal(tmp_path: Path) -> None:
    _journal(tmp_path / "journal.db").close()
    r = subprocess.run(
        [*CLI, "uplink", "drain", "--state-dir", str(tmp_path), "--broker", "mqtt://127.0.0.1:1",
         "--json"],
        capture_output=True, text=True, timeout=30, check=False, env={**os.environ},
    )  # fmt: skip
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"sent": 0, "acked": 0, "remaining": 0}
