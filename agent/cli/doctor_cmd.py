"""``ssc-agent doctor``: is this terminal fit to run the agent? (DESIGN §8, field engineers)

    ssc-agent doctor [--config FILE] [--reader GLOB] [--psam GLOB] [--printer PATH]
                     [--broker URL] [--state-dir DIR] [--json]

Checks, in order (each ``{"name", "ok", "detail", "hint", "required"}``):

=============  =================================================================================
``pcscd``      the PC/SC service answers (SCardEstablishContext + SCardListReaders)
``readers``    the readers pcscd sees, with the ATR of the card in each
``card_reader``  the card reader glob matches a reader
``card``       the card in it answers SELECT SSSE (not required when the reader is empty)
``psam``       the PSAM reader matches, and the PSAM answers EF16 (its terminal number)
``printer``    the printer answers DLE EOT with an online, paper-loaded, closed-cover status
``journal``    the state directory (journal) is writable, or can be created
``broker``     the MQTT broker accepts a TCP connection (and a TLS handshake for mqtts://)
=============  =================================================================================

Command-line options override the config file (``--config``); a device named by neither is
reported as not configured (failed, not required). Exit 1 when a required check fails, else 0.
Without ``--json`` a table is printed. Every check is bounded in time (``CHECK_TIMEOUT``).
"""

from __future__ import annotations

import argparse
import asyncio
import glob as globmod
import os
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_FAILED, EXIT_OK, print_json, report_error
from agent.errors import AgentError, ConfigError, DeviceTimeoutError

if TYPE_CHECKING:
    from agent.config import AgentConfig

CHECK_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0
HINT_START_PCSCD = "start pcscd: systemctl start pcscd (apt install pcscd if missing)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("doctor", help="check readers, PSAM, printer, storage and broker")
    p.add_argument("--config", metavar="FILE", help="agent config (devices, state dir, broker)")
    p.add_argument("--reader", metavar="GLOB", help="card reader name glob (or pcsc:// URL)")
    p.add_argument("--psam", metavar="GLOB", help="PSAM reader name glob (or pcsc:// URL)")
    p.add_argument("--printer", metavar="PATH", help="printer device or serial:// URL")
    p.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--state-dir", metavar="DIR", help="state directory (journal)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_handler)


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "hint": self.hint or None,
            "required": self.required,
        }


@dataclass(slots=True)
class Targets:
    """What to check, after merging the config file and the command line."""

    reader: str | None  # glob, None: not configured, "" : simulated in process
    psam: str | None
    printer: str | None  # serial URL or path; "sim://" in process
    broker: str | None  # mqtt(s) URL; "sim://" in process
    state_dir: Path
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


def _glob_of(value: str) -> str:
    return value[len("pcsc://") :] if value.startswith("pcsc://") else value


def targets_from(args: argparse.Namespace, cfg: AgentConfig | None) -> Targets:
    from agent.config import AgentConfig

    config = cfg or AgentConfig()
    reader = psam = printer = broker = None
    if cfg is not None:
        reader = "" if cfg.reader_url.scheme == "sim" else cfg.reader_url.target
        psam = "" if cfg.psam_url.scheme == "sim" else cfg.psam_url.target
        if cfg.printer.enabled:
            printer = cfg.printer.url
        if cfg.uplink.enabled:
            broker = cfg.uplink.broker
    if args.reader:
        reader = _glob_of(args.reader)
    if args.psam:
        psam = _glob_of(args.psam)
    if args.printer:
        printer = args.printer
    if args.broker:
        broker = args.broker
    state_dir = Path(args.state_dir) if args.state_dir else config.state_path()
    return Targets(
        reader,
        psam,
        printer,
        broker,
        state_dir,
        ca_file=_resolve(config, config.uplink.ca_file),
        cert_file=_resolve(config, config.uplink.cert_file),
        key_file=_resolve(config, config.uplink.key_file),
    )


def _resolve(cfg: AgentConfig, path: str) -> str:
    if not path or Path(path).is_absolute():
        return path
    return str(Path(cfg.base_dir) / path)


# --- PC/SC ------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Pcsc:
    readers: list[str]
    atrs: dict[str, bytes]


