"""Backlog drain benchmark: journal → uplink session → mosquitto → reference central (DESIGN §9).

Prints ONE JSON object:

* ``drain_rps``: records of a backlog drained to central's acks per second (the real journal,
  ``JournalOutbox``, ``UplinkSession`` in this process; ``ssc-agent central`` in a child process;
  a private mosquitto), one record per message as the uplink contract says;
* ``opt_in_batches``: the same drain with ``uplink.batch_max`` = 32 (``tx-batch`` messages, for
  a central that has agreed to take them; not the default), and its ratio to the same raw figure;
* ``raw_paho_rps``: the same payloads published raw with paho-mqtt at QoS 1 (same in-flight
  window) to the same broker in the same run, waiting for every PUBACK; ``ratio`` =
  drain / raw (goal >= 0.5). The raw run and the drain take turns in three rounds (each drain
  a fresh backlog of its own terminal) and each drain is compared with the raw run just before
  it: ``ratio`` is the median of the rounds' ratios (``ratio_rounds``), ``drain_rps`` and
  ``raw_paho_rps`` the medians (this VM's speed drifts by tens of percent between seconds);
* ``cpu_us_per_record``: the CPU each process spent per record during the drain and during the
  raw run (this process = the agent, or the raw publisher; central; mosquitto), with the
  machine's core count: all three share it, so their sum per record bounds the drain rate;
* ``ack_each_central``: the same drain against ``bench/_ack_each_central.py``, a consumer that
  acks every record the moment it arrives (one ack message per record) and verifies nothing:
  the cost of the simplest central an integrator could write, and of the agent with a central
  that costs almost nothing;
* ``rss_kb``: peak RSS (``ru_maxrss`` from ``os.wait4``) of ``ssc-agent uplink drain`` child
  processes draining the small and the large backlog; goal: within 10 MB of each other.

``--quick`` uses 2,000 / 10,000 records instead of 10,000 / 100,000 (and says so). The in-flight
window is 256 (``BENCH_WINDOW``), for the session and for the raw baseline alike; the broker runs
with ``set_tcp_nodelay true`` (see :class:`Broker`).
Backlogs are written straight into the journal's tables in one transaction (the same canonical
bodies, chain and seal MACs the journal's ``seal`` makes; checked with ``verify_chain``):
sealing 100,000 records one durable transaction at a time would take minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agent.journal import Journal
from agent.journal.codec import GENESIS_HASH, body_fields, encode_body, record_digest
from agent.profile import load_profile
from agent.psam.soft import seal_function
from agent.testing.mosquitto import Mosquitto
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord
from agent.uplink.outbox import JournalOutbox
from agent.uplink.session import UplinkSession, UplinkSettings, drain_once
from agent.wire.codec import StatusMessage, ack_ranges

TERMINAL = "440300907950"
#: The RSS drains use terminals of their own, so central stores their records (instead of
#: raising "conflict" alerts for seqs another backlog already used).
TERMINAL_SMALL, TERMINAL_LARGE = "440300907951", "440300907952"
TERMINAL_BATCHED = "440300907953"
TERMINAL_ACK_EACH = "440300907954"
#: Rounds of the headline figure (raw run, then a drain of a fresh backlog), and their terminals.
ROUNDS = 3
TERMINAL_ROUNDS = [f"4403009079{60 + r}" for r in range(ROUNDS)]
BATCH = 32  # the opt-in tx-batch figure (uplink.batch_max); the contract's default is 1
WINDOW = int(os.environ.get("BENCH_WINDOW", "256"))  # a backlog drain; config default is 32
CENTRAL_SCHEMA_EVERY = 100
CLI = [sys.executable, "-m", "agent"]


class Broker(Mosquitto):
    """The test broker with ``set_tcp_nodelay true``: mosquitto keeps Nagle's algorithm on by
    default, so an ack or a record that is not followed by more data waits for the peer's
    delayed TCP ACK (40 ms on Linux). A drain that waits for central's acks is a request and
    response pattern, and a broker carrying it should run with this option (docs/PERFORMANCE.md).
    The raw paho baseline uses the same broker."""

    def _config(self) -> str:
        return super()._config() + "set_tcp_nodelay true\n"


def make_backlog(state_dir: Path, n: int, terminal: str = TERMINAL) -> Path:
    """A journal with ``n`` sealed, unacked lock records (bulk insert, see module doc)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "journal.db"
    Journal(path, transitions=TABLE).close()  # type: ignore[arg-type]  # schema + key
    seal = seal_function(load_profile("default"), bytes.fromhex(terminal))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    prev = GENESIS_HASH
    now = time.time_ns() // 1_000_000
    for seq in range(1, n + 1):
        rec = TxRecord(
            kind=Kind.LOCK, terminal_id=terminal, card_id_code="44030000D15600000500000000000001",
            offline=True, result="ok", outcome="done", created_at=now,
        )  # fmt: skip
        body = encode_body(body_fields(rec, seq, prev))
        digest = record_digest(body)
        mac = seal(digest)
        conn.execute(
            "INSERT INTO transactions (tx_id, kind, state, card_id_code, terminal_id, offline, "
            "outcome, result, created_at, updated_at, seq) VALUES (?, ?, 'sealed', ?, ?, 1, "
            "'done', 'ok', ?, ?, ?)",
            (rec.tx_id, "lock", rec.card_id_code, terminal, now, now, seq),
        )
        conn.execute(
            "INSERT INTO outbox (seq, tx_id, body, hash, prev_hash, mac, state, sealed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'sealed', ?)",
            (seq, rec.tx_id, body, digest, prev, mac, now),
        )
        prev = digest
    conn.execute("COMMIT")
    conn.close()
    return state_dir


