"""Shared helpers of the benchmarks (DESIGN §9: "figures as ratios against a raw baseline
measured in the same run, printed as JSON").

The contract every ``bench/<name>.py`` follows (checked by tests/unit/test_bench_contract.py and
relied on by ``bench/run_all.py``):

* it accepts ``--quick`` (a run of a few seconds) — :func:`parser` adds it;
* it prints exactly ONE JSON object on stdout (:func:`emit`), with ``"bench": "<name>"``; noise
  goes to stderr;
* each figure sits beside its raw baseline from the same run and their ``ratio``: in any
  object that has a ``ratio`` key, a key starting with ``raw_`` is the baseline
  (:func:`figure` builds such an object).

Scripts run as ``python bench/<name>.py``, so ``bench/`` is ``sys.path[0]`` and they import this
module as ``import _common`` (no package needed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# the JSON contract
# --------------------------------------------------------------------------------------------
def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the contract's ``--quick`` flag."""
    lines = (description or "").strip().splitlines()
    ap = argparse.ArgumentParser(description=lines[0] if lines else None)
    ap.add_argument("--quick", action="store_true", help="a run of a few seconds")
    return ap


def ratio(value: float, baseline: float) -> float | None:
    """``value / baseline`` rounded to 3 places (None when the baseline is 0)."""
    if not baseline:
        return None
    return round(value / baseline, 3)


def figure(
    name: str, value: float, baseline: float, *, unit: str = "", **extra: Any
) -> dict[str, Any]:
    """``{name: value, "raw_<name>": baseline, "ratio": value / baseline, ...}``."""
    out: dict[str, Any] = {name: value, f"raw_{name}": baseline, "ratio": ratio(value, baseline)}
    if unit:
        out["unit"] = unit
    out.update(extra)
    return out


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object of this run (and flush, so a parent reading a pipe sees it)."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
class Stopwatch:
    """Accumulates elapsed seconds over several ``with sw:`` blocks."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.laps: list[float] = []
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        lap = time.perf_counter() - self._t0
        self.laps.append(lap)
        self.elapsed += lap


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box = [0.0]
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - t0


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by linear interpolation; 0.0 for no samples."""
    if not samples:
        return 0.0
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max / mean of latencies given in seconds, in milliseconds."""
    if not samples_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {
        "p50_ms": round(percentile(samples_s, 50) * 1000, 4),
        "p99_ms": round(percentile(samples_s, 99) * 1000, 4),
        "max_ms": round(max(samples_s) * 1000, 4),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 4),
    }


# --------------------------------------------------------------------------------------------
# process figures
# --------------------------------------------------------------------------------------------
def rss_kb(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB (``/proc/<pid>/status`` VmRSS; 0 if unknown)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    """The peak RSS of this process in KiB (``ru_maxrss``)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def open_fds(pid: int | str = "self") -> int:
    """Number of open file descriptors of a process (``/proc/<pid>/fd``)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python, OS, kernel, architecture and the date of the run."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_mb": _memory_mb(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": _os_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


if __name__ == "__main__":
    print(json.dumps(machine(), indent=2))
