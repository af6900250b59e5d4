"""A client written only from docs/API.md — a socket, ``struct`` and ``cbor2``, no agent code —
runs status → card.read → tx.lock → events against ``ssc-agent run`` (DESIGN §6).

Runs on the in-process simulators (config like config/agent.toml, simulated uplink), and on
config/pcsc-sim.toml: the simulated card and PSAM as real PC/SC readers behind pcscd (``ssc-agent
sim up``), a real mosquitto, the printer on the simulator's pty.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest

from agent.sim.store import CardStore
from agent.testing.mosquitto import Mosquitto
from agent.testing.pcscd import SimUpProcess
from tests.integration.pcscd import PcscdInstance
from tests.integration.test_run import Agent, write_config

pytestmark = pytest.mark.mqtt


class DocsClient:
    """docs/API.md "Framing" and "Requests and responses", nothing more."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(15)
        self.s.connect(str(path))
        self.next_id = 1
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("agent closed the connection")
            buf += chunk
        return buf

    def _read(self) -> dict[str, Any]:
        (n,) = struct.unpack(">I", self._recv_exact(4))
        msg = cbor2.loads(self._recv_exact(n))
        assert isinstance(msg, dict)
        return msg

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        req_id = self.next_id
        self.next_id += 1
        payload = cbor2.dumps({"id": req_id, "op": op, "args": args})
        self.s.sendall(struct.pack(">I", len(payload)) + payload)
        while True:
            msg = self._read()
            if "event" in msg:  # an unsolicited event: keep it, read on
                self.events.append((msg["event"], msg["data"]))
                continue
            if msg.get("id") == req_id:
                return msg

    def wait_event(self, name: str, **match: Any) -> dict[str, Any]:
        for ev, data in self.events:
            if ev == name and all(data.get(k) == v for k, v in match.items()):
                return data
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append((msg["event"], msg["data"]))
                if msg["event"] == name and all(msg["data"].get(k) == v for k, v in match.items()):
                    return dict(msg["data"])

    def close(self) -> None:
        self.s.close()


def test_status_read_lock_events_from_the_docs_alone(tmp_path: Path) -> None:
    agent = Agent(tmp_path, write_config(tmp_path))
    agent.wait_ready()
    c = DocsClient(agent.socket)
    try:
        status = c.call("status")
        assert status["ok"] is True
        assert status["result"]["state"] == "running"
        assert len(status["result"]["terminal_id"]) == 12

        sub = c.call("events.subscribe")
        assert sub == {"id": 2, "ok": True, "result": {"subscribed": True}}

        read = c.call("card.read")["result"]
        assert read["state"] == "active"
        assert "*" in read["holder"]["ssn"]  # masked by default

        lock = c.call("tx.lock", idempotency_key="docs-client-1")
        assert lock["ok"] is True
        rec = lock["result"]
        assert rec["kind"] == "lock"
        assert rec["result"] == "locked"
        assert rec["replayed"] is False
        # the documented progress events, in order, for this transaction
        c.wait_event("tx_progress", step="sealed", tx_id=rec["tx_id"])
        steps = [
            d["step"] for e, d in c.events if e == "tx_progress" and d.get("tx_id") == rec["tx_id"]
        ]
        assert steps[0] == "intent"
        assert steps[-1] == "sealed"
        assert steps.index("card_done") < steps.index("sealed")
        printed = c.wait_event("receipt_printed", tx_id=rec["tx_id"])
        assert Path(printed["text_path"]).exists()

        # a documented refusal: the card is locked now
        again = c.call("tx.lock", idempotency_key="docs-client-2")
        assert again["ok"] is False
        assert again["error"]["code"] == "already_locked"
        assert again["error"]["message_zh"]
        # a bad request: the key is required
        assert c.call("tx.lock")["error"]["code"] == "bad_request"
    finally:
        c.close()
        assert agent.stop() == 0


# --- the same client against config/pcsc-sim.toml: pcscd + vpcd readers, `sim up`, mosquitto ---
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.pcsc
def test_docs_client_against_pcsc_sim(pcscd: PcscdInstance, tmp_path: Path) -> None:
    sim = SimUpProcess(tmp_path / "sim", pcscd, printer=True)  # type: ignore[arg-type]
    sim.start()
    try:
        with Mosquitto(tmp_path / "mq") as broker:
            env = {
                **pcscd.env,
                "SSC_AGENT__TERMINAL__STATE_DIR": str(tmp_path / "state"),
                "SSC_AGENT__UPLINK__BROKER": broker.url,
                "SSC_AGENT__PRINTER__URL": f"serial://{tmp_path / 'sim' / 'printer'}",
            }
            agent = Agent(tmp_path, CONFIG_DIR / "pcsc-sim.toml", env)
            try:
                agent.wait_ready(30)
                c = DocsClient(agent.socket)
                try:
                    status = c.call("status")["result"]
                    assert status["terminal_id"] == "440300907950"  # the PSAM's EF16, via pcscd
                    c.call("events.subscribe")
                    read = c.call("card.read")["result"]
                    assert read["state"] == "active"
                    assert "*" in read["holder"]["ssn"]
                    lock = c.call("tx.lock", idempotency_key="pcsc-docs-1")
                    assert lock["ok"] is True, lock
                    rec = lock["result"]
                    assert rec["result"] == "locked"
                    c.wait_event("tx_progress", step="sealed", tx_id=rec["tx_id"])
                    c.wait_event("receipt_printed", tx_id=rec["tx_id"])
                finally:
                    c.close()
            finally:
                assert agent.stop() == 0
    finally:
        assert sim.stop() == 0
    # the lock reached the virtual card through pcscd: its persisted state says so
    card = CardStore(tmp_path / "sim").load_current()
    assert card is not None
    assert card.state == "temp_locked"
