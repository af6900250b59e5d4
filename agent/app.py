"""The supervisor: one TaskGroup of named tasks, health, graceful shutdown (DESIGN §6, §8).

``App(config)`` wires what ``config`` names and runs it::

    reader:card      card presence (sim: in-process slot; pcsc: agent.drivers.pcsc), heartbeat
    uplink           MQTT session (agent.uplink.session) + signed commands; sim:// also runs
                     a private mosquitto child and the in-process reference central
    central-sim      the in-process reference central (sim:// only)
    telemetry        retained status with health, telemetry counters, journal retention
    watchdog         sd_notify WATCHDOG only while the loop, the reader and the drain progress
    stop             waits for SIGTERM/SIGINT (or ``request_stop``), then shuts down gracefully
    (API)            agent.api.server on the Unix socket (and optional loopback TCP)

Health: every component has a state (``ok``/``degraded``/``down``), a detail and the time of its
last progress; ``status`` (API) and the retained MQTT status report it. The watchdog is fed only
while the components it watches (loop, reader, uplink drain) made progress within
``STALL_S``: a reader stuck in a driver call stops the pings, systemd restarts the agent, and
start-up recovery resolves whatever was in flight.

Card I/O: one :class:`CardIoLock` serialises every card session (API operations, the sighting of
an inserted card) and holds ``state_dir/card-io.lock`` with ``fcntl.flock`` while card I/O is in
progress — an updater runs ``flock state_dir/card-io.lock systemctl restart ssc-agent`` and
never interrupts a card write; while the updater holds the file, no new card I/O starts.
Shutdown (SIGTERM/SIGINT): no new card operation is accepted; the one in flight is waited for
(at most ``shutdown_grace_s``); past that bound it is cancelled — the engine then records it
``in_doubt`` if a write had left the terminal, and start-up recovery resolves it from the card.
Nothing is ever stopped in the middle of an APDU: a PC/SC transmit runs to its end on its
worker thread, a simulated one is synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import (
    AgentError,
    ApiError,
    CardRefusedError,
    ConfigError,
    DeviceError,
    JournalFullError,
    NoCardError,
    TransactionInDoubtError,
    UplinkUnavailableError,
)
from agent.logs import set_apdu_trace, set_level
from agent.systemd import Notifier, watchdog_interval_s

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel
    from agent.config import AgentConfig
    from agent.journal.store import Journal
    from agent.profile import CardProfile
    from agent.psam.module import SecurityModule
    from agent.sim.card import VirtualSscCard
    from agent.sim.central import ReferenceCentral
    from agent.sim.printer import SimPrinter
    from agent.sim.rig import SimRig
    from agent.testing.mosquitto import Mosquitto
    from agent.tx.engine import TxEngine
    from agent.tx.records import TxRecord
    from agent.tx.recovery import Recovery
    from agent.uplink.port import SessionUplinkPort
    from agent.uplink.session import UplinkSession

log = logging.getLogger("agent.app")

VERSION = "0.1.0"
#: Heartbeat of the presence watchers (s).
HEARTBEAT_S = 5.0
#: A watched component without progress for this long stops the watchdog pings.
STALL_S = 60.0
#: Telemetry and retained-status period (s).
TELEMETRY_S = 60.0
#: Health components that are devices: their faults and recoveries are events for central.
DEVICES = ("reader", "psam", "printer")
DEVICE_EVENTS_PER_HOUR = 12
#: Journal retention pass period (s).
PRUNE_S = 24 * 3600.0
EventSink = Callable[[str, Mapping[str, Any]], None]


class ShuttingDownError(ApiError):
    """The agent is shutting down: no new card operation is accepted."""

    code = "shutting_down"


# ---------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------
class HealthState(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(slots=True)
class ComponentHealth:
    state: HealthState = HealthState.OK
    detail: str = ""
    last_progress: float = field(default_factory=time.monotonic)


class Health:
    """State, detail and last progress per component (``status`` op, MQTT status, watchdog)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.components: dict[str, ComponentHealth] = {}
        #: Told ``(name, old, new, detail)`` when a component's state changes (not its detail).
        self.on_change: Callable[[str, HealthState, HealthState, str], None] | None = None

    def _get(self, name: str) -> ComponentHealth:
        c = self.components.get(name)
        if c is None:
            c = self.components[name] = ComponentHealth(last_progress=self._clock())
        return c

    def set(self, name: str, state: HealthState, detail: str = "") -> None:
        c = self._get(name)
        if (c.state, c.detail) != (state, detail):
            level = logging.INFO if state is HealthState.OK else logging.WARNING
            log.log(level, "component %s %s %s", name, state.value, detail)
        old = c.state
        c.state, c.detail = state, detail
        if old is not state and self.on_change is not None:
            self.on_change(name, old, state, detail)

    def progress(self, name: str) -> None:
        self._get(name).last_progress = self._clock()

    def stalled(self, names: tuple[str, ...], max_age_s: float) -> list[str]:
        now = self._clock()
        return [
            n
            for n in names
            if n in self.components and now - self._get(n).last_progress > max_age_s
        ]

    @property
    def overall(self) -> HealthState:
        states = {c.state for c in self.components.values()}
        if HealthState.DOWN in states:
            return HealthState.DOWN
        return HealthState.DEGRADED if HealthState.DEGRADED in states else HealthState.OK

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {
            name: {
                "state": c.state.value,
                "detail": c.detail,
                "progress_age_s": round(now - c.last_progress, 3),
            }
            for name, c in sorted(self.components.items())
        }