async def _pcsc_survey(checks: list[Check], needed: bool) -> _Pcsc | None:
    """The ``pcscd`` and ``readers`` checks; the readers and ATRs, or None without pcscd."""
    try:
        from agent.drivers.pcsc import PcscReader, PcscSystem
    except ImportError as e:
        checks.append(
            Check("pcscd", False, f"PC/SC driver unavailable: {e}", "install pyscard", needed)
        )
        return None
    async with PcscSystem() as system:
        try:
            readers = await system.list_readers()
        except AgentError as e:
            socket_path = os.environ.get("PCSCLITE_CSOCK_NAME", "/run/pcscd/pcscd.comm")
            checks.append(
                Check(
                    "pcscd",
                    False,
                    f"{e.message} (socket {socket_path})",
                    HINT_START_PCSCD,
                    needed,
                )
            )
            return None
    checks.append(Check("pcscd", True, f"PC/SC service answers; {len(readers)} reader(s)"))
    atrs: dict[str, bytes] = {}
    for name in readers:
        reader = PcscReader(globmod.escape(name))
        try:
            if await reader.card_present():
                atrs[name] = await reader.wait_for_card(timeout=3.0)
        except AgentError:
            pass  # reported as "no card" below; the reader checks say more
        finally:
            await reader.aclose()
    if readers:
        detail = "; ".join(
            f"{name}: {atrs[name].hex().upper() if name in atrs else 'no card'}" for name in readers
        )
        checks.append(Check("readers", True, detail, required=False))
    else:
        checks.append(
            Check(
                "readers",
                False,
                "pcscd sees no reader",
                "plug in the reader (or start `ssc-agent sim up`); `pcsc_scan` lists readers",
                needed,
            )
        )
    return _Pcsc(readers, atrs)


def _match(pcsc: _Pcsc, glob: str) -> str | None:
    import fnmatch

    return next((r for r in pcsc.readers if fnmatch.fnmatchcase(r, glob)), None)


def _readers_seen(pcsc: _Pcsc) -> str:
    return ", ".join(repr(r) for r in pcsc.readers) or "none"


async def _card_checks(checks: list[Check], pcsc: _Pcsc | None, glob: str | None) -> None:
    if glob is None:
        checks.append(
            Check(
                "card_reader",
                False,
                "no card reader configured",
                "pass --reader GLOB or --config FILE",
                required=False,
            )
        )
        return
    if glob == "":
        checks.append(Check("card_reader", True, "simulated in process (sim://)"))
        return
    if pcsc is None:
        checks.append(Check("card_reader", False, f"{glob!r}: PC/SC unavailable", HINT_START_PCSCD))
        return
    name = _match(pcsc, glob)
    if name is None:
        checks.append(
            Check(
                "card_reader",
                False,
                f"no reader matches {glob!r}",
                f"check the reader glob; readers seen: {_readers_seen(pcsc)}",
            )
        )
        return
    checks.append(Check("card_reader", True, f"{glob!r} is {name!r}"))
    if name not in pcsc.atrs:
        checks.append(
            Check(
                "card",
                False,
                f"no card in {name!r}",
                "insert a social security card to check that it answers",
                required=False,
            )
        )
        return
    from agent.drivers.pcsc import PcscReader
    from agent.profile import load_profile
    from agent.ssc.app import SscApplication

    try:
        async with (
            PcscReader(globmod.escape(name)) as reader,
            reader.session(exclusive=False) as channel,
        ):
            sel = await SscApplication(channel, load_profile("default")).select()
    except AgentError as e:
        checks.append(
            Check(
                "card",
                False,
                f"SELECT SSSE failed: {e.message}",
                "not a social security card, or the card/reader is faulty: try another card",
            )
        )
        return
    alg = sel.algorithm.value if sel.algorithm else "unknown"
    state = f", application {sel.lock.value}" if sel.lock is not None else ""
    checks.append(Check("card", True, f"SSSE selected (SW {sel.sw:04X}, {alg}{state})"))


