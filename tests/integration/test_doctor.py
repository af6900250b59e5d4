"""``ssc-agent doctor`` against a running ``sim up`` (pcscd+vpcd, pty printer) and a real
mosquitto: all green, then one thing wrong at a time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.pcsc import PcscReader
from agent.testing.mosquitto import Mosquitto, free_port
from agent.testing.pcscd import SimUpProcess
from tests.integration.pcscd import PcscdInstance

pytestmark = pytest.mark.pcsc

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"
NAMES = ["pcscd", "readers", "card_reader", "card", "psam", "printer", "journal", "broker"]


@pytest.fixture
def sim(pcscd: PcscdInstance, tmp_path: Path) -> Iterator[SimUpProcess]:
    proc = SimUpProcess(tmp_path / "sim", pcscd)  # type: ignore[arg-type]
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0
        asyncio.run(_wait_empty())


async def _wait_empty() -> None:
    for name in (READER0, READER1):
        async with PcscReader(name) as reader:
            await reader.wait_for_removal(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as m:
        yield m


def doctor(env: dict[str, str], *argv: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--json", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr)
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return done.returncode, obj


def args(sim: SimUpProcess, tmp_path: Path, broker_url: str, psam: str = READER1) -> list[str]:
    return [
        "--reader", READER0, "--psam", psam, "--printer", str(sim.state_dir / "printer"),
        "--state-dir", str(tmp_path / "journal"), "--broker", broker_url,
    ]  # fmt: skip


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_all_green_with_sim_up(
    pcscd: PcscdInstance, sim: SimUpProcess, broker: Mosquitto, tmp_path: Path
) -> None:
    rc, report = doctor(pcscd.env, *args(sim, tmp_path, broker.url))
    checks = by_name(report)
    assert [c["name"] for c in report["checks"]] == NAMES
    assert {n: c["ok"] for n, c in checks.items()} == dict.fromkeys(NAMES, True)
    assert (rc, report["ok"]) == (0, True)
    assert all(set(c) == {"name", "ok", "detail", "hint", "required"} for c in report["checks"])
    assert "terminal 440300907950" in checks["psam"]["detail"]
    assert "SSSE selected" in checks["card"]["detail"]
    assert READER0 in checks["readers"]["detail"]
    assert "3B" in checks["readers"]["detail"]  # the ATRs are listed


def test_wrong_psam_glob_fails_with_hint(
    pcscd: PcscdInstance, sim: SimUpProcess, broker: Mosquitto, tmp_path: Path
) -> None:
    rc, report = doctor(pcscd.env, *args(sim, tmp_path, broker.url, psam="PSAM Slot *"))
    checks = by_name(report)
    assert (rc, report["ok"]) == (1, False)
    assert checks["psam"]["ok"] is False
    assert "check the PSAM reader glob" in checks["psam"]["hint"]
    assert READER1 in checks["psam"]["hint"]  # the readers seen
    assert all(c["ok"] for n, c in checks.items() if n != "psam")


def test_broker_unreachable_fails(pcscd: PcscdInstance, sim: SimUpProcess, tmp_path: Path) -> None:
    rc, report = doctor(pcscd.env, *args(sim, tmp_path, f"mqtt://127.0.0.1:{free_port()}"))
    checks = by_name(report)
    assert (rc, report["ok"]) == (1, False)
    assert checks["broker"]["ok"] is False
    assert "unreachable" in checks["broker"]["hint"]


def test_printer_paper_out_fails_with_hint(
    pcscd: PcscdInstance, sim: SimUpProcess, broker: Mosquitto, tmp_path: Path
) -> None:
    from agent.sim.terminal import control_request

    control_request(sim.state_dir, "printer.fault", {"fault": "paper_out"})
    rc, report = doctor(pcscd.env, *args(sim, tmp_path, broker.url))
    printer = by_name(report)["printer"]
    assert (rc, printer["ok"]) == (1, False)
    assert printer["hint"] == "load paper"


def test_tls_broker_handshake(pcscd: PcscdInstance, sim: SimUpProcess, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "tls-broker", tls=True) as m:
        assert m.tls_files is not None
        cert, key = m.tls_files.client("440300907950")
        config = tmp_path / "agent.toml"
        config.write_text(
            "[terminal]\n"
            f'state_dir = "{tmp_path / "journal"}"\n'
            "[card]\n"
            f'reader = "pcsc://{READER0}"\n'
            f'psam = "pcsc://{READER1}"\n'
            "[printer]\n"
            f'url = "serial://{sim.state_dir / "printer"}"\n'
            "[uplink]\n"
            f'broker = "{m.url}"\n'
            f'ca_file = "{m.tls_files.ca}"\n'
            f'cert_file = "{cert}"\n'
            f'key_file = "{key}"\n',
            encoding="utf-8",
        )
        rc, report = doctor(pcscd.env, "--config", str(config))
        broker = by_name(report)["broker"]
        assert (rc, broker["ok"]) == (0, True), report
        assert "TLS handshake completed" in broker["detail"]
        # the same broker without its CA: the handshake fails, with a hint
        config.write_text(
            config.read_text().replace(str(m.tls_files.ca), "/etc/ssl/certs/ca-certificates.crt")
        )
        rc, report = doctor(pcscd.env, "--config", str(config))
        broker = by_name(report)["broker"]
        assert (rc, broker["ok"]) == (1, False)
        assert "ca_file" in broker["hint"]
