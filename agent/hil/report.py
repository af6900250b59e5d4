"""Results of one HIL run and the human report (``report.md``) beside pytest's JUnit XML.

The suite's pytest plugin (``hil_tests/conftest.py``) fills a :class:`HilRun`: one
:class:`TestResult` per test (group, outcome, time, reason, fix hint), the device inventory
(reader names, ATRs, PSAM terminal number, printer status…) and named timings (APDU latency
statistics, the uplink round trip…). ``ssc-agent hil`` prints :func:`summary_table` of the last
run of the process (:func:`last_run`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("system", "reader", "card", "psam", "transactions", "printer", "uplink")

#: What each group proves (report and ``--markers``).
GROUP_HELP = {
    "system": "pcscd running, disk space for the journal, clock skew against central",
    "reader": "reader enumeration, ATR parse and known-ATR lookup, insert/remove events",
    "card": "SSSE select and identity read, per-APDU latency statistics",
    "psam": "PSAM terminal number, key agreement with the card (MAC-verified operation)",
    "transactions": "lock, unlock, PIN change and restore on an allow-listed test card only",
    "printer": "printer status, test receipt, paper-out detection",
    "uplink": "TLS connection to the broker, record round trip to a central ack",
}

#: Fix hints by ``AgentError.code`` (a test may give a more precise one).
HINTS = {
    "pcsc_unavailable": "start pcscd: systemctl start pcscd (apt install pcscd)",
    "reader_unavailable": "check the reader's cable and the --reader/--psam glob (pcsc_scan)",
    "reader_busy": "another program holds the reader: stop it (the agent's service too)",
    "no_card": "insert the card fully (chip first, face up)",
    "card_removed": "the card left the reader during the test: leave it in until told",
    "device_timeout": "the device did not answer in time: reseat the card, check the reader",
    "card_protocol_error": "the card answered garbage: try another card, clean the contacts",
    "psam_status": "the PSAM refused: is it the right PSAM for this city profile (--profile)?",
    "psam_key_not_found": "the PSAM lacks a key the profile names: check the profile's keys",
    "card_security": "MAC or cryptogram rejected by the card: PSAM and card keys disagree",
    "not_a_test_card": "pass the card's identification code with --test-card (test cards only)",
    "printer_error": "check the printer's power, cable, device path and the dialout group",
    "uplink_unavailable": "check the broker URL, the firewall and the TLS files",
    "config_error": "fix the option named in the message",
    "operator_action": "run interactively (without --non-interactive) at the terminal",
}


@dataclass(slots=True)
class TestResult:
    __test__ = False  # not a pytest test class

    nodeid: str
    group: str
    outcome: str  # passed | failed | skipped | error
    duration_s: float
    message: str = ""
    hint: str = ""
    required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "group": self.group,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 3),
            "message": self.message,
            "hint": self.hint,
            "required": self.required,
        }


@dataclass(slots=True)
class HilRun:
    """Everything the reports show about one run."""

    mode: str = "hardware"
    options: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished: dt.datetime | None = None
    results: list[TestResult] = field(default_factory=list)
    inventory: dict[str, str] = field(default_factory=dict)
    timings: dict[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    exit_status: int | None = None

    def add_inventory(self, key: str, value: object) -> None:
        self.inventory[key] = str(value)

    def add_timing(self, key: str, value: str) -> None:
        self.timings[key] = value

    def record(self, result: TestResult) -> None:
        """Add or replace (setup, call and teardown of one test fold into one result)."""
        for i, old in enumerate(self.results):
            if old.nodeid == result.nodeid:
                if _rank(result.outcome) >= _rank(old.outcome):
                    result.duration_s += old.duration_s
                    self.results[i] = result
                else:
                    old.duration_s += result.duration_s
                return
        self.results.append(result)

    def by_group(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            counts = out.setdefault(r.group, {"passed": 0, "failed": 0, "skipped": 0})
            counts["failed" if r.outcome == "error" else r.outcome] += 1
        return out

    @property
    def ok(self) -> bool:
        """Nothing failed (a required group's skip is a failure: the plugin turns it into one)."""
        return all(r.outcome in ("passed", "skipped") for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "required": list(self.required),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "groups": self.by_group(),
            "inventory": self.inventory,
            "timings": self.timings,
            "prompts": self.prompts,
            "results": [r.to_json() for r in self.results],
        }


def _rank(outcome: str) -> int:
    return {"passed": 0, "skipped": 1, "failed": 2, "error": 2}.get(outcome, 0)


_LAST: list[HilRun] = []


def set_last_run(run: HilRun) -> None:
    _LAST[:] = [run]


def last_run() -> HilRun | None:
    """The run that finished last in this process (``ssc-agent hil`` runs pytest in process)."""
    return _LAST[0] if _LAST else None


# ---- statistics ---------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """min / p50 / p95 / max in milliseconds."""
    v = sorted(samples_s)
    return {
        "n": float(len(v)),
        "min_ms": v[0] * 1000,
        "p50_ms": percentile(v, 50) * 1000,
        "p95_ms": percentile(v, 95) * 1000,
        "max_ms": v[-1] * 1000,
    }


def format_stats(stats: dict[str, float]) -> str:
    return (
        f"n={int(stats['n'])} min {stats['min_ms']:.2f} / p50 {stats['p50_ms']:.2f} / "
        f"p95 {stats['p95_ms']:.2f} / max {stats['max_ms']:.2f} ms"
    )


# ---- rendering ----------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


_MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}


