"""pcscd restarted and the reader emptied in the middle of card transactions (DESIGN §4, §7, §9).

The agent is a child process (this file run as a script): the transaction engine over the real
PC/SC driver (pyscard → libpcsclite → a private pcscd → vpcd), the journal and the virtual PSAM
of a ``SimRig``. It lives for the whole test and is never restarted. The citizen's virtual card
sits in this process behind a vpcd bridge; its effect log is saved with the card
(``tests/reliability/_harness.py``).

Each round the test arms a fault on the card side, then asks the agent for a transaction:

* at the card-changing APDU, after the card executed it or before, **pcscd is SIGKILLed and
  restarted** (the bridge re-inserts the card into the new daemon), or **the card is pulled**
  (the vpcd connection is cut, the answer never leaves) and re-inserted a moment later;
* at the GET CHALLENGE just before that write (nothing can have changed yet).

The agent must see a typed error — ``TransactionInDoubtError`` once the write was sent (the
record ``in_doubt``), the device error itself before (the record ``failed``, ``not_sent``) —
then, when the card is seen again through the same reader object, resolve the record against
the card's real state: done exactly when the card executed the write. At the end
:func:`tests.reliability._harness.audit` matches every card effect to exactly one record.

Default: 12 rounds. ``RELIABILITY_LONG=1``: 36.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
READER = "Virtual PCD 00 00"
#: What the agent may see when pcscd dies or the line is cut mid-APDU. (vpcd can hand pcscd a
#: truncated answer when its connection drops mid-exchange; the driver checks the card's
#: presence before calling a short answer a protocol error, so a pull is ``CardRemovedError``.)
TYPED = ("CardRemovedError", "PcscServiceError")

if __name__ != "__main__":
    from agent.card.apdu import CommandApdu
    from agent.profile import load_profile
    from agent.sim.store import CardStore
    from agent.sim.vpcd import VpcdBridge
    from agent.testing.pcscd import PcscdInstance, free_port_pair, missing_tools
    from agent.tx.engine import is_card_write
    from tests.reliability import _harness as harness
    from tests.reliability.conftest import LONG, Figures, scaled

    pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(900 if LONG else 180)]
    ROUNDS = scaled(1, 3)
    PROFILE = load_profile("default")


# --------------------------------------------------------------------------------------------
# child: the agent
# --------------------------------------------------------------------------------------------
async def _child(state: Path) -> None:
    from agent.drivers.pcsc import PcscReader
    from agent.errors import AgentError, TransactionInDoubtError
    from agent.profile import load_profile
    from agent.sim.rig import SimRig
    from agent.tx.recovery import Recovery

    rig = SimRig(state, load_profile("default"))
    engine = await rig.engine()
    recovery = Recovery(engine)
    await recovery.start()
    reader = PcscReader(READER)
    connect_errors: dict[str, int] = {}

    async def session() -> Any:
        """Wait for the card and open a session; pcscd may be away: retry (bounded)."""
        async with asyncio.timeout(40):
            while True:
                try:
                    await reader.wait_for_card(timeout=30)
                    return await reader.connect()
                except AgentError as err:
                    name = type(err).__name__
                    connect_errors[name] = connect_errors.get(name, 0) + 1
                    await asyncio.sleep(0.2)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": os.getpid()})
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            await reader.aclose()
            rig.journal.close()
            reply({"bye": True})
            return
        if cmd["cmd"] == "report":
            reply(
                {
                    "pid": os.getpid(),
                    "service_recoveries": reader.service_recoveries,
                    "connect_errors": connect_errors,
                }
            )
            continue
        ch = await session()
        try:
            if cmd["cmd"] == "see":
                sight = await recovery.on_card_seen(ch, auto_lock=False)
                out = [{"tx_id": r.tx_id, "verdict": r.verdict} for r in sight.resolutions]
                for tx_id in sight.still_in_doubt:  # a PIN change: the citizen enters the new PIN
                    res = await recovery.confirm_pin(ch, tx_id, cmd["pin"])
                    out.append({"tx_id": tx_id, "verdict": res.verdict})
                reply({"resolutions": out})
                continue
            kind, key, cid = cmd["kind"], cmd["key"], cmd["card"]
            await recovery.on_card_seen(ch, auto_lock=False)
            try:
                if kind == "lock":
                    rec = await engine.lock(ch, idempotency_key=key)
                elif kind == "unlock":
                    rig.journal.add_authorization(
                        "auth-" + key, cid, "unlock", engine.clock() + 600_000, b"signed"
                    )
                    rec = await engine.unlock(ch, idempotency_key=key, card_id_code=cid)
                else:
                    rec = await engine.pin_change(ch, cmd["old"], cmd["new"], idempotency_key=key)
            except TransactionInDoubtError as err:
                cause = err.__cause__
                reply(
                    {
                        "error": "TransactionInDoubtError",
                        "cause": type(cause).__name__,
                        "state": err.record.state.value,  # type: ignore[attr-defined]
                    }
                )
            except AgentError as err:
                row = rig.journal.find_by_idempotency_key(key)
                reply(
                    {
                        "error": type(err).__name__,
                        "code": err.code,
                        "state": row.state if row else None,
                        "result": row.result if row else None,
                    }
                )
            else:
                reply({"done": rec.state.value})
        finally:
            with contextlib.suppress(AgentError):
                await ch.aclose()


# --------------------------------------------------------------------------------------------
# parent: the card, the faults, the checks
# --------------------------------------------------------------------------------------------
class Cut(BaseException):
    """Raised by the card wrapper to make the bridge drop the connection mid-APDU."""


if __name__ != "__main__":

    class FaultyCard:
        """The citizen's card (a ``CardFile`` device) with one armed fault."""

        def __init__(self, cf: harness.CardFile) -> None:
            self.cf = cf
            self.arm: tuple[str, str] | None = None  # (what, at)
            self.fired: tuple[str, str] | None = None

        @property
        def atr(self) -> bytes:
            return self.cf.device.atr

        def power_on(self) -> bytes:
            return self.cf.device.power_on()

        def power_off(self) -> None:
            self.cf.device.power_off()

        def process(self, apdu: bytes) -> bytes:
            if self.arm is not None:
                what, at = self.arm
                cmd = CommandApdu.from_bytes(apdu)
                hit = (at == "challenge" and cmd.cla == 0x00 and cmd.ins == 0x84) or (
                    at != "challenge" and is_card_write(cmd)
                )
                if hit:
                    self.arm, self.fired = None, (what, at)
                    if at == "write_executed":
                        self.cf.device.process(apdu)  # the card wrote; the answer is lost
                    raise Cut
            return self.cf.device.process(apdu)

    class CuttableBridge(VpcdBridge):
        """A vpcd bridge whose card can drop the line in the middle of an APDU."""

        def __init__(self, card: FaultyCard, port: int, on_cut: Any) -> None:
            super().__init__(card, "127.0.0.1", port, reconnect=True)  # type: ignore[arg-type]
            self.on_cut = on_cut

        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await super()._serve(reader, writer)
            except Cut:
                self.on_cut()  # pcscd dies first (if that is the fault) ...
                writer.transport.abort()  # ... then the line: the answer never leaves


