"""The simulated terminal as real hardware: card and PSAM in vpcd readers, printer on a pty.

``ssc-agent sim up`` runs one ``SimTerminal`` (DESIGN §7, §8): the virtual social security card
is attached to vpcd's reader on port ``P`` (Debian names it "Virtual PCD 00 00"), the virtual
PSAM to ``P + 1`` ("Virtual PCD 00 01"), and the simulated ESC/POS printer sits on a
pseudo-terminal whose path is also the stable symlink ``<state dir>/printer``. Anything that
speaks PC/SC (the agent, ``pcsc_scan``, ``opensc-tool``) or opens a serial port sees hardware.

State directory layout (shared with ``ssc-agent card --sim``)::

    <dir>/cards/<key>.json, <dir>/current   the card store (agent.sim.store)
    <dir>/psam.json                         the PSAM's persistent state (EF16, serial, TSN)
    <dir>/terminal.json                     the last card that was in the reader
    <dir>/printer -> /dev/pts/N             the printer device (while running)
    <dir>/receipts/receipt-NNNN.png         rendered receipts
    <dir>/control.sock                      the control channel (while running)

Persistence is write-through, like a card's EEPROM: after every APDU the card and the PSAM are
saved if their state changed (atomic writes, agent.sim.store.atomic_write), so a crash of
``sim up`` never forgets a PIN try or a lock. They are saved again on removal, swap and exit.

Control channel: a Unix stream socket, **line-delimited JSON** (one UTF-8 JSON object per line,
at most ``MAX_LINE`` bytes). Request ``{"op": <name>, "args": {...}, "id": <any, optional>}``;
reply ``{"id", "ok": true, "result": {...}}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``. Several requests may share a connection; they are answered in order. Ops:

=================  ===========================================================================
``status``         readers (names, ports, bridge state, card key), printer, counts
``card.list``      stored cards (key, algorithm, lifecycle state, in reader) — no personal data
``card.issue``     ``{algorithm?, state?, spec_version?, area_code?, seed?}`` → the new card
``card.insert``    ``{key?}`` or ``{new: true, algorithm?, state?}``; no key: the last card
``card.remove``    pull the card (idempotent)
``card.swap``      ``{key}`` or ``{new: true, ...}``: pull the card, insert another one
``printer.fault``  ``{fault: paper_out|cover_open|offline|near_end|error|silent|clear,
                   after_bytes?}``
=================  ===========================================================================

Insert and swap wait until pcscd reports the change (bounded; skipped when PC/SC is not
reachable from this process), so a client that reacts to the reply sees the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import AgentError, ConfigError, DeviceTimeoutError, SimStateError
from agent.profile import CardProfile, load_profile
from agent.sim.card import VirtualSscCard
from agent.sim.factory import CardFactory
from agent.sim.printer import SimPrinter
from agent.sim.psam import VirtualPsam
from agent.sim.store import CardStore, atomic_write, card_key
from agent.sim.vpcd import DEFAULT_HOST, DEFAULT_PORT, VpcdBridge

log = logging.getLogger(__name__)

__all__ = [
    "CONTROL_SOCKET",
    "MAX_LINE",
    "PRINTER_FAULTS",
    "PRINTER_LINK",
    "PSAM_STATE",
    "SimTerminal",
    "TerminalInfo",
    "control_request",
    "reader_name",
]

CONTROL_SOCKET = "control.sock"
PSAM_STATE = "psam.json"
TERMINAL_STATE = "terminal.json"
PRINTER_LINK = "printer"
RECEIPTS_DIR = "receipts"
MAX_LINE = 64 * 1024
READER_PREFIX = "Virtual PCD"
#: Printer faults of ``printer.fault`` → SimPrinterState flag (``clear`` resets all of them).
PRINTER_FAULTS = {
    "paper_out": "paper_out",
    "cover_open": "cover_open",
    "offline": "offline",
    "near_end": "near_end",
    "error": "error",
    "silent": "silent",
}
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


def reader_name(slot: int) -> str:
    """vpcd's PC/SC reader name for slot ``slot`` of the first vpcd reader.conf entry."""
    return f"{READER_PREFIX} 00 {slot:02X}"


