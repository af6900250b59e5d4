"""Card operation benchmark: the full flow stack against a raw replay (DESIGN §9).

Prints ONE JSON object. For ``read`` (EF05 identity + EF06 holder with external
authentication), ``lock`` (84 1E) and ``unlock`` (84 18): APDUs per operation (card and PSAM)
and operations per second through ``SscApplication`` + ``PsamSecurityModule`` over
``SimChannel`` (zero latency, T=0), beside a raw loop that feeds the *same recorded command
bytes* straight to the simulator devices (``device.process``) in the same run; ``ratio`` =
stack / raw (goal >= 1/3). Replayed secure-messaging commands carry a MAC over an old
challenge, so the card refuses them (6988) after doing the same MAC work; the raw loop is an
upper bound of what the devices themselves allow. It replays on twin devices, so the two loops
take turns in 20 rounds, and ``ratio`` is the median of the rounds' ratios.

``--quick`` runs fewer iterations (and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.profile import load_profile
from agent.psam.client import PsamSecurityModule
from agent.sim.channel import SimChannel
from agent.sim.factory import CardFactory
from agent.sim.psam import VirtualPsam
from agent.ssc.app import SscApplication

#: Rounds in which the flows and the replay take turns (see ``bench``).
ROUNDS = 20


class Recorder:
    """A channel that records the raw command bytes it passes on, tagged with the device."""

    def __init__(self, inner: CardChannel, tag: str, log: list[tuple[str, bytes]]) -> None:
        self.inner, self.tag, self.log, self.on = inner, tag, log, False

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        if self.on:
            self.log.append((self.tag, command.to_bytes()))
        return await self.inner.transmit(command)


async def bench(iterations: int) -> dict[str, Any]:
    profile = load_profile("default")
    card = CardFactory(profile, 5).issue(algorithm="des", with_bank=False)
    psam = VirtualPsam(profile)
    log: list[tuple[str, bytes]] = []
    card_ch = Recorder(SimChannel(card), "card", log)
    psam_ch = Recorder(SimChannel(psam), "psam", log)
    sam = PsamSecurityModule(psam_ch, profile)
    cid = card.card_id_code

    async def op_read() -> None:
        app = SscApplication(card_ch, profile, sam)
        await app.read_holder()

    async def op_lock() -> None:
        await SscApplication(card_ch, profile, sam, card_id_code=cid).block()

    async def op_unlock() -> None:
        await SscApplication(card_ch, profile, sam, card_id_code=cid).unblock()

    await sam.terminal_number()
    out: dict[str, Any] = {}
    ops = {"read": op_read, "lock": op_lock, "unlock": op_unlock}
    recorded: dict[str, list[tuple[str, bytes]]] = {}
    for name, fn in ops.items():  # record one of each (lock before unlock keeps state valid)
        log.clear()
        card_ch.on = psam_ch.on = True
        await fn()
        card_ch.on = psam_ch.on = False
        recorded[name] = list(log)
    # The raw loop replays on twins of the devices (the same factory seed, so the same keys and
    # files): replayed authentications then never use up the tries of the card the flows run on,
    # and the two loops can take turns. This VM's speed drifts by tens of percent between
    # seconds, so each round times the flows and then the replay, and ``ratio`` is the median
    # of the rounds' ratios (``ratio_of_totals`` beside it).
    devices = {
        "card": CardFactory(profile, 5).issue(algorithm="des", with_bank=False),
        "psam": VirtualPsam(profile),
    }
    per_round = max(1, iterations // ROUNDS)
    stack_s = dict.fromkeys(ops, 0.0)
    raw_s = dict.fromkeys(ops, 0.0)
    pairs: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(ROUNDS):
        flows = dict.fromkeys(ops, 0.0)
        for _ in range(per_round):
            for name in ("read", "lock", "unlock"):  # lock before unlock keeps state valid
                t0 = time.perf_counter()
                await ops[name]()
                flows[name] += time.perf_counter() - t0
        for name, seq in recorded.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                for tag, raw in seq:
                    devices[tag].process(raw)
            replay = time.perf_counter() - t0
            pairs[name].append(replay / flows[name])
            stack_s[name] += flows[name]
            raw_s[name] += replay
    n = per_round * ROUNDS
    for name, seq in recorded.items():
        stack_ops, raw_ops = n / stack_s[name], n / raw_s[name]
        out[name] = {
            "apdus_card": sum(1 for t, _ in seq if t == "card"),
            "apdus_psam": sum(1 for t, _ in seq if t == "psam"),
            "ops_per_s": round(stack_ops, 1),
            "raw_ops_per_s": round(raw_ops, 1),
            "ratio": round(statistics.median(pairs[name]), 3),
            "ratio_of_totals": round(stack_ops / raw_ops, 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    n = 100 if args.quick else 1000
    result = {"bench": "card_ops", "quick": args.quick, "iterations": n, "goal_ratio": 1 / 3}
    result.update(asyncio.run(bench(n)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