# ---------------------------------------------------------------------------------------------
# Card I/O lock (in-process lock + flock on state_dir/card-io.lock)
# ---------------------------------------------------------------------------------------------
class CardIoLock:
    """Serialises card sessions; holds an ``flock`` on ``path`` while card I/O is in progress.

    An updater that holds the file (``flock path …``) makes new card I/O wait until it is done.
    """

    def __init__(self, path: Path, *, poll_s: float = 0.05) -> None:
        self.path = path
        self.poll_s = poll_s
        self._lock = asyncio.Lock()
        self._fd = -1
        self._idle = asyncio.Event()
        self._idle.set()
        self.holder = ""

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def _open(self) -> int:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        return self._fd

    @contextlib.asynccontextmanager
    async def hold(self, holder: str) -> AsyncIterator[None]:
        async with self._lock:
            fd = self._open()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(self.poll_s)  # an updater holds the file: wait for it
            self._idle.clear()
            self.holder = holder
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                self.holder = ""
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once no card I/O is in progress; False if still busy after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------------------------------------
# Card slots: where the citizen card is
# ---------------------------------------------------------------------------------------------
PresenceSink = Callable[[bool, bytes], Awaitable[None]]


class CardSlot(Protocol):
    url: str

    @property
    def present(self) -> bool: ...

    async def watch(self, on_change: PresenceSink, progress: Callable[[], None]) -> None:
        """Report presence changes (the current state first) and heartbeat; forever."""
        ...

    def channel(self) -> contextlib.AbstractAsyncContextManager[CardChannel]:
        """A card session for one operation (``NoCardError`` when the reader is empty)."""
        ...

    async def wait_present(self) -> bytes: ...

    async def aclose(self) -> None: ...


class SimCardSlot:
    """The in-process simulated reader of a :class:`agent.sim.rig.SimRig` (``sim://``).

    ``insert``/``remove`` are the simulator's hands (API ops ``sim.card.*``, the demo).
    """

    def __init__(self, rig: SimRig, *, present: bool = True) -> None:
        self.rig = rig
        self.url = "sim://"
        self._present = present
        self._changed = asyncio.Condition()
        # every insertion and removal, in order (a quick swap is two changes, never none)
        self._changes: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        if present:
            self._changes.put_nowait((True, self.atr))

    @property
    def present(self) -> bool:
        return self._present

    @property
    def atr(self) -> bytes:
        return self.rig.card.atr

    async def _set(self, present: bool) -> None:
        self._present = present
        self._changes.put_nowait((present, self.atr if present else b""))
        async with self._changed:
            self._changed.notify_all()

    async def insert(self, card: VirtualSscCard | None = None) -> None:
        """Put ``card`` (or the current card back) in the reader."""
        if self._present:
            await self.remove()
        if card is not None:
            self.rig.insert(card)
        else:
            self.rig.reinsert()
        await self._set(True)

    async def remove(self) -> None:
        if not self._present:
            return
        self.rig.card_channel.pull()
        await self._set(False)

    async def wait_present(self) -> bytes:
        async with self._changed:
            await self._changed.wait_for(lambda: self._present)
        return self.atr

    async def watch(self, on_change: PresenceSink, progress: Callable[[], None]) -> None:
        while True:
            progress()
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    present, atr = await self._changes.get()
            except TimeoutError:
                continue
            await on_change(present, atr)

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[CardChannel]:
        if not self._present:
            raise NoCardError("no card in the reader")
        ch = self.rig.card_channel
        try:
            yield ch
        finally:
            # a session ends with a reset, as on a PC/SC reader: no verified PIN outlives it
            if ch.present:
                await ch.disconnect()

    async def aclose(self) -> None:
        return None


class PcscCardSlot:
    """A PC/SC reader (``pcsc://glob``): presence events, exclusive session per operation."""

    def __init__(self, glob: str, apdu_timeout_s: float) -> None:
        from agent.drivers.pcsc import PcscReader

        self.url = f"pcsc://{glob}"
        self.reader = PcscReader(glob, transmit_timeout=apdu_timeout_s)
        self._present = False
        self._atr = b""
        self._changed = asyncio.Event()

    @property
    def present(self) -> bool:
        return self._present

    async def wait_present(self) -> bytes:
        while not self._present:
            self._changed.clear()
            await self._changed.wait()
        return self._atr

    async def watch(self, on_change: PresenceSink, progress: Callable[[], None]) -> None:
        async def events() -> None:
            async for ev in self.reader.events():
                present = ev.kind == "inserted"
                if present == self._present:
                    continue
                self._present, self._atr = present, ev.atr
                self._changed.set()
                await on_change(present, ev.atr)

        async def probe() -> None:
            # The heartbeat goes through the reader's I/O worker: a driver call stuck there
            # stops it, and with it the watchdog pings.
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_S * 2):
                        await self.reader.card_present()
                        progress()
                await asyncio.sleep(HEARTBEAT_S)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(events(), name="reader:card:events")
            tg.create_task(probe(), name="reader:card:probe")

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[CardChannel]:
        async with self.reader.session(exclusive=True) as ch:
            yield ch

    async def aclose(self) -> None:
        await self.reader.aclose()


class _ReopeningChannel:
    """A PSAM session on a PC/SC reader, reopened after the reader or pcscd went away."""

    def __init__(self, glob: str, apdu_timeout_s: float) -> None:
        from agent.drivers.pcsc import PcscReader

        self.reader = PcscReader(glob, transmit_timeout=apdu_timeout_s)
        self._ch: Any = None

    @property
    def atr(self) -> bytes | None:
        return None if self._ch is None else bytes(self._ch.atr)

    async def transmit(self, command: Any) -> Any:
        if self._ch is None or self._ch.closed:
            self._ch = await self.reader.connect(exclusive=True)
        try:
            return await self._ch.transmit(command)
        except DeviceError:
            await self._ch.aclose(reset=False)
            self._ch = None
            raise

    async def aclose(self) -> None:
        if self._ch is not None:
            await self._ch.aclose()
        await self.reader.aclose()


