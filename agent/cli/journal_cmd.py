"""``ssc-agent journal``: inspect and verify the transaction journal (DESIGN §4, §8).

    ssc-agent journal list   [--state STATE] [--limit N] [--json] [--state-dir DIR]
    ssc-agent journal show TX_ID [--show-pii] [--json] [--state-dir DIR]
    ssc-agent journal verify [--profile NAME] [--json] [--state-dir DIR]
    ssc-agent journal export [--show-pii] [--json] [--state-dir DIR]

``verify`` walks the sealed-record chain (gapless seq, ``prev_hash`` links, canonical bodies,
SHA-256) and checks every record MAC with the profile's **test** seal key
(``agent.psam.soft.verify_seal``; the terminal number is the record's ``terminal_id``). With a
production profile (no test keys) only the chain is checked and ``macs`` says
``not_checked``. Exit 1 on a break. ``export`` prints every sealed record (body hex, hash,
MAC and the decoded body). Personal data beside loss reports is masked unless ``--show-pii``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_FAILED, EXIT_OK, print_json, report_error
from agent.errors import AgentError, ConfigError, JournalError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.journal.store import Journal

DEFAULT_STATE_DIR = "var/agent"
JOURNAL_FILE = "journal.db"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jp = subparsers.add_parser("journal", help="list, show, verify or export the journal")
    sub = jp.add_subparsers(dest="journal_command", metavar="ACTION")
    sub.required = True
    lst = sub.add_parser("list", help="transaction records, newest first")
    lst.add_argument("--state", help="only records in this state")
    lst.add_argument("--limit", type=int, default=100)
    show = sub.add_parser("show", help="one record with its sealed body")
    show.add_argument("tx_id")
    show.add_argument("--show-pii", action="store_true", help="do not mask personal data")
    verify = sub.add_parser("verify", help="check the hash chain and the record MACs")
    verify.add_argument("--profile", default="default", help="card profile (test seal keys)")
    export = sub.add_parser("export", help="every sealed record")
    export.add_argument("--show-pii", action="store_true", help="do not mask personal data")
    for p, fn in ((lst, _list), (show, _show), (verify, _verify), (export, _export)):
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory")
        p.add_argument("--json", action="store_true", help="one-line JSON")
        p.set_defaults(handler=journal_handler(fn))


def _open(args: argparse.Namespace) -> Journal:
    from agent.journal.store import Journal
    from agent.tx.machine import TABLE

    path = Path(args.state_dir) / JOURNAL_FILE
    if not path.is_file():
        raise ConfigError(f"no journal at {path}")
    return Journal(path, transitions=TABLE)  # type: ignore[arg-type]


def journal_handler(fn: Any) -> Any:
    """A CLI handler that opens the journal of ``--state-dir``, calls ``fn(args, journal)`` for
    ``(result, ok)``, and prints the result (``--json``: one line)."""

    def handler(args: argparse.Namespace) -> int:
        try:
            journal = _open(args)
            try:
                result, ok = fn(args, journal)
            finally:
                journal.close()
        except AgentError as err:
            return report_error(err, as_json=args.json)
        if args.json:
            print_json(result)
        else:
            sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK if ok else EXIT_FAILED

    return handler


def _masked(personal: Mapping[str, str] | None, show: bool) -> dict[str, str] | None:
    from agent.privacy import mask_card_number, mask_name, mask_ssn

    if not personal:
        return None
    if show:
        return dict(personal)

    def stars(value: str) -> str:
        return "*" * len(value)

    maskers = {"ssn": mask_ssn, "name": mask_name, "card_number": mask_card_number}
    return {k: maskers.get(k, stars)(v) for k, v in personal.items()}


def _list(args: argparse.Namespace, journal: Journal) -> tuple[Any, bool]:
    from agent.tx.engine import record_to_json
    from agent.tx.records import TxRecord

    rows = journal.records(args.state, limit=args.limit)
    return {"records": [record_to_json(TxRecord.from_row(r)) for r in rows]}, True


def _show(args: argparse.Namespace, journal: Journal) -> tuple[Any, bool]:
    from agent.journal.codec import decode_body
    from agent.tx.engine import record_to_json
    from agent.tx.records import TxRecord

    row = journal.get(args.tx_id)
    if row is None:
        raise JournalError(f"no transaction {args.tx_id}")
    out = record_to_json(TxRecord.from_row(row))
    out["personal"] = _masked(row.personal, args.show_pii)
    sealed = journal.sealed_record(row.seq) if row.seq is not None else None
    if sealed is not None:
        out["sealed"] = _sealed_json(sealed, decode_body)
    return out, True


def _sealed_json(sealed: Any, decode: Any) -> dict[str, Any]:
    body = decode(sealed.body)
    fields = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in body.items()}
    return {
        "seq": sealed.seq,
        "delivery": sealed.state,
        "body": sealed.body.hex(),
        "hash": sealed.hash.hex(),
        "prev_hash": sealed.prev_hash.hex(),
        "mac": sealed.mac.hex(),
        "fields": fields,
    }


def _verify(args: argparse.Namespace, journal: Journal) -> tuple[Any, bool]:
    from agent.errors import SecurityModuleError
    from agent.journal.codec import decode_body
    from agent.profile import load_profile
    from agent.psam.soft import verify_seal

    profile = load_profile(args.profile)
    terminal: dict[bytes, bytes] = {}  # digest -> terminal number, filled lazily per record
    macs = "verified"
    if not profile.test_master_keys.get("sm4", {}).get("seal"):
        macs = "not_checked"

    def verify_mac(digest: bytes, mac: bytes) -> bool:
        tn = terminal.get(digest)
        if tn is None:
            return False
        try:
            return verify_seal(profile, tn, digest, mac)
        except SecurityModuleError:
            return False

    seq = 1
    last = journal.last_seq()
    while seq <= last:  # map each digest to its record's terminal number
        sealed = journal.sealed_record(seq)
        if sealed is not None:
            try:
                tid = decode_body(sealed.body)["terminal_id"]
                terminal[sealed.hash] = bytes.fromhex(tid)
            except (AgentError, ValueError):
                pass  # verify_chain reports the bad body itself
        seq += 1
    report = journal.verify_chain(verify_mac if macs == "verified" else None)
    out = {
        "ok": report.ok,
        "checked": report.checked,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "bad_seq": report.bad_seq,
        "reason": report.reason,
        "macs": macs,
    }
    return out, report.ok


def _export(args: argparse.Namespace, journal: Journal) -> tuple[Any, bool]:
    from agent.journal.codec import decode_body

    records = []
    for seq in range(1, journal.last_seq() + 1):
        sealed = journal.sealed_record(seq)
        if sealed is None:
            continue  # pruned
        entry = _sealed_json(sealed, decode_body)
        entry["tx_id"] = sealed.tx_id
        entry["personal"] = _masked(sealed.personal, args.show_pii)
        records.append(entry)
    return {"records": records}, True
