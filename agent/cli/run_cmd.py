"""``ssc-agent run``: the daemon (DESIGN §8; systemd/ssc-agent.service runs it).

    ssc-agent run --config FILE [--api-socket PATH]

Loads and validates the config (every error with its key and line, exit 1), sets up JSON logs
(agent.logs), then runs :class:`agent.app.App` until SIGTERM/SIGINT: sd_notify READY once the
API serves, a graceful stop that finishes or parks the card operation in flight. Exit 0 after a
clean stop, 1 on a configuration or start-up error (systemd restarts on failure).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from agent.cli._common import EXIT_FAILED, EXIT_OK
from agent.errors import AgentError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run the agent (the daemon)")
    run.add_argument("--config", required=True, metavar="FILE", help="agent config (TOML)")
    run.add_argument(
        "--api-socket", metavar="PATH", help="local API socket (default: api.socket of the config)"
    )
    run.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import ConfigErrors, load_config
    from agent.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigErrors as err:
        for issue in err.issues:
            sys.stderr.write(f"ssc-agent: {args.config}: {issue}\n")
        return EXIT_FAILED
    except AgentError as err:
        sys.stderr.write(f"ssc-agent: {err.code}: {err.message}\n")
        return EXIT_FAILED
    setup_logging(config.log.level, json_lines=config.log.json)
    # aiomqtt warns on every publish beyond ten in flight; the window is deliberate
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    app = App(config, api_socket=args.api_socket)
    try:
        asyncio.run(app.run())
    except AgentError as err:
        logging.getLogger("agent").exception("cannot start: %s: %s", err.code, err.message)
        return EXIT_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return EXIT_FAILED
    return EXIT_OK
