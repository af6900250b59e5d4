"""SIGKILL at every step of a lock and an unlock (DESIGN §9 "kill -9 at every step").

A child process runs the flow on a ``SimRig`` in a state directory and SIGKILLs itself at step
*k*: after the card processed APDU *k* (the card state is already saved, as EEPROM would keep
it), or at an engine step (after the intent, after the card write, after confirm, during the
seal, after the seal). A second child restarts: start-up recovery, the card is seen (in-doubt
records resolved and sealed), then the same flow is retried with the same idempotency key.
The parent then reads the journal and the card store directly and asserts: exactly one record
of the flow, sealed, its outcome equal to the card's true state, and the chain (with MACs)
verifies. Nothing lost, nothing doubled.

Run as a script (``python test_kill_tx.py child <state> <flow> <step> <n>``) for the child.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("tx_intent", "tx_card_written", "tx_card_done", "tx_sealing", "tx_sealed")
#: APDUs each flow sends on a fresh card (lock: select + identity + challenge + 84 1E;
#: unlock of a locked card: select, select, challenge, 84 18).
APDUS = {"lock": 18, "unlock": 5}


# --------------------------------------------------------------------------------------------
# child
# --------------------------------------------------------------------------------------------
async def _child(state: Path, flow: str, step: str, n: int) -> None:
    from agent.errors import AgentError
    from agent.profile import load_profile
    from agent.sim.rig import PersistentDevice, SimRig
    from agent.tx.recovery import Recovery

    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    rig = SimRig(state, load_profile("default"))
    count = {"n": 0, "armed": 0}

    def on_event(name: str, _: Any) -> None:
        if name == step:
            count["n"] += 1
            if count["n"] == n:
                die()

    if step == "apdu":
        device = cast("PersistentDevice", rig.card_channel.device)
        inner = device.process

        def process(apdu: bytes) -> bytes:
            out = inner(apdu)  # the card executed it and its state is saved
            count["n"] += count["armed"]
            if count["n"] == n:
                die()
            return out

        device.process = process  # type: ignore[method-assign]
    engine = await rig.engine(on_event=on_event if step not in ("apdu", "recover") else None)
    recovery = Recovery(engine)
    await recovery.start()
    await recovery.on_card_seen(rig.card_channel, auto_lock=False)
    count["armed"] = 1  # count the flow's APDUs only
    try:
        if flow == "lock":
            await engine.lock(rig.card_channel, idempotency_key="K-" + flow)
        else:
            await engine.unlock(rig.card_channel, idempotency_key="K-" + flow)
    except AgentError as err:
        print(json.dumps({"error": err.code}))
    await rig.aclose()


def _run_child(state: Path, flow: str, step: str, n: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own interpreter and script
        [sys.executable, __file__, "child", str(state), flow, step, str(n)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
async def _prepare(state: Path, flow: str) -> str:
    """A card in the reader; for unlock it is locked by this terminal and an authorization
    waits in the journal. Returns the card's id."""
    from agent.profile import load_profile
    from agent.sim.rig import SimRig

    async with SimRig(state, load_profile("default")) as rig:
        cid = rig.card.card_id_code.hex().upper()
        if flow == "unlock":
            engine = await rig.engine()
            await engine.lock(rig.card_channel)
            rig.journal.add_authorization("A-1", cid, "unlock", engine.clock() + 3_600_000, b"s")
    return cid


def _check(state: Path, flow: str, cid: str, where: str) -> None:
    from agent.journal.store import Journal
    from agent.profile import load_profile
    from agent.psam.soft import verify_seal
    from agent.sim.store import CardStore
    from agent.tx.machine import TABLE

    profile = load_profile("default")
    card = CardStore(state).load(cid)
    truth = card.state == ("temp_locked" if flow == "lock" else "active")
    j = Journal(state / "journal.db", transitions=cast("Any", TABLE))
    try:
        rows = [r for r in j.records() if r.kind == flow]
        assert len(rows) == 1, f"{where}: {len(rows)} records"
        [row] = rows
        assert row.state == "sealed", f"{where}: {row.state}"
        assert (row.outcome == "done") is truth, f"{where}: record {row.outcome}, card {card.state}"
        tn = bytes.fromhex(row.terminal_id)
        report = j.verify_chain(lambda d, m: verify_seal(profile, tn, d, m))
        assert report.ok, f"{where}: {report}"
        assert j.stats().open_intents == 0
        assert j.stats().in_doubt == 0
    finally:
        j.close()


CASES = [
    *((flow, "apdu", n) for flow, total in APDUS.items() for n in range(1, total + 1)),
    *((flow, step, 1) for flow in APDUS for step in STEPS),
]


@pytest.mark.reliability
@pytest.mark.parametrize(("flow", "step", "n"), CASES)
async def test_sigkill_at_every_step(tmp_path: Path, flow: str, step: str, n: int) -> None:
    cid = await _prepare(tmp_path, flow)
    killed = await asyncio.to_thread(_run_child, tmp_path, flow, step, n)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    restarted = await asyncio.to_thread(_run_child, tmp_path, flow, "recover", 0)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    _check(tmp_path, flow, cid, f"{flow} killed at {step} #{n}")


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "child":
    asyncio.run(_child(Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
