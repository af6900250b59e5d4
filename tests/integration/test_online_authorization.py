"""Online authorization end to end (issue 4): unlock asks central through the real uplink.

The agent side is the product's wiring on a simulated terminal (``agent.sim.rig.SimRig``):
``TxEngine`` with ``agent.uplink.port.SessionUplinkPort`` over ``UplinkSession``, and
``CommandHandler`` (verifying central's signatures) feeding the port's ``answered`` hook;
central is ``ReferenceCentral`` behind a real mosquitto.

* a locked card with no pushed authorization: the unlock asks (``authorization_request``),
  central grants a short ``authorize`` for that card and kind, the unlock succeeds online;
* central knows the card was replaced (or formally lost) and the terminal does not: central's
  signed ``authorization_refused`` ends the wait and the engine refuses with ``card_replaced``
  (``formal_loss_counter_only``); the card stays locked and central raised an alert;
* a terminal that already heard ``card_replaced`` refuses without asking;
* central never answers: ``authorization_timeout`` after the port's timeout;
* offline: refused at once, nothing asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import PolicyRefusal
from agent.profile import load_profile
from agent.sim.central import ReferenceCentral
from agent.sim.rig import SimRig
from agent.testing.mosquitto import Mosquitto
from agent.tx.engine import TxEngine
from agent.tx.records import TxRecord
from agent.uplink.commands import CommandHandler, EventReporter, JournalReplayStore
from agent.uplink.outbox import JournalOutbox
from agent.uplink.port import SessionUplinkPort
from agent.uplink.session import UplinkSession, UplinkSettings
from agent.wire.codec import StatusMessage, ack_ranges
from agent.wire.commands import CommandVerifier

pytestmark = pytest.mark.mqtt
PROFILE = load_profile("default")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mq") as m:
        yield m


@dataclass
class Terminal:
    rig: SimRig
    port: SessionUplinkPort
    session: UplinkSession
    engine: TxEngine
    terminal: str

    @property
    def card(self) -> str:
        return self.rig.card.card_id_code.hex().upper()

    async def lock(self) -> None:
        self.rig.reinsert()
        await self.engine.lock(self.rig.card_channel)
        assert self.rig.card.state == "temp_locked"

    async def unlock(self) -> TxRecord:
        self.rig.reinsert()
        return await self.engine.unlock(self.rig.card_channel)


async def _terminal(
    tmp: Path, broker: Mosquitto, central: ReferenceCentral, timeout_s: float
) -> Terminal:
    rig = SimRig(tmp / "terminal", PROFILE)
    t = await rig.terminal_id()
    port = SessionUplinkPort(rig.journal, t, timeout_s=timeout_s, poll_s=0.5)
    verifier = CommandVerifier(
        {central.kid: central.key.public_key()}, t, time.time, JournalReplayStore(rig.journal)
    )
    reporter = EventReporter(rig.journal, t)
    handler = CommandHandler(
        verifier, rig.journal, t, reporter=reporter, on_authorization=port.answered
    )
    session = UplinkSession(
        UplinkSettings(
            terminal=t, host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
            reconnect_max_s=0.5, ack_timeout_s=3.0,
        ),
        JournalOutbox(rig.journal),
        encode_status=lambda on: StatusMessage(t, on, "test", int(time.time())).to_cbor(),
        decode_ack=lambda p: ack_ranges(p, t),
        on_command=handler,
        on_event=port.on_session_event,
    )  # fmt: skip
    reporter.publisher = session.publish
    handler.on_resend = session.resend_from
    port.session = session
    engine = await rig.engine(uplink=port)
    return Terminal(rig, port, session, engine, t)


@contextlib.asynccontextmanager
async def system(
    tmp: Path,
    broker: Mosquitto,
    *,
    timeout_s: float = 10.0,
    online: bool = True,
    **central_options: object,
) -> AsyncIterator[tuple[ReferenceCentral, Terminal]]:
    central = ReferenceCentral(broker.url, tmp / "central.db", PROFILE, **central_options)  # type: ignore[arg-type]
    term = await _terminal(tmp, broker, central, timeout_s)
    tasks = [asyncio.create_task(central.run())]
    if online:
        tasks.append(asyncio.create_task(term.session.run()))
    try:
        async with asyncio.timeout(10):
            await central.wait_ready()
            if online:
                await term.session.wait_online()
        yield central, term
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await term.rig.aclose()
        central.close()


async def until(pred: Callable[[], bool], limit_s: float = 10) -> None:
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(pred):  # noqa: ASYNC110 - stores live in threads
            await asyncio.sleep(0.05)


async def test_online_unlock_is_granted_on_request(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker) as (central, term):
        await term.lock()
        assert term.rig.journal.find_valid_authorization(term.card, "unlock") is None
        rec = await term.unlock()
        assert term.rig.card.state == "active"
        assert not rec.offline
        assert rec.reason == "central"
        [req] = central.authorization_requests(term.terminal)
        assert (req["kind"], req["card"], req["decision"], req["reason"]) == (
            "unlock",
            term.card,
            "granted",
            None,
        )
        assert req["sent"]
        # the record names central's signed grant, which was used once
        assert rec.auth_id == req["command_id"]
        auth = term.rig.journal.get_authorization(req["command_id"])
        assert auth is not None
        assert auth.used_by == rec.tx_id
        # short-lived: central's policy is five minutes
        assert auth.expires_at - time.time() * 1000 <= 300_000 + 2_000
        assert term.port.stats["granted"] == 1
        # the sealed record reaches central with its chain
        await until(lambda: central.chain_state(term.terminal) == (2, 2))
        kinds = [r["kind"] for r in central.records(term.terminal)]
        assert kinds == ["lock", "unlock"]


@pytest.mark.parametrize(
    ("mark", "code", "local_reason"),
    [
        ("replaced", "card_replaced", "replaced"),
        ("formal_loss", "formal_loss_counter_only", "formal_loss"),
    ],
)
async def test_central_refuses_a_card_the_terminal_thought_fine(
    tmp_path: Path, broker: Mosquitto, mark: str, code: str, local_reason: str
) -> None:
    async with system(tmp_path, broker) as (central, term):
        await term.lock()
        # central's database only: the terminal missed the broadcast (it was offline)
        if mark == "replaced":
            central.store.mark_replaced(term.card)
        else:
            central.store.blacklist_change([term.card], [])
        assert term.rig.journal.blacklist_reason(term.card) is None
        started = time.monotonic()
        with pytest.raises(PolicyRefusal) as exc:
            await term.unlock()
        assert exc.value.code == code
        assert time.monotonic() - started < 5.0  # the refusal ended the wait, not the timeout
        assert term.rig.card.state == "temp_locked"
        assert term.rig.journal.blacklist_reason(term.card) == local_reason
        [req] = central.authorization_requests(term.terminal)
        assert (req["decision"], req["reason"], req["sent"]) == (
            "refused",
            "card_replaced" if mark == "replaced" else "formal_loss",
            True,
        )
        alerts = [a["kind"] for a in central.alerts()]
        assert alerts == (["replaced_card_request"] if mark == "replaced" else [])
        # asked again: the terminal now knows, and refuses without asking central
        with pytest.raises(PolicyRefusal) as again:
            await term.unlock()
        assert again.value.code == code
        assert len(central.authorization_requests(term.terminal)) == 1


async def test_a_terminal_that_heard_card_replaced_does_not_ask(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with system(tmp_path, broker) as (central, term):
        await term.lock()
        await central.card_replaced(term.card)
        await until(lambda: term.rig.journal.blacklist_reason(term.card) == "replaced")
        with pytest.raises(PolicyRefusal) as exc:
            await term.unlock()
        assert exc.value.code == "card_replaced"
        assert term.rig.card.state == "temp_locked"
        assert central.authorization_requests() == []
        assert term.port.stats["requested"] == 0


async def test_central_that_never_answers_times_out(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker, timeout_s=1.0, auto_authorize=False) as (central, term):
        await term.lock()
        started = time.monotonic()
        with pytest.raises(PolicyRefusal) as exc:
            await term.unlock()
        elapsed = time.monotonic() - started
        assert exc.value.code == "authorization_timeout"
        assert 1.0 <= elapsed < 5.0
        assert term.rig.card.state == "temp_locked"
        assert term.port.stats["timeouts"] == 1
        # central recorded the request for an operator and sent nothing
        await until(lambda: len(central.authorization_requests(term.terminal)) == 1)
        [req] = central.authorization_requests(term.terminal)
        assert (req["decision"], req["command_id"], req["sent"]) == ("pending", None, False)


async def test_offline_unlock_is_refused_at_once(tmp_path: Path, broker: Mosquitto) -> None:
    async with system(tmp_path, broker, online=False) as (central, term):
        await term.lock()
        started = time.monotonic()
        with pytest.raises(PolicyRefusal) as exc:
            await term.unlock()
        assert exc.value.code == "offline_unlock_needs_authorization"
        assert time.monotonic() - started < 2.0
        assert term.rig.card.state == "temp_locked"
        assert term.port.stats["requested"] == 0
        assert central.authorization_requests() == []


async def test_stale_requests_are_recorded_not_answered(tmp_path: Path, broker: Mosquitto) -> None:
    """A request redelivered long after the terminal stopped waiting gets no authorization."""
    # any age is too old (the reference policy allows two minutes)
    async with system(tmp_path, broker, request_max_age_s=-1.0) as (central, term):
        term.port.timeout_s = 1.0
        await term.lock()
        with pytest.raises(PolicyRefusal) as exc:
            await term.unlock()
        assert exc.value.code == "authorization_timeout"
        await until(lambda: len(central.authorization_requests(term.terminal)) == 1)
        [req] = central.authorization_requests(term.terminal)
        assert (req["decision"], req["sent"]) == ("stale", False)
        assert term.rig.journal.find_valid_authorization(term.card, "unlock") is None


def test_the_agent_process_asks_its_central_online(tmp_path: Path) -> None:
    """``ssc-agent run`` with ``sim://``: the app's wiring (port, hook, configured timeout)."""
    from tests.integration.test_run import Agent, call, connect, write_config

    env = {**os.environ, "SSC_AGENT__UPLINK__AUTHORIZATION_TIMEOUT_S": "5.0"}
    agent = Agent(tmp_path, write_config(tmp_path), env)
    try:
        agent.wait_ready()
        s = connect(agent.socket)
        try:
            deadline = time.monotonic() + 15
            while not call(s, 1, "status")["result"]["uplink"]["online"]:
                assert time.monotonic() < deadline, "the simulated uplink never came up"
                time.sleep(0.1)
            assert call(s, 2, "tx.lock", idempotency_key="lock-1")["ok"] is True
            unlock = call(s, 3, "tx.unlock", idempotency_key="unlock-1")
            assert unlock["ok"] is True, unlock
            rec = unlock["result"]
            assert (rec["result"], rec["offline"], rec["reason"]) == ("unlocked", False, "central")
            assert rec["auth_id"]
            assert call(s, 4, "card.read")["result"]["state"] == "active"
        finally:
            s.close()
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)


