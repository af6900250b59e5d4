"""The events a running agent reports to central (docs/MESSAGES.md "event"; issue 5).

The real ``App`` on ``sim://`` (its private mosquitto and in-process reference central):
``agent_started`` once it serves, ``agent_stopping`` when it is stopped, ``device_fault`` when
the receipt printer runs out of paper and ``device_recovered`` when it prints again. Each is
journaled first, so one that could not be sent goes at the next connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.api.client import ApiClient
from agent.app import App, Health, HealthState
from agent.sim.central import ReferenceCentral
from tests.integration._sim_app import running as running_app
from tests.integration._sim_app import sim_config, until

pytestmark = pytest.mark.mqtt


SECTIONS = """
[uplink]
broker = "sim://"
[api]
socket = "api.sock"
"""


def config(state: Path) -> Any:
    return sim_config(state, SECTIONS)


def running(state: Path) -> Any:
    return running_app(config(state))


def kinds(central: ReferenceCentral, terminal: str) -> list[str]:
    return [e.type for e in central.events(terminal)]


async def test_start_stop_and_a_printer_out_of_paper_reach_central(tmp_path: Path) -> None:
    state = tmp_path / "s"
    async with running(state) as app:
        central, t = app.central, app.terminal_id
        assert central is not None
        assert app.printer is not None
        assert app.printer.sim is not None
        await until(lambda: "agent_started" in kinds(central, t))
        async with await ApiClient.connect_unix(str(app.api_socket)) as api:
            app.printer.sim.set_fault(0, paper_out=True)
            first = await api.call("tx.lock", {"idempotency_key": "k1"})
            assert first["receipt"]["printed"] is False
            await until(lambda: "device_fault" in kinds(central, t))
            app.printer.sim.set_fault(0, paper_out=False)  # paper refilled
            second = await api.call("tx.unlock", {"idempotency_key": "k2"})
            assert second["receipt"]["printed"] is True
        await until(lambda: "device_recovered" in kinds(central, t))
        events = [e for e in central.events(t) if e.type.startswith("device_")]
        assert [(e.type, e.data["device"], e.data["state"]) for e in events] == [
            ("device_fault", "printer", "degraded"),
            ("device_recovered", "printer", "ok"),
        ]
        assert "paper_end" in events[0].data["detail"]
        db = app.state_dir / "sim-central" / "central.db"
    # the stop was said before the connection closed; central's store outlives the agent
    after = ReferenceCentral("mqtt://127.0.0.1:1", db, app.profile)
    try:
        assert kinds(after, t)[-1] == "agent_stopping"
        assert kinds(after, t).count("agent_started") == 1
    finally:
        after.close()


def test_health_tells_state_changes_only() -> None:
    seen: list[tuple[str, str, str, str]] = []
    h = Health()
    h.on_change = lambda n, old, new, d: seen.append((n, old.value, new.value, d))
    h.set("printer", HealthState.OK, "sim://")  # new component, ok: no change
    h.set("printer", HealthState.OK, "other detail")  # detail only: no change
    h.set("printer", HealthState.DEGRADED, "not printed: paper_end")
    h.set("printer", HealthState.DOWN, "gone")
    h.set("printer", HealthState.OK, "sim://")
    assert seen == [
        ("printer", "ok", "degraded", "not printed: paper_end"),
        ("printer", "degraded", "down", "gone"),
        ("printer", "down", "ok", "sim://"),
    ]


async def test_a_flapping_device_does_not_fill_the_journal(tmp_path: Path) -> None:
    from agent.app import DEVICE_EVENTS_PER_HOUR
    from agent.journal.store import Journal
    from agent.tx.machine import TABLE

    app = App(config(tmp_path / "s"), install_signals=False)
    app.journal = Journal(tmp_path / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    try:
        for i in range(20):  # 40 transitions in a moment: a loose cable
            app.health.set("reader", HealthState.DOWN, f"pcsc_error: {i}")
            app.health.set("reader", HealthState.OK, "pcsc://*")
        await asyncio.gather(*app._bg)
        told = [e.kind for e in app.journal.events(0, 1000)]
        assert len(told) == DEVICE_EVENTS_PER_HOUR
        assert told[:2] == ["device_fault", "device_recovered"]
        assert app._device_dropped == {"reader": 40 - DEVICE_EVENTS_PER_HOUR}
    finally:
        app.journal.close()


async def test_a_full_journal_is_told_at_once_and_clears(tmp_path: Path) -> None:
    from agent.api.client import RemoteApiError

    async with running(tmp_path / "s") as app:
        central, t = app.central, app.terminal_id
        assert central is not None
        conn = app.journal._conn  # the disk fills up: no page may be added from now on
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        async with await ApiClient.connect_unix(str(app.api_socket)) as api:
            code = None
            for i in range(50):  # the first few may still fit in free pages
                op = "tx.unlock" if i % 2 else "tx.lock"
                try:
                    await api.call(op, {"idempotency_key": f"full-{i}"})
                except RemoteApiError as err:
                    code = err.code
                    break
            assert code == "journal_full"
            assert app.health.components["journal"].state is HealthState.DOWN
            await until(lambda: "journal_full" in kinds(central, t))
            conn.execute("PRAGMA max_page_count = 1073741823")  # space again
            card = await api.call("card.read")
            op = "tx.unlock" if card["state"] == "temp_locked" else "tx.lock"
            await api.call(op, {"idempotency_key": "after"})
        assert app.health.components["journal"].state is HealthState.OK
