"""``ssc-agent demo``: the product's story on the in-process simulators (DESIGN §1, §8).

One command, nothing to set up: the agent (:class:`agent.app.App`) runs in this process on a
fresh state directory with the simulated card reader, PSAM and printer, a private mosquitto and
the in-process reference central; the story is told through the local API, as a kiosk UI would:

 1. the agent starts (READY) and connects to central
 2. a citizen inserts a new card; it is read (personal data masked)
 3. the card is activated, changing the initial PIN
 4. the holder asks for the card to be locked; a retried request (same idempotency key, the
    kiosk lost the answer) returns the same record and does not touch the card again
 5. the network goes down (the broker is killed)
 6. an unlock is refused offline: central has not authorized it (the citizen-facing message)
 7. the network comes back; central sends a signed unlock authorization
 8. the unlock succeeds with that authorization
 9. central blacklists a lost card; it is inserted and locked automatically
10. every transaction printed its receipt (text and PNG renderings)
11. the journal's hash chain and MACs verify, and everything is drained to central, which
    verified every record's MAC and the chain

Each step checks that the product did what the story says; the exit code is 0 only if all did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.api.client import ApiClient
    from agent.app import App

NEW_PIN = "135790"
WAIT_S = 30.0


class StepFailed(AgentError):
    """A demo step did not do what the story says."""

    code = "demo_step_failed"


@dataclass(slots=True)
class Step:
    number: int
    title: str
    ok: bool = False
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


def demo_config_text(state_dir: Path) -> str:
    """The demo's agent config: everything on the simulators, quick reconnects."""
    return f"""
[terminal]
state_dir = {json.dumps(str(state_dir))}

[card]
reader = "sim://default"
psam = "sim://default"

[printer]
url = "sim://"

[uplink]
broker = "sim://"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
ack_timeout_s = 5.0

[api]
socket = "api.sock"

[log]
level = "INFO"
"""


