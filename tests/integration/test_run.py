"""``ssc-agent run`` as a process: READY via sd_notify, hostile frames, SIGTERM, restart (DESIGN
§6, §8). Runs on the in-process simulators with the simulated uplink (a private mosquitto)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

pytestmark = pytest.mark.mqtt

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ssc-agent")


def write_config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "agent.toml"
    cfg.write_text(
        f"""
[terminal]
state_dir = "{tmp / "state"}"
[uplink]
broker = "sim://"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
[api]
socket = "api.sock"
max_frame = 4096
{extra}
""",
        encoding="utf-8",
    )
    return cfg


class Agent:
    def __init__(self, tmp: Path, cfg: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.notify = tmp / "notify.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with __import__("contextlib").suppress(FileNotFoundError):
            self.notify.unlink()
        self.listener.bind(str(self.notify))
        env = {**(os.environ if env is None else env), "NOTIFY_SOCKET": str(self.notify)}
        self.log = (tmp / "agent.out").open("ab")
        self.proc = subprocess.Popen(
            [str(EXE), "run", "--config", str(cfg)], env=env, stdout=self.log, stderr=self.log
        )
        self.socket = tmp / "state" / "api.sock"

    def wait_ready(self, timeout: float = 20) -> float:
        t0 = time.monotonic()
        self.listener.settimeout(timeout)
        while True:
            msg = self.listener.recv(4096).decode()
            if msg.startswith("READY=1"):
                return time.monotonic() - t0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.listener.close()
        self.log.close()
        return rc


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path, write_config(tmp_path))
    try:
        a.wait_ready()
        yield a
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(10)


def frame(obj: Any) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_msg(s: socket.socket) -> dict[str, Any]:
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    msg: dict[str, Any] = cbor2.loads(recv_exact(s, n))
    return msg


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(path))
    return s


def call(s: socket.socket, req_id: int, op: str, **args: Any) -> dict[str, Any]:
    s.sendall(frame({"id": req_id, "op": op, "args": args}))
    while True:
        msg = read_msg(s)
        if msg.get("id") == req_id:
            return msg


def test_hostile_frames_leave_the_server_serving_others(agent: Agent) -> None:
    good = connect(agent.socket)
    assert call(good, 1, "status")["ok"] is True
    # garbage that is not CBOR: an error response, the connection stays usable
    bad = connect(agent.socket)
    bad.sendall(struct.pack(">I", 5) + b"\xff\xfe\xfd\xfc\xfb")
    err = read_msg(bad)
    assert err["ok"] is False
    assert err["error"]["code"] == "wire_error"
    # CBOR that is not a request map
    bad.sendall(frame([1, 2, 3]))
    assert read_msg(bad)["error"]["code"] == "bad_request"
    # an unknown operation
    assert call(bad, 7, "format.disk")["error"]["code"] == "unknown_op"
    assert call(bad, 8, "status")["ok"] is True
    # truncated: a length prefix and half the payload, then the client vanishes
    trunc = connect(agent.socket)
    trunc.sendall(struct.pack(">I", 100) + b"\xa1" * 10)
    trunc.close()
    # oversized: refused with frame_too_large and that connection is closed
    big = connect(agent.socket)
    big.sendall(struct.pack(">I", 10_000_000))
    err = read_msg(big)
    assert err["id"] is None
    assert err["error"]["code"] == "frame_too_large"
    assert big.recv(1) == b""
    big.close()
    bad.close()
    # the first client never noticed
    assert call(good, 2, "status")["result"]["state"] == "running"
    good.close()
    assert agent.stop() == 0


def test_sigterm_during_transactions_loses_nothing_and_restart_resolves(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    a = Agent(tmp_path, cfg)
    a.wait_ready()
    s = connect(a.socket)
    done = call(
        s, 1, "pin.change", idempotency_key="before-term", old_pin="123456", new_pin="654321"
    )
    assert done["ok"] is True
    # a transaction request and SIGTERM at once: it completes, or it is parked in doubt
    s.sendall(frame({"id": 2, "op": "tx.lock", "args": {"idempotency_key": "at-term"}}))
    a.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(ConnectionError, OSError):
        read_msg(s)
    assert a.stop() == 0
    s.close()
    # restart: nothing is open, the retries are answered once, the card changed once
    b = Agent(tmp_path, cfg)
    b.wait_ready()
    s = connect(b.socket)
    try:
        status = call(s, 1, "status")["result"]
        assert status["journal"]["in_doubt"] == 0
        again = call(
            s, 2, "pin.change", idempotency_key="before-term", old_pin="123456", new_pin="654321"
        )["result"]
        assert again["tx_id"] == done["result"]["tx_id"]
        assert again["replayed"] is True
        lock = call(s, 3, "tx.lock", idempotency_key="at-term")
        assert lock["ok"] is True, lock
        records = call(s, 4, "journal.query", limit=100)["result"]["records"]
        assert sorted(r["kind"] for r in records) == ["lock", "pin_change"]
        assert all(r["state"] in ("sealed", "sent", "acked") for r in records)
        assert call(s, 5, "card.read")["result"]["state"] == "temp_locked"
        assert call(s, 6, "journal.verify")["result"]["ok"] is True
    finally:
        s.close()
        assert b.stop() == 0


def test_config_check_lists_every_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[card]\nreader = "usb://x"\n[api]\nmax_frame = 10\nnope = 1\n', "utf-8")
    res = subprocess.run(
        [str(EXE), "config", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 1
    lines = res.stdout.strip().splitlines()
    assert f"{bad}:2: card.reader: scheme must be one of sim, pcsc: 'usb://x'" in lines
    assert any(line.startswith(f"{bad}:4: api.max_frame") for line in lines)
    assert any(line.startswith(f"{bad}:5: api.nope: unknown key") for line in lines)
    good = subprocess.run(
        [str(EXE), "config", "check", str(ROOT / "config" / "agent.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stdout
