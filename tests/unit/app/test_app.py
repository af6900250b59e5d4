"""The supervisor on the in-process simulators: health, card-io lock, watchdog, shutdown with a
card write in flight, idempotent retries (DESIGN §4, §6, §8)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import agent.app as app_mod
from agent.api.client import ApiClient, RemoteApiError
from agent.app import App, CardIoLock, Health, HealthState, SimCardSlot
from agent.config import parse_config
from agent.errors import ApiError
from agent.journal.store import Journal
from agent.systemd import Notifier
from agent.tx.machine import TABLE


def config(state: Path, extra: str = "") -> Any:
    text = f"""
[terminal]
state_dir = "{state}"
[uplink]
enabled = false
ack_timeout_s = 0.1
[api]
socket = "api.sock"
{extra}
"""
    return parse_config(text, base_dir=str(state))


@contextlib.asynccontextmanager
async def running(cfg: Any, **kwargs: Any) -> AsyncIterator[App]:
    app = App(cfg, install_signals=False, **kwargs)
    task = asyncio.create_task(app.run())
    try:
        async with asyncio.timeout(20):
            done, _ = await asyncio.wait(
                {task, asyncio.ensure_future(app.ready.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
        if task in done:
            task.result()  # raise the start-up error
        yield app
    finally:
        app.request_stop()
        await asyncio.wait_for(task, 30)


# ---- health ---------------------------------------------------------------------------------
def test_health_overall_is_the_worst_component_and_tracks_progress() -> None:
    now = [100.0]
    h = Health(clock=lambda: now[0])
    h.set("reader", HealthState.OK)
    h.set("uplink", HealthState.DEGRADED, "offline")
    assert h.overall is HealthState.DEGRADED
    h.set("printer", HealthState.DOWN, "paper_end")
    assert h.overall is HealthState.DOWN
    now[0] = 200.0
    h.progress("reader")
    assert h.stalled(("reader", "uplink"), 50.0) == ["uplink"]
    snap = h.snapshot()
    assert snap["uplink"] == {"state": "degraded", "detail": "offline", "progress_age_s": 100.0}
    assert snap["reader"]["progress_age_s"] == 0.0


# ---- card-io lock ---------------------------------------------------------------------------
async def test_card_io_lock_waits_for_an_updater_holding_the_file(tmp_path: Path) -> None:
    path = tmp_path / "card-io.lock"
    lock = CardIoLock(path, poll_s=0.01)
    updater = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(updater, fcntl.LOCK_EX)
    entered = asyncio.Event()

    async def card_io() -> None:
        async with lock.hold("test"):
            entered.set()
            # while we hold it, an updater cannot take the file
            other = os.open(path, os.O_RDWR)
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(other)

    task = asyncio.create_task(card_io())
    await asyncio.sleep(0.1)
    assert not entered.is_set()  # the updater holds the file: no card I/O starts
    fcntl.flock(updater, fcntl.LOCK_UN)
    os.close(updater)
    await asyncio.wait_for(task, 5)
    assert entered.is_set()
    assert await lock.wait_idle(0.1)
    lock.close()


# ---- the app --------------------------------------------------------------------------------
async def test_status_reports_components_and_ready_is_notified(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    try:
        async with (
            running(config(tmp_path / "s"), notifier=Notifier(str(sock_path))) as app,
            await ApiClient.connect_unix(str(app.api_socket)) as api,
        ):
            status = await api.call("status")
        messages = [listener.recv(4096).decode()]
        assert messages[0].startswith("READY=1")
        assert status["terminal_id"] == app.terminal_id
        assert len(app.terminal_id) == 12
        assert status["state"] == "running"
        assert status["card_present"] is True
        for name in ("api", "journal", "printer", "psam", "reader"):
            assert status["components"][name]["state"] == "ok", name
        assert status["uplink"] == {"enabled": False, "online": False}
    finally:
        listener.close()


async def test_a_retried_request_changes_the_card_once(tmp_path: Path) -> None:
    async with (
        running(config(tmp_path / "s")) as app,
        await ApiClient.connect_unix(str(app.api_socket)) as api,
    ):
        assert isinstance(app.slot, SimCardSlot)
        writes: list[bytes] = []
        inner = app.slot.rig.card_channel.transmit

        async def counting(cmd: Any) -> Any:
            if cmd.cla == 0x84:
                writes.append(cmd.to_bytes())
            return await inner(cmd)

        app.slot.rig.card_channel.transmit = counting  # type: ignore[method-assign]
        first, second = await asyncio.gather(
            api.call("tx.lock", {"idempotency_key": "same"}),
            api.call("tx.lock", {"idempotency_key": "same"}),
        )
        third = await api.call("tx.lock", {"idempotency_key": "same"})
        assert first["tx_id"] == second["tx_id"] == third["tx_id"]
        assert sorted([first["replayed"], second["replayed"]]) == [False, True]
        assert third["replayed"] is True
        assert third["receipt"] is None
        assert len(writes) == 1  # one 84 1E block: the card was changed once
        records = (await api.call("journal.query", {}))["records"]
        assert [r["kind"] for r in records] == ["lock"]
        # another operation under the same key is refused, not applied
        with pytest.raises(RemoteApiError) as err:
            await api.call("tx.unlock", {"idempotency_key": "same"})
        assert err.value.code == "idempotency_conflict"


async def test_shutdown_with_a_card_write_in_flight_is_resolved_after_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    async with running(config(state), shutdown_grace_s=0.2) as app:
        assert isinstance(app.slot, SimCardSlot)
        inner = app.slot.rig.card_channel.transmit
        written = asyncio.Event()

        async def slow_after_write(cmd: Any) -> Any:
            resp = await inner(cmd)  # the card executes the command (EEPROM written)…
            if cmd.cla == 0x84:
                written.set()
                await asyncio.sleep(30)  # …and the answer never comes before shutdown
            return resp

        app.slot.rig.card_channel.transmit = slow_after_write  # type: ignore[method-assign]
        api = await ApiClient.connect_unix(str(app.api_socket))
        call = asyncio.create_task(api.call("tx.lock", {"idempotency_key": "k-term"}))
        await asyncio.wait_for(written.wait(), 10)
        app.request_stop()
        with pytest.raises(ApiError):  # the connection closes with the shutdown
            await asyncio.wait_for(call, 10)
        await api.close()
    j = Journal(state / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    try:
        rows = j.records()
        assert [(r.kind, r.state) for r in rows] == [("lock", "in_doubt")]
    finally:
        j.close()
    # restart: the card is still in the reader, so the record is resolved at once
    async with running(config(state)) as app2:
        async with asyncio.timeout(10):
            while True:
                row = app2.journal.find_by_idempotency_key("k-term")
                if row is not None and row.state == "sealed":
                    break
                await asyncio.sleep(0.05)
        assert row.outcome == "done"
        assert row.result == "locked"
        async with await ApiClient.connect_unix(str(app2.api_socket)) as api2:
            again = await api2.call("tx.lock", {"idempotency_key": "k-term"})
            assert again["tx_id"] == row.tx_id
            assert again["replayed"] is True
            report = await api2.call("card.read")
            assert report["state"] == "temp_locked"
        # what central will hear, in order (the uplink is off here: it waits in the journal)
        told = [(e.kind, e.data.get("tx_id")) for e in app2.journal.events(0, 100)]
        assert told.index(("agent_started", None)) < told.index(("tx_in_doubt", row.tx_id))
        assert told.index(("tx_in_doubt", row.tx_id)) < told.index(("tx_resolved", row.tx_id))
        assert ("agent_stopping", None) in told


async def test_a_stuck_reader_stops_the_watchdog_pings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_mod, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(app_mod, "STALL_S", 0.4)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)

    def drain() -> list[str]:
        out = []
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(listener.recv(4096).decode())
        return out

    stuck = asyncio.Event()

    async def stuck_watch(
        self: SimCardSlot, on_change: Callable[..., Any], progress: Callable[[], None]
    ) -> None:
        while not stuck.is_set():
            progress()
            await asyncio.sleep(0.05)
        await asyncio.Event().wait()  # a driver call that never returns: no more progress

    monkeypatch.setattr(SimCardSlot, "watch", stuck_watch)
    try:
        async with running(config(tmp_path / "s"), notifier=Notifier(str(sock_path))) as app:
            await asyncio.sleep(0.5)
            assert "WATCHDOG=1" in drain()
            stuck.set()
            await asyncio.sleep(0.8)  # longer than STALL_S: the reader is now stalled
            drain()
            await asyncio.sleep(0.4)
            assert "WATCHDOG=1" not in drain()
            assert app.health.snapshot()["reader"]["state"] == "down"
    finally:
        listener.close()
