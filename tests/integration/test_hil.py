"""``ssc-agent hil --sim --non-interactive`` end to end (issue 7's "done when").

Each run is a real subprocess: a private pcscd with vpcd readers, ``sim up`` (card, PSAM,
printer), mosquitto with TLS client certificates and the reference central, all started and torn
down by the suite itself. Checked: the full suite passes and writes junit.xml and report.md with
the inventory and timings; without printer and PSAM those groups are skipped with the reason and
the rest still runs; a card that is not allow-listed is refused and left unchanged; a required
group that is absent fails the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agent.testing.pcscd import missing_tools

pytestmark = [pytest.mark.pcsc, pytest.mark.mqtt, pytest.mark.slow, pytest.mark.timeout(240)]

CLI = [sys.executable, "-m", "agent", "hil", "--sim", "--non-interactive", "-q"]


def _run(report: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    missing = missing_tools()
    if missing:
        pytest.skip("the HIL simulation needs " + ", ".join(missing))
    proc = subprocess.run(
        [*CLI, "--report", str(report), *extra],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    out = proc.stdout + proc.stderr
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    return proc.returncode, out, summary


def _by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["nodeid"].split("::")[-1]: r for r in summary["results"]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any], Path]:
    report = tmp_path_factory.mktemp("hil-full")
    rc, out, summary = _run(report)
    return rc, out, summary, report


def test_full_suite_passes_and_reports(full_run: tuple[int, str, dict[str, Any], Path]) -> None:
    rc, out, summary, report = full_run
    assert rc == 0, out[-4000:]
    assert summary["ok"] is True
    groups = summary["groups"]
    for group in ("system", "reader", "card", "psam", "transactions", "printer", "uplink"):
        assert groups[group]["passed"] >= 1, (group, groups)
        assert groups[group]["failed"] == 0, (group, out[-4000:])
    assert all(r["outcome"] == "passed" for r in summary["results"]), out[-4000:]
    suite = ET.parse(report / "junit.xml").getroot()
    ts = suite if suite.tag == "testsuite" else suite[0]
    assert int(ts.get("tests", "0")) == len(summary["results"]) >= 17
    assert int(ts.get("failures", "0")) == int(ts.get("errors", "0")) == 0
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "# SSC terminal HIL report — PASSED" in md
    for needle in (
        "## Device inventory",
        "card reader name | Virtual PCD 00 00",
        "card ATR | 3B6D0000",
        "PSAM terminal number |",
        "printer status |",
        "## Timings",
        "card APDU latency (READ RECORD EF05) | n=",
        "record round trip to central ack |",
        "clock skew against central |",
    ):
        assert needle in md, needle
    assert "HIL: all required checks passed" in out  # the summary table


def test_non_test_card_is_refused_and_unchanged(
    full_run: tuple[int, str, dict[str, Any], Path],
) -> None:
    _, out, summary, _ = full_run
    result = _by_name(summary)["test_non_test_card_is_refused"]
    assert result["outcome"] == "passed", out[-4000:]
    refused = summary["inventory"]["refused card (not allow-listed)"]
    assert "not an allow-listed test card: refused before any write" in refused
    assert "state unchanged (active)" in refused
    code = refused.split(":", 1)[0]
    assert code not in summary["inventory"]["allow-listed test cards"]


def test_absent_printer_and_psam_are_skipped(tmp_path: Path) -> None:
    rc, out, summary = _run(tmp_path, "--sim-no-printer", "--sim-no-psam")
    assert rc == 0, out[-4000:]
    results = _by_name(summary)
    for name in ("test_printer_status", "test_test_receipt", "test_paper_out_detected"):
        assert results[name]["outcome"] == "skipped"
        assert "no printer configured" in results[name]["message"]
    for name in ("test_terminal_number", "test_key_agreement_with_card"):
        assert results[name]["outcome"] == "skipped"
        assert "no PSAM configured" in results[name]["message"]
    for group in ("system", "reader", "card", "uplink"):
        assert summary["groups"][group]["passed"] >= 1
        assert summary["groups"][group]["failed"] == summary["groups"][group]["skipped"] == 0
    assert results["test_non_test_card_is_refused"]["outcome"] == "passed"
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "no printer configured" in md
    assert "card ATR" in md


def test_required_absent_group_fails_the_run(tmp_path: Path) -> None:
    rc, out, summary = _run(tmp_path, "--sim-no-printer", "--require", "printer", "-k", "printer")
    assert rc == 1, out[-4000:]
    assert summary["groups"]["printer"]["failed"] == 3
    result = _by_name(summary)["test_printer_status"]
    assert "required group 'printer' was skipped: no printer configured" in result["message"]
    assert result["hint"]
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    ts = suite if suite.tag == "testsuite" else suite[0]
    # a skip at fixture setup becomes a setup error, one in the test body a failure
    assert int(ts.get("failures", "0")) + int(ts.get("errors", "0")) == 3
