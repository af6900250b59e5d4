"""Child-process load driver for the SIGKILL campaign (DESIGN §4, §9; issue 8 item 1).

A simulated terminal in a state directory runs a mixed transaction load — lock, unlock with
authorizations pushed by central or requested online, activation, PIN change, loss report —
across several virtual cards that are swapped in and out of the reader, while the real uplink
(``UplinkSession`` + ``JournalOutbox`` + ``CommandHandler`` + the product's
``agent.uplink.port.SessionUplinkPort``) drains the journal to a broker
where a ``ReferenceCentral`` acks. The parent test SIGKILLs this process at random moments,
takes the broker down and up, restarts it, and finally audits everything with :func:`audit`.

Commands (``python -m tests.reliability._harness <cmd> ...``)::

    drive  --state DIR --broker URL --central-key HEX --kid HEX [--pace S] [--max-ops N]
           runs until killed (or N operations); prints one JSON line ``{"ready": ...}`` when
           the load starts
    settle --state DIR --broker URL --central-key HEX --kid HEX [--timeout S]
           finishes the operation in flight, shows every card to the terminal (in-doubt
           records resolved against the card's real state, an unverifiable PIN change
           confirmed by the citizen), drains the outbox; prints a JSON summary

:func:`init_state` prepares a directory (in the parent, before the first child).

**Determinism across kills.** Operation *i* is chosen by ``Random(f"{seed}:{i}")`` from the
cards' real state (and the authorizations waiting) and written to ``harness/progress.json``
(then listed in ``harness/ops.jsonl``) before any card I/O; its idempotency key is
``op-<seed>-<i>``. A restarted driver first runs
``Recovery.start`` and then retries the operation in flight with the same key — the engine
returns the existing record or runs it for the first time; never twice.

**Ground truth.** Each virtual card is saved after every APDU that changed it together with
its *effect log* in one atomic file (``cards/<id>.json``: the card's ``to_state()`` plus
``harness_effects``, ignored by ``CardStore.load``): every change of lock state, activation
or PIN is appended with the key of the operation running at that moment. A kill lands either
before or after that single ``rename``, so card and log never disagree. :func:`audit`
compares this log with the sealed journal records and with what central stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.errors import (
    AgentError,
    CardRefusedError,
    PolicyRefusal,
    TransactionInDoubtError,
)
from agent.profile import CardProfile, load_profile
from agent.sim.card import VirtualSscCard
from agent.sim.channel import FaultPlan, SimChannel
from agent.sim.factory import CardFactory
from agent.sim.rig import PersistentDevice, SimRig
from agent.sim.store import CardStore, atomic_write
from agent.tx.records import now_ms

if TYPE_CHECKING:
    from agent.journal.store import Journal, TxRow
    from agent.sim.central import ReferenceCentral
    from agent.tx.engine import TxEngine
    from agent.tx.recovery import Recovery

HARNESS = "harness"
EFFECTS_KEY = "harness_effects"
TEST_SSN = "110101199003074514"  # a test ID number (never a real person's)
#: Share of operations that issue a new, not yet activated card (activations need them).
NEW_CARD_P = 0.04
#: Share of card operations whose card is pulled at a random APDU (in-doubt without a kill).
PULL_P = 0.08

log = logging.getLogger("harness")


# --------------------------------------------------------------------------------------------
# Small durable files
# --------------------------------------------------------------------------------------------
def _hdir(state: Path) -> Path:
    return state / HARNESS


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, sort_keys=True).encode())


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def _append_line(path: Path, obj: Any) -> None:
    """One JSON line, fsync'd (a torn last line after a kill is skipped by :func:`_lines`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(obj, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def new_pin(key: str, avoid: str = "") -> str:
    """The PIN a citizen chooses in operation ``key`` (deterministic, never ``avoid``)."""
    n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    pin = f"{n % 1_000_000:06d}"
    return pin if pin != avoid else f"{(n + 1) % 1_000_000:06d}"


# --------------------------------------------------------------------------------------------
# Cards with an effect log
# --------------------------------------------------------------------------------------------
class OpTag:
    """Which operation the terminal is running now (the effect log's attribution)."""

    current = "idle"


def summary(card: VirtualSscCard) -> dict[str, Any]:
    """The business-visible state of a card: what an effect changes."""
    st = card.to_state()
    return {
        "temp": st["temp_locked"],
        "perm": st["perm_locked"],
        "blocked": st["card_blocked"],
        "activated": card.activated,
        "pin": st["pin"],
    }