# ---------------------------------------------------------------------------------------------
# Receipt printer
# ---------------------------------------------------------------------------------------------
def mask_card_id(code: str | None) -> str:
    """The card identification code shortened for a receipt: first 6, last 4 hex digits."""
    if not code:
        return "-"
    return code[:6] + "…" + code[-4:] if len(code) > 10 else code


class ReceiptService:
    """Prints receipts truthfully (``SerialPrinter``); ``sim://`` is a ``SimPrinter`` on a pty in
    ``state_dir/receipts`` rendering PNGs. A text copy of every receipt is kept beside them."""

    def __init__(self, url: str, scheme: str, directory: Path, timeout_s: float) -> None:
        self.url = url
        self.scheme = scheme
        self.directory = directory
        self.timeout_s = timeout_s
        self.sim: SimPrinter | None = None
        self.driver: Any = None

    async def start(self) -> None:
        from agent.drivers.printer import SerialPrinter

        self.directory.mkdir(parents=True, exist_ok=True)
        if self.scheme == "sim":
            from agent.sim.printer import SimPrinter

            self.sim = SimPrinter(self.directory)
            await self.sim.start()
            self.driver = SerialPrinter(self.sim.url, timeout=self.timeout_s)
        elif self.scheme == "serial":
            self.driver = SerialPrinter(self.url, timeout=self.timeout_s)
        else:
            raise ConfigError(f"printer {self.url}: only serial:// and sim:// are supported")
        await self.driver.open()

    async def print_record(self, rec: TxRecord, *, reprint: bool = False) -> dict[str, Any]:
        from agent.drivers.receipts import ReceiptData, build_receipt, render_text

        data = ReceiptData(
            kind=rec.kind.value,
            terminal_id=rec.terminal_id,
            time=datetime.fromtimestamp(rec.updated_at / 1000).astimezone(),
            card_masked=mask_card_id(rec.card_id_code),
            tx_id=rec.tx_id,
            seq=rec.seq,
            state=rec.state.value if rec.outcome != "failed" else "failed",
            offline=rec.offline,
            reason=rec.error_code or (rec.result if rec.result == "pending" else None),
        )
        text_path = self.directory / f"{rec.tx_id}{'-reprint' if reprint else ''}.txt"
        await asyncio.to_thread(text_path.write_text, render_text(data), "utf-8")
        out: dict[str, Any] = {
            "tx_id": rec.tx_id,
            "printed": False,
            "reason": None,
            "text_path": str(text_path),
            "png_path": None,
        }
        if self.driver is None or not self.driver.is_open:
            out["reason"] = "printer_unavailable"
            return out
        before = len(self.sim.receipts) if self.sim is not None else 0
        result = await self.driver.print_receipt(build_receipt(data))
        out["printed"], out["reason"] = result.printed, result.reason
        if self.sim is not None and result.printed:
            with contextlib.suppress(TimeoutError):
                receipts = await self.sim.wait_receipts(before + 1, within=10.0)
                png = receipts[before].png
                out["png_path"] = str(png) if png else None
        return out

    async def aclose(self) -> None:
        if self.driver is not None:
            await self.driver.close()
        if self.sim is not None:
            await self.sim.stop()


# ---------------------------------------------------------------------------------------------
# Uplink
# ---------------------------------------------------------------------------------------------
class OfflineUplink:
    """``UplinkPort`` when the uplink is disabled: always offline."""

    online = False
    last_online_ms: int | None = None

    async def request_authorization(self, kind: str, card_id_code: str) -> bool:
        raise UplinkUnavailableError("the uplink is disabled")

    def wake(self) -> None:
        return None


