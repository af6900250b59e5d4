"""Central's ``config_set`` and ``report`` on the running agent (issue 5, commands).

The real ``App`` with ``uplink.broker = "sim://"``: its private mosquitto and in-process
reference central sign real commands. A setting central changes takes effect at once where it
can (policy, log level and APDU trace, retention, backlog pace) or at the next connection (the
in-flight window); the ``config_changed`` event tells central which. It is kept in the journal,
so it outlives a restart and wins over the config file, until ``ssc-agent config central
--clear`` forgets it. A ``report`` makes the agent publish its telemetry at once, not at the
next minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.app import App
from agent.logs import apdu_trace_on, set_apdu_trace
from agent.tx.policy import OfflineMode
from agent.tx.records import Kind
from agent.uplink import topics
from agent.wire.codec import TelemetryMessage
from tests.integration._sim_app import running as running_app
from tests.integration._sim_app import sim_config, until

pytestmark = pytest.mark.mqtt

CHANGES: dict[str, Any] = {
    "policy.report_loss_offline": False,
    "policy.activate_offline_max_per_day": 7,
    "uplink.backlog_rate": 77,
    "uplink.inflight_window": 48,
    "journal.retention_days": 30,
    "log.trace_apdus": True,
    "log.level": "TRACE",
}
APPLIES = dict.fromkeys(CHANGES, "now") | {"uplink.inflight_window": "next_connection"}


SECTIONS = """
[uplink]
broker = "sim://"
backlog_rate = 200
inflight_window = 32
[journal]
retention_days = 180
[log]
level = "INFO"
[api]
socket = ""
"""


def running(state: Path) -> Any:
    return running_app(sim_config(state, SECTIONS))


def _cli(state: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "config", "central", "--state-dir", str(state), "--json",
         *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)
    set_apdu_trace(False)


async def test_settings_from_central_apply_persist_and_clear(tmp_path: Path) -> None:
    state = tmp_path / "s"
    async with running(state) as app:
        central = app.central
        assert central is not None
        for key, value in CHANGES.items():
            await central.config_set(app.terminal_id, key, value)

        def told() -> dict[str, str]:
            return {
                e.data["key"]: e.data["applies"]
                for e in central.events(app.terminal_id)
                if e.type == "config_changed"
            }

        await until(lambda: len(told()) == len(CHANGES))
        assert told() == APPLIES
        # in effect on the running agent
        ops = app.engine.policy.operations
        assert ops[Kind.REPORT_LOSS].offline is OfflineMode.NEVER
        assert ops[Kind.ACTIVATE].max_per_day == 7
        assert app.session is not None
        assert app.session.s.backlog_rate == 77
        assert app.config.journal.retention_days == 30
        assert apdu_trace_on()
        # the window waits for the next connection (the MQTT client is sized for it)
        assert app.session.window.size == 32
        assert app.session.s.window == 48

    set_apdu_trace(False)
    logging.getLogger().setLevel(logging.INFO)
    # a restart: central's word wins over the file, which still says otherwise
    async with running(state) as app:
        assert app.config.uplink.backlog_rate == 77
        assert app.config.uplink.inflight_window == 48
        assert app.session is not None
        assert app.session.window.size == 48
        assert app.config.journal.retention_days == 30
        assert app.engine.policy.operations[Kind.REPORT_LOSS].offline is OfflineMode.NEVER
        assert app.config.log.level == "TRACE"
        assert apdu_trace_on()

    shown = _cli(state)
    assert shown["settings"] == CHANGES
    cleared = _cli(state, "--clear", "log.level", "--clear", "log.trace_apdus")
    assert cleared["cleared"] == ["log.level", "log.trace_apdus"]
    assert _cli(state, "--clear-all")["settings"] == {}

    set_apdu_trace(False)
    logging.getLogger().setLevel(logging.INFO)
    async with running(state) as app:  # the file rules again
        assert app.config.uplink.backlog_rate == 200
        assert app.config.uplink.inflight_window == 32
        assert app.config.journal.retention_days == 180
        assert app.engine.policy.operations[Kind.REPORT_LOSS].offline is OfflineMode.QUEUE
        assert not apdu_trace_on()


async def test_report_publishes_telemetry_at_once(tmp_path: Path) -> None:
    async with running(tmp_path / "s") as app:
        central, broker = app.central, app.broker
        assert central is not None
        assert broker is not None
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
            await watcher.subscribe(topics.telemetry(app.terminal_id), qos=0)
            await asyncio.sleep(0.3)  # the start-up telemetry, if any, has gone by
            await central.report(app.terminal_id)
            async with asyncio.timeout(10):  # TELEMETRY_S is 60 s
                msg = await anext(aiter(watcher.messages))
        telemetry = TelemetryMessage.from_cbor(bytes(msg.payload))  # type: ignore[arg-type]
        assert telemetry.terminal == app.terminal_id
        assert {"unacked", "uptime_s", "tx_done"} <= set(telemetry.counters)


def _central_cli(app: App, *args: str) -> Any:
    assert app.broker is not None
    db = app.state_dir / "sim-central" / "central.db"
    out = subprocess.run(
        [sys.executable, "-m", "agent", "central", *args, "--db", str(db),
         "--broker", app.broker.url, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None


async def test_an_operator_changes_a_setting_with_the_central_cli(tmp_path: Path) -> None:
    async with running(tmp_path / "s") as app:
        t = app.terminal_id
        rc, sent = await asyncio.to_thread(
            _central_cli, app, "config-set", "uplink.backlog_rate", "500", "--terminal", t
        )
        assert rc == 0
        assert sent == {"sent": "config_set", "terminal": t, "key": "uplink.backlog_rate",
                        "value": 500}  # fmt: skip
        await until(lambda: app.config.uplink.backlog_rate == 500)
        # a value the wire does not allow is refused by the CLI, and nothing is sent
        rc, err = await asyncio.to_thread(
            _central_cli, app, "config-set", "uplink.inflight_window", "5000", "--terminal", t
        )
        assert rc != 0
        assert "uplink.inflight_window" in json.dumps(err)

        def answered() -> list[dict[str, Any]]:
            _, rows = _central_cli(app, "events", "--terminal", t, "--type", "config_changed")
            return list(rows or [])

        await until(lambda: len(answered()) == 1)
        (event,) = answered()
        assert event["data"]["key"] == "uplink.backlog_rate"
        assert event["data"]["value"] == 500
        assert event["data"]["applies"] == "now"
    assert app.config.uplink.inflight_window == 32