def summary_table(run: HilRun) -> str:
    """The plain-text table ``ssc-agent hil`` prints."""
    groups = run.by_group()
    lines = [f"{'group':<13} {'req':<4} {'pass':>5} {'fail':>5} {'skip':>5}  result"]
    for g in [*GROUPS, *sorted(set(groups) - set(GROUPS))]:
        c = groups.get(g)
        if c is None:
            continue
        req = "yes" if g in run.required else ""
        verdict = "FAILED" if c["failed"] else ("passed" if c["passed"] else "skipped")
        lines.append(
            f"{g:<13} {req:<4} {c['passed']:>5} {c['failed']:>5} {c['skipped']:>5}  {verdict}"
        )
    for r in run.results:
        if r.outcome in ("failed", "error"):
            lines.append(f"  FAIL {r.nodeid}: {r.message.splitlines()[0] if r.message else ''}")
            if r.hint:
                lines.append(f"       -> {r.hint}")
        elif r.outcome == "skipped":
            lines.append(f"  skip {r.nodeid}: {r.message}")
    lines.append("HIL: all required checks passed" if run.ok else "HIL: FAILED")
    return "\n".join(lines) + "\n"


def render_markdown(run: HilRun) -> str:
    """The human report: verdict, groups, inventory, timings, results, failures with hints."""
    out: list[str] = []
    verdict = "PASSED" if run.ok else "FAILED"
    finished = run.finished or dt.datetime.now(dt.UTC)
    out += [
        f"# SSC terminal HIL report — {verdict}",
        "",
        f"- Mode: **{run.mode}**",
        f"- Started: {run.started:%Y-%m-%d %H:%M:%S} UTC, "
        f"took {(finished - run.started).total_seconds():.1f} s",
        f"- Required groups: {', '.join(run.required) or 'none'}",
        "",
        "## Groups",
        "",
        "| Group | What it proves | Passed | Failed | Skipped | Required |",
        "|---|---|---:|---:|---:|---|",
    ]
    groups = run.by_group()
    for g in [*GROUPS, *sorted(set(groups) - set(GROUPS))]:
        c = groups.get(g, {"passed": 0, "failed": 0, "skipped": 0})
        req = "yes" if g in run.required else ""
        out.append(
            f"| {g} | {GROUP_HELP.get(g, '')} | {c['passed']} | {c['failed']} | "
            f"{c['skipped']} | {req} |"
        )
    out += ["", "## Device inventory", "", "| Item | Value |", "|---|---|"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in run.inventory.items()] or ["| — | — |"]
    out += ["", "## Timings", "", "| Measure | Value |", "|---|---|"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in run.timings.items()]
    out += [
        f"| test `{_cell(r.nodeid.split('::')[-1])}` | {r.duration_s * 1000:.0f} ms |"
        for r in run.results
    ]
    out += [
        "",
        "## Results",
        "",
        "| Test | Group | Outcome | Time | Reason |",
        "|---|---|---|---:|---|",
    ]
    for r in run.results:
        reason = r.message.splitlines()[0] if r.message else ""
        out.append(
            f"| `{_cell(r.nodeid)}` | {r.group} | {_MARK.get(r.outcome, r.outcome)} | "
            f"{r.duration_s:.2f} s | {_cell(reason)} |"
        )
    failures = [r for r in run.results if r.outcome in ("failed", "error")]
    out += ["", "## Failures", ""]
    if not failures:
        out.append("None.")
    for r in failures:
        out += [
            f"### `{r.nodeid}`",
            "",
            "```",
            r.message.strip()[:4000],
            "```",
            "",
            f"**Fix hint:** {r.hint or 'see the message above and the device logs'}",
            "",
        ]
    if run.prompts:
        out += ["", "## Prompts", ""]
        out += [f"- {p}" for p in run.prompts]
    return "\n".join(out) + "\n"


def write_reports(run: HilRun, directory: str | Path) -> Path:
    """Write ``report.md`` and ``summary.json`` into ``directory``; the report's path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "report.md"
    path.write_text(render_markdown(run), encoding="utf-8")
    (d / "summary.json").write_text(
        json.dumps(run.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return path
