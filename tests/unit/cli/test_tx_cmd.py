"""``ssc-agent tx`` on the simulated terminal: JSON contract, exit codes, state across calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main


def run(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, Any]:
    rc = main(["tx", *argv, "--sim", "--state-dir", str(state), "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_lock_then_unlock_across_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, rec = run(capsys, tmp_path, "lock")
    assert rc == 0
    assert {"tx_id", "seq", "kind", "state", "card_id_code", "offline", "reason", "outcome"} <= set(
        rec
    )
    assert (rec["kind"], rec["state"], rec["outcome"], rec["offline"]) == (
        "lock",
        "sealed",
        "done",
        True,
    )
    rc, err = run(capsys, tmp_path, "unlock")
    assert rc == 1
    assert err["error"]["code"] == "offline_unlock_needs_authorization"
    rc, rec2 = run(capsys, tmp_path, "unlock", "--online")
    assert rc == 0
    assert rec2["kind"] == "unlock"
    assert rec2["seq"] == rec["seq"] + 1
    assert rec2["card_id_code"] == rec["card_id_code"]


def test_idempotency_key_and_pin_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, a = run(
        capsys,
        tmp_path,
        "pin-change",
        "--pin",
        "123456",
        "--new-pin",
        "654321",
        "--idempotency-key",
        "K",
    )
    rc2, b = run(
        capsys,
        tmp_path,
        "pin-change",
        "--pin",
        "123456",
        "--new-pin",
        "654321",
        "--idempotency-key",
        "K",
    )
    assert rc == rc2 == 0
    assert a["tx_id"] == b["tx_id"]
    rc, err = run(capsys, tmp_path, "pin-change", "--pin", "123456", "--new-pin", "111111")
    assert rc == 1
    assert err["error"]["code"] == "pin_wrong"
    assert err["record"]["outcome"] == "failed"


def test_report_loss_masks_and_queues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, rec = run(
        capsys, tmp_path, "report-loss", "--ssn", "110101199003071234", "--card-number", "A1234567X"
    )
    assert rc == 0
    assert rec["result"] == "pending"
    assert rec["has_personal"]
    assert "110101199003071234" not in json.dumps(rec)


def test_reader_without_psam_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["tx", "lock", "--reader", "X*", "--state-dir", str(tmp_path), "--json"])
    assert rc == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "config_error"
