"""``ssc-agent card read --reader --psam`` through pcscd equals ``card read --sim`` for the same
card (the state directory of a running ``sim up``)."""

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
from agent.testing.pcscd import SimUpProcess
from tests.integration.pcscd import PcscdInstance

pytestmark = pytest.mark.pcsc

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"


@pytest.fixture
def sim(pcscd: PcscdInstance, tmp_path: Path) -> Iterator[SimUpProcess]:
    proc = SimUpProcess(tmp_path / "sim", pcscd, printer=False)  # type: ignore[arg-type]
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


def card_read(env: dict[str, str], *argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "card", "read", "--json", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "show-pii"])
def test_card_read_through_pcscd_equals_sim(
    pcscd: PcscdInstance, sim: SimUpProcess, pii: bool
) -> None:
    extra = ["--show-pii"] if pii else []
    via_pcsc = card_read(pcscd.env, "--reader", READER0, "--psam", READER1, *extra)
    via_sim = card_read(pcscd.env, "--sim", "--state-dir", str(sim.state_dir), *extra)
    assert via_pcsc == via_sim
    assert via_pcsc["holder"] is not None  # the PSAM authenticated the EF06 read
    assert via_pcsc["state"] == "active"


def test_card_read_wrong_reader_is_a_json_error(pcscd: PcscdInstance, sim: SimUpProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "card", "read", "--json", "--reader", "No Such *"],
        capture_output=True,
        text=True,
        env=pcscd.env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "reader_unavailable"
