"""Soak: a steady transaction load for a bounded time, watching for leaks (DESIGN §9;
peer-lessons (c) 10 "silent stalls after long outages").

Lock/unlock cycles of a virtual card through ``TxEngine`` (journal on disk, WAL, FULL sync;
PSAM MACs; online authorizations) for 30 s in the normal suite and 10 minutes under
``RELIABILITY_LONG=1``, with a paced central "ack" pruning nothing (the journal grows, as on
a terminal that is offline). RSS and open file descriptors are sampled every second.

Growth is a failure: after a warm-up (the first 20 % of the run), the median RSS of the last
third of the samples may exceed the median of the first third by at most ``RSS_TOLERANCE_MB``
(SQLite's page cache and the allocator settle within it; a leak of one object per transaction
does not), and the number of open file descriptors must not grow at all. At the end every
transaction is in the journal, sealed, and the chain verifies.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from pathlib import Path

import pytest

from tests.reliability.conftest import Figures, SimTerminal, long_timeout, open_journal, scaled

pytest.importorskip("agent.tx.engine", reason="needs agent.tx.engine (TxEngine), being written")

SOAK_S = scaled(30, 600)
RSS_TOLERANCE_MB = scaled(6, 10)
WARMUP = 0.2


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@long_timeout(SOAK_S + 120)
async def test_soak_steady_load_without_growth(tmp_path: Path, figures: Figures) -> None:
    journal = open_journal(tmp_path / "journal.db")
    t = SimTerminal(journal)
    # the helper keeps every event and intent for other tests; bounded here, or it is the leak
    t.events = deque(maxlen=100)  # type: ignore[assignment]
    t.intents = deque(maxlen=100)  # type: ignore[assignment]
    samples: list[tuple[float, int, int]] = []
    start = time.monotonic()
    next_sample = start
    ops = 0
    while (now := time.monotonic()) - start < SOAK_S:
        rec = await t.toggle()
        assert str(rec.state) == "sealed", rec
        ops += 1
        if now >= next_sample:
            samples.append((now - start, _rss_kb(), _fds()))
            next_sample = now + 1.0
    samples.append((time.monotonic() - start, _rss_kb(), _fds()))
    steady = [s for s in samples if s[0] >= SOAK_S * WARMUP]
    assert len(steady) >= 6, "too few samples to judge growth"
    third = len(steady) // 3
    early, late = steady[:third], steady[-third:]
    rss_growth_mb = (
        statistics.median(s[1] for s in late) - statistics.median(s[1] for s in early)
    ) / 1024
    fd_growth = max(s[2] for s in late) - max(s[2] for s in early)
    stats = journal.stats()
    report = t.verify_chain()
    journal.close()
    figures.add(
        "soak: steady lock/unlock load",
        f"{SOAK_S} s through TxEngine on the simulators",
        ops,
        0,
        seconds=SOAK_S,
        ops_per_s=round(ops / SOAK_S, 1),
        rss_start_mb=round(steady[0][1] / 1024, 1),
        rss_end_mb=round(samples[-1][1] / 1024, 1),
        rss_growth_mb=round(rss_growth_mb, 2),
        rss_tolerance_mb=RSS_TOLERANCE_MB,
        fd_growth=fd_growth,
        journal_mb=round(stats.size_bytes / 2**20, 1),
    )
    assert stats.transactions == ops
    assert stats.last_seq == ops
    assert stats.open_intents == 0
    assert report.ok, report
    assert report.checked == ops
    assert fd_growth <= 0, f"open file descriptors grew by {fd_growth}"
    assert rss_growth_mb <= RSS_TOLERANCE_MB, f"RSS grew by {rss_growth_mb:.1f} MB"