def central_public_keys(keys: Mapping[str, str]) -> dict[bytes, Any]:
    """``uplink.central_keys`` (name → Ed25519 public key hex) as COSE kid → key; the kid is
    the first 8 bytes of SHA-256 of the raw public key (``agent.sim.central.key_id``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    out: dict[bytes, Any] = {}
    for name, hexkey in keys.items():
        try:
            raw = bytes.fromhex(hexkey)
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigError(
                f"uplink.central_keys.{name}: not an Ed25519 public key (hex)"
            ) from None
        out[hashlib.sha256(raw).digest()[:8]] = key
    return out


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------
class _NoCard:
    """The channel of an idempotent replay: the engine answers from the journal first."""

    atr = None

    async def transmit(self, command: Any) -> Any:
        raise NoCardError("an idempotent replay does not talk to the card")


class _Stop(Exception):  # control flow inside the task group, never escapes
    pass


class App:
    """The agent (module docstring). ``await App(config).run()``."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        api_socket: str | None = None,
        notifier: Notifier | None = None,
        sim_card_present: bool = True,
        shutdown_grace_s: float = 20.0,
        install_signals: bool = True,
    ) -> None:
        self.config = config
        self.state_dir = config.state_path()
        self.api_socket = self._socket_path(api_socket)
        self.notifier = notifier or Notifier()
        self.sim_card_present = sim_card_present
        self.shutdown_grace_s = shutdown_grace_s
        self.install_signals = install_signals
        self.health = Health()
        self.health.on_change = self._on_health_change
        self._device_buckets: dict[str, Any] = {}  # name -> TokenBucket of its events
        self._device_dropped: dict[str, int] = {}
        self._event_order = asyncio.Lock()
        self.started = time.monotonic()
        self.stopping = False
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stop = asyncio.Event()
        self.card_lock = CardIoLock(self.state_dir / "card-io.lock")
        self.listeners: list[EventSink] = []
        self.counters: dict[str, int] = {
            "tx_done": 0,
            "tx_failed": 0,
            "tx_refused": 0,
            "tx_in_doubt": 0,
            "cards_seen": 0,
            "receipts_printed": 0,
            "receipts_not_printed": 0,
        }
        # set up in _open()
        self.profile: CardProfile
        self.journal: Journal
        self.sam: SecurityModule
        self.engine: TxEngine
        self.recovery: Recovery
        self.terminal_id = ""
        self.slot: CardSlot
        self.rig: SimRig | None = None
        self.printer: ReceiptService | None = None
        self.uplink_port: SessionUplinkPort | OfflineUplink = OfflineUplink()
        self.session: UplinkSession | None = None
        self.broker: Mosquitto | None = None
        self.central: ReferenceCentral | None = None
        self.api: Any = None
        self.tcp_port: int | None = None
        self._psam_channel: _ReopeningChannel | None = None
        self._reporter: Any = None
        self._sighting: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    def _socket_path(self, override: str | None) -> Path | None:
        raw = override if override is not None else self.config.api.socket
        if not raw:
            return None
        p = Path(raw)
        return p if p.is_absolute() else self.state_dir / p

    # ---- events ---------------------------------------------------------------------------
    def emit(self, event: str, data: Mapping[str, Any]) -> None:
        """An event for local API clients and in-process listeners (masked data only)."""
        if self.api is not None:
            self.api.publish_event(event, data)
        for listener in list(self.listeners):
            listener(event, data)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _on_engine_event(self, name: str, data: Mapping[str, Any]) -> None:
        if name == "blacklist_hit":
            self.emit("blacklist_hit", data)
            return
        step = name.removeprefix("tx_")
        self.emit("tx_progress", {"step": step, **data})
        if name == "tx_refused":
            self.counters["tx_refused"] += 1

    # ---- opening the devices ----------------------------------------------------------------
    async def _open(self) -> None:
        from agent.profile import load_profile
        from agent.tx.engine import TxEngine
        from agent.tx.policy import PolicyConfig
        from agent.tx.recovery import Recovery

        cfg = self.config
        await asyncio.to_thread(self.state_dir.mkdir, parents=True, exist_ok=True)
        prof = cfg.terminal.profile
        prof_path = Path(prof)
        if ("/" in prof or prof.endswith(".toml")) and not prof_path.is_absolute():
            prof = str(Path(cfg.base_dir) / prof_path)
        self.profile = load_profile(prof)
        reader, psam = cfg.reader_url, cfg.psam_url
        journal_path = (
            cfg.state_path(cfg.journal.path)
            if not Path(cfg.journal.path).is_absolute()
            else Path(cfg.journal.path)
        )
        bank = None
        if "sim" in (reader.scheme, psam.scheme):
            from agent.sim.rig import SimBankHost, SimRig

            self.rig = await asyncio.to_thread(
                SimRig, self.state_dir, self.profile, journal_path=journal_path
            )
            self.journal = self.rig.journal
            bank = SimBankHost()
        else:
            from agent.journal.store import Journal
            from agent.tx.machine import TABLE

            self.journal = await asyncio.to_thread(
                Journal,
                journal_path,
                transitions=TABLE,  # type: ignore[arg-type]
            )
        if self.journal.quarantined is not None:
            self.health.set(
                "journal",
                HealthState.DEGRADED,
                f"corrupt file quarantined: {self.journal.quarantined.name}",
            )
        else:
            self.health.set("journal", HealthState.OK)
        cfg = self.config = await asyncio.to_thread(self._with_central_settings, cfg)
        set_apdu_trace(cfg.log.trace_apdus)
        if psam.scheme == "sim":
            assert self.rig is not None
            self.sam = self.rig.sam
        else:
            from agent.psam.client import PsamSecurityModule

            self._psam_channel = _ReopeningChannel(psam.target, cfg.card.apdu_timeout_s)
            self.sam = PsamSecurityModule(self._psam_channel, self.profile)
        if reader.scheme == "sim":
            assert self.rig is not None
            self.slot = SimCardSlot(self.rig, present=self.sim_card_present)
        else:
            self.slot = PcscCardSlot(reader.target, cfg.card.apdu_timeout_s)
        self.terminal_id = cfg.terminal.id
        if not self.terminal_id:
            try:
                self.terminal_id = (await self.sam.terminal_number()).hex()
            except AgentError as err:
                raise ConfigError(
                    f"cannot read the terminal number from the PSAM ({err.code}: {err.message}); "
                    "check the PSAM slot or set terminal.id"
                ) from None
        self.health.set("psam", HealthState.OK, psam.raw)
        self.journal.meta_set("terminal_id", self.terminal_id)
        if cfg.uplink.enabled:
            from agent.uplink.port import SessionUplinkPort

            # the session is attached by the uplink task; until its first connection the
            # offline policy counts the link as lost at start-up
            self.uplink_port = SessionUplinkPort(
                self.journal,
                self.terminal_id,
                timeout_s=cfg.uplink.authorization_timeout_s,
                last_online_ms=int(time.time() * 1000),
            )
        p = cfg.policy
        policy = PolicyConfig.from_settings(
            activate_offline_max_per_day=p.activate_offline_max_per_day,
            activate_offline_max_age_h=p.activate_offline_max_age_h,
            report_loss_offline=p.report_loss_offline,
        )
        self.engine = TxEngine(
            self.journal,
            self.sam,
            self.profile,
            policy,
            self.uplink_port,
            self.terminal_id,
            bank=bank,
            on_event=self._on_engine_event,
        )
        self.recovery = Recovery(self.engine)
        if cfg.printer.enabled:
            self.printer = ReceiptService(
                cfg.printer_device_url,
                cfg.printer_url.scheme,
                self.state_dir / "receipts",
                cfg.printer.timeout_s,
            )
            try:
                await self.printer.start()
                self.health.set("printer", HealthState.OK, cfg.printer.url)
            except AgentError as err:
                self.health.set("printer", HealthState.DOWN, err.message)
                self.emit("device_fault", {"device": "printer", "code": err.code})

    # ---- card sessions -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def card_session(self, holder: str) -> AsyncIterator[CardChannel]:
        """Exclusive card I/O for one operation (the card-io lock held throughout)."""
        if self.stopping:
            raise ShuttingDownError("the agent is shutting down; try again shortly")
        async with self.card_lock.hold(holder):
            if self._is_stopping() and holder != "sighting":  # it may have begun meanwhile
                raise ShuttingDownError("the agent is shutting down; try again shortly")
            async with self.slot.channel() as ch:
                yield ch
        self.health.progress("reader")

    async def run_tx(
        self,
        holder: str,
        flow: Callable[[CardChannel | None], Awaitable[TxRecord]],
        *,
        needs_card: bool = True,
        idempotency_key: str | None = None,
    ) -> tuple[TxRecord, dict[str, Any] | None, bool]:
        """Run one engine flow under the card-io lock and print its receipt. Returns the
        record, the print result and whether it was an idempotent replay (the key was used
        before: the first outcome, no card I/O, no second receipt). Engine errors propagate
        after a journaled (failed) record's receipt is printed."""

        async def seen() -> bool:
            if idempotency_key is None:
                return False
            row = await asyncio.to_thread(self.journal.find_by_idempotency_key, idempotency_key)
            return row is not None

        # A replay is answered from the journal, without the card (it may be gone by now);
        # a concurrent twin is caught by checking again under the card-io lock.
        replay = await seen()
        try:
            if needs_card and not replay:
                async with self.card_session(holder) as ch:
                    replay = await seen()
                    rec = await flow(_NoCard() if replay else ch)
            else:
                if self.stopping and not replay:
                    raise ShuttingDownError("the agent is shutting down; try again shortly")
                rec = await flow(_NoCard() if needs_card else None)
        except CardRefusedError as err:
            if not replay:
                self.counters["tx_failed"] += 1
                if err.record is not None:
                    await self.after_tx(err.record)  # type: ignore[arg-type]
            raise
        except TransactionInDoubtError:
            if not replay:
                self.counters["tx_in_doubt"] += 1
            raise
        except JournalFullError as err:
            self.health.set("journal", HealthState.DOWN, f"journal_full: {err.message}")
            raise
        if replay:
            return rec, None, True
        if self.health.components.get("journal", ComponentHealth()).detail.startswith(
            "journal_full"
        ):
            self.health.set("journal", HealthState.OK)  # space again: the journal took this one
        self.counters["tx_done"] += 1
        printed = await self.after_tx(rec)
        return rec, printed, False

    async def after_tx(self, rec: TxRecord) -> dict[str, Any] | None:
        """Print the receipt per ``printer.print_after``; the result is an event either way."""
        cfg = self.config.printer
        if not cfg.enabled or self.printer is None or rec.kind.value not in cfg.print_after:
            return None
        return await self.print_receipt(rec)

    async def print_receipt(self, rec: TxRecord, *, reprint: bool = False) -> dict[str, Any]:
        assert self.printer is not None
        result = await self.printer.print_record(rec, reprint=reprint)
        ok = bool(result["printed"])
        self.counters["receipts_printed" if ok else "receipts_not_printed"] += 1
        event = "receipt_printed" if ok else "receipt_not_printed"
        data = {
            "tx_id": rec.tx_id,
            "kind": rec.kind.value,
            "reason": result["reason"],
            "reprint": reprint,
        }
        with contextlib.suppress(AgentError):
            await asyncio.to_thread(self.journal.add_event, event, data)
        if ok:
            self.health.set("printer", HealthState.OK, self.config.printer.url)
        else:
            self.health.set("printer", HealthState.DEGRADED, f"not printed: {result['reason']}")
        self.emit(event, {**data, "text_path": result["text_path"], "png_path": result["png_path"]})
        return result

    # ---- presence ------------------------------------------------------------------------
    async def _on_presence(self, present: bool, atr: bytes) -> None:
        if not present:
            self.emit("card_removed", {"reader": self.slot.url})
            return
        self.counters["cards_seen"] += 1
        self.emit("card_inserted", {"reader": self.slot.url, "atr": atr.hex().upper()})
        if self._sighting is None or self._sighting.done():
            self._sighting = asyncio.create_task(self._sight(), name="card-sighting")

    async def _sight(self) -> None:
        """A card is in the reader: resolve its in-doubt records, then the blacklist check."""
        try:
            async with self.card_session("sighting") as ch:
                sighting = await self.recovery.on_card_seen(ch)
        except ShuttingDownError:
            return
        except AgentError as err:
            # an unreadable or foreign card is the citizen's problem, not a device fault
            log.info("card sighting: %s: %s", err.code, err.message)
            if isinstance(err, DeviceError) and not isinstance(err, NoCardError):
                self.emit("device_fault", {"device": "reader", "code": err.code})
            return
        for r in sighting.resolutions:
            self.emit(
                "tx_progress",
                {
                    "step": f"resolved_{r.verdict}",
                    "tx_id": r.tx_id,
                    "kind": r.kind,
                    "result": r.result,
                },
            )
        if sighting.auto_lock is not None:
            self.counters["tx_done"] += 1
            await self.after_tx(sighting.auto_lock)

    # ---- tasks ---------------------------------------------------------------------------
    async def _reader_task(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self.slot.watch(self._on_presence, self._reader_alive)
            except* AgentError as group:
                err = group.exceptions[0]
                assert isinstance(err, AgentError)
                self.health.set("reader", HealthState.DOWN, f"{err.code}: {err.message}")
                self.emit("device_fault", {"device": "reader", "code": err.code})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _reader_alive(self) -> None:
        """The reader's heartbeat: progress for the watchdog, and back to ``ok`` after a fault
        (the watch resumed), so status and central see it recover."""
        self.health.progress("reader")
        c = self.health.components.get("reader")
        if c is not None and c.state is not HealthState.OK:
            self.health.set("reader", HealthState.OK, self.slot.url)

    def _status_bytes(self, online: bool) -> bytes:
        from agent.wire.codec import StatusMessage

        health = {k[:32]: v["state"] for k, v in self.health.snapshot().items()}
        return StatusMessage(self.terminal_id, online, VERSION, int(time.time()), health).to_cbor()

    def _on_uplink_event(self, kind: str, data: Mapping[str, Any]) -> None:
        if kind == "uplink_online":
            self.health.set("uplink", HealthState.OK, "online")
            if self._reporter is not None:
                self._spawn(self._reporter.flush(), "uplink-events-flush")
        elif kind == "uplink_offline":
            if not isinstance(self.uplink_port, OfflineUplink):
                self.uplink_port.went_offline()
            self.health.set("uplink", HealthState.DEGRADED, "offline")
        self.emit(kind, dict(data))

    def _on_health_change(self, name: str, old: HealthState, new: HealthState, detail: str) -> None:
        """A device that failed or came back, and a journal that filled up, are events for
        central too (docs/MESSAGES.md): kiosk operators learn of them without polling."""
        if name == "journal" and detail.startswith("journal_full"):
            # the journal cannot keep this one: it goes out now, if the uplink is up
            if self._reporter is not None:
                self._spawn(
                    self._reporter.report_now("journal_full", {"detail": detail[:200]}), "event"
                )
            return
        if name not in DEVICES:
            return
        if new is HealthState.OK:
            kind = "device_recovered"
            self.emit(kind, {"device": name})
        elif old is HealthState.OK:
            kind = "device_fault"  # already told to API clients, with its code, where it failed
        else:
            return  # degraded <-> down: still at fault
        from agent.uplink.flow import TokenBucket

        # a device that flaps must not fill the journal: DEVICE_EVENTS_PER_HOUR each, the rest
        # counted into the next one that goes (the retained status always has the state)
        now = time.monotonic()
        bucket = self._device_buckets.setdefault(
            name, TokenBucket(DEVICE_EVENTS_PER_HOUR / 3600, DEVICE_EVENTS_PER_HOUR, now)
        )
        if bucket.try_take(now) > 0:
            self._device_dropped[name] = self._device_dropped.get(name, 0) + 1
            return
        data: dict[str, Any] = {"device": name, "state": new.value, "detail": detail[:200]}
        dropped = self._device_dropped.pop(name, 0)
        if dropped:
            data["dropped"] = dropped
        self.report_event(kind, data)

    def report_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """Journal an event for central and publish it when the uplink is up (in the
        background; the journal keeps it until then)."""
        if not hasattr(self, "journal"):
            return  # before the journal opened: the retained status carries the health

        async def report() -> None:
            try:
                async with self._event_order:  # FIFO: events are journaled in the order made
                    await asyncio.to_thread(self.journal.add_event, kind, dict(data))
            except AgentError as err:
                log.warning("could not journal the %s event: %s", kind, err.message)
                return
            if self._reporter is not None:
                await self._reporter.flush()

        self._spawn(report(), f"event:{kind}")

    async def _on_command_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "command_applied" and data.get("type") == "report":
            self._spawn(self._report_now(), "uplink-report")  # central asked: status now
        self.emit(kind, {k: (v.hex() if isinstance(v, bytes) else v) for k, v in data.items()})

    def _with_central_settings(self, cfg: AgentConfig) -> AgentConfig:
        """The config file with central's ``config_set`` values laid over it: central's last
        word outlives a restart (``CentralSettings``, kept in the journal). Each one is logged,
        so whoever reads the file and the logs sees why a value differs."""
        from agent.config import setting_value, with_settings
        from agent.uplink.commands import CentralSettings

        held = CentralSettings(self.journal).load()
        if not held:
            return cfg
        new, issues = with_settings(cfg, held)
        refused = {i.key for i in issues}
        for key in sorted(held):
            if key in refused:
                continue
            log.info(
                "%s = %r, set by central (the configuration says %r); "
                "ssc-agent config central --clear forgets it",
                key, setting_value(new, key), setting_value(cfg, key),
            )  # fmt: skip
        for issue in issues:
            log.error("setting %s from central ignored: %s", issue.key, issue.message)
        if "log.level" in held and "log.level" not in refused:
            set_level(new.log.level)
        return new

    def _apply_setting(self, key: str, value: str | int | bool) -> str:
        """Central's ``config_set`` (already kept in the journal): apply it to the running agent
        and say when it takes effect (``agent.uplink.commands.APPLIES``)."""
        from agent.config import setting_value, with_settings
        from agent.tx.policy import PolicyConfig

        new, issues = with_settings(self.config, {key: value})
        if issues:
            log.error("setting %s from central refused: %s", key, issues[0].message)
            return "refused"
        self.config = new
        log.info("%s = %r, set by central", key, setting_value(new, key))
        if key == "log.level":
            set_level(new.log.level)
        elif key == "log.trace_apdus":
            set_apdu_trace(new.log.trace_apdus)
        elif key.startswith("policy."):
            p = new.policy
            self.engine.policy = PolicyConfig.from_settings(
                activate_offline_max_per_day=p.activate_offline_max_per_day,
                activate_offline_max_age_h=p.activate_offline_max_age_h,
                report_loss_offline=p.report_loss_offline,
            )
        elif key == "journal.retention_days":
            pass  # the next prune reads self.config
        elif key == "uplink.backlog_rate" and self.session is not None:
            self.session.retune(backlog_rate=new.uplink.backlog_rate)
        elif key == "uplink.inflight_window" and self.session is not None:
            self.session.retune(window=new.uplink.inflight_window)
            return "next_connection"
        else:
            return "restart"
        return "now"

    async def _uplink_task(self) -> None:
        from agent.uplink.commands import CommandHandler, EventReporter
        from agent.uplink.outbox import JournalOutbox
        from agent.uplink.session import TlsFiles, UplinkSession, UplinkSettings
        from agent.wire.codec import ack_ranges
        from agent.wire.commands import CommandVerifier
        from agent.wire.pii import pii_public_key

        cfg = self.config.uplink
        url = self.config.broker_url
        keys: dict[bytes, Any] = central_public_keys(cfg.central_keys)
        pii_key = pii_public_key(cfg.central_pii_key)
        host, port, tls = "", 0, None
        self.health.set("uplink", HealthState.DEGRADED, "connecting")
        if url.scheme == "sim":
            from agent.sim.central import ReferenceCentral
            from agent.testing.mosquitto import Mosquitto

            self.broker = Mosquitto(self.state_dir / "sim-broker")
            try:
                await asyncio.to_thread(self.broker.start)
            except (OSError, TimeoutError) as exc:
                self.health.set("uplink", HealthState.DOWN, f"simulated broker: {exc}")
                raise ConfigError(f"cannot start the simulated broker (mosquitto): {exc}") from None
            self.central = ReferenceCentral(
                self.broker.url, self.state_dir / "sim-central" / "central.db", self.profile
            )
            keys[self.central.kid] = self.central.key.public_key()
            pii_key = self.central.pii_key.public_key()
            self._spawn(self.central.run(), "central-sim")
            host, port = "127.0.0.1", self.broker.port
        else:
            host, port = url.host, url.port
            if url.scheme == "mqtts":
                tls = TlsFiles(cfg.ca_file, cfg.cert_file, cfg.key_file)
        if pii_key is None:
            log.warning(
                "uplink.central_pii_key is empty: loss reports made without the card reach "
                "central without the citizen's ID and card numbers"
            )
        outbox = JournalOutbox(self.journal, pii_key)
        settings = UplinkSettings(
            terminal=self.terminal_id,
            host=host,
            port=port,
            tls=tls,
            window=cfg.inflight_window,
            batch_max=cfg.batch_max,
            backlog_rate=cfg.backlog_rate,
            ack_timeout_s=cfg.ack_timeout_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            keepalive_s=cfg.keepalive_s,
        )
        on_command = None
        self._reporter = EventReporter(self.journal, self.terminal_id)
        session = UplinkSession(
            settings,
            outbox,
            encode_status=self._status_bytes,
            decode_ack=lambda p: ack_ranges(p, self.terminal_id),
            on_event=self._on_uplink_event,
        )
        if keys:
            from agent.uplink.commands import JournalReplayStore

            verifier = CommandVerifier(
                keys, self.terminal_id, time.time, JournalReplayStore(self.journal)
            )
            on_command = CommandHandler(
                verifier,
                self.journal,
                self.terminal_id,
                self._on_command_event,
                reporter=self._reporter,
                on_resend=session.resend_from,
                on_authorization=(
                    None
                    if isinstance(self.uplink_port, OfflineUplink)
                    else self.uplink_port.answered
                ),
                on_setting=self._apply_setting,
            )
            session._on_command = on_command  # set after the session exists
        else:
            log.warning("uplink.central_keys is empty: commands from central are ignored")
            if not isinstance(self.uplink_port, OfflineUplink):
                self.uplink_port.commands_verified = False  # so central is never asked
        self._reporter.publisher = session.publish
        self.session = session
        if not isinstance(self.uplink_port, OfflineUplink):
            self.uplink_port.session = session
        try:
            await session.run()
        finally:
            await asyncio.to_thread(outbox.flush)

    async def _telemetry_task(self) -> None:
        last_prune = 0.0
        while True:
            now = time.monotonic()
            if now - last_prune >= PRUNE_S:
                last_prune = now
                with contextlib.suppress(AgentError):
                    await asyncio.to_thread(self.journal.prune, self.config.journal.retention_days)
            await self._report_now()
            await asyncio.sleep(TELEMETRY_S)

    async def _report_now(self) -> None:
        """Telemetry counters and the retained status, when online (every ``TELEMETRY_S``, and
        at once on central's ``report`` command)."""
        from agent.uplink import topics
        from agent.wire.codec import TelemetryMessage

        session = self.session
        if session is None or not session.online:
            return
        counters = {**self.counters, "uptime_s": int(time.monotonic() - self.started)}
        with contextlib.suppress(AgentError):
            stats = await asyncio.to_thread(self.journal.stats)
            counters["unacked"] = stats.unacked
            msg = TelemetryMessage(self.terminal_id, int(time.time()), counters)
            await session.publish(topics.telemetry(self.terminal_id), msg.to_cbor(), qos=0)
        await self._publish_status(True)

    def _drain_progress(self, last: list[int]) -> None:
        """Uplink progress: offline (nothing to drive), an empty outbox, or acks/publishes
        moving. Online with a backlog and nothing moving is a stall."""
        session = self.session
        if not self.config.uplink.enabled or session is None or not session.online:
            self.health.progress("uplink")
            return
        mark = [session.stats.acked, session.stats.published]
        if mark != last:
            last[:] = mark
            self.health.progress("uplink")
            return
        try:
            if self.journal.stats().unacked == 0:
                self.health.progress("uplink")
        except AgentError:
            pass

    def status_line(self) -> str:
        up = "online" if self.uplink_port.online else "offline"
        card = "card present" if self.slot.present else "no card"
        return f"{self.health.overall.value}; {card}; uplink {up}"

    async def _watchdog_task(self) -> None:
        interval = watchdog_interval_s()
        tick = min(interval or HEARTBEAT_S, HEARTBEAT_S)
        watched = ("reader", "uplink")
        last_drain: list[int] = [-1, -1]
        last_status = ""
        was_stalled: list[str] = []
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(tick)
            lag = time.monotonic() - t0 - tick
            self.health.progress("loop")
            self.health.set(
                "loop",
                HealthState.OK if lag < 1.0 else HealthState.DEGRADED,
                f"lag {lag:.3f}s" if lag >= 1.0 else "",
            )
            self._drain_progress(last_drain)
            stalled = self.health.stalled(
                watched, max(STALL_S, 2 * self.config.uplink.ack_timeout_s)
            )
            if stalled != was_stalled:
                if stalled:
                    log.error("no progress from %s: watchdog pings stopped", ", ".join(stalled))
                    for name in stalled:
                        self.health.set(name, HealthState.DOWN, "stalled")
                was_stalled = stalled
            if not stalled:
                self.notifier.watchdog()
            line = self.status_line()
            if line != last_status:
                self.notifier.status(line)
                last_status = line

    async def _stop_task(self) -> None:
        await self._stop.wait()
        with contextlib.suppress(AgentError):
            async with self._event_order:
                await asyncio.to_thread(
                    self.journal.add_event, "agent_stopping", {"version": VERSION}
                )
        session = self.session
        if session is not None and session.online:
            if self._reporter is not None:
                with contextlib.suppress(TimeoutError, AgentError):
                    async with asyncio.timeout(2.0):
                        await self._reporter.flush()
            # a clean disconnect does not fire the last will: say "offline" ourselves

            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._publish_status(False)
        raise _Stop

    async def _publish_status(self, online: bool) -> None:
        """The retained status (``UplinkSession.publish`` has no retain flag: the live client)."""
        import aiomqtt

        from agent.uplink import topics

        client = self.session._client_now if self.session is not None else None
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(
                topics.status(self.terminal_id), self._status_bytes(online), qos=1, retain=True
            )

    def _is_stopping(self) -> bool:
        return self.stopping

    def request_stop(self) -> None:
        """Begin a graceful shutdown (the SIGTERM/SIGINT handler)."""
        if not self._stop.is_set():
            log.info("shutdown requested")
            self.stopping = True
            self.notifier.stopping()
            self._stop.set()

    # ---- run -----------------------------------------------------------------------------
    async def _start_api(self) -> None:
        from agent.api.ops import build_handlers
        from agent.api.server import ApiServer

        cfg = self.config.api
        token = ""
        if cfg.tcp:
            tf = Path(cfg.token_file)
            if not tf.is_absolute():
                tf = Path(self.config.base_dir) / tf
            try:
                token = (await asyncio.to_thread(tf.read_text, "utf-8")).strip()
            except OSError as exc:
                raise ConfigError(f"api.token_file {tf}: {exc.strerror}") from None
            if len(token) < 16:
                raise ConfigError(f"api.token_file {tf}: the token must be at least 16 characters")
        self.api = ApiServer(build_handlers(self), max_frame=cfg.max_frame, token=token)
        if self.api_socket is not None:
            await self.api.start_unix(self.api_socket)
        if cfg.tcp:
            host, _, port = cfg.tcp.rpartition(":")
            self.tcp_port = await self.api.start_tcp(host.strip("[]"), int(port))
        self.health.set("api", HealthState.OK, str(self.api_socket or cfg.tcp))

    async def run(self) -> None:
        """Open the devices, recover, serve until stopped; then shut down gracefully."""
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._open()
            self.health.set("reader", HealthState.OK, self.slot.url)
            report = await self.recovery.start()
            if report.in_doubt:
                log.warning("start-up recovery: %d record(s) in doubt", len(report.in_doubt))
            await self._start_api()
            self.notifier.ready(f"serving; terminal {self.terminal_id}")
            self.ready.set()
            self.report_event(
                "agent_started", {"version": VERSION, "in_doubt": len(report.in_doubt)}
            )
            log.info(
                "agent ready",
                extra={
                    "terminal": self.terminal_id,
                    "api": str(self.api_socket or ""),
                    "in_doubt": len(report.in_doubt),
                },
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._reader_task(), name="reader:card")
                    if self.config.uplink.enabled:
                        tg.create_task(self._uplink_task(), name="uplink")
                    tg.create_task(self._telemetry_task(), name="telemetry")
                    tg.create_task(self._watchdog_task(), name="watchdog")
                    tg.create_task(self._stop_task(), name="stop")
            except* _Stop:
                pass
        finally:
            await self._shutdown()
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _shutdown(self) -> None:
        self.stopping = True
        self.notifier.status("stopping: finishing the card operation in flight")
        if not await self.card_lock.wait_idle(self.shutdown_grace_s):
            log.warning(
                "card operation (%s) still running after %.0fs: cancelled; it is recorded and "
                "resolved from the card after restart",
                self.card_lock.holder,
                self.shutdown_grace_s,
            )
        if self.api is not None:
            await self.api.close()
        from agent.uplink.session import cancel_and_wait

        for task in [*self._bg, *([self._sighting] if self._sighting else [])]:
            task.cancel()
        for task in [*self._bg, *([self._sighting] if self._sighting else [])]:
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)  # a lost cancel (Python 3.11) must not hang the stop
        if self.printer is not None:
            with contextlib.suppress(AgentError, OSError):
                await self.printer.aclose()
        if hasattr(self, "slot"):
            with contextlib.suppress(AgentError):
                await self.slot.aclose()
        if self._psam_channel is not None:
            with contextlib.suppress(AgentError):
                await self._psam_channel.aclose()
        if self.central is not None:
            self.central.close()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self.rig is not None:
            with contextlib.suppress(AgentError):
                await self.rig.aclose()
        elif hasattr(self, "journal"):
            self.journal.close()
        self.card_lock.close()
        if self.api_socket is not None:
            with contextlib.suppress(OSError):
                self.api_socket.unlink()
        self.notifier.close()
        self.stopped.set()
        log.info("agent stopped")
