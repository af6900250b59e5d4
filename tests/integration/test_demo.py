"""``ssc-agent demo`` tells the whole story and exits 0 (what a newcomer runs first)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo import DEMO_LOSS

pytestmark = pytest.mark.mqtt

EXE = Path(sys.executable).with_name("ssc-agent")


def test_demo_json_every_step_goes_as_told(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    res = subprocess.run(
        [str(EXE), "demo", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    steps = [x for x in lines if x["type"] == "step"]
    assert res.returncode == 0, [s for s in steps if not s["ok"]] or res.stderr[-2000:]
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert all(s["ok"] for s in steps)
    events = {x["event"] for x in lines if x["type"] == "event"}
    assert {
        "card_inserted",
        "tx_progress",
        "uplink_offline",
        "uplink_online",
        "blacklist_hit",
        "receipt_printed",
        "command_applied",
    } <= events
    assert lines[-1]["type"] == "summary"
    assert lines[-1]["ok"] is True
    # activate, lock, report_loss, unlock, auto_lock
    assert len(list((state / "receipts").glob("*.png"))) == 5
    # personal data never appears unmasked in the output, the log or the receipts; the loss
    # report's reached central (the last step checks it opened there and shows it masked)
    assert "holder" not in res.stdout or "*" in res.stdout
    texts = [res.stdout, res.stderr, (state / "agent.log").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in (state / "receipts").glob("*.txt")]
    for value in DEMO_LOSS.values():
        assert not any(value in text for text in texts), value


def test_demo_refuses_a_used_state_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    res = subprocess.run(
        [str(EXE), "demo", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert "not empty" in res.stderr