class Demo:
    """Runs the story; ``steps`` holds the outcome of each step."""

    def __init__(self, state_dir: Path, out: TextIO, *, as_json: bool = False) -> None:
        self.state_dir = state_dir
        self.out = out
        self.as_json = as_json
        self.steps: list[Step] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._event_arrived = asyncio.Condition()
        self.app: App | None = None
        self.api: ApiClient | None = None
        self.card_a = ""
        self.card_b = ""

    # ---- output ---------------------------------------------------------------------------
    def _emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def _say(self, text: str) -> None:
        if not self.as_json:
            self.out.write(text + "\n")
            self.out.flush()

    # ---- events ---------------------------------------------------------------------------
    async def _pump_events(self) -> None:
        assert self.api is not None
        async for event, data in self.api.events():
            async with self._event_arrived:
                self.events.append((event, data))
                self._event_arrived.notify_all()
            if self.as_json:
                self._emit({"type": "event", "event": event, "data": data})

    async def wait_event(
        self,
        pred: Callable[[str, dict[str, Any]], bool],
        since: int = 0,
        timeout: float = WAIT_S,  # noqa: ASYNC109
    ) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(timeout), self._event_arrived:
            while True:
                for ev in self.events[since:]:
                    if pred(*ev):
                        return ev
                await self._event_arrived.wait()

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        assert self.api is not None
        return await self.api.call(op, args or {})

    async def call_error(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        from agent.api.client import RemoteApiError

        try:
            result = await self.call(op, args)
        except RemoteApiError as err:
            return err.to_dict()
        raise StepFailed(f"{op} succeeded where the story expects a refusal: {result}")

    # ---- the story ------------------------------------------------------------------------
    async def run(self) -> bool:
        from agent.app import App
        from agent.config import parse_config

        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = parse_config(demo_config_text(self.state_dir), base_dir=str(self.state_dir))
        app = self.app = App(config, sim_card_present=False, install_signals=False)
        runner = asyncio.create_task(app.run(), name="agent")
        pump: asyncio.Task[None] | None = None
        try:
            steps: list[tuple[str, Callable[[Step], Awaitable[None]]]] = [
                ("Agent starts on the simulators and connects to central", self.s_start),
                ("A citizen inserts a new card; it is read (masked)", self.s_insert_read),
                ("The card is activated, changing the initial PIN", self.s_activate),
                ("The holder locks the card; a retried request changes it once", self.s_lock),
                ("The network goes down", self.s_network_down),
                ("An offline unlock is refused (no authorization)", self.s_unlock_refused),
                ("A citizen reports a lost card (no card, offline: queued)", self.s_report_loss),
                ("The network is back; central authorizes the unlock", self.s_authorize),
                ("The unlock succeeds with central's authorization", self.s_unlock),
                ("A blacklisted card is inserted and locked automatically", self.s_blacklist),
                ("Every transaction printed its receipt", self.s_receipts),
                ("The journal verifies and is drained to central", self.s_drain),
            ]
            assert len(steps) == STORY_STEPS
            for n, (title, fn) in enumerate(steps, 1):
                step = Step(n, title)
                t0 = time.monotonic()
                try:
                    await fn(step)
                    if step.number == 1:
                        pump = asyncio.create_task(self._pump_events(), name="demo-events")
                    step.ok = True
                except (AgentError, TimeoutError) as err:
                    step.ok = False
                    why = (
                        "timed out"
                        if isinstance(err, TimeoutError)
                        else f"{err.code}: {err.message}"
                    )
                    step.detail = f"{step.detail} — FAILED: {why}".lstrip(" —")
                step.seconds = time.monotonic() - t0
                self.steps.append(step)
                self._report(step, len(steps))
                if not step.ok and n <= 2:
                    break  # nothing else can work without a running agent and a card
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            if self.api is not None:
                await self.api.close()
            app.request_stop()
            with contextlib.suppress(AgentError):
                await runner
        ok = len(self.steps) == STORY_STEPS and all(s.ok for s in self.steps)
        self._summary(ok)
        return ok

    def _report(self, step: Step, total: int) -> None:
        if self.as_json:
            self._emit(
                {
                    "type": "step",
                    "step": step.number,
                    "title": step.title,
                    "ok": step.ok,
                    "detail": step.detail,
                    "seconds": round(step.seconds, 3),
                    **({"data": step.data} if step.data else {}),
                }
            )
            return
        mark = "✔" if step.ok else "✘"
        self._say(f"[{step.number:2d}/{total}] {mark} {step.title}  ({step.seconds:.2f}s)")
        for line in step.detail.split("\n"):
            if line:
                self._say(f"         {line}")

    def _summary(self, ok: bool) -> None:
        if self.as_json:
            self._emit(
                {
                    "type": "summary",
                    "ok": ok,
                    "state_dir": str(self.state_dir),
                    "steps": [
                        {
                            "step": s.number,
                            "title": s.title,
                            "ok": s.ok,
                            "seconds": round(s.seconds, 3),
                        }
                        for s in self.steps
                    ],
                }
            )
            return
        width = max(len(s.title) for s in self.steps) if self.steps else 10
        self._say("")
        self._say(f"  #  {'step'.ljust(width)}  result  time")
        self._say(f"  -- {'-' * width}  ------  ------")
        for s in self.steps:
            self._say(
                f"  {s.number:2d} {s.title.ljust(width)}  "
                f"{'ok' if s.ok else 'FAILED':6s}  {s.seconds:5.2f}s"
            )
        self._say("")
        self._say(f"state directory (journal, receipts, logs): {self.state_dir}")
        self._say("the story went as told" if ok else "the story did NOT go as told")

    # ---- steps ----------------------------------------------------------------------------
    async def s_start(self, step: Step) -> None:
        from agent.api.client import ApiClient

        app = self.app
        assert app is not None
        t0 = time.monotonic()
        await asyncio.wait_for(app.ready.wait(), WAIT_S)
        ready_s = time.monotonic() - t0
        assert app.api_socket is not None
        self.api = await ApiClient.connect_unix(str(app.api_socket))
        await self.api.subscribe()
        async with asyncio.timeout(WAIT_S):
            while not app.uplink_port.online:  # noqa: ASYNC110  # a property, no event to await
                await asyncio.sleep(0.05)
        status = await self.call("status")
        step.detail = (
            f"terminal {status['terminal_id']} (the PSAM's number), ready in {ready_s:.2f}s, "
            f"API on {app.api_socket}, broker {app.broker.url if app.broker else '-'}"
        )
        step.data = {"terminal_id": status["terminal_id"], "ready_s": round(ready_s, 3)}

    async def s_insert_read(self, step: Step) -> None:
        from agent.app import SimCardSlot
        from agent.sim.factory import CardFactory

        app = self.app
        assert app is not None
        assert isinstance(app.slot, SimCardSlot)
        card = CardFactory(app.profile, seed=2026).issue(state="not_activated", algorithm="sm4")
        self.card_a = card.card_id_code.hex().upper()
        mark = len(self.events)
        await app.slot.insert(card)
        await self.wait_event(lambda e, _d: e == "card_inserted", mark)
        report = await self.call("card.read")
        holder = report.get("holder") or {}
        if report["state"] != "not_activated" or "*" not in holder.get("ssn", ""):
            raise StepFailed(f"unexpected read: state {report['state']}")
        step.detail = (
            f"card {report['card_number'][:2]}***, holder {holder.get('name')} "
            f"ID {holder.get('ssn')}, bank {((report.get('bank') or {}).get('pan'))}, "
            f"state {report['state']}, {report['algorithm']}"
        )

    def _tx_detail(self, rec: dict[str, Any]) -> str:
        receipt = rec.get("receipt") or {}
        printed = (
            "receipt printed"
            if receipt.get("printed")
            else f"receipt NOT printed ({receipt.get('reason')})"
        )
        mode = "offline" if rec["offline"] else "online"
        return (
            f"{rec['kind']} → {rec['result']} (seq {rec['seq']}, {rec['state']}, {mode}); {printed}"
        )

    async def s_activate(self, step: Step) -> None:
        app = self.app
        assert app is not None
        rec = await self.call(
            "tx.activate",
            {
                "old_pin": app.profile.initial_pin,
                "new_pin": NEW_PIN,
                "idempotency_key": "demo-activate-1",
            },
        )
        if rec["state"] != "sealed" or "activated" not in (rec["result"] or ""):
            raise StepFailed(f"activation ended {rec['state']}/{rec['result']}")
        step.detail = self._tx_detail(rec)

    async def s_lock(self, step: Step) -> None:
        args = {"idempotency_key": "demo-lock-1"}
        rec = await self.call("tx.lock", args)
        again = await self.call("tx.lock", args)
        if rec["result"] != "locked" or again["tx_id"] != rec["tx_id"] or not again["replayed"]:
            raise StepFailed("the retried lock did not return the first record")
        status = await self.call("status")
        if status["journal"]["transactions"] != 2:
            raise StepFailed("the retry created another record")
        step.detail = (
            self._tx_detail(rec)
            + f"\nretry with the same key → the same tx {rec['tx_id'][:8]}…, no second card write"
        )

    async def s_network_down(self, step: Step) -> None:
        app = self.app
        assert app is not None
        assert app.broker is not None
        mark = len(self.events)
        await asyncio.to_thread(app.broker.stop)
        await self.wait_event(lambda e, _d: e == "uplink_offline", mark)
        step.detail = "the broker was killed; the agent reports uplink_offline and keeps working"

    async def s_unlock_refused(self, step: Step) -> None:
        err = await self.call_error("tx.unlock", {"idempotency_key": "demo-unlock-1"})
        if err.get("code") != "offline_unlock_needs_authorization":
            raise StepFailed(f"refused with {err.get('code')}")
        step.detail = f"refused: {err['code']}\n“{err.get('message_zh')}” / “{err['message']}”"

    async def s_report_loss(self, step: Step) -> None:
        rec = await self.call(
            "tx.report_loss",
            {"idempotency_key": "demo-loss-1", "ssn": DEMO_LOSS["ssn"],
             "card_number": DEMO_LOSS["card_number"], "name": DEMO_LOSS["name"]},
        )  # fmt: skip
        if (rec["kind"], rec["result"], rec["offline"]) != ("report_loss", "pending", True):
            raise StepFailed(f"loss report: {rec}")
        step.detail = (
            self._tx_detail(rec) + "\nthe ID and card numbers stay encrypted in the journal; "
            "they go to central sealed to its key (HPKE), never in the clear"
        )

    async def s_authorize(self, step: Step) -> None:
        app = self.app
        assert app is not None
        assert app.broker is not None
        assert app.central is not None
        mark = len(self.events)
        await asyncio.to_thread(app.broker.start)
        await self.wait_event(lambda e, _d: e == "uplink_online", mark)
        mark = len(self.events)
        await app.central.authorize("unlock", self.card_a, terminal=app.terminal_id, ttl_s=600)
        await self.wait_event(
            lambda e, d: e == "command_applied" and d.get("kind") == "unlock", mark
        )
        step.detail = (
            "uplink_online; central signed an unlock authorization (Ed25519, 10 min); "
            "the agent verified and stored it"
        )

    async def s_unlock(self, step: Step) -> None:
        rec = await self.call("tx.unlock", {"idempotency_key": "demo-unlock-2"})
        if rec["result"] != "unlocked" or not rec["auth_id"]:
            raise StepFailed(f"unlock ended {rec['result']}")
        step.detail = self._tx_detail(rec) + f"\nauthorization {rec['auth_id'][:12]}… used"

    async def s_blacklist(self, step: Step) -> None:
        from agent.app import SimCardSlot
        from agent.sim.factory import CardFactory

        app = self.app
        assert app is not None
        assert app.central is not None
        assert isinstance(app.slot, SimCardSlot)
        card = CardFactory(app.profile, seed=4711).issue(state="active", algorithm="des")
        self.card_b = card.card_id_code.hex().upper()
        mark = len(self.events)
        await app.central.blacklist_add([self.card_b])
        await self.wait_event(lambda e, _d: e == "blacklist_updated", mark)
        await app.slot.remove()
        mark = len(self.events)
        await app.slot.insert(card)
        await self.wait_event(
            lambda e, d: e == "blacklist_hit" and d.get("card_id_code") == self.card_b, mark
        )
        _, done = await self.wait_event(
            lambda e, d: (
                e == "tx_progress" and d.get("step") == "sealed" and d.get("kind") == "auto_lock"
            ),
            mark,
        )
        await self.wait_event(
            lambda e, d: e.startswith("receipt_") and d.get("tx_id") == done.get("tx_id"), mark
        )
        report = await self.call("card.read")
        if report["state"] != "temp_locked":
            raise StepFailed(f"the blacklisted card is {report['state']}")
        step.detail = (
            f"blacklist delta from central applied; card {self.card_b[:6]}…{self.card_b[-4:]} "
            f"inserted → blacklist_hit → auto_lock sealed (tx {str(done.get('tx_id'))[:8]}…); "
            f"the card now reads {report['state']}"
        )

    async def s_receipts(self, step: Step) -> None:
        printed = [d for e, d in self.events if e == "receipt_printed"]
        failed = [d for e, d in self.events if e == "receipt_not_printed"]
        kinds = [d["kind"] for d in printed]
        want = ["activate", "lock", "report_loss", "unlock", "auto_lock"]
        if failed or kinds != want:
            raise StepFailed(
                f"receipts printed for {kinds}, not printed for {[d['kind'] for d in failed]}"
            )
        missing = [
            p
            for d in printed
            for p in (d["text_path"], d["png_path"])
            if not p or not Path(p).exists()  # noqa: ASYNC240  # a handful of stat calls
        ]
        if missing:
            raise StepFailed(f"receipt files missing: {missing}")
        step.detail = "\n".join(
            f"{d['kind']:9s} {d['text_path']}\n          {d['png_path']}" for d in printed
        )

    async def s_drain(self, step: Step) -> None:
        app = self.app
        assert app is not None
        assert app.central is not None
        async with asyncio.timeout(WAIT_S):
            while True:
                status = await self.call("status")
                if status["journal"]["unacked"] == 0:
                    break
                await asyncio.sleep(0.1)
        verify = await self.call("journal.verify")
        last = status["journal"]["last_seq"]
        verified, stored = app.central.chain_state(app.terminal_id)
        alerts = app.central.alerts()
        if not verify["ok"] or not verify["mac_checked"] or verify["checked"] != last:
            raise StepFailed(f"journal verification: {verify}")
        if (verified, stored) != (last, last) or alerts:
            raise StepFailed(
                f"central has {stored} records, chain verified to {verified}, alerts {alerts}"
            )
        reports = app.central.loss_reports(app.terminal_id)
        if len(reports) != 1 or DEMO_LOSS["ssn"] in str(reports):
            raise StepFailed(f"central's loss reports: {reports}")
        [loss] = reports
        step.detail = (
            f"{verify['checked']} sealed records: hash chain and PSAM MACs verify locally; "
            f"central acked all {stored}, verified every MAC and the chain to seq {verified}, "
            f"no alerts\nthe loss report (seq {loss['seq']}) opened at central and matches its "
            f"sealed digest: ID {loss['ssn']}, card {loss['card_number']} (shown masked)"
        )


#: Steps of the story (every one must have run, and gone as told).
STORY_STEPS = 12
#: The loss report of the story (a made-up citizen: the ID number's check digit is not valid).
DEMO_LOSS = {"ssn": "44030119900101123X", "card_number": "D83462715", "name": "李四"}


def run_demo(state_dir: Path, *, as_json: bool = False, out: TextIO | None = None) -> bool:
    """Run the story (the ``ssc-agent demo`` command); True when every step went as told."""
    from agent.logs import setup_logging

    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = (state_dir / "agent.log").open("a", encoding="utf-8")
    try:
        setup_logging("INFO", json_lines=True, stream=log_file)
        logging.getLogger("mqtt").setLevel(logging.ERROR)
        demo = Demo(state_dir, out or sys.stdout, as_json=as_json)
        return asyncio.run(demo.run())
    finally:
        logging.getLogger().handlers.clear()
        log_file.close()
