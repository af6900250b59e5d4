"""``ssc-agent sim``: the simulated terminal as real hardware, and its control commands.

    ssc-agent sim up [--state-dir DIR] [--vpcd-port P] [--no-printer] [--json] [--profile NAME]
    ssc-agent sim status
    ssc-agent sim card list | issue [--algorithm des|sm4] [--state S] [--seed N]
    ssc-agent sim card insert [--card KEY | --new [--algorithm des|sm4] [--state S]]
    ssc-agent sim card remove | swap KEY
    ssc-agent sim printer fault paper_out|cover_open|offline|near_end|error|silent|clear
                                [--after-bytes N]

``sim up`` attaches the virtual card to vpcd port P (default 35963, Debian's "Virtual PCD
00 00"), the PSAM to P+1 ("Virtual PCD 00 01") and the printer to a pty (also the symlink
``DIR/printer``). Once everything is attached it prints, with ``--json``, one line
``{"card_reader", "psam_reader", "printer", "control"}``, then runs until SIGINT or SIGTERM
(exit 0). Every other ``sim`` command talks to it over ``DIR/control.sock`` (the line-delimited
JSON protocol of ``agent.sim.terminal``) and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from agent.cli._common import EXIT_OK, print_json, report_error
from agent.errors import AgentError

DEFAULT_STATE_DIR = "var/sim"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = subparsers.add_parser("sim", help="simulated terminal: card, PSAM, printer")
    sub = sim.add_subparsers(dest="sim_command", metavar="ACTION")
    sub.required = True

    up = sub.add_parser("up", help="attach the simulators as PC/SC readers and a serial printer")
    _state_dir(up)
    up.add_argument("--vpcd-port", type=int, default=35963, help="vpcd port of the card reader")
    up.add_argument("--vpcd-host", default="127.0.0.1", help="host where pcscd's vpcd listens")
    up.add_argument("--no-printer", action="store_true", help="no simulated printer")
    up.add_argument("--profile", default="default", help="card profile name or path")
    up.add_argument("--json", action="store_true", help="one JSON line when attached")
    up.add_argument(
        "--attach-timeout", type=float, default=30.0, help="seconds to wait for vpcd to listen"
    )
    up.set_defaults(handler=_up_handler)

    status = sub.add_parser("status", help="state of the running simulated terminal")
    _state_dir(status)
    status.set_defaults(handler=_control_handler, op="status", build=_no_args)

    card = sub.add_parser("card", help="insert, remove, swap, list and issue virtual cards")
    csub = card.add_subparsers(dest="card_command", metavar="ACTION")
    csub.required = True
    insert = csub.add_parser("insert", help="insert a stored card (default: the last one)")
    _state_dir(insert)
    which = insert.add_mutually_exclusive_group()
    which.add_argument("--card", metavar="KEY", help="card key (card identification code)")
    which.add_argument("--new", action="store_true", help="issue a new card and insert it")
    _issue_options(insert)
    insert.set_defaults(handler=_control_handler, op="card.insert", build=_insert_args)
    remove = csub.add_parser("remove", help="pull the card out of the reader")
    _state_dir(remove)
    remove.set_defaults(handler=_control_handler, op="card.remove", build=_no_args)
    swap = csub.add_parser("swap", help="pull the card and insert another stored card")
    _state_dir(swap)
    swap.add_argument("key", metavar="KEY", help="card key of the card to insert")
    swap.set_defaults(handler=_control_handler, op="card.swap", build=_swap_args)
    lst = csub.add_parser("list", help="stored cards (no personal data)")
    _state_dir(lst)
    lst.set_defaults(handler=_control_handler, op="card.list", build=_no_args)
    issue = csub.add_parser("issue", help="issue a new card into the store (not inserted)")
    _state_dir(issue)
    _issue_options(issue)
    issue.add_argument("--spec-version", default=None, help="e.g. 3.00 or 2.00")
    issue.add_argument("--area-code", default=None, help="6-digit issuing area code")
    issue.add_argument("--seed", type=int, default=None, help="deterministic factory seed")
    issue.set_defaults(handler=_control_handler, op="card.issue", build=_issue_args)

    printer = sub.add_parser("printer", help="printer fault injection")
    psub = printer.add_subparsers(dest="printer_command", metavar="ACTION")
    psub.required = True
    fault = psub.add_parser("fault", help="set or clear a printer fault")
    _state_dir(fault)
    fault.add_argument(
        "fault",
        choices=("paper_out", "cover_open", "offline", "near_end", "error", "silent", "clear"),
    )
    fault.add_argument(
        "--after-bytes", type=int, default=None, metavar="N", help="apply after N more bytes"
    )
    fault.set_defaults(handler=_control_handler, op="printer.fault", build=_fault_args)


def _state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="simulator state directory")


def _issue_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algorithm", choices=("des", "sm4"), default=None, help="card algorithm")
    p.add_argument(
        "--state", choices=("active", "not_activated"), default=None, help="lifecycle at issue"
    )


# --- control commands ------------------------------------------------------------------------
def _no_args(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def _issue_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("algorithm", "state", "spec_version", "area_code", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _insert_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.new:
        return {"new": True, **_issue_args(args)}
    return {"key": args.card} if args.card else {}


def _swap_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"key": args.key}


def _fault_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"fault": args.fault}
    if args.after_bytes is not None:
        out["after_bytes"] = args.after_bytes
    return out


def _control_handler(args: argparse.Namespace) -> int:
    from agent.sim.terminal import control_request

    try:
        result = control_request(args.state_dir, args.op, args.build(args))
    except AgentError as err:
        return report_error(err, as_json=True)
    print_json(result)
    return EXIT_OK


# --- sim up ----------------------------------------------------------------------------------
def _up_handler(args: argparse.Namespace) -> int:
    from agent.logs import setup_logging
    from agent.sim.terminal import SimTerminal

    # stdout carries the one JSON line; logs go to stderr
    setup_logging("INFO", json_lines=args.json, stream=sys.stderr)

    async def main() -> None:
        terminal = SimTerminal(
            args.state_dir,
            profile=args.profile,
            host=args.vpcd_host,
            vpcd_port=args.vpcd_port,
            printer=not args.no_printer,
            attach_timeout=args.attach_timeout,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            info = await terminal.start()
            try:
                if args.json:
                    print_json(info.to_json())
                else:
                    for key, value in info.to_json().items():
                        sys.stdout.write(f"{key:12} {value}\n")
                    sys.stdout.flush()
                await stop.wait()
            finally:
                await terminal.stop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    except AgentError as err:
        return report_error(err, as_json=args.json)
    return EXIT_OK