def effects_between(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the effects that turn summary ``a`` into ``b`` (in the order a flow makes them)."""
    fx = []
    if a["pin"] != b["pin"]:
        fx.append("pin")
    if not a["activated"] and b["activated"]:
        fx.append("activate")
    if a["activated"] and not b["activated"]:
        fx.append("deactivate")
    if not a["temp"] and b["temp"]:
        fx.append("lock")
    if a["temp"] and not b["temp"]:
        fx.append("unlock")
    if a["perm"] != b["perm"]:
        fx.append("perm_lock" if b["perm"] else "perm_unlock")
    if a["blocked"] != b["blocked"]:
        fx.append("card_block")
    return fx


class CardFile:
    """One virtual card and its effect log, saved together atomically after each change."""

    def __init__(self, store: CardStore, key: str, profile: CardProfile, tag: type[OpTag]) -> None:
        self.path = store.path(key)
        self.key = key
        self.tag = tag
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        self.effects: list[list[str]] = raw.pop(EFFECTS_KEY, [])
        self.initial = raw.pop("harness_initial", None)
        self.card = VirtualSscCard.from_state(profile, raw)
        self._last = summary(self.card)
        self.device = PersistentDevice(self.card, self.save)

    @staticmethod
    def create(store: CardStore, card: VirtualSscCard) -> str:
        key = card.card_id_code.hex().upper()
        path = store.path(key)
        if not path.exists():
            state = {**card.to_state(), EFFECTS_KEY: [], "harness_initial": summary(card)}
            _write_json(path, state)
        return key

    def save(self) -> None:
        now = summary(self.card)
        for fx in effects_between(self._last, now):
            self.effects.append([self.tag.current, fx])
        data = {**self.card.to_state(), EFFECTS_KEY: self.effects}
        if self.initial is not None:
            data["harness_initial"] = self.initial
        _write_json(self.path, data)
        self._last = now

    def channel(self, faults: FaultPlan | None = None) -> SimChannel:
        """The card inserted in the reader (a new session)."""
        return SimChannel(self.device, faults=faults)


# --------------------------------------------------------------------------------------------
# The state directory
# --------------------------------------------------------------------------------------------
async def init_state(state: Path, *, seed: int, cards: int, not_activated: int) -> dict[str, Any]:
    """Prepare a terminal: the rig (PSAM, journal, its own spare card), ``cards`` virtual
    cards (``not_activated`` of them not yet activated). Returns the plan."""
    profile = load_profile("default")

    rig = SimRig(state, profile)
    try:
        tid, spare = await rig.terminal_id(), rig.card.card_id_code.hex().upper()
    finally:
        rig.journal.close()
    _hdir(state).mkdir(parents=True, exist_ok=True)
    store = CardStore(state)
    factory = CardFactory(profile, seed=10_000 + seed)
    keys = []
    for n in range(cards):
        card = factory.issue(state="not_activated" if n < not_activated else "active")
        keys.append(CardFile.create(store, card))
    plan = {"seed": seed, "terminal": tid, "spare": spare, "cards": keys}
    _write_json(_hdir(state) / "plan.json", plan)
    _write_json(_hdir(state) / "progress.json", {"next": 0, "op": None})
    return plan


def card_keys(state: Path) -> list[str]:
    """Every load card in the directory (initial and issued during the load)."""
    plan = _read_json(_hdir(state) / "plan.json")
    return [k for k in CardStore(state).keys() if k != plan["spare"]]  # noqa: SIM118 - a method


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
@dataclass
class Driver:
    state: Path
    broker: str
    central_key: bytes
    kid: bytes
    profile: CardProfile = field(default_factory=lambda: load_profile("default"))
    cards: dict[str, CardFile] = field(default_factory=dict)

    async def open(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from agent.tx.recovery import Recovery
        from agent.uplink.commands import CommandHandler, EventReporter, JournalReplayStore
        from agent.uplink.outbox import JournalOutbox
        from agent.uplink.port import SessionUplinkPort
        from agent.uplink.session import UplinkSession, UplinkSettings
        from agent.wire.codec import StatusMessage, ack_ranges
        from agent.wire.commands import CommandVerifier

        self.plan = _read_json(_hdir(self.state) / "plan.json")
        self.seed = int(self.plan["seed"])
        self.rig = SimRig(self.state, self.profile)
        self.journal: Journal = self.rig.journal
        self.store = CardStore(self.state)
        for key in card_keys(self.state):
            self.cards[key] = CardFile(self.store, key, self.profile, OpTag)
        terminal = await self.rig.terminal_id()
        self.terminal = terminal
        # the product's port: an unlock without a pushed authorization asks central online
        self.uplink = SessionUplinkPort(self.journal, terminal, timeout_s=3.0)
        self.engine: TxEngine = await self.rig.engine(uplink=self.uplink)
        self.recovery: Recovery = Recovery(self.engine)
        host, _, port = self.broker.removeprefix("mqtt://").partition(":")
        verifier = CommandVerifier(
            {self.kid: Ed25519PublicKey.from_public_bytes(self.central_key)},
            terminal,
            time.time,
            JournalReplayStore(self.journal),
        )
        reporter = EventReporter(self.journal, terminal)
        handler = CommandHandler(
            verifier,
            self.journal,
            terminal,
            reporter=reporter,
            on_authorization=self.uplink.answered,
        )
        self.outbox = JournalOutbox(self.journal)
        self.session = UplinkSession(
            UplinkSettings(
                terminal=terminal,
                host=host,
                port=int(port),
                window=32,
                backlog_rate=1000.0,
                ack_timeout_s=2.0,
                reconnect_min_s=0.1,
                reconnect_max_s=1.0,
            ),
            self.outbox,
            encode_status=lambda on: StatusMessage(
                terminal, on, "harness", int(time.time())
            ).to_cbor(),
            decode_ack=lambda p: ack_ranges(p, terminal),
            on_command=handler,
            on_event=self.uplink.on_session_event,
        )
        reporter.publisher = self.session.publish
        handler.on_resend = self.session.resend_from
        self.uplink.session = self.session
        report = await self.recovery.start()
        _append_line(
            _hdir(self.state) / "starts.jsonl",
            {
                "pid": os.getpid(),
                "at": now_ms(),
                "in_doubt": list(report.in_doubt),
                "cardless": list(report.resolved_cardless),
                "sealed": report.sealed,
            },
        )
        self.uplink_task = asyncio.create_task(self.session.run(), name="uplink")

    async def close(self) -> None:
        from agent.uplink.session import cancel_and_wait

        # a single cancel can be lost on Python 3.11 and left the settle child waiting
        await cancel_and_wait(self.uplink_task)
        await asyncio.to_thread(self.outbox.flush)
        self.journal.close()

    # ---- choosing operations ----------------------------------------------------------------
    def choose(self, i: int) -> dict[str, Any]:
        """Operation ``i`` from the cards' real state (deterministic for a given state)."""
        rng = random.Random(f"{self.seed}:{i}")
        key = f"op-{self.seed}-{i}"
        if rng.random() < NEW_CARD_P:
            card = CardFactory(self.profile, seed=1_000_000 * (self.seed + 1) + i).issue(
                state="not_activated"
            )
            cid = CardFile.create(self.store, card)
            if cid not in self.cards:
                self.cards[cid] = CardFile(self.store, cid, self.profile, OpTag)
        else:
            cid = rng.choice(sorted(self.cards))
            if not self.can_unlock(cid) and rng.random() < 0.8:
                # a locked citizen comes back once central has authorized the unlock
                cid = rng.choice([k for k in sorted(self.cards) if self.can_unlock(k)] or [cid])
        card = self.cards[cid].card
        st = card.state
        if st == "temp_locked":
            kind = "unlock" if rng.random() < 0.9 else "lock"
        elif st == "not_activated":
            kind = rng.choice(("activate", "activate", "lock"))
        else:
            kind = rng.choices(("lock", "pin_change", "report_loss", "activate"), (40, 35, 17, 8))[
                0
            ]
        op: dict[str, Any] = {"i": i, "key": key, "kind": kind, "card": cid}
        if kind in ("pin_change", "activate"):
            op["old"] = card.pin
            op["new"] = new_pin(key, avoid=card.pin)
        if kind != "report_loss" and rng.random() < PULL_P:
            op["pull"] = [rng.randrange(0, 24), rng.random() < 0.5]
        return op

    def can_unlock(self, cid: str) -> bool:
        """Not locked, or locked with an unlock authorization from central waiting."""
        if self.cards[cid].card.state != "temp_locked":
            return True
        return self.journal.find_valid_authorization(cid, "unlock") is not None

    # ---- running them -----------------------------------------------------------------------
    async def see(self, cid: str) -> None:
        """The card is inserted: resolve its in-doubt records; an unverifiable PIN operation
        is confirmed by the citizen entering the new PIN (``Recovery.confirm_pin``)."""
        from agent.tx.records import Kind

        cf = self.cards[cid]
        sight = await self.recovery.on_card_seen(cf.channel(), auto_lock=False)
        for tx_id in sight.still_in_doubt:
            row = self.journal.get(tx_id)
            if row is None or row.kind != Kind.PIN_CHANGE.value or row.idempotency_key is None:
                continue
            op = self.op_by_key(row.idempotency_key)
            await self.recovery.confirm_pin(cf.channel(), tx_id, op["new"])

    def op_by_key(self, key: str) -> dict[str, Any]:
        for op in reversed(_lines(_hdir(self.state) / "ops.jsonl")):
            if op["key"] == key:
                return op
        raise KeyError(key)

    async def run_op(self, op: dict[str, Any]) -> str:
        key, kind, cid = op["key"], op["kind"], op["card"]
        OpTag.current = key
        eng = self.engine
        try:
            if kind == "report_loss":
                await eng.report_loss(
                    TEST_SSN, "A" + cid[-8:], card_id_code=cid, idempotency_key=key
                )
                return "done"
            await self.see(cid)
            faults = None
            if "pull" in op:
                faults = FaultPlan().pull(op["pull"][0], processed=bool(op["pull"][1]))
            ch = self.cards[cid].channel(faults)
            if kind == "lock":
                await eng.lock(ch, idempotency_key=key)
            elif kind == "unlock":
                await eng.unlock(ch, idempotency_key=key, card_id_code=cid)
            elif kind == "activate":
                await eng.activate(ch, op["old"], op["new"], idempotency_key=key)
            elif kind == "pin_change":
                await eng.pin_change(ch, op["old"], op["new"], idempotency_key=key)
            else:
                raise AssertionError(kind)
        except TransactionInDoubtError:
            await self.see(cid)  # the card is put back at once
            return "in_doubt"
        except CardRefusedError as err:
            return f"failed:{err.code}"
        except PolicyRefusal as err:
            return f"refused:{err.code}"
        except AgentError as err:  # a pulled card before any write: failed, not_sent
            await self.see(cid)
            return f"error:{err.code}"
        finally:
            OpTag.current = "idle"
        return "done"

    async def step(self, i: int, op: dict[str, Any] | None) -> None:
        hd = _hdir(self.state)
        if op is None:
            # chosen from the state now (authorizations arrive at any time): in flight first,
            # then listed; a restart lists the op in flight again (identical lines collapse)
            op = self.choose(i)
            _write_json(hd / "progress.json", {"next": i, "op": op})
        _append_line(hd / "ops.jsonl", op)
        outcome = await self.run_op(op)
        _append_line(hd / "outcomes.jsonl", {"i": i, "key": op["key"], "outcome": outcome})
        _write_json(hd / "progress.json", {"next": i + 1, "op": None})

    async def drive(self, pace: float, max_ops: int | None) -> None:
        progress = _read_json(_hdir(self.state) / "progress.json")
        i, op = int(progress["next"]), progress.get("op")
        sys.stdout.write(json.dumps({"ready": os.getpid(), "next": i}) + "\n")
        sys.stdout.flush()
        while max_ops is None or i < max_ops:
            await self.step(i, op)
            i, op = i + 1, None
            await asyncio.sleep(pace)

    async def settle(self, limit_s: float) -> dict[str, Any]:
        progress = _read_json(_hdir(self.state) / "progress.json")
        if progress.get("op") is not None:  # the operation a kill interrupted
            await self.step(int(progress["next"]), progress["op"])
        OpTag.current = "settle"
        for cid in sorted(self.cards):
            await self.see(cid)
        OpTag.current = "idle"
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.outbox.unacked_count) == 0:
                break
            await asyncio.sleep(0.1)
        stats = self.journal.stats()
        return {
            "unacked": stats.unacked,
            "in_doubt": stats.in_doubt,
            "open_intents": stats.open_intents,
            "last_seq": stats.last_seq,
            "transactions": stats.transactions,
            "connects": self.session.stats.connects,
        }


