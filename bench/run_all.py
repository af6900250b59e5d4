"""``make bench``: run every benchmark in bench/ and write docs/PERFORMANCE.md (DESIGN §9).

Each ``bench/<name>.py`` (except ``_common.py``, ``run_all.py`` and other ``_*.py``) is run in
its own process, one after the other (figures from concurrent runs would disturb each other),
with ``--quick`` when asked. Each prints ONE JSON object (the contract in ``bench/_common.py``).
The document shows:

* the machine (CPU model, cores, memory, Python, OS, date);
* every goal of the performance campaign with the measured value and whether it is met;
* every figure beside its raw baseline from the same run and their ratio;
* how long each script ran, and the raw JSON in a details block.

A script that fails or prints something other than one JSON object is shown as failed (with
the tail of its stderr) and makes the exit status 1; unmet goals are reported, not fatal,
unless ``--strict-goals``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SKIP = {"_common.py", "run_all.py"}
#: Hand-written analysis of the figures, copied into the document after the runs.
ANALYSIS = BENCH_DIR / "ANALYSIS.md"


@dataclass(frozen=True)
class Goal:
    """A campaign goal: numeric leaves of ``bench``'s JSON whose dotted path matches
    ``pattern`` must satisfy ``op threshold``."""

    bench: str
    label: str
    pattern: str
    op: str  # ">=", "<", "<=", "abs<="
    threshold: float
    unit: str = ""

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        if self.op == "<=":
            return value <= self.threshold
        if self.op == "abs<=":
            return abs(value) <= self.threshold
        raise ValueError(self.op)

    def text(self) -> str:
        op = {"abs<=": "within ±", ">=": "≥ ", "<": "< ", "<=": "≤ "}[self.op]
        t = f"{self.threshold:.3g}" if self.threshold != 1 / 3 else "1/3"
        return f"{op}{t}{(' ' + self.unit) if self.unit else ''}"


#: The goals of the reliability and performance campaign (issue 8).
GOALS: tuple[Goal, ...] = (
    Goal("card_ops", "card flows vs raw APDU replay (ratio)", "*.ratio", ">=", 1 / 3),
    Goal("pcsc_roundtrip", "agent PC/SC round trip vs raw pyscard (ratio)", "*ratio", ">=", 0.9),
    Goal("journal", "journal seal vs raw SQLite insert (ratio)", "sealed.ratio", ">=", 0.5),
    Goal("journal", "blacklist lookup p99", "*lookup_p99_ms", "<", 0.1, "ms"),
    Goal("drain", "outbox drain vs raw paho publish (ratio)", "ratio", ">=", 0.5),
    Goal("drain", "RSS draining 10k vs 100k records", "rss_delta_mb", "abs<=", 10, "MB"),
    Goal("runtime", "start to READY", "*ready_s", "<", 1, "s"),
    Goal("runtime", "idle RSS", "*idle_rss_mb", "<", 60, "MB"),
    Goal("runtime", "idle CPU", "*idle_cpu_pct", "<", 1, "%"),
)


@dataclass
class Run:
    name: str
    seconds: float = 0.0
    result: dict[str, Any] | None = None
    error: str = ""
    returncode: int | None = None
    stderr_tail: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
def scripts(only: list[str] | None = None) -> list[Path]:
    found = sorted(
        p for p in BENCH_DIR.glob("*.py") if p.name not in SKIP and not p.name.startswith("_")
    )
    if only:
        found = [p for p in found if p.stem in only]
    return found


def parse_output(stdout: str) -> dict[str, Any]:
    """The one JSON object a bench printed; ``ValueError`` if stdout is anything else."""
    text = stdout.strip()
    if not text:
        raise ValueError("printed nothing on stdout")
    obj = json.loads(text)  # raises ValueError (JSONDecodeError) for two objects or noise
    if not isinstance(obj, dict):
        raise ValueError("printed JSON that is not an object")
    return obj


def run_one(path: Path, *, quick: bool, timeout: float) -> Run:
    cmd = [sys.executable, str(path)] + (["--quick"] if quick else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    run = Run(path.stem)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        run.seconds = time.perf_counter() - t0
        run.error = f"timed out after {timeout:.0f} s"
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        run.stderr_tail = (err or "").splitlines()[-15:]
        return run
    run.seconds = time.perf_counter() - t0
    run.returncode = proc.returncode
    run.stderr_tail = proc.stderr.splitlines()[-15:]
    if proc.returncode != 0:
        run.error = f"exit status {proc.returncode}"
        return run
    try:
        run.result = parse_output(proc.stdout)
    except ValueError as e:
        run.error = f"bad output: {e}"
    return run


# --------------------------------------------------------------------------------------------
# reading the JSON
# --------------------------------------------------------------------------------------------
def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves by dotted path."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif _is_num(obj):
        out[prefix] = float(obj)
    return out


@dataclass(frozen=True)
class Figure:
    path: str  # dotted path of the object holding the ratio ("" for the top level)
    name: str
    value: float | None
    baseline_name: str
    baseline: float | None
    ratio: float | None


def _pick_figure(node: dict[str, Any], baseline_key: str) -> str | None:
    base = baseline_key[len("raw_") :]
    if _is_num(node.get(base)):
        return base
    unit = base.rsplit("_", 1)[-1]
    for k, v in node.items():
        if (
            _is_num(v)
            and not k.startswith("raw_")
            and "goal" not in k
            and k != "ratio"
            and k.endswith("_" + unit)
        ):
            return k
    return None


def figures(obj: Any, prefix: str = "") -> list[Figure]:
    """Every object with a ``ratio``: its figure, its raw baseline (``raw_*``) and the ratio."""
    out: list[Figure] = []
    if not isinstance(obj, dict):
        return out
    if "ratio" in obj:
        baseline_key = next((k for k in obj if k.startswith("raw_") and _is_num(obj[k])), "")
        name = _pick_figure(obj, baseline_key) if baseline_key else None
        r = obj["ratio"]
        out.append(
            Figure(
                prefix,
                name or "",
                float(obj[name]) if name else None,
                baseline_key,
                float(obj[baseline_key]) if baseline_key else None,
                float(r) if _is_num(r) else None,
            )
        )
    for k, v in obj.items():
        if isinstance(v, dict):
            out.extend(figures(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def evaluate(goal: Goal, result: dict[str, Any] | None) -> list[tuple[str, float, bool]]:
    """``(path, value, met)`` for every leaf the goal's pattern selects."""
    if result is None:
        return []
    found = [
        (p, v)
        for p, v in leaves(result).items()
        if fnmatch.fnmatchcase(p, goal.pattern)
        and "goal" not in p.rsplit(".", 1)[-1]
        and not p.rsplit(".", 1)[-1].startswith("raw_")
    ]
    return [(p, v, goal.met(v)) for p, v in sorted(found)]


