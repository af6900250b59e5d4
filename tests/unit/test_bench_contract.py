"""The benchmark contract (bench/_common.py) and the ``make bench`` runner (bench/run_all.py).

Every ``bench/<name>.py`` accepts ``--quick`` and prints exactly one JSON object with
``"bench": "<name>"`` in which every figure sits beside its raw baseline and their ratio. The
scripts run here for real with ``--quick`` (marked ``slow``); nothing asserts a timing
(DESIGN §9): only the shape of what they print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402  # bench/ is a script directory, not a package

SCRIPTS = sorted(
    p.stem for p in BENCH.glob("*.py") if p.name not in run_all.SKIP and not p.name.startswith("_")
)
#: Benchmarks that need a service the fixtures start (pytest markers).
NEEDS = {"drain": "mqtt", "pcsc_roundtrip": "pcsc"}


def _ratio_objects(obj: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(obj, dict):
        if "ratio" in obj:
            out.append(obj)
        for v in obj.values():
            out.extend(_ratio_objects(v))
    return out


def _params() -> list[Any]:
    params = []
    for name in SCRIPTS:
        marks = [pytest.mark.slow, pytest.mark.timeout(300)]
        if name in NEEDS:
            marks.append(getattr(pytest.mark, NEEDS[name]))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _params())
def test_bench_script_quick_prints_one_json_object_with_baselines(name: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = run_all.parse_output(proc.stdout)  # exactly one JSON object, nothing else
    assert result.get("bench") == name
    assert result.get("quick") is True
    ratios = _ratio_objects(result)
    assert ratios, "no figure with a ratio"
    for obj in ratios:
        raw = [k for k in obj if k.startswith("raw_") and run_all._is_num(obj[k])]
        assert raw, f"a ratio without its raw baseline: {obj}"
        assert run_all._is_num(obj["ratio"]), obj
    figs = run_all.figures(result)
    assert all(f.name and f.value is not None for f in figs), figs


def test_at_least_the_core_benchmarks_exist() -> None:
    assert {"card_ops", "journal", "drain"} <= set(SCRIPTS)


# --- the runner's pieces ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "stdout",
    ["", "hello", '{"a": 1}\n{"b": 2}', "[1, 2]", 'noise\n{"a": 1}', "42"],
    ids=["empty", "text", "two-objects", "array", "noise-first", "number"],
)
def test_parse_output_rejects_anything_but_one_object(stdout: str) -> None:
    with pytest.raises(ValueError):
        run_all.parse_output(stdout)


def test_parse_output_accepts_one_object_with_whitespace() -> None:
    assert run_all.parse_output('\n  {"bench": "x", "ratio": 0.5}\n') == {
        "bench": "x",
        "ratio": 0.5,
    }


SAMPLE = {
    "bench": "sample",
    "read": {"ops_per_s": 300.0, "raw_ops_per_s": 1200.0, "ratio": 0.25},
    "sealed": {"sealed_tps": 90.0, "raw_tps": 100.0, "ratio": 0.9, "goal_ratio": 0.5},
    "drain_rps": 50.0,
    "raw_paho_rps": 100.0,
    "ratio": 0.5,
    "blacklist": {"lookup_p99_ms": 0.05, "goal_lookup_p99_ms": 0.1},
    "start": {"ready_s": 0.4, "raw_ready_s": 0.02, "ratio": 20.0},
}


def test_figures_pair_each_value_with_its_raw_baseline() -> None:
    got = {
        (f.path, f.name, f.baseline_name): (f.value, f.baseline, f.ratio)
        for f in run_all.figures(SAMPLE)
    }
    assert got == {
        ("", "drain_rps", "raw_paho_rps"): (50.0, 100.0, 0.5),
        ("read", "ops_per_s", "raw_ops_per_s"): (300.0, 1200.0, 0.25),
        ("sealed", "sealed_tps", "raw_tps"): (90.0, 100.0, 0.9),
        ("start", "ready_s", "raw_ready_s"): (0.4, 0.02, 20.0),
    }


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        (
            run_all.Goal("sample", "", "*.ratio", ">=", 1 / 3),
            [("read.ratio", 0.25, False), ("sealed.ratio", 0.9, True), ("start.ratio", 20.0, True)],
        ),
        (
            run_all.Goal("sample", "", "*lookup_p99_ms", "<", 0.1),
            [("blacklist.lookup_p99_ms", 0.05, True)],
        ),
        (run_all.Goal("sample", "", "missing", "<", 1), []),
        (run_all.Goal("sample", "", "*ready_s", "<", 1), [("start.ready_s", 0.4, True)]),
        (run_all.Goal("sample", "", "drain_rps", "abs<=", 10), [("drain_rps", 50.0, False)]),
    ],
)
def test_goals_select_leaves_and_ignore_declared_goal_keys(
    goal: run_all.Goal, expected: list[tuple[str, float, bool]]
) -> None:
    assert run_all.evaluate(goal, SAMPLE) == expected


def test_render_shows_machine_goals_figures_failures_and_raw_json() -> None:
    ok = run_all.Run("card_ops", 1.5, {"bench": "card_ops", **SAMPLE})
    bad = run_all.Run("journal", 2.0, None, "exit status 1", 1, ["Traceback", "Boom"])
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "memory_mb": 1024,
        "python": "3.11.7",
        "os": "Debian",
        "date": "2026-01-01T00:00:00Z",
    }
    text = run_all.render([ok, bad], machine, quick=True)
    assert "| CPU | Test CPU |" in text
    assert (
        "| card_ops | card flows vs raw APDU replay (ratio) | `read.ratio` | 0.25 | ≥ 1/3 | ✗ |"
        in text
    )
    assert (
        "| card_ops | card flows vs raw APDU replay (ratio) | `sealed.ratio` | 0.9 | ≥ 1/3 | ✓ |"
        in text
    )
    assert (
        "| journal | journal seal vs raw SQLite insert (ratio) | — | failed: exit status 1" in text
    )
    assert "| runtime | start to READY | — | not run" in text
    assert "Boom" in text
    assert '"raw_ops_per_s": 1200.0' in text
    assert "--quick" in text


def test_runner_writes_the_document_for_a_quick_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "PERF.md"
    rc = run_all.main(
        ["--quick", "--only", "card_ops", "--output", str(out), "--json", str(tmp_path / "r.json")]
    )
    assert rc == 0
    text = out.read_text(encoding="utf-8")
    assert "`read.ratio`" in text
    assert (
        json.loads((tmp_path / "r.json").read_text())["runs"]["card_ops"]["result"]["bench"]
        == "card_ops"
    )
