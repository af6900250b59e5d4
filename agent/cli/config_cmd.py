"""``ssc-agent config check FILE``: validate a config without starting anything (DESIGN §8).
``ssc-agent config central [--clear KEY]... [--clear-all] [--state-dir DIR] [--json]``: the
settings central changed with ``config_set``, which the agent keeps in its journal and lays
over the config file at start; ``--clear`` forgets them, so the file rules again from the next
start (docs/DEPLOY.md "Settings from central").

Prints ``FILE: ok`` (or ``{"ok": true}`` with ``--json``) and exits 0; otherwise prints every
error, one per line as ``FILE:LINE: key: message`` (or ``{"ok": false, "errors": [{"key",
"line", "message"}]}``), and exits 1. Environment overrides (``SSC_AGENT__SECTION__KEY``) are
applied, as ``ssc-agent run`` would.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_FAILED, EXIT_OK, print_json
from agent.cli.journal_cmd import DEFAULT_STATE_DIR, journal_handler
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.journal.store import Journal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser("config", help="check a config file; central's settings")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="validate a config file; list every error")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--json", action="store_true", help="one-line JSON")
    check.set_defaults(handler=_check)
    central = sub.add_parser(
        "central", help="settings central changed (kept in the journal; they win over the file)"
    )
    central.add_argument("--clear", action="append", metavar="KEY", help="forget this one")
    central.add_argument("--clear-all", action="store_true", help="forget them all")
    central.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory")
    central.add_argument("--json", action="store_true", help="one-line JSON")
    central.set_defaults(handler=journal_handler(_central))


def _central(args: argparse.Namespace, journal: Journal) -> tuple[dict[str, Any], bool]:
    from agent.uplink.commands import CentralSettings

    store = CentralSettings(journal)
    if args.clear_all or args.clear:
        cleared = store.clear(None if args.clear_all else list(args.clear))
        return {"cleared": cleared, "settings": store.load()}, True
    return {"settings": store.load()}, True


def _check(args: argparse.Namespace) -> int:
    from agent.config import ConfigErrors, load_config

    try:
        load_config(args.file)
    except ConfigErrors as err:
        if args.json:
            print_json(
                {
                    "ok": False,
                    "errors": [
                        {"key": i.key, "line": i.line, "message": i.message} for i in err.issues
                    ],
                }
            )
        else:
            for i in err.issues:
                where = f"{args.file}:{i.line}" if i.line else args.file
                sys.stdout.write(f"{where}: {i.key}: {i.message}\n")
        return EXIT_FAILED
    except AgentError as err:
        if args.json:
            print_json(
                {"ok": False, "errors": [{"key": "<file>", "line": None, "message": err.message}]}
            )
        else:
            sys.stdout.write(f"{args.file}: {err.message}\n")
        return EXIT_FAILED
    if args.json:
        print_json({"ok": True})
    else:
        sys.stdout.write(f"{args.file}: ok\n")
    return EXIT_OK