# --------------------------------------------------------------------------------------------
# The audit (parent side)
# --------------------------------------------------------------------------------------------
@dataclass
class Audit:
    """What was tried and what was lost; ``problems`` empty means nothing was."""

    ops: int = 0
    records: int = 0
    effects: int = 0
    lost: int = 0
    duplicates: int = 0
    in_doubt_resolved: int = 0
    unverifiable_claims: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    central_records: int = 0
    central_redeliveries: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str, *, lost: bool = False, duplicate: bool = False) -> None:
        self.problems.append(text)
        self.lost += lost
        self.duplicates += duplicate


#: For each kind, the effects a ``done`` and a ``failed`` record may stand for.
_EXPECT: dict[str, tuple[list[list[str]], list[list[str]]]] = {
    "lock": ([["lock"]], [[]]),
    "auto_lock": ([["lock"]], [[]]),
    "unlock": ([["unlock"]], [[]]),
    "pin_change": ([["pin"]], [[]]),
    # activation: PIN change first, then the status record; a failure after the PIN change
    # leaves the new PIN (the record says so: "pin_changed" or "pin_unverifiable")
    "activate": ([["pin", "activate"]], [[], ["pin"]]),
    "report_loss": ([[]], [[]]),
}


def _journal(state: Path) -> Journal:
    from agent.journal.store import Journal
    from agent.tx.machine import TABLE

    return Journal(state / "journal.db", transitions=cast("Any", TABLE))


