"""``ssc-agent tx``: run one card transaction through the transaction engine (DESIGN §4, §8).

    ssc-agent tx lock         --sim [--reason holder|blacklist|central]
    ssc-agent tx unlock       --sim [--card-id-code HEX]
    ssc-agent tx report-loss  --sim --ssn ID --card-number NO [--name NAME]
    ssc-agent tx activate     --sim --pin OLD --new-pin NEW
    ssc-agent tx pin-change   --sim --pin OLD --new-pin NEW
    ssc-agent tx pin-reset    --sim --new-pin NEW
    ssc-agent tx pin-unblock  --sim --new-pin NEW
    ssc-agent tx bank-activate --sim --online
    common: (--sim | --reader GLOB --psam GLOB) [--state-dir DIR] [--profile NAME] [--json]
            [--online | --offline] [--idempotency-key K]

``--sim`` runs on ``agent.sim.rig.SimRig`` in the state directory (the card store that
``ssc-agent card --sim`` uses, a persisted virtual PSAM, ``journal.db``), so separate commands
see the same card and the same journal. ``--online`` there means the in-process fake central
(``agent.tx.ports.FakeUplink``) is reachable and grants the authorizations it is asked for; the
default is ``--offline`` (a pushed authorization in the journal is then needed for unlock and PIN
reset/unblock). On PC/SC readers the command always runs offline: only the agent daemon holds
the uplink to the real central.

Before the operation the command does what the agent does when a card is inserted: start-up
recovery (open intents → in doubt, unsealed records sealed) and ``Recovery.on_card_seen``
(in-doubt records of this card resolved, blacklist check → auto lock).

Output: exit 0 and the record (``tx_id``, ``seq``, ``kind``, ``state``, ``outcome``, ``result``,
``card_id_code``, ``offline``, ``reason``, ...). Refusal or failure: exit 1 and ``{"error":
{"code", "message"}}`` (plus ``"record"`` when one was journaled: a card refusal or an in-doubt
outcome). No personal data is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_FAILED, EXIT_OK, print_json
from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel
    from agent.journal.store import Journal
    from agent.tx.engine import TxEngine
    from agent.tx.records import TxRecord
    from agent.tx.recovery import Sighting

DEFAULT_STATE_DIR = "var/agent"
JOURNAL_FILE = "journal.db"

OPERATIONS = (
    "lock",
    "unlock",
    "report-loss",
    "activate",
    "pin-change",
    "pin-reset",
    "pin-unblock",
    "bank-activate",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tx = subparsers.add_parser("tx", help="run a card transaction (lock, unlock, PIN, ...)")
    sub = tx.add_subparsers(dest="tx_command", metavar="OPERATION")
    sub.required = True
    helps = {
        "lock": "lock the social-security application (always allowed)",
        "unlock": "unlock it (needs an authorization from central)",
        "report-loss": "report a card lost (card absent; queued offline)",
        "activate": "activate the social-security function (changes the initial PIN)",
        "pin-change": "change the PIN (old PIN verified by the card)",
        "pin-reset": "reset the PIN (needs an authorization from central)",
        "pin-unblock": "unblock the PIN (needs an authorization from central)",
        "bank-activate": "activate the bank account through the bank host (online only)",
    }
    for op in OPERATIONS:
        p = sub.add_parser(op, help=helps[op])
        _common_options(p)
        if op == "lock":
            p.add_argument("--reason", choices=("holder", "blacklist", "central"), default="holder")
        if op == "unlock":
            p.add_argument("--card-id-code", help="card identification code of a locked card")
        if op == "report-loss":
            p.add_argument("--ssn", required=True, help="the holder's ID number")
            p.add_argument("--card-number", required=True, help="the card number")
            p.add_argument("--name", help="the holder's name")
            p.add_argument("--card-id-code", help="card identification code, if known")
        if op in ("activate", "pin-change"):
            p.add_argument("--pin", required=op == "pin-change", help="the current PIN")
            p.add_argument("--new-pin", required=op == "pin-change", help="the new PIN")
        if op in ("pin-reset", "pin-unblock"):
            p.add_argument("--new-pin", required=True, help="the new PIN")
        p.set_defaults(handler=_handler, operation=op)


def _common_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", action="store_true", help="use the simulated terminal")
    where.add_argument("--reader", metavar="GLOB", help="PC/SC reader name glob of the card")
    p.add_argument("--psam", metavar="GLOB", help="PC/SC reader name glob of the PSAM slot")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory")
    p.add_argument("--profile", default="default", help="card profile name or path")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    net = p.add_mutually_exclusive_group()
    net.add_argument("--online", dest="online", action="store_true", help="central reachable")
    net.add_argument("--offline", dest="online", action="store_false", help="central away")
    p.set_defaults(online=False)
    p.add_argument("--idempotency-key", metavar="K", help="same key twice: one card change")


# --- terminal --------------------------------------------------------------------------------
@dataclass
class _Terminal:
    engine: TxEngine
    channel: CardChannel
    journal: Journal


@contextlib.asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[_Terminal]:
    from agent.profile import load_profile

    profile = load_profile(args.profile)
    if args.sim:
        if args.psam:
            raise ConfigError("--psam is for PC/SC; --sim uses the virtual PSAM")
        from agent.sim.rig import SimBankHost, SimRig

        async with SimRig(Path(args.state_dir), profile) as rig:
            bank = SimBankHost(online=args.online)
            engine = await rig.engine(online=args.online, bank=bank)
            yield _Terminal(engine, rig.card_channel, rig.journal)
        return
    if args.online:
        raise ConfigError("--online needs the agent's uplink; on PC/SC readers tx runs offline")
    if not args.psam:
        raise ConfigError("--reader needs --psam: card writes are MAC'd by the PSAM")
    from agent.cli.card_cmd import _open_pcsc
    from agent.journal.store import Journal
    from agent.tx.engine import TxEngine
    from agent.tx.machine import TABLE
    from agent.tx.ports import FakeUplink

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # once, at command start
    journal = Journal(state / JOURNAL_FILE, transitions=TABLE)  # type: ignore[arg-type]
    try:
        async with _open_pcsc(args.reader, args.psam, profile) as devices:
            assert devices.sam is not None  # --psam given
            terminal = (await devices.sam.terminal_number()).hex()
            engine = TxEngine(
                journal, devices.sam, profile, None, FakeUplink(journal, online=False), terminal
            )
            yield _Terminal(engine, devices.card, journal)
    finally:
        journal.close()


# --- handler ---------------------------------------------------------------------------------
def _flow(args: argparse.Namespace, t: _Terminal) -> Callable[[], Awaitable[TxRecord]]:
    e, ch, key = t.engine, t.channel, args.idempotency_key
    op = args.operation
    flows: dict[str, Callable[[], Awaitable[TxRecord]]] = {
        "lock": lambda: e.lock(ch, getattr(args, "reason", "holder"), idempotency_key=key),
        "unlock": lambda: e.unlock(
            ch, idempotency_key=key, card_id_code=getattr(args, "card_id_code", None)
        ),
        "report-loss": lambda: e.report_loss(
            args.ssn,
            args.card_number,
            args.name,
            card_id_code=args.card_id_code,
            idempotency_key=key,
        ),
        "activate": lambda: e.activate(
            ch, getattr(args, "pin", None), getattr(args, "new_pin", None), idempotency_key=key
        ),
        "pin-change": lambda: e.pin_change(ch, args.pin, args.new_pin, idempotency_key=key),
        "pin-reset": lambda: e.pin_reset(ch, args.new_pin, idempotency_key=key),
        "pin-unblock": lambda: e.pin_unblock(ch, args.new_pin, idempotency_key=key),
        "bank-activate": lambda: e.bank_activate(ch, idempotency_key=key),
    }
    return flows[op]


def _sighting_json(s: Sighting | None) -> list[dict[str, Any]]:
    if s is None:
        return []
    return [
        {"tx_id": r.tx_id, "kind": r.kind, "verdict": r.verdict, "result": r.result}
        for r in s.resolutions
    ]


def _handler(args: argparse.Namespace) -> int:
    from agent.tx.engine import record_to_json
    from agent.tx.recovery import Recovery

    async def main() -> dict[str, Any]:
        async with _open(args) as t:
            recovery = Recovery(t.engine)
            await recovery.start()
            sighting = None
            if args.operation != "report-loss":
                sighting = await recovery.on_card_seen(t.channel)
            rec = await _flow(args, t)()
            out = record_to_json(rec)
            resolved = _sighting_json(sighting)
            if resolved:
                out["resolved"] = resolved
            if sighting is not None and sighting.auto_lock is not None:
                out["auto_lock"] = record_to_json(sighting.auto_lock)
            return out

    try:
        result = asyncio.run(main())
    except AgentError as err:
        return _report(err, as_json=args.json)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return EXIT_OK


def _report(err: AgentError, *, as_json: bool) -> int:
    from agent.tx.engine import record_to_json
    from agent.tx.records import TxRecord

    out: dict[str, Any] = {"error": err.to_dict()}
    record = getattr(err, "record", None)
    if isinstance(record, TxRecord):
        out["record"] = record_to_json(record)
    if as_json:
        print_json(out)
    else:
        sys.stderr.write(f"ssc-agent: {err.code}: {err.message}\n")
        if "record" in out:
            sys.stderr.write(json.dumps(out["record"], ensure_ascii=False, indent=2) + "\n")
    return EXIT_FAILED
