"""Helpers shared by the command groups: JSON output, error reporting, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.errors import AgentError

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed or was refused
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)


def print_json(obj: Any) -> None:
    """One JSON object on one line, UTF-8 text kept readable."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def jsonable(obj: Any) -> Any:
    """``obj`` with byte strings as upper-case hex, for JSON output (event data, API results)."""
    if isinstance(obj, bytes):
        return obj.hex().upper()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def report_error(err: AgentError, *, as_json: bool) -> int:
    """Print ``{"error": {"code", "message"}}`` (JSON) or a one-line reason; return exit code."""
    if as_json:
        print_json({"error": err.to_dict()})
    else:
        sys.stderr.write(f"ssc-agent: {err.code}: {err.message}\n")
    return EXIT_FAILED