async def _ask(proc: asyncio.subprocess.Process, cmd: dict[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write((json.dumps(cmd) + "\n").encode())
    await proc.stdin.drain()
    async with asyncio.timeout(60):
        line = await proc.stdout.readline()
    assert line, "the agent died"
    out: dict[str, Any] = json.loads(line)
    return out


async def test_pcscd_restart_and_card_pulled_mid_transaction(
    tmp_path: Path, figures: Figures
) -> None:
    missing = missing_tools()
    if missing:
        pytest.skip("needs " + ", ".join(missing))
    rng = random.Random(7)
    state = tmp_path / "terminal"
    plan = await harness.init_state(state, seed=7, cards=1, not_activated=0)
    [cid] = plan["cards"]
    cf = harness.CardFile(CardStore(state), cid, PROFILE, harness.OpTag)
    card = FaultyCard(cf)
    pcscd = PcscdInstance(base_dir=tmp_path / "pcscd", port=free_port_pair())
    await asyncio.to_thread(pcscd.start)
    restarts: list[asyncio.Task[None]] = []
    pulled = asyncio.Event()

    def on_cut() -> None:
        assert card.fired is not None
        if card.fired[0] == "pcscd":
            assert pcscd.process is not None
            pcscd.process.kill()  # SIGKILL now; restarted (same ports) in the background
            restarts.append(asyncio.create_task(asyncio.to_thread(pcscd.restart)))
        else:
            bridge.reconnect = False  # the card stays out until the test puts it back
            pulled.set()

    bridge = CuttableBridge(card, pcscd.slot_port(0), on_cut)
    faults = (
        [
            (what, at)
            for what in ("pcscd", "pull")
            for at in ("write_executed", "write_lost", "challenge")
        ]
        * 2
        * ROUNDS
    )
    rng.shuffle(faults)
    env = {**pcscd.env, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "agent.log").open("ab") as agent_log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "child", str(state),
            cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=agent_log,
        )  # fmt: skip
    seen: dict[str, int] = {}
    resolved = {"done": 0, "failed": 0}
    tried = 0
    try:
        await bridge.insert()
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            pid = json.loads(await proc.stdout.readline())["ready"]
        hd = state / harness.HARNESS
        for n, (what, at) in enumerate(faults):
            key = f"pcsc-{n}"
            st = cf.card.state
            kind = "unlock" if st == "temp_locked" else "lock"
            # a PIN change sends no GET CHALLENGE; keep the PIN try counter full (a failed
            # confirmation costs a try)
            if kind == "lock" and at != "challenge" and n % 3 == 2:
                kind = "pin_change" if cf.card.pin_tries_left == PROFILE.pin_max_tries else kind
            op: dict[str, Any] = {"i": n, "key": key, "kind": kind, "card": cid}
            if kind == "pin_change":
                op["old"], op["new"] = cf.card.pin, harness.new_pin(key, avoid=cf.card.pin)
            harness._append_line(hd / "ops.jsonl", op)
            card.fired = None
            pulled.clear()
            card.arm = (what, at)
            harness.OpTag.current = key
            answer = await _ask(proc, {"cmd": "op", **op})
            tried += 1
            assert card.fired == (what, at), (answer, card.arm)
            # a typed error, and the record says what is known
            where = (what, at, answer)
            if at == "challenge":
                assert answer["error"] in TYPED, where
                assert (answer["state"], answer["result"]) == ("sealed", "not_sent"), where
            else:
                assert answer["error"] == "TransactionInDoubtError", where
                assert answer["cause"] in TYPED, where
                assert answer["state"] == "in_doubt", where
            seen[answer.get("cause") or answer["error"]] = (
                seen.get(answer.get("cause") or answer["error"], 0) + 1
            )
            # the card comes back (pcscd restarted / card re-inserted) and is seen again
            if what == "pull":
                await pulled.wait()
                await asyncio.sleep(1.0)  # out for longer than vpcd's presence poll (~0.4 s)
                await bridge.remove()
                bridge.reconnect = True
                await bridge.insert()
            else:
                await restarts[-1]
            sight = await _ask(proc, {"cmd": "see", "pin": op.get("new", "000000")})
            harness.OpTag.current = "idle"
            verdicts = [r["verdict"] for r in sight["resolutions"]]
            if at == "challenge":
                assert verdicts == [], sight
            else:
                expected = "done" if at == "write_executed" else "failed"
                assert expected in verdicts, (what, at, sight)
                resolved[expected] += 1
        report = await _ask(proc, {"cmd": "report"})
        assert report["pid"] == pid  # never restarted
        assert report["service_recoveries"] >= 1  # the same reader object came back
        await _ask(proc, {"cmd": "quit"})
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bridge.remove()
        for t in restarts:
            with contextlib.suppress(Exception):
                await t
        await asyncio.to_thread(pcscd.cleanup)
    result = await asyncio.to_thread(harness.audit, state, None, delivered=False)
    assert result.problems == [], "\n".join(result.problems)
    assert result.records == tried
    figures.add(
        "pcscd restarted / card pulled mid-transaction (real PC/SC stack)",
        f"{tried} transactions through pcscd+vpcd with pcscd SIGKILLed+restarted or the vpcd "
        "line cut at the card write (executed or not) or just before it",
        tried,
        result.lost,
        typed_errors=seen,
        in_doubt_resolved_done=resolved["done"],
        in_doubt_resolved_failed=resolved["failed"],
        service_recoveries=report["service_recoveries"],
        connect_errors_while_recovering=report["connect_errors"],
        duplicates=result.duplicates,
        agent_restarts=0,
    )


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "child":
    asyncio.run(_child(Path(sys.argv[2])))
