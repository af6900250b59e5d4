"""The systemd unit verifies, and sd_notify speaks the datagram protocol."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.systemd import Notifier, watchdog_interval_s

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "ssc-agent.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ssc-agent")
    text = UNIT.read_text().replace("/opt/ssc-agent/bin/ssc-agent", str(exe))
    unit = tmp_path / "ssc-agent.service"
    unit.write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "Type=notify" in text
    for hardening in (
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "WatchdogSec=",
        "SupplementaryGroups=dialout",
    ):
        assert hardening in text


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    n = Notifier(path)
    assert n.enabled
    n.ready("serving")
    n.watchdog()
    n.stopping()
    got = [srv.recv(1024).decode() for _ in range(3)]
    n.close()
    srv.close()
    assert got == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_is_noop_without_systemd() -> None:
    n = Notifier("")
    assert not n.enabled
    n.ready()
    n.watchdog()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None


def test_notifier_never_blocks_when_nobody_reads(tmp_path: Path) -> None:
    """A manager that stops reading must not freeze the event loop (sends are non-blocking)."""
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)  # bound, never read
    n = Notifier(path)
    for _ in range(10_000):
        n.watchdog()  # would block forever on a blocking socket once the queue is full
    assert n.dropped > 0
    n.close()
    srv.close()
