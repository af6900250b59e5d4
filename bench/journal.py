"""Journal benchmark (DESIGN §4, §9). Prints ONE JSON object:

* ``sealed_tps``: transactions per second through the journal (``create_intent`` →
  ``transition card_confirmed`` → ``seal`` with the software seal MAC), file on disk, WAL,
  ``synchronous=FULL``; beside ``raw_tps``: a raw ``sqlite3`` loop doing the same three
  durable commits (insert the intent row, update its state, insert the outbox row with the same
  body bytes) with the same settings in the same run, the two taking turns in 40 rounds;
  ``ratio`` = journal / raw (goal >= 0.5).
  ``raw_single_insert_tps`` (one insert of the body per commit) is printed for scale;
* ``lock_unlock_pairs_per_s``: lock + unlock end to end through ``TxEngine`` (virtual card and
  PSAM in memory, the journal on disk with fsync, offline with a pushed authorization);
* blacklist: ``lookup_p50_ms`` / ``lookup_p99_ms`` (half hits, half misses) with N entries and
  ``delta_entries_per_s`` applying deltas of 1,000 additions + 1,000 removals (goal p99 < 0.1 ms).

``--quick``: 300 transactions, 30 pairs and 100,000 blacklist entries instead of 2,000, 200 and
1,000,000 (``blacklist_entries`` says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from agent.journal.store import Journal
from agent.profile import load_profile
from agent.psam.soft import seal_function
from agent.sim.psam import DEFAULT_TERMINAL_NUMBER
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord

PROFILE = load_profile("default")
TN = DEFAULT_TERMINAL_NUMBER


def _journal(path: Path) -> Journal:
    return Journal(path, transitions=cast("Any", TABLE))


# the software PSAM's seal (key derived once, as SoftSecurityModule does)
seal_mac = seal_function(PROFILE, TN)


def _raw_conn(path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    return c


def bench_sealed(d: Path, n: int, rounds: int = 40) -> dict[str, Any]:
    """The journal and the raw loops take turns, ``n / rounds`` transactions at a time, so that
    a slow patch of the disk (fsync times drift by 20 % within a minute here) falls on both."""
    j = _journal(d / "sealed.db")
    raw = _raw_conn(d / "raw.db")
    raw.execute("CREATE TABLE t (tx_id TEXT PRIMARY KEY, kind TEXT, state TEXT, card TEXT)")
    raw.execute(
        "CREATE TABLE o (seq INTEGER PRIMARY KEY, tx_id TEXT, body BLOB, hash BLOB, "
        "prev BLOB, mac BLOB)"
    )
    raw1 = _raw_conn(d / "raw1.db")
    raw1.execute("CREATE TABLE o (seq INTEGER PRIMARY KEY, body BLOB)")
    journal_s = raw_s = raw1_s = 0.0
    seq = 0
    per_round = max(1, n // rounds)
    for r in range(rounds):
        bodies = []
        # the records (UUIDv7 ids, salts) are made before the clock starts, as the raw loop
        # is handed their ids: both time only the store
        recs = [
            TxRecord(kind=Kind.LOCK, terminal_id=TN.hex(), card_id_code=f"{i:032X}", offline=True)
            for i in range(r * per_round, (r + 1) * per_round)
        ]
        t0 = time.perf_counter()
        for rec in recs:
            j.create_intent(rec)
            j.transition(rec.tx_id, "card_confirmed", result="locked")
            s = j.seal(rec.tx_id, seal_mac)
            bodies.append((rec.tx_id, s.body, s.hash, s.prev_hash, s.mac))
        journal_s += time.perf_counter() - t0
        # the raw loop: the same three durable commits with the same bytes
        t0 = time.perf_counter()
        for k, (tx_id, body, h, prev, mac) in enumerate(bodies, seq + 1):
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO t VALUES (?, 'lock', 'intent', ?)", (tx_id, f"{k:032X}"))
            raw.execute("COMMIT")
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("UPDATE t SET state = 'card_done' WHERE tx_id = ?", (tx_id,))
            raw.execute("COMMIT")
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO o VALUES (?, ?, ?, ?, ?, ?)", (k, tx_id, body, h, prev, mac))
            raw.execute("UPDATE t SET state = 'sealed' WHERE tx_id = ?", (tx_id,))
            raw.execute("COMMIT")
        raw_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for k, (_, body, *_rest) in enumerate(bodies, seq + 1):
            raw1.execute("BEGIN IMMEDIATE")
            raw1.execute("INSERT INTO o VALUES (?, ?)", (k, body))
            raw1.execute("COMMIT")
        raw1_s += time.perf_counter() - t0
        seq += len(bodies)
    j.close()
    raw.close()
    raw1.close()
    return {
        "transactions": seq,
        "sealed_tps": round(seq / journal_s, 1),
        "raw_tps": round(seq / raw_s, 1),
        "ratio": round(raw_s / journal_s, 3),
        "raw_single_insert_tps": round(seq / raw1_s, 1),
        "goal_ratio": 0.5,
    }


async def bench_pairs(d: Path, n: int) -> dict[str, Any]:
    from agent.psam.client import PsamSecurityModule
    from agent.sim.channel import SimChannel
    from agent.sim.factory import CardFactory
    from agent.sim.psam import VirtualPsam
    from agent.tx.engine import TxEngine
    from agent.tx.ports import FakeUplink

    j = _journal(d / "pairs.db")
    card = CardFactory(PROFILE, 2).issue(algorithm="des", with_bank=False)
    sam = PsamSecurityModule(SimChannel(VirtualPsam(PROFILE)), PROFILE)
    engine = TxEngine(j, sam, PROFILE, None, FakeUplink(j), TN.hex())
    cid = card.card_id_code.hex().upper()
    t0 = time.perf_counter()
    for i in range(n):
        await engine.lock(SimChannel(card))
        j.add_authorization(f"a{i}", cid, "unlock", engine.clock() + 60_000, b"s")
        await engine.unlock(SimChannel(card))
    s = time.perf_counter() - t0
    assert j.verify_chain().ok
    j.close()
    return {"pairs": n, "lock_unlock_pairs_per_s": round(n / s, 1)}


def bench_blacklist(d: Path, n: int) -> dict[str, Any]:
    j = _journal(d / "bl.db")
    rng = random.Random(1)  # benchmark data, not secrets
    codes = [f"{rng.getrandbits(128):032X}" for _ in range(n)]
    t0 = time.perf_counter()
    j.blacklist_snapshot_replace(1, ((c, "temporary_loss") for c in codes))
    load_s = time.perf_counter() - t0
    probes = [rng.choice(codes) if i % 2 else f"{rng.getrandbits(128):032X}" for i in range(10_000)]
    times = []
    for code in probes:
        t = time.perf_counter_ns()
        j.blacklist_reason(code)
        times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    rounds = 10
    t0 = time.perf_counter()
    for r in range(rounds):
        added = [(f"{rng.getrandbits(128):032X}", "formal_loss") for _ in range(1000)]
        removed = codes[r * 1000 : (r + 1) * 1000]
        j.blacklist_apply_delta(1 + r, 2 + r, added, removed)
    delta_s = time.perf_counter() - t0
    j.close()
    return {
        "blacklist_entries": n,
        "snapshot_load_s": round(load_s, 2),
        "lookup_p50_ms": round(statistics.median(times), 4),
        "lookup_p99_ms": round(times[int(len(times) * 0.99)], 4),
        "delta_entries_per_s": round(rounds * 2000 / delta_s, 1),
        "goal_lookup_p99_ms": 0.1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_tx, n_pairs, n_bl = (300, 30, 100_000) if args.quick else (2000, 200, 1_000_000)
    out: dict[str, Any] = {"bench": "journal", "quick": args.quick}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        d = Path(tmp)
        out["sealed"] = bench_sealed(d, n_tx)
        out.update(asyncio.run(bench_pairs(d, n_pairs)))
        out["blacklist"] = bench_blacklist(d, n_bl)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
