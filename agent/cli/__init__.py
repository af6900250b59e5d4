"""``ssc-agent`` command line (DESIGN §8).

Each command group lives in its own module under ``agent/cli/`` and exposes
``register(subparsers)``; modules are imported lazily by name so that start-up stays fast and a
group's heavy imports happen only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# Command-group modules, in help order. A missing module is simply not offered.
GROUPS = (
    "run",
    "demo",
    "card",
    "tx",
    "journal",
    "sim",
    "central",
    "uplink",
    "api",
    "doctor",
    "config",
    "hil",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssc-agent",
        description="Social security card terminal agent for kiosks, ATMs and POS terminals.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in GROUPS:
        modname = f"agent.cli.{name}_cmd"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    rc: int = handler(args)
    return rc


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
