"""``ssc-agent journal``: list, show, verify (chain and MACs), export."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    rc = main([*argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_list_show_verify_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert run(capsys, "tx", "lock", "--sim", "--state-dir", d)[0] == 0
    rc, loss = run(
        capsys,
        "tx",
        "report-loss",
        "--sim",
        "--state-dir",
        d,
        "--ssn",
        "110101199003071234",
        "--card-number",
        "A1234567X",
        "--name",
        "张三丰",
    )
    assert rc == 0
    rc, listed = run(capsys, "journal", "list", "--state-dir", d)
    assert rc == 0
    assert [r["kind"] for r in listed["records"]] == ["report_loss", "lock"]
    rc, shown = run(capsys, "journal", "show", loss["tx_id"], "--state-dir", d)
    assert rc == 0
    assert shown["personal"]["ssn"] == "110101********1234"
    assert shown["personal"]["name"] == "张**"
    assert shown["sealed"]["fields"]["seq"] == 2
    rc, report = run(capsys, "journal", "verify", "--state-dir", d)
    assert rc == 0
    assert report["ok"]
    assert report["checked"] == 2
    assert report["macs"] == "verified"
    rc, exported = run(capsys, "journal", "export", "--state-dir", d)
    assert rc == 0
    assert len(exported["records"]) == 2
    assert "110101199003071234" not in json.dumps(exported)
    # tamper with a MAC: verify breaks with exit 1
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        conn.execute("UPDATE outbox SET mac = ? WHERE seq = 1", (bytes(8),))
    rc, report = run(capsys, "journal", "verify", "--state-dir", d)
    assert rc == 1
    assert not report["ok"]
    assert report["bad_seq"] == 1


def test_missing_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "journal", "list", "--state-dir", str(tmp_path / "none"))
    assert rc == 1
    assert err["error"]["code"] == "config_error"
