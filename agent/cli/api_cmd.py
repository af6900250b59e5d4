"""``ssc-agent api``: call one local-API operation and print the result (docs/API.md).

    ssc-agent api OP [--args JSON] [--socket PATH | --config FILE | --tcp HOST:PORT --token-file F]
    ssc-agent api events.subscribe [--count N]        (prints events as JSON lines)

The result is printed as one JSON line (bytes as hex); an ``ok: false`` answer prints
``{"error": {...}}`` and exits 1. Without ``--socket``/``--tcp`` the socket is the one of
``--config`` (default ``config/agent.toml``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, jsonable, print_json
from agent.errors import AgentError, ConfigError

DEFAULT_CONFIG = "config/agent.toml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = subparsers.add_parser("api", help="call the running agent's local API")
    api.add_argument("op", metavar="OP", help="operation, e.g. status, card.read, tx.lock")
    api.add_argument("--args", default="{}", metavar="JSON", help="arguments as a JSON object")
    where = api.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="Unix socket of the agent")
    where.add_argument("--tcp", metavar="HOST:PORT", help="loopback TCP listener (needs a token)")
    api.add_argument(
        "--config", metavar="FILE", help=f"take the socket from (default {DEFAULT_CONFIG})"
    )
    api.add_argument("--token-file", metavar="F", help="token for --tcp")
    api.add_argument("--timeout", type=float, default=120.0, help="give up after S seconds")
    api.add_argument("--count", type=int, default=0, help="events.subscribe: stop after N events")
    api.set_defaults(handler=_handler)


def _socket_of(config_path: str) -> str:
    from agent.config import load_config

    cfg = load_config(config_path)
    if not cfg.api.socket:
        raise ConfigError(f"{config_path}: api.socket is empty")
    p = Path(cfg.api.socket)
    return str(p if p.is_absolute() else cfg.state_path(cfg.api.socket))


async def _call(args: argparse.Namespace, op_args: dict[str, Any]) -> Any:
    from agent.api.client import ApiClient

    if args.tcp:
        if not args.token_file:
            raise ConfigError("--tcp needs --token-file")
        host, _, port = args.tcp.rpartition(":")
        token = Path(args.token_file).read_text(encoding="utf-8").strip()  # noqa: ASYNC240
        client = await ApiClient.connect_tcp(host.strip("[]"), int(port), token)
    else:
        path = args.socket or _socket_of(args.config or DEFAULT_CONFIG)
        try:
            client = await ApiClient.connect_unix(path)
        except OSError as exc:
            raise ConfigError(f"cannot reach the agent at {path}: {exc.strerror}") from None
    async with client:
        if args.op == "events.subscribe":
            await client.subscribe()
            n = 0
            async for event, data in client.events():
                print_json({"event": event, "data": jsonable(data)})
                n += 1
                if args.count and n >= args.count:
                    break
            return None
        async with asyncio.timeout(args.timeout):
            return await client.call(args.op, op_args)


def _handler(args: argparse.Namespace) -> int:
    try:
        op_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        sys.stderr.write(f"ssc-agent: --args is not JSON: {exc}\n")
        return EXIT_USAGE
    if not isinstance(op_args, dict):
        sys.stderr.write("ssc-agent: --args must be a JSON object\n")
        return EXIT_USAGE
    try:
        result = asyncio.run(_call(args, op_args))
    except AgentError as err:
        print_json({"error": err.to_dict()})
        return EXIT_FAILED
    except TimeoutError:
        print_json({"error": {"code": "timeout", "message": f"no answer in {args.timeout:g}s"}})
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    if args.op != "events.subscribe":
        print_json(jsonable(result))
    return EXIT_OK