@dataclass(frozen=True, slots=True)
class TerminalInfo:
    """What ``sim up --json`` prints once everything is attached."""

    card_reader: str
    psam_reader: str
    printer: str | None
    control: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "card_reader": self.card_reader,
            "psam_reader": self.psam_reader,
            "printer": self.printer,
            "control": self.control,
        }


class _Watched:
    """A ``SimDevice`` that reports every APDU to the terminal (to schedule a save)."""

    def __init__(self, device: VirtualSscCard | VirtualPsam, on_apdu: Callable[[], None]) -> None:
        self.device = device
        self._on_apdu = on_apdu

    @property
    def atr(self) -> bytes:
        return self.device.atr

    def power_on(self) -> bytes:
        return self.device.power_on()

    def power_off(self) -> None:
        self.device.power_off()

    def process(self, apdu: bytes) -> bytes:
        try:
            return self.device.process(apdu)
        finally:
            self._on_apdu()


class SimTerminal:
    """Card reader, PSAM slot and printer of one simulated terminal (module docstring).

    ``confirm_pcsc``: after an insert or removal, wait (at most ``presence_timeout`` s) until
    pcscd reports it, through ``agent.drivers.pcsc``; skipped if PC/SC is unreachable.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        profile: CardProfile | str = "default",
        host: str = DEFAULT_HOST,
        vpcd_port: int = DEFAULT_PORT,
        printer: bool = True,
        attach_timeout: float = 30.0,
        presence_timeout: float = 5.0,
        confirm_pcsc: bool = True,
    ) -> None:
        if not 1 <= vpcd_port <= 65534:
            raise ConfigError(f"vpcd port must be 1..65534 (the PSAM uses port + 1): {vpcd_port}")
        self.state_dir = Path(state_dir).absolute()
        self.profile = profile if isinstance(profile, CardProfile) else load_profile(profile)
        self.host = host
        self.vpcd_port = vpcd_port
        self.with_printer = printer
        self.attach_timeout = attach_timeout
        self.presence_timeout = presence_timeout
        self.confirm_pcsc = confirm_pcsc
        self.store = CardStore(self.state_dir)
        self.card: VirtualSscCard | None = None
        self.psam: VirtualPsam | None = None
        self.printer: SimPrinter | None = None
        self._card_bridge: VpcdBridge | None = None
        self._psam_bridge: VpcdBridge | None = None
        self._server: asyncio.Server | None = None
        self._saved_card: dict[str, object] | None = None
        self._saved_psam: dict[str, object] | None = None
        self._lock = asyncio.Lock()  # control operations one at a time
        self._factory: CardFactory | None = None
        self._pcsc_ok = confirm_pcsc
        self.apdus = 0
        self.saves = 0

    # ----------------------------------------------------------------------------- paths
    @property
    def control_path(self) -> Path:
        return self.state_dir / CONTROL_SOCKET

    @property
    def printer_link(self) -> Path:
        return self.state_dir / PRINTER_LINK

    @property
    def psam_path(self) -> Path:
        return self.state_dir / PSAM_STATE

    @property
    def card_reader(self) -> str:
        return reader_name(0)

    @property
    def psam_reader(self) -> str:
        return reader_name(1)

    @property
    def info(self) -> TerminalInfo:
        return TerminalInfo(
            card_reader=self.card_reader,
            psam_reader=self.psam_reader,
            printer=self.printer.device_path if self.printer is not None else None,
            control=str(self.control_path),
        )

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> TerminalInfo:
        """Load state, attach PSAM and card, start the printer and the control channel."""
        self._claim_control_socket()
        self.psam = self._load_psam()
        self._saved_psam = self.psam.to_state()
        self.card = self._initial_card()
        try:
            if self.with_printer:
                self.printer = SimPrinter(self.state_dir / RECEIPTS_DIR)
                await self.printer.start()
                _replace_symlink(self.printer_link, self.printer.device_path)
            self._psam_bridge = VpcdBridge(
                _Watched(self.psam, self._apdu_seen), self.host, self.vpcd_port + 1
            )
            await self._attach(self._psam_bridge)
            if self.card is not None:
                self._card_bridge = VpcdBridge(
                    _Watched(self.card, self._apdu_seen), self.host, self.vpcd_port
                )
                await self._attach(self._card_bridge)
            await self._await_presence(self.psam_reader, present=True)
            if self.card is not None:
                await self._await_presence(self.card_reader, present=True)
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=str(self.control_path), limit=MAX_LINE
            )
        except BaseException:
            await self.stop()
            raise
        return self.info

    async def stop(self) -> None:
        """Pull the devices, save their state, close the printer and the control channel."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        for bridge in (self._card_bridge, self._psam_bridge):
            if bridge is not None:
                await bridge.remove()
        self._card_bridge = self._psam_bridge = None
        self._save_now()
        if self.printer is not None:
            await self.printer.stop()
            self.printer = None
            with contextlib.suppress(FileNotFoundError):
                self.printer_link.unlink()

    async def __aenter__(self) -> SimTerminal:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _claim_control_socket(self) -> None:
        path = self.control_path
        if len(str(path)) > _UNIX_PATH_MAX:
            raise ConfigError(f"state directory path too long for a Unix socket: {path}")
        if path.exists() or path.is_symlink():
            if _socket_alive(path):
                raise SimStateError(
                    f"a simulated terminal is already running on {self.state_dir}",
                    code="sim_running",
                )
            path.unlink()  # left over by a killed sim up

    async def _attach(self, bridge: VpcdBridge) -> None:
        try:
            await bridge.insert(wait=True, timeout=self.attach_timeout)
        except TimeoutError:
            await bridge.remove()
            raise DeviceTimeoutError(
                f"vpcd is not listening on {self.host}:{bridge.port} after "
                f"{self.attach_timeout:g}s: is pcscd running with vsmartcard-vpcd? "
                "(apt install pcscd vsmartcard-vpcd; systemctl start pcscd)"
            ) from None

    # ----------------------------------------------------------------------------- state
    def _load_psam(self) -> VirtualPsam:
        try:
            raw = self.psam_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return VirtualPsam(self.profile)
        except OSError as e:
            raise SimStateError(f"cannot read {self.psam_path}: {e.strerror}") from None
        try:
            state = json.loads(raw)
            if not isinstance(state, dict):
                raise SimStateError(f"{self.psam_path}: not a JSON object")
            return VirtualPsam.from_state(self.profile, state)
        except ValueError as e:
            raise SimStateError(f"{self.psam_path}: not JSON ({e})") from None
        except ConfigError as e:
            raise SimStateError(f"{self.psam_path}: {e.message}") from None

    def _initial_card(self) -> VirtualSscCard | None:
        """The card in the reader: the store's current card; on a fresh store, the profile's
        default card (the one ``ssc-agent card read --sim`` issues); else an empty reader."""
        card = self.store.load_current()
        if card is None and not self.store.keys():
            card = CardFactory(self.profile, seed=0).issue()
            self.store.insert(card)
        if card is not None:
            self._saved_card = card.to_state()
            self._remember(card_key(card))
        return card

    def _remember(self, key: str) -> None:
        with contextlib.suppress(OSError):
            atomic_write(
                self.state_dir / TERMINAL_STATE, json.dumps({"last_card": key}).encode("ascii")
            )

    def _last_card(self) -> str | None:
        try:
            data = json.loads((self.state_dir / TERMINAL_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        key = data.get("last_card") if isinstance(data, dict) else None
        if isinstance(key, str) and self.store.exists(key):
            return key
        keys = self.store.keys()
        return keys[0] if len(keys) == 1 else None

    def _apdu_seen(self) -> None:
        self.apdus += 1
        self._save_now()

    def _save_now(self) -> None:
        """Save the card and the PSAM if they changed (never raises: a failed save is logged
        and retried after the next batch)."""
        try:
            if self.card is not None:
                state = self.card.to_state()
                if state != self._saved_card:
                    self.store.save(self.card)
                    self._saved_card = state
                    self.saves += 1
            if self.psam is not None:
                pstate = self.psam.to_state()
                if pstate != self._saved_psam:
                    atomic_write(self.psam_path, json.dumps(pstate, sort_keys=True).encode("ascii"))
                    self._saved_psam = pstate
                    self.saves += 1
        except (AgentError, OSError) as e:
            log.warning("simulated terminal: saving state failed: %s", e)

    # ----------------------------------------------------------------------------- presence
    async def _await_presence(self, reader: str, *, present: bool) -> bool:
        """Wait until pcscd reports ``present`` on ``reader``; False if unconfirmed."""
        if not self._pcsc_ok:
            return False
        try:
            from agent.drivers.pcsc import PcscReader
        except ImportError:  # pyscard missing: nothing to confirm with
            self._pcsc_ok = False
            return False
        pcsc = PcscReader(reader)
        try:
            if present:
                await pcsc.wait_for_card(timeout=self.presence_timeout)
            else:
                await pcsc.wait_for_removal(timeout=self.presence_timeout)
        except DeviceTimeoutError:
            log.warning(
                "pcscd did not report %s on %r within %gs (is this pcscd the one serving "
                "port %d? PCSCLITE_CSOCK_NAME=%s)",
                "a card" if present else "the removal",
                reader,
                self.presence_timeout,
                self.vpcd_port,
                os.environ.get("PCSCLITE_CSOCK_NAME", "(default)"),
            )
            self._pcsc_ok = False  # do not make every later operation wait as well
            return False
        except AgentError as e:
            log.warning("PC/SC not usable to confirm presence: %s", e.message)
            self._pcsc_ok = False
            return False
        finally:
            await pcsc.aclose()
        return True

    # ----------------------------------------------------------------------------- cards
    def _factory_for(self, seed: int | None) -> CardFactory:
        if seed is not None:
            return CardFactory(self.profile, seed=seed)
        if self._factory is None:
            self._factory = CardFactory(self.profile, seed=secrets.randbits(32))
        return self._factory

    def issue(
        self,
        *,
        algorithm: str | None = None,
        state: str = "active",
        spec_version: str = "3.00",
        area_code: str | None = None,
        seed: int | None = None,
    ) -> VirtualSscCard:
        """Issue a new card into the store (not inserted); never one already stored."""
        factory = self._factory_for(seed)
        for _ in range(64):
            card = factory.issue(
                algorithm=algorithm, state=state, spec_version=spec_version, area_code=area_code
            )
            if not self.store.exists(card_key(card)):
                self.store.save(card)
                return card
        raise SimStateError("the card factory keeps issuing cards already in the store")

    async def insert(self, key: str | None = None) -> VirtualSscCard:
        """Put a stored card (default: the last one) into the empty card reader."""
        if self.card is not None:
            raise SimStateError(
                f"the reader already holds card {card_key(self.card)}: remove it or swap",
                code="reader_occupied",
            )
        if key is None:
            key = self._last_card()
            if key is None:
                raise SimStateError("which card? give a key (sim card list) or --new")
        card = self.store.load(key)
        self.store.insert(key)
        self.card = card
        self._saved_card = card.to_state()
        self._remember(card_key(card))
        bridge = VpcdBridge(_Watched(card, self._apdu_seen), self.host, self.vpcd_port)
        self._card_bridge = bridge
        try:
            await self._attach(bridge)
        except AgentError:
            self._card_bridge = None
            self.card = None
            self.store.eject()
            raise
        await self._await_presence(self.card_reader, present=True)
        return card

    async def remove(self) -> str | None:
        """Pull the card (if any); its state is saved. The key of the pulled card."""
        bridge, self._card_bridge = self._card_bridge, None
        card, key = self.card, None
        if bridge is not None:
            await bridge.remove()
        if card is not None:
            key = card_key(card)
            self._save_now()
            self.card = None
            self._saved_card = None
            self.store.eject()
            await self._await_presence(self.card_reader, present=False)
        return key

    async def swap(self, key: str) -> VirtualSscCard:
        """Pull the card and insert the stored card ``key`` (pcscd sees both changes)."""
        self.store.load(key)  # a bad key fails before the citizen's card is pulled
        await self.remove()
        return await self.insert(key)

    # ----------------------------------------------------------------------------- printer
    def printer_fault(self, fault: str, after_bytes: int | None = None) -> dict[str, Any]:
        printer = self._require_printer()
        if fault == "clear":
            printer.clear_fault()
            printer.set_state(**dict.fromkeys(PRINTER_FAULTS.values(), False))
        elif fault in PRINTER_FAULTS:
            flag = {PRINTER_FAULTS[fault]: True}
            if after_bytes is None:
                printer.set_state(**flag)
            else:
                if after_bytes < 0:
                    raise ConfigError("after_bytes must be >= 0")
                printer.set_fault(after_bytes, **flag)
        else:
            raise ConfigError(
                f"unknown printer fault {fault!r}; one of {', '.join([*PRINTER_FAULTS, 'clear'])}"
            )
        return self._printer_status() or {}

    def _require_printer(self) -> SimPrinter:
        if self.printer is None:
            raise SimStateError("this terminal runs without a printer (--no-printer)")
        return self.printer

    def _printer_status(self) -> dict[str, Any] | None:
        p = self.printer
        if p is None:
            return None
        state = {name: bool(getattr(p.state, name)) for name in PRINTER_FAULTS.values()}
        return {
            "device": p.device_path,
            "link": str(self.printer_link),
            "state": state,
            "receipts": len(p.receipts),
            "bytes_received": p.bytes_received,
        }

    # ----------------------------------------------------------------------------- views
    def status(self) -> dict[str, Any]:
        card_bridge, psam_bridge = self._card_bridge, self._psam_bridge
        return {
            "card_reader": {
                "name": self.card_reader,
                "port": self.vpcd_port,
                "bridge": card_bridge.state.value if card_bridge else "removed",
                "card": card_key(self.card) if self.card is not None else None,
            },
            "psam_reader": {
                "name": self.psam_reader,
                "port": self.vpcd_port + 1,
                "bridge": psam_bridge.state.value if psam_bridge else "removed",
                "terminal_number": self.psam.terminal_number.hex() if self.psam else None,
            },
            "printer": self._printer_status(),
            "control": str(self.control_path),
            "state_dir": str(self.state_dir),
            "apdus": self.apdus,
            "saves": self.saves,
        }

    def card_summary(self, card: VirtualSscCard) -> dict[str, Any]:
        """A card without personal data (key = card identification code)."""
        key = card_key(card)
        return {
            "key": key,
            "card_id_code": card.card_id_code.hex().upper(),
            "algorithm": card.algorithm.value,
            "state": card.state,
            "spec_version": card.spec_version,
            "area_code": card.area_code,
            "in_reader": self.card is not None and card_key(self.card) == key,
        }

    # ----------------------------------------------------------------------------- control
    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Execute one control request (raises ``AgentError`` for a refused one)."""
        handler = self._ops.get(op)
        if handler is None:
            raise ConfigError(f"unknown control op {op!r}; one of {', '.join(sorted(self._ops))}")
        async with self._lock:
            return await handler(self, args)

    async def _op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _op_list(self, args: dict[str, Any]) -> dict[str, Any]:
        cards = []
        keys = self.store.keys()
        for key in keys:
            card = self.card if self.card is not None and card_key(self.card) == key else None
            cards.append(self.card_summary(card or self.store.load(key)))
        return {"cards": cards}

    def _issue_from(self, args: dict[str, Any]) -> VirtualSscCard:
        seed = args.get("seed")
        return self.issue(
            algorithm=_opt_str(args, "algorithm"),
            state=_opt_str(args, "state") or "active",
            spec_version=_opt_str(args, "spec_version") or "3.00",
            area_code=_opt_str(args, "area_code"),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )

    async def _op_issue(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.card_summary(self._issue_from(args))

    async def _op_insert(self, args: dict[str, Any]) -> dict[str, Any]:
        key = card_key(self._issue_from(args)) if args.get("new") else None
        card = await self.insert(key or _opt_str(args, "key"))
        return self.card_summary(card)

    async def _op_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"removed": await self.remove()}

    async def _op_swap(self, args: dict[str, Any]) -> dict[str, Any]:
        key = card_key(self._issue_from(args)) if args.get("new") else None
        key = key or _opt_str(args, "key")
        if key is None:
            raise ConfigError("swap needs a card key or new")
        return self.card_summary(await self.swap(key))

    async def _op_printer_fault(self, args: dict[str, Any]) -> dict[str, Any]:
        after = args.get("after_bytes")
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise ConfigError("after_bytes must be an integer")
        return self.printer_fault(_opt_str(args, "fault") or "", after)

    _ops: ClassVar[
        dict[str, Callable[[SimTerminal, dict[str, Any]], Awaitable[dict[str, Any]]]]
    ] = {
        "status": _op_status,
        "card.list": _op_list,
        "card.issue": _op_issue,
        "card.insert": _op_insert,
        "card.remove": _op_remove,
        "card.swap": _op_swap,
        "printer.fault": _op_printer_fault,
    }

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_reply(None, error=ConfigError("request line too long")))
                    break
                if not line:
                    break
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        req_id: object = None
        try:
            try:
                req = json.loads(line)
            except ValueError:
                raise ConfigError("request is not a JSON object") from None
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise ConfigError('request must be {"op": str, "args": {...}}')
            req_id = req.get("id")
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise ConfigError("args must be a JSON object")
            result = await self.handle(req["op"], args)
        except AgentError as e:
            return _reply(req_id, error=e)
        return _reply(req_id, result=result)


def _opt_str(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string")
    return value


def _reply(
    req_id: object, *, result: dict[str, Any] | None = None, error: AgentError | None = None
) -> bytes:
    if error is not None:
        obj: dict[str, Any] = {"id": req_id, "ok": False, "error": error.to_dict()}
    else:
        obj = {"id": req_id, "ok": True, "result": result}
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def control_request(
    state_dir: str | Path, op: str, args: dict[str, Any] | None = None, *, timeout: float = 30.0
) -> dict[str, Any]:
    """Send one request to the ``sim up`` running on ``state_dir``; its result.

    Raises ``SimStateError`` (code ``sim_not_running``) when nothing answers, and an
    ``AgentError`` carrying the server's code and message when the request is refused.
    """
    path = Path(state_dir).absolute() / CONTROL_SOCKET
    request = json.dumps({"op": op, "args": args or {}}).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(request)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_LINE * 16:
                    raise SimStateError("control reply too long")
        except TimeoutError:
            raise DeviceTimeoutError(
                f"sim up on {state_dir} did not answer in {timeout:g}s"
            ) from None
        except OSError as e:
            raise SimStateError(
                f"no simulated terminal is running on {state_dir} ({e.strerror or e}); "
                f"start one: ssc-agent sim up --state-dir {state_dir}",
                code="sim_not_running",
            ) from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise SimStateError("the control channel answered garbage") from None
    if not isinstance(reply, dict):
        raise SimStateError("the control channel answered garbage")
    if reply.get("ok") is True and isinstance(reply.get("result"), dict):
        result: dict[str, Any] = reply["result"]
        return result
    err = reply.get("error")
    if isinstance(err, dict):
        raise AgentError(str(err.get("message", "refused")), code=str(err.get("code", "refused")))
    raise SimStateError("the control channel answered garbage")