async def test_an_operator_approves_a_pending_request(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ssc-agent central --manual``: the request waits for an operator, who finds it with
    ``central requests --pending`` and approves it with ``central authorize``; the grant is
    pushed to the terminal, the request is marked ``granted`` by ``operator``, and the
    citizen's next try unlocks offline with that authorization."""
    from agent.cli import main

    db = str(tmp_path / "central.db")
    async with system(tmp_path, broker, timeout_s=1.0, auto_authorize=False) as (central, term):
        await term.lock()
        with pytest.raises(PolicyRefusal):
            await term.unlock()
        await until(lambda: len(central.authorization_requests(term.terminal)) == 1)
        capsys.readouterr()
        common = ["--db", db, "--broker", broker.url, "--manual", "--json"]
        assert await asyncio.to_thread(main, ["central", *common, "requests", "--pending"]) == 0
        [pending] = json.loads(capsys.readouterr().out)
        assert (pending["kind"], pending["card"], pending["decision"]) == (
            "unlock", term.card, "pending",
        )  # fmt: skip
        args = ["central", *common, "authorize", "unlock", pending["card"]]
        assert await asyncio.to_thread(main, [*args, "--terminal", term.terminal]) == 0
        await until(
            lambda: term.rig.journal.find_valid_authorization(term.card, "unlock") is not None
        )
        [req] = central.authorization_requests(term.terminal)
        assert (req["decision"], req["reason"], req["sent"]) == ("granted", "operator", True)
        assert await asyncio.to_thread(main, ["central", *common, "requests", "--pending"]) == 0
        out = capsys.readouterr().out
        assert json.loads(out.splitlines()[-1]) == [], out
        rec = await term.unlock()
        assert term.rig.card.state == "active"
        assert rec.auth_id == req["command_id"]
