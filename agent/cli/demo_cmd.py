"""``ssc-agent demo``: the product's story on the in-process simulators (agent.demo).

    ssc-agent demo [--json] [--state-dir DIR]

Runs on a fresh state directory (default: a new temporary directory, kept and printed at the
end: journal, receipts as text and PNG, the agent's JSON log). ``--json`` prints the API events
and the steps as JSON lines. Exit 0 only if every step did what the story says.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from agent.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="tell the product's story on the simulators")
    demo.add_argument("--json", action="store_true", help="events and steps as JSON lines")
    demo.add_argument(
        "--state-dir",
        metavar="DIR",
        help="fresh (empty or new) state directory; default a temp dir",
    )
    demo.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    if args.state_dir:
        state = Path(args.state_dir)
        if state.exists() and any(state.iterdir()):
            sys.stderr.write(
                f"ssc-agent: demo needs a fresh state directory; {state} is not empty\n"
            )
            return EXIT_USAGE
    else:
        state = Path(tempfile.mkdtemp(prefix="ssc-demo-"))
    if not args.json:
        sys.stdout.write(f"ssc-agent demo — state directory {state}\n\n")
    return EXIT_OK if run_demo(state, as_json=args.json) else EXIT_FAILED