def audit(
    state: Path,
    central: ReferenceCentral | None = None,
    *,
    terminal: str | None = None,
    delivered: bool = True,
) -> Audit:
    """Compare the cards' effect logs, the journal and central (see the module docstring).
    ``delivered=False``: the journal had no uplink, records end sealed rather than acked."""
    from agent.psam.soft import verify_seal

    a = Audit()
    profile = load_profile("default")
    hd = _hdir(state)
    plan = _read_json(hd / "plan.json")
    tid = terminal or plan["terminal"]

    # operations: one line per chosen op; a re-chosen one must be identical
    ops: dict[str, dict[str, Any]] = {}
    for op in _lines(hd / "ops.jsonl"):
        prev = ops.setdefault(op["key"], op)
        if prev != op:
            a.problem(f"{op['key']}: chosen differently after a restart: {prev} vs {op}")
    a.ops = len(ops)
    a.outcomes = dict(Counter(o["outcome"].split(":")[0] for o in _lines(hd / "outcomes.jsonl")))

    # effects, from the cards' own logs
    effects: dict[str, list[str]] = defaultdict(list)
    store = CardStore(state)
    for key in card_keys(state):
        raw = json.loads(store.path(key).read_text(encoding="utf-8"))
        log_ = raw.get(EFFECTS_KEY, [])
        a.effects += len(log_)
        for op_key, fx in log_:
            if op_key not in ops:
                a.problem(f"card {key}: effect {fx} outside any operation ({op_key})", lost=True)
            effects[op_key].append(fx)
        initial = raw.get("harness_initial")
        if initial is not None:  # replaying the log from the issued state gives the card now
            now = summary(VirtualSscCard.from_state(profile, raw))
            replay = dict(initial)
            for _, fx in log_:
                _apply(replay, fx)
            if {k: replay[k] for k in ("temp", "perm", "blocked", "activated")} != {
                k: now[k] for k in ("temp", "perm", "blocked", "activated")
            }:
                a.problem(f"card {key}: effect log does not replay to the card's state")

    # journal: chain and MACs, every record sealed and acked, one record per key
    j = _journal(state)
    try:
        tn = bytes.fromhex(tid)
        report = j.verify_chain(lambda d, m: verify_seal(profile, tn, d, m))
        if not report.ok:
            a.problem(f"journal chain: {report}", lost=True)
        stats = j.stats()
        if stats.open_intents or stats.in_doubt:
            a.problem(f"journal: {stats.open_intents} open, {stats.in_doubt} in doubt")
        if stats.unacked and delivered:
            a.problem(f"journal: {stats.unacked} records still in the outbox")
        rows: list[TxRow] = j.records(limit=10**9)
    finally:
        j.close()
    a.records = len(rows)
    a.kinds = dict(Counter(r.kind for r in rows))
    by_key: dict[str, list[TxRow]] = defaultdict(list)
    for r in rows:
        if r.state != ("acked" if delivered else "sealed"):
            a.problem(f"{r.tx_id} ({r.kind}) ended {r.state}", lost=True)
        if r.idempotency_key is None:
            a.problem(f"{r.tx_id} ({r.kind}) has no idempotency key (no op asked for it)")
            continue
        by_key[r.idempotency_key].append(r)
        if r.result and "unverifiable" in r.result:
            a.unverifiable_claims += 1
    for key, recs in by_key.items():
        if len(recs) > 1:
            a.problem(f"{key}: {len(recs)} records", duplicate=True)
        if key not in ops:
            a.problem(f"{key}: record without an operation")
    for key, op in ops.items():
        fx = effects.get(key, [])
        recs = by_key.get(key, [])
        if not recs:
            if fx:
                a.problem(f"{key} ({op['kind']}): card effects {fx} without a record", lost=True)
            continue
        rec = recs[0]
        if rec.kind != op["kind"]:
            a.problem(f"{key}: record kind {rec.kind}, operation {op['kind']}")
            continue
        done_fx, failed_fx = _EXPECT[rec.kind]
        allowed = done_fx if rec.outcome == "done" else failed_fx
        if fx not in allowed:
            a.problem(
                f"{key} ({rec.kind}): record {rec.outcome}/{rec.result} but card effects {fx}",
                lost=bool(fx) and rec.outcome != "done",
            )
        partial = rec.kind == "activate" and rec.outcome == "failed" and fx == ["pin"]
        if partial and (not rec.result or "pin" not in rec.result):
            a.problem(f"{key}: activation changed the PIN, record says {rec.result}")
    a.in_doubt_resolved = sum(
        len(s.get("in_doubt", [])) for s in _lines(hd / "starts.jsonl")
    ) + sum(1 for o in _lines(hd / "outcomes.jsonl") if o["outcome"] == "in_doubt")

    # central: every sealed record exactly once, byte for byte, chain contiguous, no alerts
    if central is not None:
        sealed = {r.seq: r.hash for r in rows if r.seq is not None}
        got = central.records(tid)
        a.central_records = len(got)
        a.central_redeliveries = sum(int(r["duplicates"]) for r in got)
        seqs = [r["seq"] for r in got]
        if seqs != sorted(sealed):
            missing = sorted(set(sealed) - set(seqs))
            a.problem(f"central: missing seqs {missing[:20]}", lost=bool(missing))
            if len(seqs) != len(set(seqs)):
                a.problem("central: a seq stored twice", duplicate=True)
        for r in got:
            h = sealed.get(r["seq"])
            if h is None or bytes.fromhex(r["digest"]) != h:
                a.problem(f"central: seq {r['seq']} differs from the journal")
            if r["chain"] != "ok":
                a.problem(f"central: seq {r['seq']} chain {r['chain']}")
        n = len(sealed)
        if central.chain_state(tid) != (n, n):
            a.problem(f"central chain state {central.chain_state(tid)}, journal {n}")
        for alert in central.alerts():
            a.problem(f"central alert: {alert}")
    return a


def _apply(s: dict[str, Any], fx: str) -> None:
    if fx == "lock":
        s["temp"] = True
    elif fx == "unlock":
        s["temp"] = False
    elif fx == "activate":
        s["activated"] = True
    elif fx == "deactivate":
        s["activated"] = False
    elif fx in ("perm_lock", "perm_unlock"):
        s["perm"] = fx == "perm_lock"
    elif fx == "card_block":
        s["blocked"] = not s["blocked"]


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.reliability._harness")
    p.add_argument("command", choices=("drive", "settle"))
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--central-key", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--pace", type=float, default=0.005)
    p.add_argument("--max-ops", type=int)
    p.add_argument("--timeout", type=float, default=60.0)
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    d = Driver(args.state, args.broker, bytes.fromhex(args.central_key), bytes.fromhex(args.kid))
    await d.open()
    try:
        if args.command == "drive":
            await d.drive(args.pace, args.max_ops)
            return 0
        out = await d.settle(args.timeout)
    finally:
        await d.close()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if out["unacked"] == 0 and out["in_doubt"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    return asyncio.run(_main(_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
