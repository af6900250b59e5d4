"""APDU round trips per second through the agent's PC/SC driver vs bare pyscard (DESIGN §9).

Both go through the same stack in the same run — libpcsclite → a private pcscd → vpcd →
``ssc-agent sim up`` (a subprocess, like real hardware) — on the same reader, with the same
APDU (``00 20 00 00``, PIN tries: no state change, a 2-byte answer):

* ``driver``: ``agent.drivers.pcsc.PcscReader.session()`` → ``PcscCardChannel.transmit``
  (worker thread + asyncio hand-off per APDU, typed errors);
* ``raw``: ``smartcard.System.readers()`` → ``createConnection().connect()`` → ``transmit``.

Rounds alternate (driver, raw, driver, raw, ...) so drift hits both alike; the figure per
method is the median round. ``ratio`` is the median of the per-pair ratios (driver round /
the raw round right after it): adjacent rounds share the machine's state, where the medians
of the two series may come from minutes apart (a shared 2-core VM drifts by ±10 % between
rounds). ``ratio_of_medians`` is printed beside it; the goal is ``ratio`` >= 0.9.

    .venv/bin/python bench/pcsc_roundtrip.py [--quick] [--system]

Prints ONE JSON object. ``--system`` uses the running system pcscd (Debian's vpcd ports)
instead of starting a private one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.testing import pcscd as pcscd_mod

READER = "Virtual PCD 00 00"
SELECT_SSSE = bytes.fromhex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF")
PIN_TRIES = bytes.fromhex("00200000")
GOAL = 0.9


async def driver_round(n: int) -> float:
    from agent.card.apdu import CommandApdu
    from agent.drivers.pcsc import PcscReader

    cmd = CommandApdu.from_bytes(PIN_TRIES)
    async with PcscReader(READER) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            await channel.transmit(CommandApdu.from_bytes(SELECT_SSSE))
            await channel.transmit(cmd)  # warm-up
            t0 = time.perf_counter()
            for _ in range(n):
                resp = await channel.transmit(cmd)
            elapsed = time.perf_counter() - t0
    if resp.sw >> 8 != 0x63:
        raise RuntimeError(f"unexpected answer {resp.sw:04X}")
    return n / elapsed


def raw_round(n: int) -> float:
    from smartcard.System import readers

    reader = next(r for r in readers() if str(r) == READER)
    conn = reader.createConnection()
    conn.connect()
    try:
        conn.transmit(list(SELECT_SSSE))
        apdu = list(PIN_TRIES)
        conn.transmit(apdu)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            _data, sw1, _sw2 = conn.transmit(apdu)
        elapsed = time.perf_counter() - t0
    finally:
        conn.disconnect()
    if sw1 != 0x63:
        raise RuntimeError(f"unexpected answer SW1 {sw1:02X}")
    return n / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (CI smoke)")
    ap.add_argument("--system", action="store_true", help="use the system pcscd")
    opts = ap.parse_args()
    per_round, rounds = (200, 3) if opts.quick else (1000, 9)

    missing = pcscd_mod.missing_tools()
    if missing:
        print(json.dumps({"bench": "pcsc_roundtrip", "skipped": "missing " + ", ".join(missing)}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="ssc-bench-pcsc-"))
    if opts.system:
        inst = pcscd_mod.system_instance()
    else:
        inst = pcscd_mod.PcscdInstance(base_dir=work / "pcscd", port=pcscd_mod.free_port_pair())
        inst.start()
    # libpcsclite reads this once, on the first PC/SC call of the process
    os.environ.clear()
    os.environ.update(inst.env)
    sim = pcscd_mod.SimUpProcess(work / "sim", inst, printer=False)
    try:
        sim.start()
        driver: list[float] = []
        raw: list[float] = []
        for _ in range(rounds):
            driver.append(asyncio.run(driver_round(per_round)))
            raw.append(raw_round(per_round))
        d, r = statistics.median(driver), statistics.median(raw)
        paired = statistics.median(x / y for x, y in zip(driver, raw, strict=True))
        print(
            json.dumps(
                {
                    "bench": "pcsc_roundtrip",
                    "quick": opts.quick,
                    "pcscd": "system" if opts.system else "private",
                    "apdu": PIN_TRIES.hex().upper(),
                    "rounds": rounds,
                    "apdus_per_round": per_round,
                    "driver_apdus_per_s": round(d, 1),
                    "raw_pyscard_apdus_per_s": round(r, 1),
                    "driver_us_per_apdu": round(1e6 / d, 1),
                    "raw_us_per_apdu": round(1e6 / r, 1),
                    "ratio": round(paired, 3),
                    "ratio_of_medians": round(d / r, 3),
                    "goal_ratio": GOAL,
                    "meets_goal": paired >= GOAL,
                    "driver_rounds": [round(x, 1) for x in driver],
                    "raw_rounds": [round(x, 1) for x in raw],
                }
            )
        )
    finally:
        sim.stop()
        inst.cleanup()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