# --------------------------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def render(runs: list[Run], machine: dict[str, Any], *, quick: bool) -> str:
    by_name = {r.name: r for r in runs}
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `make bench` (bench/run_all.py). Do not edit by hand: run it again. -->",
        "",
        "Every figure is measured beside its raw baseline **in the same run on the same machine**",
        "and reported as a ratio (DESIGN §9); timings are never asserted in tests. "
        + (
            "This was a `--quick` run (short iterations): ratios are indicative only."
            if quick
            else "Full iterations."
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    labels = {
        "cpu": "CPU",
        "cores": "Cores",
        "cores_usable": "Cores usable by this run",
        "memory_mb": "Memory (MB)",
        "python": "Python",
        "implementation": "Implementation",
        "os": "OS",
        "kernel": "Kernel",
        "arch": "Architecture",
        "date": "Date (UTC)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {machine.get(key, '')} |")
    lines += [
        "",
        "## Goals",
        "",
        "| Benchmark | Goal | Figure | Measured | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    for goal in GOALS:
        run = by_name.get(goal.bench)
        if run is None:
            lines.append(
                f"| {goal.bench} | {goal.label} | — | not run (no bench/{goal.bench}.py)"
                f" | {goal.text()} | — |"
            )
            continue
        if run.result is None:
            lines.append(
                f"| {goal.bench} | {goal.label} | — | failed: {run.error} | {goal.text()} | ✗ |"
            )
            continue
        rows = evaluate(goal, run.result)
        if not rows:
            lines.append(
                f"| {goal.bench} | {goal.label} | `{goal.pattern}` | not reported "
                f"| {goal.text()} | — |"
            )
        for path, value, met in rows:
            lines.append(
                f"| {goal.bench} | {goal.label} | `{path}` | {_fmt(value)} "
                f"| {goal.text()} | {'✓' if met else '✗'} |"
            )
    lines += [
        "",
        "## Figures beside their raw baselines",
        "",
        "| Benchmark | Where | Figure | Value | Raw baseline | Raw value | Ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run.result is None:
            continue
        for f in figures(run.result):
            lines.append(
                f"| {run.name} | `{f.path or '(top)'}` | `{f.name or '?'}` | {_fmt(f.value)} "
                f"| `{f.baseline_name or '?'}` | {_fmt(f.baseline)} | {_fmt(f.ratio)} |"
            )
    lines += ["", "## Runs", "", "| Benchmark | Seconds | Status |", "|---|---|---|"]
    for run in runs:
        status = "ok" if run.result is not None else f"**failed**: {run.error}"
        lines.append(f"| {run.name} | {run.seconds:.1f} | {status} |")
    failed = [r for r in runs if r.result is None]
    for run in failed:
        lines += ["", f"### {run.name}: stderr (last lines)", "", "```", *run.stderr_tail, "```"]
    if ANALYSIS.exists():  # hand-written: where the time goes, what was tried
        lines += ["", *ANALYSIS.read_text(encoding="utf-8").rstrip().splitlines()]
    lines += ["", "## Raw JSON", ""]
    for run in runs:
        if run.result is None:
            continue
        lines += [
            "<details>",
            f"<summary>{run.name}</summary>",
            "",
            "```json",
            json.dumps(run.result, indent=2, ensure_ascii=False),
            "```",
            "",
            "</details>",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "```",
        "make bench                      # full iterations, rewrites this file",
        ".venv/bin/python bench/run_all.py --quick   # a few seconds per benchmark",
        ".venv/bin/python bench/<name>.py [--quick]  # one benchmark, its JSON on stdout",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run every bench/ script; write docs/PERFORMANCE.md")
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--only", nargs="*", help="run only these benchmarks (names without .py)")
    ap.add_argument("--output", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    ap.add_argument(
        "--json",
        default=str(ROOT / "reports" / "bench" / "results.json"),
        help="also write all results here ('' to skip)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark (default 300 quick, 1800 full)",
    )
    ap.add_argument("--strict-goals", action="store_true", help="exit 2 if a goal is not met")
    args = ap.parse_args(argv)
    timeout = args.timeout or (300.0 if args.quick else 1800.0)
    runs: list[Run] = []
    for path in scripts(args.only):
        print(f"bench: {path.stem} ...", file=sys.stderr, flush=True)
        run = run_one(path, quick=args.quick, timeout=timeout)
        state = "ok" if run.result is not None else f"FAILED ({run.error})"
        print(f"bench: {path.stem} {state} in {run.seconds:.1f} s", file=sys.stderr, flush=True)
        runs.append(run)
    machine = _common.machine()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, machine, quick=args.quick), encoding="utf-8")
    print(f"bench: wrote {out}", file=sys.stderr)
    if args.json:
        jp = Path(args.json)
        jp.parent.mkdir(parents=True, exist_ok=True)
        jp.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "quick": args.quick,
                    "runs": {
                        r.name: {
                            "seconds": round(r.seconds, 2),
                            "error": r.error,
                            "result": r.result,
                        }
                        for r in runs
                    },
                },
                indent=2,
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
    if any(r.result is None for r in runs):
        return 1
    if args.strict_goals:
        unmet = [g for g in GOALS for _, _, met in evaluate(g, _result(runs, g.bench)) if not met]
        if unmet:
            return 2
    return 0


def _result(runs: list[Run], name: str) -> dict[str, Any] | None:
    return next((r.result for r in runs if r.name == name), None)


if __name__ == "__main__":
    sys.exit(main())
