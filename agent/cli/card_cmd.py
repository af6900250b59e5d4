"""``ssc-agent card``: read a card, or send raw APDUs to it (field engineers).

    ssc-agent card read --sim [--json] [--show-pii] [--state-dir DIR] [--profile NAME]
    ssc-agent card apdu --sim [--t0] [--json] [--show-pii] HEX [HEX ...]
    ssc-agent card read --reader GLOB [--psam GLOB]        (PC/SC; agent.drivers.pcsc)

``--sim`` uses the virtual card kept in the state directory's card store (one is issued with the
profile's defaults and saved the first time), and a virtual PSAM driven through the real PSAM
client (``PsamSecurityModule`` over a ``SimChannel``), so the read exercises the same path as a
terminal. Card state changed by raw APDUs (a block, a PIN try) is saved back to the store.

Output contract: exit 0 and one JSON object on stdout (indented without ``--json``, one line
with it); on failure a non-zero exit and a one-line reason on stderr, or with ``--json``
``{"error": {"code", "message"}}`` on stdout. Personal data is masked unless ``--show-pii``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_OK, EXIT_USAGE, print_json, report_error
from agent.errors import AgentError, ConfigError, LocalProtocolError

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel
    from agent.profile import CardProfile
    from agent.psam.module import SecurityModule

DEFAULT_STATE_DIR = "var/agent"
#: Instructions whose answers carry card data (records, files): masked without --show-pii.
_DATA_INS = frozenset({0xB0, 0xB2, 0xC0, 0xCA})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    card = subparsers.add_parser("card", help="read a card or send raw APDUs to it")
    sub = card.add_subparsers(dest="card_command", metavar="ACTION")
    sub.required = True

    read = sub.add_parser("read", help="read the social-security and bank applications")
    _device_options(read)
    read.set_defaults(handler=_read_handler)

    apdu = sub.add_parser("apdu", help="send raw command APDUs (hex) and decode the answers")
    _device_options(apdu)
    apdu.add_argument("apdus", nargs="+", metavar="HEX", help="command APDU in hex")
    apdu.add_argument(
        "--t0", action="store_true", help="follow 61xx / 6Cxx (GET RESPONSE, re-issue with Le)"
    )
    apdu.set_defaults(handler=_apdu_handler)


def _device_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", action="store_true", help="use the virtual card of the state dir")
    where.add_argument("--reader", metavar="GLOB", help="PC/SC reader name glob of the card")
    p.add_argument("--psam", metavar="GLOB", help="PC/SC reader name glob of the PSAM slot")
    p.add_argument("--json", action="store_true", help="one-line JSON, errors as JSON")
    p.add_argument("--show-pii", action="store_true", help="do not mask personal data")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="simulator state directory")
    p.add_argument("--profile", default="default", help="card profile name or path")


# --- devices ---------------------------------------------------------------------------------
@dataclass
class _Devices:
    card: CardChannel
    sam: SecurityModule | None
    profile: CardProfile


@contextlib.asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[_Devices]:
    from agent.profile import load_profile

    profile = load_profile(args.profile)
    if args.sim:
        if args.psam:
            raise ConfigError("--psam is for PC/SC; --sim uses the virtual PSAM")
        async with _open_sim(Path(args.state_dir), profile) as devices:
            yield devices
    else:
        async with _open_pcsc(args.reader, args.psam, profile) as devices:
            yield devices


@contextlib.asynccontextmanager
async def _open_sim(state_dir: Path, profile: CardProfile) -> AsyncIterator[_Devices]:
    from agent.psam.client import PsamSecurityModule
    from agent.sim.channel import SimChannel
    from agent.sim.factory import CardFactory
    from agent.sim.psam import VirtualPsam
    from agent.sim.store import CardStore

    store = CardStore(state_dir)  # each stored card keeps the profile it was issued with
    card = store.load_current()
    if card is None:
        card = CardFactory(profile, seed=0).issue()
        store.insert(card)
    channel = SimChannel(card)
    sam = PsamSecurityModule(SimChannel(VirtualPsam(profile)), profile)
    try:
        yield _Devices(channel, sam, profile)
    finally:
        await channel.disconnect()
        store.save(card)  # persistent card state (lifecycle, PIN counter) survives the command


@contextlib.asynccontextmanager
async def _open_pcsc(
    reader_glob: str, psam_glob: str | None, profile: CardProfile
) -> AsyncIterator[_Devices]:
    if importlib.util.find_spec("agent.drivers.pcsc") is None:
        raise ConfigError("pcsc not available: this build has no PC/SC driver (agent.drivers.pcsc)")
    from agent.drivers.pcsc import PcscReader
    from agent.psam.client import PsamSecurityModule

    async with contextlib.AsyncExitStack() as stack:
        reader = await stack.enter_async_context(PcscReader(reader_glob))
        channel = await stack.enter_async_context(reader.session())
        sam: SecurityModule | None = None
        if psam_glob:
            psam_reader = await stack.enter_async_context(PcscReader(psam_glob))
            psam_channel = await stack.enter_async_context(psam_reader.session())
            sam = PsamSecurityModule(psam_channel, profile)
        yield _Devices(channel, sam, profile)


# --- handlers --------------------------------------------------------------------------------
def _run(args: argparse.Namespace, work: Any) -> int:
    """Run ``work(devices) -> dict`` and print the result or the error (the CLI boundary)."""

    async def main() -> dict[str, Any]:
        async with _open(args) as devices:
            result: dict[str, Any] = await work(devices)
            return result

    try:
        result = asyncio.run(main())
    except AgentError as err:
        return report_error(err, as_json=args.json)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return EXIT_OK


def _read_handler(args: argparse.Namespace) -> int:
    from agent.tx.read import read_card

    async def work(devices: _Devices) -> dict[str, Any]:
        report = await read_card(devices.card, devices.profile, devices.sam)
        return report.to_json(show_pii=args.show_pii)

    return _run(args, work)


def _apdu_handler(args: argparse.Namespace) -> int:
    from agent.card.apdu import CommandApdu

    try:
        commands = [CommandApdu.from_bytes(_parse_hex(text)) for text in args.apdus]
    except AgentError as err:
        report_error(err, as_json=args.json)
        return EXIT_USAGE

    async def work(devices: _Devices) -> dict[str, Any]:
        from agent.card.t0 import transceive

        out = []
        for cmd in commands:
            if args.t0:
                resp = await transceive(devices.card, cmd)
            else:
                resp = await devices.card.transmit(cmd)
            out.append(_describe_exchange(cmd, resp, show_pii=args.show_pii))
        return {"exchanges": out}

    return _run(args, work)


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise LocalProtocolError(f"not a hex APDU: {text!r}") from None


def _describe_exchange(cmd: Any, resp: Any, *, show_pii: bool) -> dict[str, Any]:
    from agent.card import sw, tlv
    from agent.errors import TlvError

    data: bytes = resp.data
    entry: dict[str, Any] = {
        "command": cmd.to_bytes().hex().upper(),
        "sw": f"{resp.sw:04X}",
        "meaning": sw.describe(resp.sw),
        "length": len(data),
    }
    hidden = not show_pii and cmd.ins in _DATA_INS and bool(data)
    entry["data"] = None if hidden else data.hex().upper()
    if hidden:
        entry["masked"] = True  # card records carry personal data: --show-pii to see them
    try:
        items = tlv.decode(data) if data else []
    except TlvError:
        items = []
    entry["tlv"] = [_tlv_json(t, show_values=not hidden) for t in items] or None
    return entry


def _tlv_json(item: Any, *, show_values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"tag": f"{item.tag:02X}", "length": len(item.value)}
    if item.constructed:
        try:
            out["children"] = [_tlv_json(c, show_values=show_values) for c in item.children]
        except AgentError:
            out["value"] = item.value.hex().upper() if show_values else None
    else:
        out["value"] = item.value.hex().upper() if show_values else None
    return out
