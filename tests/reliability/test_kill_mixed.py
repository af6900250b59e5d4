"""SIGKILL at random points of a mixed transaction load, with the uplink going down and up
(DESIGN §4, §5, §9; issue 8 item 1).

The terminal is a child process (``tests/reliability/_harness.py``): a ``SimRig`` with several
virtual cards swapped in and out of the reader, a deterministic plan of locks, unlocks (with
authorizations central pushes as signed commands), activations, PIN changes and loss reports,
each with an idempotency key, and the real uplink draining the journal to a private
mosquitto where a ``ReferenceCentral`` in this process verifies and acks.

This test SIGKILLs the child after a random delay, again and again; during about a third of
the lives the broker is killed for a random while (so records are sealed offline, drains are
cut, the child sometimes restarts into a dead broker). At the end a last child finishes the
operation in flight, shows every card to the terminal and drains the outbox; then
:func:`tests.reliability._harness.audit` checks:

* the journal's hash chain and every seal MAC verify; nothing is open or in doubt; the outbox
  is empty (every record acked);
* every card effect (lock, unlock, activation, PIN change — from the card's own log, saved in
  the same atomic write as the card) has exactly one record, of its operation's idempotency
  key, whose outcome matches it; no record without an operation, no key with two records;
* central holds every sealed record exactly once, byte for byte, its chain verified and
  contiguous, and raised no alert.

Default: ~20 kills in about a minute. ``RELIABILITY_LONG=1``: 250 kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import UplinkUnavailableError
from agent.profile import load_profile
from agent.sim.central import ReferenceCentral
from agent.sim.store import CardStore
from agent.testing.mosquitto import Mosquitto
from tests.reliability import _harness as harness
from tests.reliability.conftest import LONG, Figures, scaled

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(900 if LONG else 180)]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("RELIABILITY_SEED", "20251124"))
KILLS = scaled(20, 250)
#: A child lives this long (seconds) after it said it is ready, then it is SIGKILLed.
LIFE = (0.1, 2.5) if not LONG else (0.05, 1.6)
OUTAGE_P = 0.35


def _cmd(command: str, state: Path, broker: Mosquitto, central: ReferenceCentral) -> list[str]:
    return [
        sys.executable, "-m", "tests.reliability._harness", command, "--state", str(state),
        "--broker", broker.url, "--central-key", central.public_key.hex(),
        "--kid", central.kid.hex(),
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def _running(central: ReferenceCentral) -> AsyncIterator[ReferenceCentral]:
    task = asyncio.create_task(central.run(), name="central")
    try:
        async with asyncio.timeout(10):
            await central.wait_ready()
        yield central
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _push_authorizations(central: ReferenceCentral, state: Path, terminal: str) -> None:
    """Central's side of unlock: a signed authorization for every card it sees locked
    (again every second: a command sent while the terminal was dead is lost)."""
    store = CardStore(state)
    last: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    while True:
        for key in harness.card_keys(state):
            card = await asyncio.to_thread(store.load, key)
            if card.state != "temp_locked" or loop.time() - last.get(key, -99.0) < 1.0:
                continue
            with contextlib.suppress(UplinkUnavailableError, TimeoutError):
                async with asyncio.timeout(3):
                    await central.authorize("unlock", key, terminal, ttl_s=900)
                last[key] = loop.time()
        await asyncio.sleep(0.25)


async def _outage(broker: Mosquitto, after: float, down: float, count: list[int]) -> None:
    await asyncio.sleep(after)
    await asyncio.to_thread(broker.stop)  # SIGKILL: in-flight publishes and acks are lost
    count[0] += 1
    await asyncio.sleep(down)
    await asyncio.to_thread(broker.start)  # same port


async def _spawn(cmd: list[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def test_sigkill_mixed_load_with_uplink_outages(tmp_path: Path, figures: Figures) -> None:
    rng = random.Random(SEED)
    state = tmp_path / "terminal"
    plan = await harness.init_state(state, seed=SEED % 1000, cards=8, not_activated=4)
    log = tmp_path / "children.log"
    kills = outages_started = 0
    outages = [0]
    with Mosquitto(tmp_path / "mq") as broker:
        central = ReferenceCentral(
            broker.url, tmp_path / "central.db", load_profile("default"), schema_every=25
        )
        async with _running(central):
            pusher = asyncio.create_task(_push_authorizations(central, state, plan["terminal"]))
            outage: asyncio.Task[None] | None = None
            proc: asyncio.subprocess.Process | None = None
            try:
                for _ in range(KILLS):
                    proc = await _spawn(_cmd("drive", state, broker, central), log)
                    assert proc.stdout is not None
                    async with asyncio.timeout(30):
                        line = await proc.stdout.readline()
                    assert json.loads(line)["ready"] == proc.pid, log.read_text()[-3000:]
                    life = rng.uniform(*LIFE)
                    if (outage is None or outage.done()) and rng.random() < OUTAGE_P:
                        outage = asyncio.create_task(
                            _outage(broker, rng.uniform(0, life), rng.uniform(0.2, 2.5), outages)
                        )
                        outages_started += 1
                    await asyncio.sleep(life)
                    assert proc.returncode is None, log.read_text()[-3000:]  # it was running
                    proc.kill()
                    await proc.wait()
                    kills += 1
                if outage is not None:
                    await outage
                settle = await _spawn(_cmd("settle", state, broker, central), log)
                try:
                    async with asyncio.timeout(90):
                        out, _ = await settle.communicate()
                finally:
                    if settle.returncode is None:  # never leave a child behind the test
                        settle.kill()
                        await settle.wait()
                assert settle.returncode == 0, (out, log.read_text()[-3000:])
                summary = json.loads(out)
            finally:
                if proc is not None and proc.returncode is None:  # no orphan after a failure
                    proc.kill()
                    await proc.wait()
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pusher
                if outage is not None and not outage.done():
                    outage.cancel()
            async with asyncio.timeout(20):  # central stored before it acked; wait is a formality
                while central.chain_state(plan["terminal"])[1] < summary["last_seq"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            result = await asyncio.to_thread(harness.audit, state, central)
        central.close()

    starts = harness._lines(state / harness.HARNESS / "starts.jsonl")
    interrupted = sum(1 for s in starts if s["in_doubt"] or s["sealed"] or s["cardless"])
    details: dict[str, Any] = {
        "kills": kills,
        "kills_that_interrupted_a_transaction": interrupted,
        "broker_outages": outages[0],
        "transactions_attempted": result.ops,
        "outcomes": result.outcomes,
        "records_checked": result.records,
        "record_kinds": result.kinds,
        "card_effects_checked": result.effects,
        "in_doubt_resolved": result.in_doubt_resolved,
        "records_at_central": result.central_records,
        "redeliveries_deduped_by_central": result.central_redeliveries,
        "duplicates": result.duplicates,
        "seed": SEED,
    }
    figures.add(
        "SIGKILL of the terminal at random points of a mixed load, uplink up and down",
        f"{kills} SIGKILLs after random delays, {outages[0]} broker kills; restart, retry "
        "the operation in flight with its idempotency key",
        kills,
        result.lost,
        **details,
    )
    sys.stdout.write(json.dumps({**details, "lost": result.lost}, ensure_ascii=False) + "\n")
    assert result.problems == [], "\n".join(result.problems[:40])
    assert kills == KILLS
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.records > 0
    assert result.central_records == result.records
    assert outages_started == 0 or outages[0] >= 1