def start_ack_each_central(broker: Mosquitto) -> subprocess.Popen[bytes]:
    """``bench/_ack_each_central.py``: one ack message per record, nothing verified."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_ack_each_central.py")), str(broker.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )  # fmt: skip
    time.sleep(1.0)  # import + subscribe
    return proc


def start_central(broker: Mosquitto, db: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "central", "--broker", broker.url, "--db", str(db),
         "--schema-every", str(CENTRAL_SCHEMA_EVERY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.5)  # import + subscribe
    return proc


async def drain_rate(
    state: Path, port: int, n: int, terminal: str = TERMINAL, batch_max: int = 1
) -> float:
    journal = Journal(state / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    settings = UplinkSettings(
        terminal=terminal, host="127.0.0.1", port=port, window=WINDOW, backlog_rate=1e6,
        ack_timeout_s=10.0, reconnect_min_s=0.1, reconnect_max_s=1.0, batch_max=batch_max,
    )  # fmt: skip
    session = UplinkSession(
        settings,
        JournalOutbox(journal),
        encode_status=lambda on: StatusMessage(terminal, on, "bench", int(time.time())).to_cbor(),
        decode_ack=lambda p: ack_ranges(p, terminal),
    )
    t0 = time.perf_counter()
    _, _, remaining = await drain_once(session, 600)
    elapsed = time.perf_counter() - t0
    journal.close()
    if remaining:
        raise SystemExit(f"drain left {remaining} records")
    return n / elapsed


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a child process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_split(
    n: int, run: Callable[[], float], central: subprocess.Popen[bytes], broker: Mosquitto
) -> tuple[float, dict[str, float]]:
    """``run()``'s rate, and the CPU microseconds per record each process spent on it: this
    process (the agent's session and journal), the central child and mosquitto."""
    assert broker.proc is not None
    c0, b0, a0 = _cpu_s(central.pid), _cpu_s(broker.proc.pid), _self_cpu_s()
    rate = run()
    c1, b1, a1 = _cpu_s(central.pid), _cpu_s(broker.proc.pid), _self_cpu_s()
    per = 1e6 / n
    return rate, {
        "agent": round((a1 - a0) * per),
        "central": round((c1 - c0) * per),
        "broker": round((b1 - b0) * per),
    }


def raw_paho_rate(port: int, payloads: list[bytes]) -> float:
    done = threading.Event()
    acked = 0

    def on_publish(*_a: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    c.max_inflight_messages_set(WINDOW)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    for p in payloads:
        c.publish(f"ssc/v1/{TERMINAL}/tx-raw", p, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return len(payloads) / elapsed


def child_rss_kb(state: Path, broker: Mosquitto) -> tuple[int, dict[str, Any]]:
    proc = subprocess.Popen(
        [*CLI, "uplink", "drain", "--state-dir", str(state), "--broker", broker.url,
         "--timeout", "900", "--rate", "1000000", "--window", str(WINDOW), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, _, rusage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return rusage.ru_maxrss, json.loads(out or b"{}")


def _payloads(state: Path, n: int) -> list[bytes]:
    j = Journal(state / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    assert j.verify_chain().ok
    payloads = [item.payload for item in JournalOutbox(j).pending(0, n)]
    j.close()
    return payloads


def _cpu_mean(splits: list[dict[str, float]], rounds: int) -> dict[str, float]:
    return {k: round(sum(s[k] for s in splits) / rounds) for k in splits[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 / 10,000 records")
    args = ap.parse_args()
    small, large = (2_000, 10_000) if args.quick else (10_000, 100_000)
    rounds = 2 if args.quick else ROUNDS
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        root = Path(tmp)
        # one backlog per round, each of its own terminal (central would take a second backlog
        # of one terminal as conflicting records), made before any clock starts
        states = [make_backlog(root / f"rate{r}", small, TERMINAL_ROUNDS[r]) for r in range(rounds)]
        payloads = _payloads(states[0], small)
        batched_state = make_backlog(root / "batched", small, TERMINAL_BATCHED)
        ack_each_state = make_backlog(root / "ack-each", small, TERMINAL_ACK_EACH)
        with Broker(root / "mq") as broker:
            central = start_central(broker, root / "central.db")

            def raw_run() -> tuple[float, dict[str, float]]:
                return cpu_split(
                    small, lambda: raw_paho_rate(broker.port, payloads), central, broker
                )

            try:
                # the raw baseline and the drain take turns: this VM's speed drifts by tens of
                # percent between seconds, so each drain is compared with the raw run just
                # before it, and the figure is the median of the rounds
                raws, drains, raw_cpus, drain_cpus = [], [], [], []
                for r, state in enumerate(states):
                    raw, raw_cpu = raw_run()
                    drain, drain_cpu = cpu_split(
                        small,
                        lambda s=state, t=TERMINAL_ROUNDS[r]: asyncio.run(
                            drain_rate(s, broker.port, small, t)
                        ),
                        central,
                        broker,
                    )
                    raws.append(raw)
                    drains.append(drain)
                    raw_cpus.append(raw_cpu)
                    drain_cpus.append(drain_cpu)
                batched_raw, _ = raw_run()
                batched = asyncio.run(
                    drain_rate(batched_state, broker.port, small, TERMINAL_BATCHED, BATCH)
                )
                rss_small, r1 = child_rss_kb(
                    make_backlog(root / "small", small, TERMINAL_SMALL), broker
                )
                rss_large, r2 = child_rss_kb(
                    make_backlog(root / "large", large, TERMINAL_LARGE), broker
                )
            finally:
                central.terminate()
                central.wait(10)
            # the reference central is gone: the next consumer of the shared group gets it all
            acker = start_ack_each_central(broker)
            try:
                ack_each_raw, _ = cpu_split(
                    small, lambda: raw_paho_rate(broker.port, payloads), acker, broker
                )
                ack_each, ack_each_cpu = cpu_split(
                    small,
                    lambda: asyncio.run(
                        drain_rate(ack_each_state, broker.port, small, TERMINAL_ACK_EACH)
                    ),
                    acker,
                    broker,
                )
            finally:
                acker.terminate()
                acker.wait(10)
    pair_ratios = [d / r for d, r in zip(drains, raws, strict=True)]
    print(
        json.dumps(
            {
                "bench": "drain",
                "quick": args.quick,
                "records": small,
                "rounds": rounds,
                "window": WINDOW,
                "central_schema_every": CENTRAL_SCHEMA_EVERY,
                "drain_rps": round(statistics.median(drains), 1),
                "raw_paho_rps": round(statistics.median(raws), 1),
                "ratio": round(statistics.median(pair_ratios), 3),
                "ratio_rounds": [round(x, 3) for x in pair_ratios],
                "ratio_goal": 0.5,
                "cpu_us_per_record": {
                    "drain": _cpu_mean(drain_cpus, rounds),
                    "raw": _cpu_mean(raw_cpus, rounds),
                    "cores": os.cpu_count(),
                },
                "opt_in_batches": {
                    "batch_max": BATCH,
                    "drain_rps": round(batched, 1),
                    "raw_paho_rps": round(batched_raw, 1),
                    "ratio": round(batched / batched_raw, 3),
                },
                "ack_each_central": {
                    "drain_rps": round(ack_each, 1),
                    "raw_paho_rps": round(ack_each_raw, 1),
                    "ratio": round(ack_each / ack_each_raw, 3),
                    "cpu_us_per_record": ack_each_cpu,
                },
                "rss_kb": {str(small): rss_small, str(large): rss_large},
                "rss_delta_mb": round((rss_large - rss_small) / 1024, 2),
                "rss_goal_mb": 10,
                "rss_drains": {str(small): r1, str(large): r2},
            }
        )
    )


if __name__ == "__main__":
    main()