async def _psam_check(checks: list[Check], pcsc: _Pcsc | None, glob: str | None) -> None:
    if glob is None:
        checks.append(
            Check(
                "psam",
                False,
                "no PSAM reader configured",
                "pass --psam GLOB or --config FILE",
                required=False,
            )
        )
        return
    if glob == "":
        checks.append(Check("psam", True, "simulated in process (sim://)"))
        return
    if pcsc is None:
        checks.append(Check("psam", False, f"{glob!r}: PC/SC unavailable", HINT_START_PCSCD))
        return
    name = _match(pcsc, glob)
    if name is None:
        checks.append(
            Check(
                "psam",
                False,
                f"no reader matches {glob!r}",
                f"check the PSAM reader glob; readers seen: {_readers_seen(pcsc)}",
            )
        )
        return
    if name not in pcsc.atrs:
        checks.append(
            Check("psam", False, f"no PSAM in {name!r}", "insert the PSAM card in its slot")
        )
        return
    from agent.drivers.pcsc import PcscReader
    from agent.psam.client import read_terminal_number, select_mf, terminal_id

    try:
        async with (
            PcscReader(globmod.escape(name)) as reader,
            reader.session(exclusive=False) as channel,
        ):
            await select_mf(channel)
            number = await read_terminal_number(channel)
    except AgentError as e:
        checks.append(
            Check(
                "psam",
                False,
                f"{name!r}: reading EF16 failed: {e.message}",
                "is the PSAM the right card for this profile? reseat it or check the glob",
            )
        )
        return
    checks.append(Check("psam", True, f"{name!r}: terminal {terminal_id(number)}"))


# --- printer ----------------------------------------------------------------------------------
_PRINTER_HINTS = {
    "no_answer": "printer does not answer: check power, cable and the serial device/baud rate",
    "cover_open": "close the printer cover",
    "paper_end": "load paper",
    "printer_error": "printer error: clear the jam or power-cycle the printer",
    "offline": "printer is offline: press the online/feed button or check the paper",
}


async def _printer_check(checks: list[Check], url: str | None) -> None:
    if url is None:
        checks.append(
            Check(
                "printer",
                False,
                "no printer configured",
                "pass --printer /dev/ttyUSB0 or --config FILE",
                required=False,
            )
        )
        return
    if url.startswith("sim://"):
        checks.append(Check("printer", True, "simulated in process (sim://)"))
        return
    if url.startswith("socket://"):
        await _tcp_check(checks, "printer", url[len("socket://") :], "check the printer's address")
        return
    from agent.drivers.printer import SerialPrinter

    try:
        printer = SerialPrinter(url if url.startswith("serial:") else f"serial://{url}")
        async with printer:
            status = await printer.status()
    except AgentError as e:
        checks.append(
            Check(
                "printer",
                False,
                f"{url}: {e.message}",
                "check the device path and permissions (dialout group)",
            )
        )
        return
    not_ready = status.not_ready
    if not_ready is not None:
        checks.append(
            Check("printer", False, f"{url}: {not_ready.value}", _PRINTER_HINTS[not_ready.value])
        )
        return
    near = ", paper near end" if status.paper_near_end else ""
    checks.append(Check("printer", True, f"{url}: online, paper loaded, cover closed{near}"))


# --- journal ----------------------------------------------------------------------------------
def _journal_check(checks: list[Check], state_dir: Path) -> None:
    target = state_dir.absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        checks.append(
            Check(
                "journal",
                False,
                f"{existing} is not a directory",
                f"fix terminal.state_dir or remove the file in the way: {existing}",
            )
        )
        return
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".doctor-") as f:
            f.write(b"ssc-agent doctor")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        checks.append(
            Check(
                "journal",
                False,
                f"{existing} is not writable: {e.strerror}",
                f"chown the state directory to the agent's user: chown -R ssc-agent {target}",
            )
        )
        return
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    where = "writable" if existing == target else f"will be created (in {existing})"
    checks.append(Check("journal", True, f"{target}: {where}, {free_mb} MiB free"))


# --- broker -----------------------------------------------------------------------------------
async def _tcp_check(checks: list[Check], name: str, hostport: str, hint: str) -> None:
    host, _, port = hostport.rpartition(":")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
    except (OSError, TimeoutError, ValueError) as e:
        checks.append(Check(name, False, f"{hostport}: {e or 'timed out'}", hint))
        return
    checks.append(Check(name, True, f"{hostport}: TCP connection accepted"))


async def _broker_check(checks: list[Check], url: str | None, t: Targets) -> None:
    if url is None or url.startswith("sim://"):
        if url is not None:
            checks.append(Check("broker", True, "reference central in process (sim://)"))
        return
    from agent.config import TransportUrl

    try:
        parsed = TransportUrl.parse(url, ("mqtt", "mqtts"))
    except ValueError as e:
        checks.append(Check("broker", False, str(e), "use mqtt://host:port or mqtts://host:port"))
        return
    hint = (
        f"broker {parsed.target} unreachable: check the network, the firewall and "
        "uplink.broker (the agent keeps working offline and sends later)"
    )
    if parsed.scheme == "mqtt":
        await _tcp_check(checks, "broker", parsed.target, hint)
        return
    try:
        ctx = ssl.create_default_context(cafile=t.ca_file or None)
        if t.cert_file and t.key_file:
            ctx.load_cert_chain(t.cert_file, t.key_file)
    except (OSError, ssl.SSLError) as e:
        checks.append(
            Check("broker", False, f"TLS files: {e}", "check uplink.ca_file/cert_file/key_file")
        )
        return
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(
                parsed.host, parsed.port, ssl=ctx, server_hostname=parsed.host
            )
        writer.close()
    except ssl.SSLError as e:
        checks.append(
            Check(
                "broker",
                False,
                f"{parsed.target}: TLS handshake failed: {e.reason or e}",
                "check uplink.ca_file (the broker's CA) and the client certificate",
            )
        )
        return
    except (OSError, TimeoutError) as e:
        checks.append(Check("broker", False, f"{parsed.target}: {e or 'timed out'}", hint))
        return
    checks.append(Check("broker", True, f"{parsed.target}: TLS handshake completed"))


# --- runner -----------------------------------------------------------------------------------
async def run_checks(t: Targets) -> list[Check]:
    """Every check, in order; never raises for a failing device."""
    checks: list[Check] = []

    async def bounded(name: str, coro: Any) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await coro
        except TimeoutError:
            checks.append(Check(name, False, f"no answer within {CHECK_TIMEOUT:g}s", "see logs"))

    pcsc_needed = bool(t.reader) or bool(t.psam)
    pcsc: _Pcsc | None = None

    async def survey() -> None:
        nonlocal pcsc
        pcsc = await _pcsc_survey(checks, pcsc_needed)

    await bounded("pcscd", survey())
    await bounded("card_reader", _card_checks(checks, pcsc, t.reader))
    await bounded("psam", _psam_check(checks, pcsc, t.psam))
    await bounded("printer", _printer_check(checks, t.printer))
    _journal_check(checks, t.state_dir)
    await bounded("broker", _broker_check(checks, t.broker, t))
    return checks


def _table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"{mark}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.hint:
            lines.append(f"      {'':<{width}}  -> {c.hint}")
    return "\n".join(lines) + "\n"


def _handler(args: argparse.Namespace) -> int:
    from agent.config import load_config

    try:
        cfg = load_config(args.config) if args.config else None
        targets = targets_from(args, cfg)
    except (ConfigError, ValueError) as e:
        err = e if isinstance(e, AgentError) else ConfigError(str(e))
        return report_error(err, as_json=args.json)
    try:
        checks = asyncio.run(run_checks(targets))
    except DeviceTimeoutError as e:  # pragma: no cover - every check is bounded
        return report_error(e, as_json=args.json)
    ok = all(c.ok for c in checks if c.required)
    if args.json:
        print_json({"ok": ok, "checks": [c.to_json() for c in checks]})
    else:
        sys.stdout.write(_table(checks))
        sys.stdout.write("all required checks passed\n" if ok else "some checks failed\n")
    return EXIT_OK if ok else EXIT_FAILED


__all__ = ["Check", "Targets", "register", "run_checks", "targets_from"]
